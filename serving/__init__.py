"""Serving re-rankers: ONNX export (fp32, int8) and runtime, `predict` / `rank` re-rankers with a document cache and
long-document passages, and the `/rerank` HTTP app (`mice serve`).

- `onnx_export`: `export_onnx(model_folder)` writes `onnx/` next to the weights (MICE: document encoder and query
  scorer, with or without cached keys and values; cross-encoders: one graph), `export.json` describing it;
- `onnx_runtime`: ONNX Runtime engines for those graphs;
- `rerankers`: `load_reranker(folder, backend)` -> `MiceReranker` / `CrossEncoderReranker` on `torch`, `onnx`,
  `onnx-int8`, or for MICE `onnx-int8-query` (fp32 document states, int8 query scorer);
- `app`: `create_app(reranker, settings)`, the FastAPI app (TEI's `/rerank`, Cohere/Jina's `/v1/rerank`, `/v2/rerank`);
- `cli`: the `mice serve` and `mice export-onnx` verbs.

Nothing is imported here, so `import serving` stays light.
"""
