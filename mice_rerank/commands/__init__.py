"""The ``mice`` verbs that are thin layers over another package's API (``mice_rerank.cli`` registers them)."""
