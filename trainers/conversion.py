"""Convert a trained cross-encoder into a MICE model that ranks like it, with no relevance labels.

The parent cross-encoder is both the starting point and the teacher. MICE-ℓk+m takes its embeddings, its first
``k + m`` layers and its classification head (``MiceForSequenceClassification.from_backbone``); what changes is that
the first ``k`` layers now read query and document apart, and the next ``m`` let only the query attend to the
document's frozen states. The student then learns to undo that change on the user's own corpus:

1. **training queries**: the folder's own queries (the ``train`` split's ids when ``qrels/train.tsv`` exists,
   otherwise every query that no other qrels split judges, so evaluation queries stay unseen; no judgement is read),
   or pseudo-queries made from the corpus when the folder has none (``ranking_data.synthetic_queries``);
2. **the parent's scores**: BM25's top ``depth`` documents for each query, scored by the parent (raw logits), saved
   as a teacher dataset (resumable);
3. **distillation** on those lists (or ``list_size`` documents of each) (``ConversionLoss``): the KL divergence between
   the parent's and the student's score distributions over each list (ranking), the mean squared error of the raw
   logits (the student keeps the parent's score scale, so thresholds and score fusions carry over) and, optionally,
   the alignment of the student's query states with the parent's at each interaction layer (which the student's
   inherited weights make meaningful: the parent's layer ``k + i`` is the student's interaction layer ``i``);
4. **fidelity**: on held-out queries, how often the student's ranking of the parent's candidates agrees with the
   parent's (Kendall's tau, top-1 and top-10 agreement), measured without any label.

With ``freeze_independent_layers`` (the default) the embeddings and the first ``k`` layers keep the parent's weights,
so each training document is encoded once (``trainers.frozen_documents``) and a step costs the query side only;
MICE's document states then stay those of the parent's own lower layers.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ranking_data.work_folders import claim_folder

from .batching import find_mice_model
from .frozen_documents import DocumentStateMemo
from .losses.listwise import ListwiseObjective, rows_by_length
from .trainer import DistillationTrainer, DistillationTrainingArguments

logger = logging.getLogger(__name__)

QUERY_SOURCES = ("auto", "dataset", "corpus")
WORK_FOLDER = "_conversion"  # under the output folder; removed once the model is saved
CONVERSION_RECORD = "conversion.json"


class ConversionError(ValueError):
    """A conversion that cannot run as asked; the message says what to change."""


@dataclass
class ConversionConfig:
    """What to convert and how. Every field has a command-line flag of the same name (``mice convert --help``)."""

    cross_encoder: str = field(metadata={"help": "the parent: a cross-encoder folder or Hub id (one output label)"})
    data: str = field(
        metadata={"help": "a BEIR folder (corpus.jsonl, queries.jsonl, qrels/) or a folder with only corpus.jsonl"}
    )
    output: str = field(metadata={"help": "where the MICE model is written (resumes from what is there)"})
    fusion_layer: int | None = field(
        default=None,
        metadata={"help": "layers that read query and document apart (default: 2, or depth - 4 above 6 layers)"},
    )
    interaction_layers: int | None = field(
        default=None, metadata={"help": "interaction layers above them (default: all the rest, no layer dropped)"}
    )
    steps: int = field(default=1000, metadata={"help": "training steps"})
    queries: Literal["auto", "dataset", "corpus"] = field(
        default="auto",
        metadata={
            "help": "training queries: 'dataset' (the folder's queries.jsonl), 'corpus' (pseudo-queries made from the "
            "documents) or 'auto' (the folder's when it has some, else made from the corpus)"
        },
    )
    max_queries: int = field(default=4000, metadata={"help": "at most this many training queries (random sample)"})
    held_out_queries: int = field(
        default=200, metadata={"help": "queries kept out of training to measure agreement with the parent"}
    )
    depth: int = field(default=30, metadata={"help": "BM25 candidates per query that the parent scores"})
    list_size: int | None = field(
        default=None,
        metadata={
            "help": "candidates per query in a training list (default: all `depth`; with the lower layers frozen a "
            "document costs little more than its share of the interaction layers)"
        },
    )
    batch_size: int = field(default=8, metadata={"help": "queries per training step"})
    learning_rate: float = field(default=1e-4, metadata={"help": "peak learning rate (linear decay)"})
    warmup_steps: int = field(default=50, metadata={"help": "linear warm-up steps"})
    freeze_independent_layers: bool = field(
        default=True,
        metadata={"help": "keep the parent's embeddings and lower layers (documents encoded once; cheap steps)"},
    )
    kl_weight: float = field(default=1.0, metadata={"help": "weight of the listwise KL divergence"})
    temperature: float = field(default=1.0, metadata={"help": "temperature of the KL divergence"})
    mse_weight: float = field(default=1.0, metadata={"help": "weight of the raw-logit mean squared error"})
    alignment_weight: float = field(
        default=0.0, metadata={"help": "weight of the query-state alignment with the parent (0: off)"}
    )
    max_query_length: int = field(default=32, metadata={"help": "query tokens kept, special tokens included"})
    max_document_length: int = field(default=256, metadata={"help": "document tokens kept, special tokens included"})
    mask_cls_to_doc: bool = field(
        default=True, metadata={"help": "the query [CLS] may not cross-attend to the document (the paper's MICE)"}
    )
    mask_query_to_cls: bool = field(
        default=True,
        metadata={
            "help": "in the interaction layers, query tokens may not attend to the query [CLS] (the paper's MICE)"
        },
    )
    parent_scores: str | None = field(
        default=None,
        metadata={"help": "an existing folder of parent scores to reuse (e.g. across a sweep); default: build one"},
    )
    seed: int = field(default=12, metadata={"help": "seed of the query sample, the lists and training"})
    bf16: bool = field(default=False, metadata={"help": "bf16 mixed precision (GPU)"})
    device: str | None = field(default=None, metadata={"help": "torch device for the parent's scoring"})
    scoring_batch_size: int = field(default=64, metadata={"help": "pairs per forward pass when the parent scores"})

    def __post_init__(self) -> None:
        if self.queries not in QUERY_SOURCES:
            raise ConversionError(f"queries must be one of {QUERY_SOURCES}, got {self.queries!r}")
        positive = ("steps", "max_queries", "depth", "batch_size", "scoring_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConversionError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.list_size is not None and self.list_size < 2:
            raise ConversionError(f"list_size must be at least 2 (a ranking needs two documents), got {self.list_size}")
        if self.list_size is not None and self.list_size > self.depth:
            raise ConversionError(f"list_size ({self.list_size}) cannot exceed depth ({self.depth})")
        if min(self.kl_weight, self.mse_weight, self.alignment_weight) < 0 or not (
            self.kl_weight or self.mse_weight or self.alignment_weight
        ):
            raise ConversionError("the objective weights must be non-negative and not all zero")
        if self.temperature <= 0:
            raise ConversionError(f"temperature must be positive, got {self.temperature}")


@dataclass
class ParentInfo:
    """What the conversion needs to know of the parent cross-encoder."""

    path: str
    family: str
    depth: int
    max_length: int | None  # the longest pair it reads (its tokenizer's limit), None when unlimited
    positions: int  # the longest sequence its position embeddings allow: MICE encodes a document alone up to it


def inspect_parent(path: str) -> ParentInfo:
    """Check that ``path`` is a one-label cross-encoder of a family MICE supports; raise ``ConversionError`` if not."""
    from transformers import AutoConfig

    from modeling_mice.configuration_mice import SUPPORTED_ENCODERS, encoder_max_length

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise ConversionError(
            f"cannot read a model config at {path!r}: pass a cross-encoder folder (config.json, weights, tokenizer) "
            "or a Hub id"
        ) from error
    if config.model_type == "mice":
        raise ConversionError(
            f"{path} is already a MICE model; convert the cross-encoder it came from (its training_record.json names it)"
        )
    if config.model_type not in SUPPORTED_ENCODERS:
        raise ConversionError(
            f"{path} is a {config.model_type!r} model; MICE supports the encoder families {', '.join(SUPPORTED_ENCODERS)}"
        )
    architectures = config.architectures or []
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        raise ConversionError(
            f"{path} is not a cross-encoder (its architectures are {architectures or 'unstated'}, with no "
            "sequence-classification head): it looks like a bi-encoder or a bare encoder. Pass a trained cross-encoder, "
            "or train one first (mice train, model_type cross-encoder)"
        )
    if config.num_labels != 1:
        raise ConversionError(
            f"{path} has {config.num_labels} output labels; conversion distils a re-ranker's single relevance score"
        )
    return ParentInfo(
        path, config.model_type, config.num_hidden_layers, _parent_max_length(path), encoder_max_length(config)
    )


def _parent_max_length(path: str) -> int | None:
    """The longest pair the parent reads: its tokenizer's ``model_max_length`` (sentence-transformers' CrossEncoder
    saves its ``max_length`` there), or None when the tokenizer sets no real limit."""
    from transformers import AutoTokenizer

    try:
        limit = AutoTokenizer.from_pretrained(path).model_max_length
    except (OSError, ValueError):
        return None
    return int(limit) if limit and limit < 1_000_000 else None


def resolve_layers(config: ConversionConfig, parent: ParentInfo) -> tuple[int, int]:
    """``(fusion_layer, interaction_layers)`` with the defaults filled in and checked against the parent's depth.

    The default keeps four interaction layers (all the layers above layer 2 for a parent of up to six layers, e.g.
    ℓ2+4 for a 6-layer MiniLM; ℓ(depth-4)+4 for a deeper one): with only two trainable interaction layers (ℓ4+2) the
    converted MiniLM kept 59% of its parent's nDCG@10, with four (ℓ2+4) 94% (docs/results.md, "Converting a trained
    cross-encoder"), while re-ranking about 10× faster with pre-encoded documents.
    """
    depth = parent.depth
    if depth < 2:
        raise ConversionError(
            f"the parent has {depth} layer(s); MICE needs at least 2 (one independent, one interaction)"
        )
    default_fusion = depth - 4 if depth > 6 else max(1, min(2, depth - 2))
    fusion = config.fusion_layer if config.fusion_layer is not None else default_fusion
    if not 1 <= fusion < depth:
        raise ConversionError(
            f"fusion_layer={fusion} is outside the parent's {depth} layers: choose 1 to {depth - 1} (layers below it "
            "read query and document apart, at least one layer above it lets them interact)"
        )
    interaction = config.interaction_layers if config.interaction_layers is not None else depth - fusion
    if not 1 <= interaction <= depth - fusion:
        raise ConversionError(
            f"interaction_layers={interaction} with fusion_layer={fusion}: the parent has {depth} layers, so choose "
            f"1 to {depth - fusion} interaction layers"
        )
    if interaction == 1 and config.mask_cls_to_doc:
        raise ConversionError(
            "one interaction layer with mask_cls_to_doc leaves the [CLS] blind to the document; use 2 or more, or "
            "mask_cls_to_doc=False"
        )
    return fusion, interaction


# ----------------------------------------------------------------------------------------------------------------------
# Training queries and the parent's scores
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class ConversionData:
    """The corpus and the training queries of a conversion, with where the queries came from."""

    name: str
    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    source: str


def _folder_queries(folder: Path) -> tuple[dict[str, str], str] | None:
    """The folder's own training queries and a description, or None when it has none to offer."""
    from ranking_data.beir import read_jsonl, read_qrels

    path = folder / "queries.jsonl"
    if not path.is_file():
        return None
    queries = {str(q["_id"]): q["text"] for q in read_jsonl(path, ("_id", "text"))}
    splits = {p.stem: p for p in sorted((folder / "qrels").glob("*.tsv"))} if (folder / "qrels").is_dir() else {}
    if "train" in splits:
        kept = {q: queries[q] for q in read_qrels(splits["train"]) if q in queries}
        return kept, "queries of the train split (ids only; no judgement read)"
    judged = {q for path in splits.values() for q in read_qrels(path)}
    kept = {q: text for q, text in queries.items() if q not in judged}
    excluded = f", excluding the {len(judged)} judged in {', '.join(splits)}" if splits else ""
    return kept, f"the folder's queries{excluded}"


