"""Zero-shot early-layer embeddings of a cross-encoder or a MICE model (Ananthakrishnan et al., arXiv 2502.03552).

A cross-encoder's first ``k`` layers, run on one text and pooled, already give a usable dense vector: "early-layer
embeddings". :class:`EarlyLayerEncoder` computes them for any layer ``0..k`` in one pass (layer 0 is the embedding
layer), and writes a ``SentenceTransformer`` folder holding the cross-encoder's embeddings and first ``k`` layers
followed by pooling, so that ``SentenceTransformer(folder).encode``, ``similarity``, MTEB and vector indexes use it
unchanged.

Two input formats:

* ``"single"``: ``[CLS] t [SEP]``, encoded as the cross-encoder encodes a document, its second segment (token type 1
  where the family has token types). This is exactly how MICE's independent layers encode a document, so for a MICE
  model the pooled document states it stores for re-ranking *are* this embedding (:func:`pool_document_states`).
  The saved folder is a plain transformers model (its single token type is the cross-encoder's document type).
* ``"pair"``: ``[CLS] t [SEP] t [SEP]``, the text paired with itself: the only kind of input a cross-encoder saw in
  training (the paper's choice). Pooled over both copies. The saved folder uses :class:`SelfPairTransformer`, a
  sentence-transformers module of this package, so loading it needs ``mice-rerank`` installed.

Families with a final norm after the last layer (ModernBERT) get it at every ``k``, as a model cut to ``k`` layers
would apply it.
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Pooling as PoolingModule
from sentence_transformers.sentence_transformer.modules import Transformer
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel
from transformers.utils import logging as hf_logging

from modeling_mice import MiceDocumentStates, MiceForSequenceClassification
from modeling_mice.configuration_mice import encoder_max_length
from modeling_mice.modeling_mice import _sub_config  # the one rule for cutting an encoder config to fewer layers

InputFormat = Literal["single", "pair"]
Pooling = Literal["mean", "cls"]
INPUT_FORMATS = ("single", "pair")
POOLINGS = ("mean", "cls")


class EarlyLayerError(ValueError):
    """A source model or a setting early-layer embeddings cannot be built from; the message says what to pass."""


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise EarlyLayerError(f"unknown {what} {value!r}; use one of {list(choices)}")


def _read_config(path: Path) -> dict:
    config = path / "config.json"
    if not config.is_file():
        raise EarlyLayerError(f"{path} holds no config.json: pass a cross-encoder or MICE model folder")
    return json.loads(config.read_text(encoding="utf-8"))


def describe_source(path: str | Path) -> Literal["cross-encoder", "mice"]:
    """Whether a folder holds a cross-encoder (``*ForSequenceClassification``) or a MICE model.

    Raises:
        EarlyLayerError: the folder is missing, a sentence-transformers bi-encoder, or an encoder without a
            classification head.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise EarlyLayerError(f"{path} is not a folder; pass a cross-encoder or MICE model folder")
    config = _read_config(folder)
    architectures = config.get("architectures") or []
    if (folder / "modules.json").is_file() and not any("ForSequenceClassification" in a for a in architectures):
        raise EarlyLayerError(
            f"{path} is a sentence-transformers bi-encoder, not a cross-encoder: its output is already an embedding; "
            "pass a cross-encoder (a *ForSequenceClassification folder) or a MICE model"
        )
    if config.get("model_type") == "mice":
        return "mice"
    if any(str(a).endswith("ForSequenceClassification") for a in architectures):
        return "cross-encoder"
    raise EarlyLayerError(
        f"{path} is an encoder without a classification head ({', '.join(architectures) or 'no architectures'}), "
        "not a cross-encoder; pass a cross-encoder (a *ForSequenceClassification folder) or a MICE model"
    )


def source_layers(path: str | Path) -> int:
    """How many layers an early-layer encoder can read from a cross-encoder or MICE folder (all of a cross-encoder's,
    a MICE model's independent ones), off its ``config.json``: no weights are loaded."""
    config = _read_config(Path(path))
    return config["fusion_layer"] if describe_source(path) == "mice" else config["num_hidden_layers"]


