"""First-stage retrieval from a cross-encoder's own early layers (Ananthakrishnan et al., arXiv 2502.03552).

Modules (import what you need; nothing heavy is imported here):

- ``early_layers``: zero-shot early-layer embeddings of any cross-encoder or MICE model (``EarlyLayerEncoder``,
  ``early_layer_embeddings``, ``save_early_layer_model``), as numpy arrays or ``SentenceTransformer`` folders, and a
  MICE model's stored document states pooled into the same embeddings (``pool_document_states``);
- ``distillation``: the light dual encoder (DE-2): built from a cross-encoder's embeddings and first layer(s), trained
  with sentence-transformers' ``SentenceTransformerTrainer`` (``EmbedderDistillationConfig``, ``distill_embedder``);
- ``speed``: dual encoders' document encoding speed, measured side by side (``encoding_speed``);
- ``cli``: the ``mice distill-embedder`` verb.
"""
