"""Evaluation of re-rankers on BEIR-layout collections (loaded by ``ranking_data``).

Modules (import what you need; none is imported here, so ``import evaluation`` stays light):

- ``metrics``: ``evaluate_run``, ``per_query_scores``, ``compare_runs`` (ir-measures metrics, paired t-tests);
- ``rerankers``: ``CrossEncoderReranker``, ``MiceReranker`` (documents encoded once into an ``indexing``
  document store), ``load_reranker``;
- ``first_stage``: BM25, run files, dense and hybrid first stages behind one interface;
- ``harness``: ``EvaluationConfig`` and ``evaluate`` (what ``mice evaluate`` runs), ``rerank``, ``latency_curve``;
- ``report``: markdown tables and PNG plots from ``evaluation.json``;
- ``mteb_task``: an MTEB re-ranking task and model wrapper, and sentence-transformers' re-ranking evaluators.
"""