def _uses_token_types(config) -> bool:
    return getattr(config, "type_vocab_size", 0) > 1


def _final_norm(model: PreTrainedModel) -> torch.nn.Module | None:
    """The norm a family applies after its last layer (ModernBERT's ``final_norm``), or None."""
    return getattr(model, "final_norm", None)


@dataclass
class EarlyLayerEncoder:
    """The embeddings and first layers of a cross-encoder or MICE model, with its tokenizer.

    Build it with :meth:`from_pretrained`; :meth:`encode` gives the pooled states of any layers in one pass,
    :meth:`sentence_transformer` the ``SentenceTransformer`` of one layer (:func:`save_early_layer_model` writes it).

    Attributes:
        encoder: the family's base model cut to ``num_layers`` layers (a MICE model's independent layers).
        tokenizer: the source model's tokenizer.
        source: the folder it was read from; ``source_kind``: ``"cross-encoder"`` or ``"mice"``.
        full_config: the encoder's configuration at its original depth.
        max_length: default truncation (special tokens included): a MICE model's ``max_document_length``, else the
            longest sequence the encoder supports.
    """

    encoder: PreTrainedModel
    tokenizer: object
    source: str
    source_kind: str
    full_config: object
    max_length: int

    @property
    def num_layers(self) -> int:
        """How many layers can be used: all of a cross-encoder's, a MICE model's independent ones."""
        return self.encoder.config.num_hidden_layers

    @classmethod
    def from_pretrained(
        cls, path: str | Path, num_layers: int | None = None, device: str | torch.device | None = None
    ) -> EarlyLayerEncoder:
        """Read a cross-encoder or MICE folder, keeping its first ``num_layers`` layers (default: all it has;
        a MICE model's independent layers; with 0, one layer is kept so that layer 0 can be read).

        Raises:
            EarlyLayerError: not a cross-encoder or MICE folder (a bi-encoder, a bare encoder), or ``num_layers``
                beyond the model.
        """
        kind = describe_source(path)
        available = source_layers(path)  # checked off config.json, before any weight is loaded
        if kind == "mice":
            raw = _read_config(Path(path))
            what = f"MICE-ℓ{raw['fusion_layer']}+{raw['interaction_layers']} has {available} independent layers"
        else:
            what = f"it has {available} layers"
        num_layers = available if num_layers is None else num_layers
        check_layer(num_layers, available, f"{path}: {what}")
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        if kind == "mice":
            mice = MiceForSequenceClassification.from_pretrained(str(path))
            full_config, max_length = mice.config.encoder_config, mice.config.max_document_length
            source_state = mice.mice.backbone.state_dict()
        else:
            full_config = AutoConfig.from_pretrained(str(path))
            max_length = min(encoder_max_length(full_config), tokenizer.model_max_length)
            source_state = None
        # Layer 0 (the embedding layer's output) is read from a model with one layer: no family builds zero layers.
        config = _sub_config(full_config, max(num_layers, 1))
        config.architectures = None
        if source_state is None:
            # The cross-encoder's head and higher layers are left out on purpose: no "unexpected weights" report.
            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()
            try:
                encoder = AutoModel.from_pretrained(str(path), config=config)
            finally:
                hf_logging.set_verbosity(verbosity)
        else:
            encoder = _load_encoder(config, source_state, f"{path}'s independent layers")
        encoder.eval()
        if device is not None:
            encoder.to(device)
        return cls(encoder, tokenizer, str(path), kind, full_config, max_length)

    # -- encoding --------------------------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str], input_format: InputFormat, max_length: int) -> dict[str, torch.Tensor]:
        """Model inputs for ``texts`` in ``input_format`` (see the module docstring), right-padded."""
        texts = list(texts)
        if input_format == "pair":
            batch = self.tokenizer(
                texts, texts, padding=True, truncation="longest_first", max_length=max_length, return_tensors="pt"
            )
        else:
            batch = self.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            if _uses_token_types(self.encoder.config):
                # The document segment's token type, as MICE encodes documents and a cross-encoder its second text.
                batch["token_type_ids"] = torch.ones_like(batch["input_ids"])
            else:
                batch.pop("token_type_ids", None)
        return {name: tensor.to(self.encoder.device) for name, tensor in batch.items()}

    @torch.inference_mode()
    def layer_states(self, batch: dict[str, torch.Tensor], layers: Sequence[int]) -> dict[int, torch.Tensor]:
        """Token states ``(B, L, H)`` after each of ``layers`` (0: the embedding layer), final norm included."""
        output = self.encoder(**batch, output_hidden_states=True)
        hidden = list(output.hidden_states)
        norm = _final_norm(self.encoder)
        # hidden_states[-1] already went through the final norm; the earlier ones get it as a cut model would.
        return {k: norm(hidden[k]) if norm is not None and k < len(hidden) - 1 else hidden[k] for k in layers}

    def encode(
        self,
        texts: Sequence[str],
        layers: Sequence[int] | int | None = None,
        input_format: InputFormat = "single",
        pooling: Pooling = "mean",
        batch_size: int = 32,
        max_length: int | None = None,
        show_progress: bool = False,
    ) -> dict[int, np.ndarray]:
        """Pooled early-layer embeddings ``{layer: (len(texts), H) float32}`` of every requested layer, in one pass.

        Args:
            texts: the texts (queries and documents alike).
            layers: layer indices ``0..num_layers`` (0: the embedding layer); default: ``num_layers``.
            input_format: ``"single"`` or ``"pair"`` (module docstring).
            pooling: ``"mean"`` over the tokens (both copies in ``"pair"``) or ``"cls"``.
            max_length: truncation, special tokens included (default: :attr:`max_length`).

        Raises:
            EarlyLayerError: an empty list of texts, a non-string text, an unknown setting or a layer beyond the model.
        """
        _check_choice(input_format, INPUT_FORMATS, "input format")
        _check_choice(pooling, POOLINGS, "pooling")
        layers = [self.num_layers] if layers is None else [layers] if isinstance(layers, int) else list(layers)
        for layer in layers:
            check_layer(layer, self.num_layers, f"{self.source}: {self.num_layers} layers loaded")
        texts = list(texts)
        if not texts:
            raise EarlyLayerError("no texts to embed (an empty list): pass at least one text")
        bad = [i for i, text in enumerate(texts) if not isinstance(text, str)]
        if bad:
            raise EarlyLayerError(f"texts must be strings; items {bad[:10]} are not")
        max_length = max_length or self.max_length
        if max_length > encoder_max_length(self.encoder.config):
            raise EarlyLayerError(
                f"max_length {max_length} is longer than the {encoder_max_length(self.encoder.config)} positions the "
                f"encoder of {self.source} supports"
            )
        # Longest first, as sentence-transformers does: batches of similar lengths waste less padding.
        order = np.argsort([-len(text) for text in texts], kind="stable")
        pooled: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}
        for start in tqdm(range(0, len(texts), batch_size), disable=not show_progress, desc="early-layer embeddings"):
            batch = self.tokenize([texts[i] for i in order[start : start + batch_size]], input_format, max_length)
            for layer, states in self.layer_states(batch, layers).items():
                pooled[layer].append(pool(states, batch["attention_mask"], pooling).float().cpu().numpy())
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return {layer: np.concatenate(parts)[inverse] for layer, parts in pooled.items()}

    # -- export ----------------------------------------------------------------------------------------------------
    def export_encoder(
        self, num_layers: int, copied_layers: int | None = None, seed_from: int | None = None
    ) -> PreTrainedModel:
        """A stand-alone base model of ``num_layers`` layers: the embeddings and the first ``copied_layers`` layers
        (default: all ``num_layers``) copied from this encoder; the further layers seeded from this encoder's layers
        ``seed_from``, ``seed_from + 1``, ... (moved down to their new places), or newly initialised without
        ``seed_from``.

        Raises:
            EarlyLayerError: more copied layers than this encoder holds, more copied than total layers, or seed
                layers beyond the encoder.
        """
        copied_layers = num_layers if copied_layers is None else copied_layers
        if num_layers < 1:
            raise EarlyLayerError("a stand-alone encoder needs at least one layer (layer 0 is the embedding layer)")
        check_layer(copied_layers, self.num_layers, f"{self.source}: {self.num_layers} layers loaded")
        if not 0 <= copied_layers <= num_layers:
            raise EarlyLayerError(f"cannot copy {copied_layers} layers into a model of {num_layers} layers")
        seeded = num_layers - copied_layers if seed_from is not None else 0
        if seeded and not 0 <= seed_from <= self.num_layers - seeded:
            raise EarlyLayerError(
                f"cannot seed {seeded} layers from layer {seed_from} on: {self.source} has {self.num_layers} loaded"
            )
        config = _sub_config(self.full_config, num_layers)
        config.architectures = None
        state = {}
        for name, tensor in self.encoder.state_dict().items():
            index = _layer_index(name)
            if index < copied_layers:
                state[name] = tensor
            elif seeded and seed_from <= index < seed_from + seeded:
                state[_renumber_layer(name, copied_layers + index - seed_from)] = tensor
        model = _load_encoder(config, state, self.source, allow_missing_layers_from=copied_layers + seeded)
        return model.eval()

    def sentence_transformer(
        self,
        layer: int | None = None,
        input_format: InputFormat = "single",
        pooling: Pooling = "mean",
        max_length: int | None = None,
        encoder: PreTrainedModel | None = None,
    ) -> SentenceTransformer:
        """A ``SentenceTransformer``: this model's embeddings and first ``layer`` layers (or a given ``encoder``
        built by :meth:`export_encoder`), then pooling; cosine similarity. Same embeddings as :meth:`encode`."""
        _check_choice(input_format, INPUT_FORMATS, "input format")
        _check_choice(pooling, POOLINGS, "pooling")
        if encoder is None:
            layer = self.num_layers if layer is None else layer
            encoder = self.export_encoder(layer)
        encoder = copy.deepcopy(encoder)
        if input_format == "single" and _uses_token_types(encoder.config):
            _keep_document_token_type(encoder)
        max_length = max_length or self.max_length
        module_class = SelfPairTransformer if input_format == "pair" else Transformer
        with tempfile.TemporaryDirectory() as folder:
            encoder.save_pretrained(folder)
            self.tokenizer.save_pretrained(folder)
            transformer = module_class(folder, max_seq_length=max_length)
        pooling_module = PoolingModule(transformer.get_embedding_dimension(), pooling_mode=pooling)
        return SentenceTransformer(modules=[transformer, pooling_module], similarity_fn_name="cosine")