def load_conversion_data(config: ConversionConfig) -> ConversionData:
    """The corpus and up to ``max_queries + held_out_queries`` training queries (see ``ConversionConfig.queries``)."""
    import random

    from ranking_data.beir import BeirFormatError, read_corpus
    from ranking_data.synthetic_queries import generate_queries

    folder = Path(config.data)
    if not (folder / "corpus.jsonl").is_file():
        raise ConversionError(f"{folder} holds no corpus.jsonl: pass a BEIR folder or a folder with a corpus.jsonl")
    try:
        corpus = read_corpus(folder / "corpus.jsonl")
        wanted = config.max_queries + config.held_out_queries
        own = None if config.queries == "corpus" else _folder_queries(folder)
    except BeirFormatError as error:
        raise ConversionError(f"{error}; fix the file or point --data at another folder") from error
    if config.queries == "dataset" and not own:
        raise ConversionError(
            f"{folder} has no usable queries.jsonl (or every query is judged for evaluation); use --queries corpus"
        )
    if own and own[0]:
        queries, source = own
        if len(queries) > wanted:
            kept = sorted(random.Random(config.seed).sample(sorted(queries), wanted))
            queries = {q: queries[q] for q in kept}
    else:
        queries = generate_queries(corpus, wanted, seed=config.seed)
        source = "pseudo-queries generated from the corpus (titles, leading sentences, text spans)"
    if len(queries) <= config.held_out_queries:
        raise ConversionError(
            f"only {len(queries)} training queries, not more than the {config.held_out_queries} held out: lower "
            "held_out_queries or give more queries"
        )
    return ConversionData(folder.name, corpus, queries, source)


