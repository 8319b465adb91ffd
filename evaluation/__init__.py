"""Evaluation of re-rankers on BEIR-layout collections (loaded by ``ranking_data``).

Modules (import what you need; none is imported here, so ``import evaluation`` stays light):

- ``metrics``: ``evaluate_run``, ``per_query_scores``, ``compare_runs`` (ir-measures metrics, paired t-tests);
- ``rerankers``: ``CrossEncoderReranker``, ``MiceReranker`` (pre-encoded documents), ``load_reranker``;
- ``document_cache``: ``DocumentStateCache``, the safetensors cache of MICE document states;
- ``harness``: ``EvaluationConfig`` and ``evaluate`` (what ``mice evaluate`` runs), ``rerank``, ``latency_curve``;
- ``report``: markdown tables and PNG plots from ``evaluation.json``;
- ``mteb_task``: an MTEB re-ranking task and model wrapper, and sentence-transformers' re-ranking evaluators.
"""