def check_layer(layer: int, available: int, what: str) -> None:
    """Raise :class:`EarlyLayerError` unless ``0 <= layer <= available``."""
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= available:
        raise EarlyLayerError(f"layer {layer!r} is beyond the model ({what}): use a layer from 0 to {available}")


def pool(states: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling = "mean") -> torch.Tensor:
    """``(B, L, H)`` token states to ``(B, H)``: the mean over the unmasked tokens, or the first ([CLS]) token."""
    if pooling == "cls":
        return states[:, 0]
    mask = attention_mask.to(states.dtype)[..., None]
    return (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def pool_document_states(
    model: MiceForSequenceClassification, states: MiceDocumentStates, pooling: Pooling = "mean"
) -> torch.Tensor:
    """A MICE model's stored document states, pooled: the documents' early-layer embeddings at the fusion layer
    (equal to :meth:`EarlyLayerEncoder.encode` of the same texts, ``input_format="single"``), at no extra cost."""
    _check_choice(pooling, POOLINGS, "pooling")
    hidden = states.hidden_states
    norm = _final_norm(model.mice.backbone)
    if norm is not None:
        hidden = norm(hidden.to(next(norm.parameters()).dtype))
    return pool(hidden, states.attention_mask.to(hidden.device), pooling)


def early_layer_embeddings(
    source: str | Path | EarlyLayerEncoder,
    texts: Sequence[str],
    layer: int | None = None,
    input_format: InputFormat = "single",
    pooling: Pooling = "mean",
    batch_size: int = 32,
    max_length: int | None = None,
) -> np.ndarray:
    """Early-layer embeddings ``(len(texts), H)`` of a cross-encoder or MICE folder at ``layer`` (default: the last
    layer it has, a MICE model's fusion layer). See :class:`EarlyLayerEncoder`."""
    encoder = source if isinstance(source, EarlyLayerEncoder) else EarlyLayerEncoder.from_pretrained(source, layer)
    layer = encoder.num_layers if layer is None else layer
    return encoder.encode(texts, [layer], input_format, pooling, batch_size, max_length)[layer]


def save_early_layer_model(
    source: str | Path,
    output: str | Path,
    layer: int | None = None,
    input_format: InputFormat = "single",
    pooling: Pooling = "mean",
    max_length: int | None = None,
) -> Path:
    """Write the ``SentenceTransformer`` folder of a cross-encoder's or MICE model's first ``layer`` layers (default:
    all of a cross-encoder's, a MICE model's independent layers); returns the folder."""
    model = EarlyLayerEncoder.from_pretrained(source, layer).sentence_transformer(
        layer, input_format, pooling, max_length
    )
    model.save(str(output))
    return Path(output)


def _layer_number_position(parts: list[str]) -> int | None:
    """Where the layer number stands in a base-model parameter name's parts (``encoder.layer.3.…``,
    ``layers.3.…``); None outside layers."""
    for position, part in enumerate(parts[:-1]):
        if part in ("layer", "layers") and parts[position + 1].isdigit():
            return position + 1
    return None


def _layer_index(name: str) -> int:
    """The layer a base-model parameter belongs to; -1 outside layers."""
    parts = name.split(".")
    position = _layer_number_position(parts)
    return -1 if position is None else int(parts[position])


def _renumber_layer(name: str, index: int) -> str:
    """``name`` of a layer parameter moved to layer ``index``."""
    parts = name.split(".")
    position = _layer_number_position(parts)
    if position is None:
        raise ValueError(f"{name} is not a layer parameter")
    parts[position] = str(index)
    return ".".join(parts)


def _load_encoder(
    config, state: dict[str, torch.Tensor], source: str, allow_missing_layers_from: int | None = None
) -> PreTrainedModel:
    """The family's base model built from ``config``, its weights loaded from ``state``; layers from
    ``allow_missing_layers_from`` on may be absent (they keep their fresh initialisation)."""
    model = AutoModel.from_config(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    unexpected = [name for name in unexpected if _layer_index(name) < config.num_hidden_layers]
    # The [CLS] pooler of BERT-like base models is never read by an embedding model (it pools token states); a
    # MICE backbone without one keeps it as initialised, so that the folder loads without "missing weights".
    missing = [name for name in missing if not name.startswith("pooler.")]
    if allow_missing_layers_from is not None:
        missing = [name for name in missing if _layer_index(name) < allow_missing_layers_from]
    if missing or unexpected:
        raise EarlyLayerError(
            f"{source}: weights do not fit the encoder (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    return model


def _keep_document_token_type(encoder: PreTrainedModel) -> None:
    """Leave the encoder a single token type, the document's (type 1), so that plain tokenizer output (type 0
    everywhere) is embedded as the cross-encoder embeds a document."""
    embeddings = encoder.get_input_embeddings()
    module = getattr(encoder.embeddings, "token_type_embeddings", None) if hasattr(encoder, "embeddings") else None
    if module is None or embeddings is None:
        raise EarlyLayerError(f"cannot fix the token type of a {encoder.config.model_type} encoder")
    document_type = torch.nn.Embedding(1, module.embedding_dim)
    document_type.weight.data.copy_(module.weight.data[1:2])
    encoder.embeddings.token_type_embeddings = document_type
    encoder.config.type_vocab_size = 1


class SelfPairTransformer(Transformer):
    """A sentence-transformers ``Transformer`` that feeds every text paired with itself (``[CLS] t [SEP] t [SEP]``),
    the only kind of input a cross-encoder saw in training. Saved folders name this class in ``modules.json``."""

    def preprocess(self, inputs, prompt=None, **kwargs):
        return super().preprocess([(text, text) for text in inputs], prompt, **kwargs)