def build_parent_scores(config: ConversionConfig, data: ConversionData, folder: str | Path):
    """Score BM25's top ``depth`` for every training query with the parent; save and return the teacher dataset.

    Resumable: finished batches are kept next to ``folder`` until the dataset is saved.
    """
    from ranking_data.beir import document_text
    from ranking_data.bm25 import BM25Retriever
    from ranking_data.candidates import candidates_from_ranking
    from ranking_data.teacher_data import TeacherDataset, build_teacher_dataset
    from ranking_data.teachers import CrossEncoderTeacher

    folder = Path(folder)
    if (folder / "train").is_dir():
        return TeacherDataset.load_from_disk(folder)
    retriever = BM25Retriever().index(data.corpus)
    run = retriever.search(data.queries, k=config.depth)
    candidates = candidates_from_ranking(run, {}, config.depth, keep_positives=False, query_ids=list(data.queries))
    teacher = CrossEncoderTeacher(config.cross_encoder, batch_size=config.scoring_batch_size, device=config.device)
    dataset = build_teacher_dataset(
        candidates,
        data.queries,
        {doc_id: document_text(doc) for doc_id, doc in data.corpus.items()},
        teacher,
        folder.with_name(folder.name + ".partial"),
        batch_size=16,
        metadata={
            "source": data.name,
            "data": {"dataset": data.name, "queries": len(candidates), "query_source": data.source},
            "candidates": {"first_stage": "BM25", "depth": config.depth, "positives_added": False},
        },
    )
    dataset.save_to_disk(folder)
    shutil.rmtree(folder.with_name(folder.name + ".partial"))
    return dataset


