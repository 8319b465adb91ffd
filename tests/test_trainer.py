"""DistillationTrainer on tiny models: MICE-aware batching against the joint-pair path, gradients, bad rows."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
from tiny_models import FAMILIES, build_tiny_backbone
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoTokenizer

from modeling_mice import MiceForSequenceClassification
from trainers import (
    CombinedLoss,
    DistillationTrainer,
    DistillationTrainingArguments,
    DistillRankNetLoss,
    DocumentStateMemo,
    InfoNCELoss,
    KLDivergenceLoss,
    MarginMSELoss,
    find_mice_model,
    freeze_independent_layers,
    list_inputs_for,
    score_lists,
)

QUERIES = [
    "how do i configure the network interfaces file on a debian server",
    "which package provides the command to list open files",
]
DOCUMENTS = [
    [
        "The interfaces file in /etc/network describes the network interfaces.",
        "ifupdown brings interfaces up and down.",
        "apt installs packages.",
        "The kernel drives the hardware.",
    ],
    ["lsof lists open files.", "The procps package has ps and top.", "dpkg -S finds a file's package.", "Bash."],
]
SCORES = [[4.0, 2.5, -1.0, 0.0], [3.0, 0.5, 1.5, -2.0]]
LABELS = [[1, 0, 0, 0], [1, 0, 0, 0]]


def rows(n: int = 2) -> Dataset:
    return Dataset.from_dict(
        {
            "query": (QUERIES * n)[:n],
            "documents": (DOCUMENTS * n)[:n],
            "scores": (SCORES * n)[:n],
            "labels": (LABELS * n)[:n],
        }
    )


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> str:
    """A tiny random 3-layer BERT cross-encoder folder."""
    return str(build_tiny_backbone(tmp_path_factory.mktemp("tiny"), "bert", num_hidden_layers=3, cross_encoder=True))


def build_mice(backbone: str, folder, **config) -> str:
    """MICE-ℓ1+2 built from the tiny backbone, saved as a remote-code folder."""
    model = MiceForSequenceClassification.from_backbone(backbone, fusion_layer=1, interaction_layers=2, **config)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(backbone).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def mice_folder(backbone, tmp_path_factory) -> str:
    return build_mice(backbone, tmp_path_factory.mktemp("tiny-mice"))


def trainer_for(model, loss, tmp_path, train=None, **args) -> DistillationTrainer:
    arguments = DistillationTrainingArguments(
        output_dir=str(tmp_path), report_to=[], per_device_train_batch_size=2, max_steps=2, save_strategy="no", **args
    )
    return DistillationTrainer(model=model, args=arguments, train_dataset=rows() if train is None else train, loss=loss)


def batch_loss(trainer: DistillationTrainer, data: Dataset) -> torch.Tensor:
    batch = trainer.data_collator([data[i] for i in range(len(data))])
    return trainer.compute_loss(trainer.model, batch)


def test_mice_aware_batching_matches_joint_pairs_with_fewer_flops(mice_folder, tmp_path):
    model = CrossEncoder(mice_folder, trust_remote_code=True)
    assert find_mice_model(model) is not None
    loss = CombinedLoss(model, [(MarginMSELoss(model), 1.0), (KLDivergenceLoss(model, temperature=2.0), 0.5)])
    data = rows()
    mice_aware = trainer_for(model, loss, tmp_path)
    batch = mice_aware.data_collator([data[i] for i in range(len(data))])
    assert {"query_input_ids", "document_input_ids"} <= set(batch["model_inputs"]["groups"][0])  # tokenized already
    with FlopCounterMode(display=False) as mice_flops:
        mice_loss = mice_aware.compute_loss(model, batch)
    # The reference: joint pairs through the model's own preprocessing, as sentence-transformers' losses score them.
    joint = trainer_for(model, loss, tmp_path / "joint", mice_aware_batching=False)
    with FlopCounterMode(display=False) as joint_flops:
        joint_loss = batch_loss(joint, data)
    assert mice_loss.item() == pytest.approx(joint_loss.item(), abs=1e-5)
    targets = {"scores": [torch.tensor(s) for s in data["scores"]]}
    called = sum(loss([data["query"], data["documents"]], targets).values())  # as a sentence-transformers loss
    assert called.item() == pytest.approx(joint_loss.item(), abs=1e-6)
    assert mice_flops.get_total_flops() < joint_flops.get_total_flops()


@pytest.mark.parametrize("family", FAMILIES)
def test_collator_tokenizes_lists_as_the_model_does(family, tmp_path):
    """The collator tokenizes without the model (so that DataLoader workers can): the same tensors as MICE's own
    tokenize_queries / tokenize_documents, for every family."""
    folder = build_mice(str(build_tiny_backbone(tmp_path, family, num_hidden_layers=3)), tmp_path / "mice")
    model = CrossEncoder(folder, trust_remote_code=True)
    mice = find_mice_model(model)
    queries, documents = QUERIES, [DOCUMENTS[0][:3], DOCUMENTS[1][:2]]  # two list lengths: two groups
    inputs = list_inputs_for(model)(queries, documents)
    for group, row in zip(inputs["groups"], (0, 1), strict=True):
        expected = mice.tokenize_queries(model.tokenizer, [queries[row]]) | mice.tokenize_documents(
            model.tokenizer, documents[row]
        )
        assert group.keys() == expected.keys()
        for key, tensor in expected.items():
            assert torch.equal(group[key], tensor), key
    joint = score_lists(model, queries, documents, mice_aware=False)
    torch.testing.assert_close(score_lists(model, queries, documents), joint, atol=1e-5, rtol=1e-4)


def test_tokenizing_in_dataloader_workers_trains_the_same_weights(mice_folder, tmp_path):
    weights = []
    for workers in (0, 1):
        torch.manual_seed(0)
        model = CrossEncoder(mice_folder, trust_remote_code=True)
        trainer = trainer_for(
            model, MarginMSELoss(model), tmp_path / str(workers), train=rows(4), dataloader_num_workers=workers
        )
        trainer.train()
        weights.append({name: p.detach().clone() for name, p in model.named_parameters()})
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


def parameters_without_gradient(folder: str, tmp_path) -> list[str]:
    model = CrossEncoder(folder, trust_remote_code=True)
    loss = batch_loss(trainer_for(model, InfoNCELoss(model), tmp_path), rows())
    loss.backward()
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    assert len(params) > 50
    return [name.removeprefix("0.model.mice.") for name, p in params if p.grad is None or p.grad.abs().sum() == 0]


def test_gradients_reach_every_trainable_mice_parameter(backbone, tmp_path):
    assert parameters_without_gradient(build_mice(backbone, tmp_path / "mean", pooling="mean"), tmp_path) == []


def test_cls_pooling_leaves_only_the_last_cross_attention_weights_without_gradient(mice_folder, tmp_path):
    """With [CLS] pooling and mask_cls_to_doc (the paper's setting), the last interaction layer's cross-attention
    only updates query tokens that nothing reads afterwards: its weights get no gradient, only the output bias
    (added to the [CLS] row too) does. Every other parameter trains."""
    last = "cross_attention.1."
    expected = [f"{last}self.{p}.{w}" for p in ("query", "key", "value") for w in ("weight", "bias")]
    assert sorted(parameters_without_gradient(mice_folder, tmp_path)) == sorted(
        [*expected, f"{last}output.dense.weight"]
    )


@pytest.mark.parametrize("model_kind", ["cross-encoder", "mice"])
def test_training_steps_change_the_weights(model_kind, backbone, mice_folder, tmp_path):
    model = CrossEncoder(mice_folder, trust_remote_code=True) if model_kind == "mice" else CrossEncoder(backbone)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = trainer_for(model, DistillRankNetLoss(model), tmp_path, train=rows(4), learning_rate=1e-3)
    result = trainer.train()
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))
    changed = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert len(changed) > len(before) // 2


def test_a_process_that_does_not_save_writes_nothing(backbone, tmp_path, monkeypatch):
    """transformers calls ``_save`` on every process of a distributed run, and sentence-transformers' ``_save``
    writes without asking which process it is on. Only the saving process may write: two processes writing and then
    removing the same ``training_args.bin`` made the two-process test fail when they raced."""
    model = CrossEncoder(backbone)
    trainer = trainer_for(model, DistillRankNetLoss(model), tmp_path)
    monkeypatch.setattr(type(trainer.args), "should_save", property(lambda self: False))
    trainer._save(str(tmp_path / "other-process"))
    assert not (tmp_path / "other-process").exists()
    monkeypatch.undo()
    trainer._save(str(tmp_path / "main-process"))
    assert (tmp_path / "main-process" / "training_args.json").is_file()
    assert not (tmp_path / "main-process" / "training_args.bin").exists()


def test_objectives_also_train_in_cross_encoder_trainer(backbone, tmp_path):
    """A plain CrossEncoderTrainer passes the one label column ("scores") as a list of tensors."""
    model = CrossEncoder(backbone)
    data = rows(4).remove_columns("labels")
    args = CrossEncoderTrainingArguments(output_dir=str(tmp_path), report_to=[], max_steps=2, save_strategy="no")
    result = CrossEncoderTrainer(model=model, args=args, train_dataset=data, loss=MarginMSELoss(model)).train()
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))


@pytest.mark.parametrize(
    ("data", "loss_class", "message"),
    [
        (rows().select([]), MarginMSELoss, r"training set is empty"),
        (
            rows(3)
            .map(
                lambda r, i: {"documents": r["documents"][:1], "scores": r["scores"][:1]} if i == 2 else {},
                with_indices=True,
            )
            .remove_columns("labels"),
            MarginMSELoss,
            r"Row 2 of the training set \(query 'how do i configure.*1 document\(s\), but MarginMSELoss needs lists "
            r"of at least 2",
        ),
        (
            rows(2).map(lambda r, i: {"scores": [1.0, float("nan"), 0.0, 0.0]} if i == 1 else {}, with_indices=True),
            MarginMSELoss,
            r"Row 1 of the training set \(query 'which package.*scores has a non-finite value \(nan\) at position 1",
        ),
        (
            rows(2).map(lambda r, i: {"scores": [1.0, 2.0]} if i == 0 else {}, with_indices=True),
            MarginMSELoss,
            r"Row 0 .*4 documents but 2 scores",
        ),
        (
            rows(2).map(lambda r, i: {"labels": [0, 0, 0, 0]} if i == 1 else {}, with_indices=True),
            InfoNCELoss,
            r"Row 1 .*InfoNCELoss needs one positive",
        ),
        (rows(2).remove_columns("scores"), KLDivergenceLoss, r"Row 0 .*no 'scores' column, which KLDivergenceLoss"),
    ],
    ids=["empty", "short-list", "nan-score", "length-mismatch", "no-positive", "missing-target"],
)
def test_bad_rows_are_named(backbone, tmp_path, data, loss_class, message):
    model = CrossEncoder(backbone)
    with pytest.raises(ValueError, match=message):
        trainer_for(model, loss_class(model), tmp_path, train=data)


def test_frozen_independent_layers_with_cached_documents_match_the_uncached_loss_and_gradients(mice_folder, tmp_path):
    """Fast path vs reference path: cached document states give the same loss and gradients, encode each document
    once over several batches, and leave the frozen layers without gradient."""
    results = {}
    for cached in (True, False):
        model = CrossEncoder(mice_folder, trust_remote_code=True)
        mice = find_mice_model(model)
        pooler = sum(p.numel() for p in mice.mice.backbone.pooler.parameters())
        assert freeze_independent_layers(mice) == sum(p.numel() for p in mice.mice.backbone.parameters()) - pooler
        trainer = trainer_for(model, MarginMSELoss(model), tmp_path / str(cached), cache_document_states=cached)
        assert (trainer.document_states is not None) == cached
        model.train()
        if not cached:
            mice.mice.backbone.eval()  # the reference: the frozen layers without dropout, as the cached path runs them
        loss = batch_loss(trainer, rows())
        loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        results[cached] = loss, grads
        if cached:
            batch_loss(trainer, rows())  # the same documents again: read from the cache
            assert trainer.document_states.encoded == len(trainer.document_states) == 8
            assert not mice.mice.backbone.training
    (cached_loss, cached_grads), (loss, grads) = results[True], results[False]
    assert cached_loss.item() == pytest.approx(loss.item(), abs=1e-6)
    assert sorted(cached_grads) == sorted(grads)
    # Below the fusion layer nothing trains; BERT's pooler reads the interaction layers' [CLS], so it is head and trains.
    assert {name for name in grads if "mice.backbone" in name} == {
        name for name, _ in model.named_parameters() if "mice.backbone.pooler" in name
    }
    for name, grad in grads.items():
        torch.testing.assert_close(cached_grads[name], grad, atol=1e-6, rtol=1e-5)


def test_document_state_memo_bounds_its_size_and_refuses_trainable_lower_layers(mice_folder):
    model = CrossEncoder(mice_folder, trust_remote_code=True)
    mice = find_mice_model(model)
    with pytest.raises(ValueError, match="independent layers frozen"):
        DocumentStateMemo(mice, model.tokenizer)
    freeze_independent_layers(mice)
    memo = DocumentStateMemo(mice, model.tokenizer, max_documents=5)
    first = memo.states(DOCUMENTS[0])
    assert len(memo) == 4 and memo.encoded == 4
    assert memo.states(DOCUMENTS[0][:2]).hidden_states.shape[0] == 2 and memo.encoded == 4  # read, not encoded
    memo.states(DOCUMENTS[1][:2])  # 4 + 2 > 5: the store starts afresh with these two
    assert len(memo) == 2 and DOCUMENTS[0][0] not in memo and DOCUMENTS[1][0] in memo
    again = memo.states(DOCUMENTS[0])  # 2 + 4 > 5: afresh again
    assert memo.encoded == 4 + 2 + 4
    mice.eval()
    reference = mice.encode_documents(**mice.tokenize_documents(model.tokenizer, DOCUMENTS[0]))
    valid = reference.attention_mask[..., None]  # padding rows differ (zeros here) and are never read
    for states in (first, again):
        torch.testing.assert_close(states.attention_mask, reference.attention_mask)
        torch.testing.assert_close(states.hidden_states * valid, reference.hidden_states * valid)
    with pytest.raises(ValueError, match="max_documents"):
        DocumentStateMemo(mice, model.tokenizer, max_documents=0)


@pytest.mark.parametrize("model_kind", ["cross-encoder", "mice"])
def test_head_learning_rate_applies_to_exactly_the_classification_head(model_kind, backbone, mice_folder, tmp_path):
    model = CrossEncoder(mice_folder, trust_remote_code=True) if model_kind == "mice" else CrossEncoder(backbone)
    trainer = trainer_for(model, MarginMSELoss(model), tmp_path, head_learning_rate=0.5)
    optimizer = trainer.create_optimizer()
    head = [p for group in optimizer.param_groups if group["lr"] == 0.5 for p in group["params"]]
    expected = [p for name, p in model.named_parameters() if ("classifier" in name or "classification_head" in name)]
    assert head and {id(p) for p in head} == {id(p) for p in expected}


def test_evaluation_loss_is_the_loss_of_the_evaluation_rows(mice_folder, tmp_path):
    model = CrossEncoder(mice_folder, trust_remote_code=True)
    arguments = DistillationTrainingArguments(
        output_dir=str(tmp_path), report_to=[], per_device_eval_batch_size=2, save_strategy="no"
    )
    loss = MarginMSELoss(model)
    trainer = DistillationTrainer(model=model, args=arguments, train_dataset=rows(), eval_dataset=rows(), loss=loss)
    metrics = trainer.evaluate()
    model.eval()
    with torch.no_grad():
        expected = batch_loss(trainer, rows())
    assert metrics["eval_loss"] == pytest.approx(expected.item(), abs=1e-5)
