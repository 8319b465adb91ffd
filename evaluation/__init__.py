"""Evaluation of re-rankers on BEIR-layout collections.

Modules (import what you need; none is imported here, so ``import evaluation`` stays light):

- ``beir``: ``load_beir`` (validated loading), ``read_trec_run`` / ``write_trec_run``;
- ``bm25``: ``BM25Retriever`` (bm25s, Lucene k1=0.9 b=0.4), the shared first stage;
- ``metrics``: ``evaluate_run``, ``per_query_scores``, ``compare_runs`` (ir-measures metrics, paired t-tests);
- ``rerankers``: ``CrossEncoderReranker``, ``MiceReranker`` (documents encoded once into an ``indexing``
  document store), ``load_reranker``;
- ``harness``: ``evaluate_systems`` (what ``scripts/evaluate.py`` runs), ``rerank``, ``latency_curve``;
- ``report``: markdown tables and PNG plots from ``evaluation.json``;
- ``mteb_task``: an MTEB re-ranking task and model wrapper, and sentence-transformers' re-ranking evaluators.
"""
