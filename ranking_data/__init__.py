"""The data that training, evaluation and indexing all read: the layer between the model and everything else.

Modules (import what you need; none is imported here, so ``import ranking_data`` stays light):

- ``beir``: ``load_beir`` (a validated BEIR-layout folder), ``subsample_queries``, runs (``read_trec_run``,
  ``write_trec_run``, ``top_documents``);
- ``bm25``: ``BM25Retriever`` (bm25s, Lucene k1=0.9 b=0.4), the shared first stage;
- ``fusion``: ``fuse_runs`` (per-query min-max normalised runs, weighted and summed: the BM25 + dense hybrid);
- ``candidates``: training queries' candidate lists (BM25 or a run file), judged positives kept in;
- ``teachers``: anything that scores candidate lists (cross-encoder, bi-encoder, BM25, MICE, a function) and ensembles;
- ``teacher_data``: ``TeacherDataset`` (PyLate's three-config layout, joined lazily into training rows) and the
  resumable ``build_teacher_dataset`` / ``build_from_beir``;
- ``importers``: published teacher files (Hofstätter et al.'s scores, TREC runs) in that schema;
- ``work_folders``: atomic writes, and ``claim_folder``: a long job's folder resumed only under its own settings.
"""