def split_held_out(dataset, held_out: int, list_size: int | None, seed: int):
    """``(train, held_out)`` slices of a teacher dataset's lists; lists shorter than ``list_size`` (default 2) are
    left out."""
    list_size = list_size or 2
    lengths = np.array([len(ids) for ids in dataset.train["document_ids"]])
    usable = np.flatnonzero(lengths >= list_size)
    if len(usable) < len(lengths):
        logger.info(
            "%d of %d queries have fewer than %d candidates: left out",
            len(lengths) - len(usable),
            len(lengths),
            list_size,
        )
    order = np.random.default_rng(seed).permutation(usable)
    if len(order) <= held_out:
        raise ConversionError(
            f"only {len(order)} queries have at least {list_size} BM25 candidates: give more queries or a smaller "
            "list_size"
        )
    return dataset.train.select(sorted(order[held_out:])), dataset.train.select(sorted(order[:held_out]))


# ----------------------------------------------------------------------------------------------------------------------
# The objective
# ----------------------------------------------------------------------------------------------------------------------


def joint_pairs(
    query_ids: Tensor, query_mask: Tensor, document_ids: Tensor, document_mask: Tensor, config
) -> dict[str, Tensor]:
    """The parent's input for MICE's separate inputs: ``[CLS] q [SEP] d [SEP]`` per pair, right-padded.

    Query ``i`` is paired with documents ``i*N/Q .. (i+1)*N/Q - 1`` (MICE's rule). The document's own [CLS] is
    replaced by the pair separators of the family (``[SEP]``, or ``</s></s>`` for RoBERTa and MPNet), which is how
    the parent's tokenizer joins a pair; families with token types get type 1 on the document side.
    """
    per_query = document_ids.shape[0] // query_ids.shape[0]
    separators = [config.sep_token_id] * ((config.pair_separators or 1) - 1)
    rows, types = [], []
    for index in range(document_ids.shape[0]):
        query = query_ids[index // per_query][query_mask[index // per_query].bool()].tolist()
        document = document_ids[index][document_mask[index].bool()].tolist()[1:]
        rows.append(query + separators + document)
        types.append([0] * len(query) + [1] * (len(separators) + len(document)))
    length = max(map(len, rows))
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    device = query_ids.device
    return {
        "input_ids": torch.tensor([r + [pad] * (length - len(r)) for r in rows], device=device),
        "attention_mask": torch.tensor([[1] * len(r) + [0] * (length - len(r)) for r in rows], device=device),
        "token_type_ids": torch.tensor([t + [0] * (length - len(t)) for t in types], device=device),
    }


class ConversionLoss(ListwiseObjective, nn.Module):
    r"""Make a MICE student rank like its parent cross-encoder.

    For a list of documents :math:`d_1..d_n` of query :math:`q`, with the parent's raw scores :math:`t_i` and the
    student's :math:`s_i`:

    .. math::

        \mathcal{L} = w_{KL}\, T^2\, \mathrm{KL}\big(\mathrm{softmax}(t/T)\,\|\,\mathrm{softmax}(s/T)\big)
            + w_{MSE}\, \frac{1}{n}\sum_i (s_i - t_i)^2
            + w_{A}\, \frac{1}{|\mathcal{A}|}\sum_{(\ell, \ell') \in \mathcal{A}}
              \frac{\lVert h^{s}_{\ell} - h^{t}_{\ell'} \rVert^2}{\lVert h^{t}_{\ell'} \rVert^2}

    The KL term is the listwise distillation of Hinton et al. (2015) as used for re-rankers (Lightning-IR's and
    PyLate's distillation losses); the MSE term keeps the parent's score scale (Hofstätter et al. 2020 use it on
    margins). The alignment term compares the student's query-token states :math:`h^s` after each interaction layer
    with the parent's states of the same tokens after the same layer :math:`h^t` (its last one with the parent's
    final [CLS], which both heads read), as in TinyBERT's intermediate-layer distillation (Jiao et al. 2020); it needs
    the parent in memory and one forward pass of it per step.

    Targets: the parent's ``scores`` of each list (a teacher dataset built by ``build_parent_scores``).
    """

    accepted_targets = ("scores",)
    min_list_size = 2

    def __init__(
        self,
        model,
        parent: nn.Module | None = None,
        kl_weight: float = 1.0,
        temperature: float = 1.0,
        mse_weight: float = 1.0,
        alignment_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if alignment_weight and parent is None:
            raise ValueError("alignment needs the parent model")
        self.model = model
        self.parent = parent.eval().requires_grad_(False) if parent is not None else None
        self.kl_weight, self.temperature = kl_weight, temperature
        self.mse_weight, self.alignment_weight = mse_weight, alignment_weight

    def get_config_dict(self) -> dict[str, float]:
        return {
            "kl_weight": self.kl_weight,
            "temperature": self.temperature,
            "mse_weight": self.mse_weight,
            "alignment_weight": self.alignment_weight,
        }

    def forward(
        self,
        queries: Sequence[str],
        documents: Sequence[Sequence[str]],
        scores: Sequence[Tensor],
        document_states: DocumentStateMemo | None = None,
    ) -> dict[str, Tensor]:
        """The weighted loss terms of a batch of lists (averaged over lists)."""
        mice = find_mice_model(self.model)
        tokenizer = self.model.tokenizer
        device = mice.device
        terms: dict[str, Tensor] = {}
        total = len(queries)
        for length, rows in rows_by_length(documents).items():
            query_inputs = mice.tokenize_queries(tokenizer, [queries[row] for row in rows])
            texts = [doc for row in rows for doc in documents[row]]
            document_inputs = mice.tokenize_documents(tokenizer, texts)
            if document_states is not None:
                states = document_states.states(texts).to(device)
            else:
                states = mice.encode_documents(**document_inputs)
            output = mice.score(**query_inputs, document_states=states, output_hidden_states=self.alignment_weight > 0)
            student = output.logits[:, 0].float().view(len(rows), length)
            teacher = torch.stack([torch.as_tensor(scores[row], dtype=torch.float32) for row in rows]).to(device)
            share = len(rows) / total
            group = {}
            if self.kl_weight:
                temperature = self.temperature
                kl = F.kl_div(
                    F.log_softmax(student / temperature, dim=-1),
                    F.log_softmax(teacher / temperature, dim=-1),
                    log_target=True,
                    reduction="batchmean",
                )
                group["kl"] = self.kl_weight * temperature**2 * kl
            if self.mse_weight:
                group["mse"] = self.mse_weight * F.mse_loss(student, teacher)
            if self.alignment_weight:
                group["alignment"] = self.alignment_weight * self.alignment(
                    mice, query_inputs, document_inputs, output.hidden_states
                )
            for name, value in group.items():
                terms[name] = terms.get(name, 0.0) + share * value
        return terms

    def alignment(self, mice, query_inputs, document_inputs, student_states) -> Tensor:
        """Mean relative squared distance between the student's query states and the parent's, layer by layer."""
        config = mice.config
        query_ids, query_mask = query_inputs["query_input_ids"], query_inputs["query_attention_mask"]
        with torch.no_grad():
            joint = joint_pairs(
                query_ids,
                query_mask,
                document_inputs["document_input_ids"],
                document_inputs["document_attention_mask"],
                config,
            )
            parent_states = self.parent(**joint, output_hidden_states=True).hidden_states
        per_query = joint["input_ids"].shape[0] // query_ids.shape[0]
        valid = query_mask.repeat_interleave(per_query, dim=0).bool()
        length = valid.shape[1]
        pairs = []
        # The student's states entering the interaction layers come from its lower layers: worth aligning only
        # when those train.
        first = 0 if any(p.requires_grad for p in mice.mice.backbone.parameters()) else 1
        last = len(student_states) - 1
        for index in range(first, last):
            target = parent_states[config.fusion_layer + index][:, :length]
            pairs.append((student_states[index][valid], target[valid]))
        pairs.append((student_states[last][:, 0], parent_states[-1][:, 0]))  # the [CLS] both heads read
        distances = [
            (student.float() - target.float()).pow(2).sum(-1).mean() / target.float().pow(2).sum(-1).mean()
            for student, target in pairs
        ]
        return torch.stack(distances).mean()


class ConversionTrainer(DistillationTrainer):
    """``DistillationTrainer`` whose loss is a ``ConversionLoss`` over MICE's separate-input forward.

    The student is called directly (not through a distributed wrapper): a conversion runs in one process.
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.document_states is not None:
            # Frozen lower layers run without dropout, so queries match the cached documents (and inference).
            find_mice_model(self.model).mice.backbone.eval()
        terms = self.loss(inputs["query"], inputs["documents"], inputs["label"]["scores"], self.document_states)
        self.track_loss_components(terms)
        loss = torch.stack(list(terms.values())).sum()
        return (loss, {}) if return_outputs else loss


# ----------------------------------------------------------------------------------------------------------------------
# Fidelity and the whole conversion
# ----------------------------------------------------------------------------------------------------------------------


@torch.inference_mode()
def agreement(model, tokenizer, rows: Sequence[Mapping[str, Any]], batch_size: int = 32) -> dict[str, float]:
    """How closely a MICE model ranks each list like the scores it was given (the parent's), with no label.

    Returns the mean Kendall's tau of the two orderings, and the share of lists whose top document (``top1``) and
    top-10 set (``top10_overlap``, the mean overlap) agree.
    """
    from scipy.stats import kendalltau

    taus, top1, overlap = [], [], []
    for row in rows:
        documents, teacher = list(row["documents"]), np.asarray(row["scores"], dtype=np.float64)
        query = model.tokenize_queries(tokenizer, [row["query"]])
        student = []
        for start in range(0, len(documents), batch_size):
            states = model.encode_documents(
                **model.tokenize_documents(tokenizer, documents[start : start + batch_size])
            )
            student += model.score(**query, document_states=states).logits[:, 0].float().tolist()
        student = np.asarray(student)
        taus.append(kendalltau(student, teacher).statistic)
        top1.append(float(np.argmax(student) == np.argmax(teacher)))
        k = min(10, len(documents))
        overlap.append(len(set(np.argsort(-student)[:k]) & set(np.argsort(-teacher)[:k])) / k)
    return {
        "queries": len(rows),
        "kendall_tau": float(np.nanmean(taus)),
        "top1_agreement": float(np.mean(top1)),
        "top10_overlap": float(np.mean(overlap)),
    }


@dataclass
class ConversionResult:
    """What a conversion produced: the model folder and its record (also saved as ``conversion.json`` there)."""

    output: str
    record: dict[str, Any]


def student_document_length(config: ConversionConfig, parent: ParentInfo) -> int:
    """The student's longest document (special tokens included): ``config.max_document_length``, but no longer than
    the parent's positions nor than the longest document the parent reads in a pair.

    A pair is truncated only by what its query takes, so next to a one-token query the parent reads
    ``max_length - 4`` document tokens ([CLS] q [SEP] d [SEP]; one fewer where pairs take two separators, so the cap
    is an upper bound there); MICE adds its own [CLS] and [SEP]. Capping the
    student at ``max_length - max_query_length`` instead would hide from it text that its teacher scored whenever the
    query is short (most debian-known-item documents are longer than 64 tokens, most queries about 11).
    """
    length = min(config.max_document_length, parent.positions)
    return length if parent.max_length is None else min(length, parent.max_length - 2)


def build_student(config: ConversionConfig, parent: ParentInfo, fusion: int, interaction: int):
    """MICE-ℓ``fusion``+``interaction`` built from the parent, as a sentence-transformers ``CrossEncoder``."""
    import tempfile

    from sentence_transformers.cross_encoder import CrossEncoder
    from transformers import AutoTokenizer

    from modeling_mice import MiceForSequenceClassification

    from .frozen_documents import freeze_independent_layers
    from .training import dropout_overrides

    document_length = student_document_length(config, parent)
    mice = MiceForSequenceClassification.from_backbone(
        parent.path,
        # A conversion fits a deterministic target in a few hundred steps: dropout only slows it down.
        encoder_kwargs=dropout_overrides(parent.path, 0.0),
        fusion_layer=fusion,
        interaction_layers=interaction,
        max_query_length=config.max_query_length,
        max_document_length=document_length,
        mask_cls_to_doc=config.mask_cls_to_doc,
        mask_query_to_cls=config.mask_query_to_cls,
    )
    with tempfile.TemporaryDirectory() as folder:
        mice.save_pretrained(folder)
        AutoTokenizer.from_pretrained(parent.path).save_pretrained(folder)
        model = CrossEncoder(folder, trust_remote_code=True, device=config.device)
    if config.freeze_independent_layers:
        freeze_independent_layers(model[0].model)
    return model


def convert(config: ConversionConfig) -> ConversionResult:
    """Convert ``config.cross_encoder`` into MICE on ``config.data``; resumes from what ``config.output`` holds.

    Raises:
        ConversionError: the parent, the data or the settings cannot make a conversion (the message says why).
    """
    from transformers import AutoModelForSequenceClassification, set_seed

    from .training_record import build_training_record, write_training_record

    started = time.perf_counter()
    parent = inspect_parent(config.cross_encoder)
    fusion, interaction = resolve_layers(config, parent)
    output = Path(config.output)
    work = output / WORK_FOLDER
    data = load_conversion_data(config)
    # Where the parent's scores are computed and the checkpoints kept: resumed only by the same conversion.
    left_out = ("output", "device", "scoring_batch_size")
    claim_folder(work, {k: v for k, v in asdict(config).items() if k not in left_out}, "conversion")
    scores_folder = Path(config.parent_scores) if config.parent_scores else work / "parent_scores"
    dataset = build_parent_scores(config, data, scores_folder)
    scoring_seconds = time.perf_counter() - started
    train_rows, held_out_rows = split_held_out(dataset, config.held_out_queries, config.list_size, config.seed)
    dataset.train = train_rows
    rows = dataset.training_rows(list_size=config.list_size, sampling="random", seed=config.seed)

    set_seed(config.seed)
    model = build_student(config, parent, fusion, interaction)
    parent_model = None
    if config.alignment_weight:
        parent_model = AutoModelForSequenceClassification.from_pretrained(parent.path).to(model.device)
    loss = ConversionLoss(
        model, parent_model, config.kl_weight, config.temperature, config.mse_weight, config.alignment_weight
    )
    args = DistillationTrainingArguments(
        output_dir=str(work / "checkpoints"),
        max_steps=config.steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=min(config.warmup_steps, config.steps // 10),
        # As for the quickstart's short runs: clipping at 1 cuts every step (gradient norms are a few units).
        max_grad_norm=0.0,
        bf16=config.bf16,
        seed=config.seed,
        data_seed=config.seed,
        save_strategy="steps",
        save_steps=max(config.steps // 4, 1),
        save_total_limit=1,
        logging_steps=max(config.steps // 20, 1),
        report_to=[],
        dataloader_drop_last=True,
    )
    trainer = ConversionTrainer(model=model, args=args, train_dataset=rows, loss=loss)
    from .training import last_complete_checkpoint

    checkpoint = last_complete_checkpoint(args.output_dir)
    if checkpoint:
        logger.info("resuming the conversion from %s", checkpoint)
    result = trainer.train(resume_from_checkpoint=checkpoint)

    mice = model[0].model
    mice.eval()
    dataset.train = held_out_rows
    fidelity = agreement(mice, model.tokenizer, list(dataset.training_rows()))
    trainer.save_model(str(output))
    record = build_training_record(
        model,
        loss,
        args,
        backbone=parent.path,
        teacher={"name": parent.path, "description": "the parent cross-encoder's raw logits"},
        data={
            "dataset": data.name,
            "train_queries": len(train_rows),
            "list_size": config.list_size or config.depth,
            "sampling": "random",
            "query_source": data.source,
        },
        train_runtime_s=result.metrics.get("train_runtime"),
        final_train_loss=result.training_loss,
    )
    record["conversion"] = {
        "parent": parent.path,
        "settings": asdict(config),
        "fusion_layer": fusion,
        "interaction_layers": interaction,
        "max_document_length": mice.config.max_document_length,  # the settings' value after the parent's cap
        "query_source": data.source,
        "training_queries": len(train_rows),
        "held_out_queries": len(held_out_rows),
        "agreement_with_parent": fidelity,
        "parent_scoring_s": scoring_seconds,
        "total_s": time.perf_counter() - started,
    }
    write_training_record(output, record)
    (output / CONVERSION_RECORD).write_text(json.dumps(record["conversion"], indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(work, ignore_errors=True)  # checkpoints, and the parent's scores unless kept elsewhere
    return ConversionResult(str(output), record)
