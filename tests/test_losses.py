"""Every objective on a small batch whose scores are set by hand, against the formula written out with `math`; and
the sentence-transformers losses we build on, run on a real model, against ours on that model's scores."""

from __future__ import annotations

import math

import pytest
import torch
from sentence_transformers.cross_encoder import CrossEncoder
from sentence_transformers.cross_encoder import losses as st_losses
from tiny_models import build_tiny_backbone

from trainers.losses import (
    ADRMSELoss,
    CombinedLoss,
    DistillRankNetLoss,
    HingeLoss,
    InfoNCELoss,
    KLDivergenceLoss,
    ListScores,
    MarginMSELoss,
    PointwiseBCELoss,
    PointwiseMSELoss,
)
from trainers.losses.listwise import joint_pair_scores

# Two lists of three documents. Student logits s, teacher scores t, teacher ranks r, labels y.
QUERIES = ["q1", "q2"]
DOCUMENTS = [["a", "b", "c"], ["d", "e", "f"]]
S = [[2.0, 0.5, -1.0], [0.0, 1.0, 0.5]]
T = [[3.0, 1.0, 0.0], [0.5, 2.0, -1.0]]
R = [[1, 2, 3], [2, 1, 3]]
Y = [[1, 0, 0], [0, 1, 0]]
# Scores of the cross pairs, used only as in-batch negatives: query i against the other list's documents.
CROSS = [[0.3, -0.2, 0.1], [1.5, -0.5, 0.2]]


def hand_scores() -> ListScores:
    """The batch's scores as the trainer hands them over: every query against every document (leaf tensors)."""
    all_pairs = torch.tensor([S[0] + CROSS[0], CROSS[1] + S[1]], requires_grad=True)
    return ListScores([all_pairs[0, :3], all_pairs[1, 3:]], all_pairs)


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory) -> CrossEncoder:
    """A tiny random BERT cross-encoder (the losses need a real CrossEncoder to be built)."""
    return CrossEncoder(str(build_tiny_backbone(tmp_path_factory.mktemp("tiny"), "bert", cross_encoder=True)))


def run(loss, targets):
    """The loss on the hand-scored batch, and the scores (to check gradients)."""
    scores = hand_scores()
    value = loss.loss_from_scores(scores, {k: [torch.tensor(row) for row in v] for k, v in targets.items()})
    return value, scores


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_pointwise_bce(cross_encoder):
    value, _ = run(PointwiseBCELoss(cross_encoder), {"labels": Y, "scores": T})
    expected = [
        -(log_sigmoid(s) if y else log_sigmoid(-s))
        for srow, yrow in zip(S, Y, strict=True)
        for s, y in zip(srow, yrow, strict=True)
    ]
    assert value.item() == pytest.approx(sum(expected) / 6, abs=1e-6)


def test_pointwise_mse(cross_encoder):
    value, _ = run(PointwiseMSELoss(cross_encoder), {"scores": T, "labels": Y})
    # (2-3)^2 + (0.5-1)^2 + (-1-0)^2 + (0-0.5)^2 + (1-2)^2 + (0.5+1)^2 = 5.75
    assert value.item() == pytest.approx(5.75 / 6, abs=1e-6)


def test_hinge(cross_encoder):
    value, _ = run(HingeLoss(cross_encoder, margin=1.0), {"labels": Y, "scores": T})
    # ordered pairs: (a,b) 1.5, (a,c) 3.0, (e,d) 1.0, (e,f) 0.5 -> hinge 0, 0, 0, 0.5
    assert value.item() == pytest.approx(0.5 / 4, abs=1e-6)


def test_margin_mse(cross_encoder):
    value, _ = run(MarginMSELoss(cross_encoder), {"scores": T})
    # anchors a and e (teacher's best). student margins 1.5, 3.0 | 1.0, 0.5; teacher margins 2, 3 | 1.5, 3
    assert value.item() == pytest.approx((0.25 + 0.0 + 0.25 + 6.25) / 4, abs=1e-6)


def test_targets_given_as_lists_go_to_the_models_device(cross_encoder, monkeypatch):
    # A collator called outside the Trainer's loop hands the targets over as Python lists; on a GPU they must follow
    # the logits there (the "meta" device stands in for one), and on the CPU give the same loss as tensors.
    loss = MarginMSELoss(cross_encoder)
    assert loss.loss_from_scores(hand_scores(), {"scores": T}).item() == pytest.approx(
        run(loss, {"scores": T})[0].item()
    )
    monkeypatch.setattr(type(cross_encoder), "device", property(lambda model: torch.device("meta")))
    assert [row.device.type for row in loss.relevance({"scores": T})] == ["meta", "meta"]


def info_nce_term(positive: float, negatives: list[float]) -> float:
    return -positive + math.log(math.exp(positive) + sum(math.exp(n) for n in negatives))


def test_info_nce_labels(cross_encoder):
    value, _ = run(InfoNCELoss(cross_encoder), {"labels": Y, "scores": T})
    expected = (info_nce_term(2.0, [0.5, -1.0]) + info_nce_term(1.0, [0.0, 0.5])) / 2
    assert value.item() == pytest.approx(expected, abs=1e-6)


def test_info_nce_in_batch_negatives(cross_encoder):
    value, _ = run(InfoNCELoss(cross_encoder, in_batch_negatives=True), {"labels": Y})
    q1 = info_nce_term(2.0, [0.5, -1.0, 0.3, -0.2, 0.1])
    q2 = info_nce_term(1.0, [0.0, 0.5, 1.5, -0.5, 0.2])
    assert value.item() == pytest.approx((q1 + q2) / 2, abs=1e-6)


def test_info_nce_positive_from_teacher(cross_encoder):
    # Teacher's best: a (score 3) and e (score 2), the same documents as the labels' positives here.
    by_teacher, _ = run(InfoNCELoss(cross_encoder, positive_from="teacher"), {"scores": [[0, 5, 1], T[1]]})
    expected = (info_nce_term(0.5, [2.0, -1.0]) + info_nce_term(1.0, [0.0, 0.5])) / 2
    assert by_teacher.item() == pytest.approx(expected, abs=1e-6)


def ranknet_terms(scores: list[float], ranks: list[int]) -> list[float]:
    n = len(scores)
    return [math.log1p(math.exp(-(scores[i] - scores[j]))) for i in range(n) for j in range(n) if ranks[i] < ranks[j]]


def test_distill_ranknet(cross_encoder):
    value, _ = run(DistillRankNetLoss(cross_encoder), {"ranks": R, "scores": [[0, 0, 0], [0, 0, 0]]})
    terms = ranknet_terms(S[0], R[0]) + ranknet_terms(S[1], R[1])
    assert len(terms) == 6
    assert value.item() == pytest.approx(sum(terms) / 6, abs=1e-6)
    # Without ranks, the teacher scores order the pairs (here the same order as the ranks).
    from_scores, _ = run(DistillRankNetLoss(cross_encoder), {"scores": T})
    assert from_scores.item() == pytest.approx(value.item(), abs=1e-6)


def test_adr_mse(cross_encoder):
    value, _ = run(ADRMSELoss(cross_encoder), {"ranks": R})
    terms = []
    for scores, ranks in zip(S, R, strict=True):
        for i, (s_i, r_i) in enumerate(zip(scores, ranks, strict=True)):
            approx = 1 + sum(1 / (1 + math.exp(-(s_j - s_i))) for j, s_j in enumerate(scores) if j != i)
            terms.append((approx - r_i) ** 2 / math.log2(r_i + 1))
    assert value.item() == pytest.approx(sum(terms) / 6, abs=1e-6)


def softmax(values: list[float], temperature: float) -> list[float]:
    exps = [math.exp(v / temperature) for v in values]
    return [e / sum(exps) for e in exps]


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_kl_divergence(cross_encoder, temperature):
    value, _ = run(KLDivergenceLoss(cross_encoder, temperature=temperature), {"scores": T, "labels": Y})
    kl = 0.0
    for scores, teacher in zip(S, T, strict=True):
        p, q = softmax(teacher, temperature), softmax(scores, temperature)
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    assert value.item() == pytest.approx(temperature**2 * kl / 2, abs=1e-6)


def test_kl_divergence_is_zero_when_student_matches_teacher(cross_encoder):
    value, _ = run(KLDivergenceLoss(cross_encoder, temperature=3.0), {"scores": S})
    assert value.item() == pytest.approx(0.0, abs=1e-5)


def test_combined_weights_each_objective(cross_encoder):
    targets = {"scores": T, "labels": Y, "ranks": R}
    margin_mse, _ = run(MarginMSELoss(cross_encoder), targets)
    info_nce, _ = run(InfoNCELoss(cross_encoder), targets)
    combined = CombinedLoss(cross_encoder, [(MarginMSELoss(cross_encoder), 1.0), (InfoNCELoss(cross_encoder), 0.25)])
    parts, _ = run(combined, targets)
    assert list(parts) == ["MarginMSELoss", "InfoNCELoss"]
    assert parts["MarginMSELoss"].item() == pytest.approx(margin_mse.item(), abs=1e-6)
    assert parts["InfoNCELoss"].item() == pytest.approx(0.25 * info_nce.item(), abs=1e-6)
    config = combined.get_config_dict()["objectives"]
    assert [(o["name"], o["weight"]) for o in config] == [("MarginMSELoss", 1.0), ("InfoNCELoss", 0.25)]
    assert config[1]["config"]["in_batch_negatives"] is False


@pytest.mark.parametrize(
    "loss_class", [PointwiseBCELoss, PointwiseMSELoss, HingeLoss, MarginMSELoss, InfoNCELoss, DistillRankNetLoss]
)
def test_gradient_reaches_the_scores(cross_encoder, loss_class):
    value, scores = run(loss_class(cross_encoder), {"scores": T, "labels": Y, "ranks": R})
    value.backward()
    own = torch.cat([scores.all_pairs.grad[0, :3], scores.all_pairs.grad[1, 3:]])
    assert own.abs().sum() > 0 and scores.all_pairs.grad[0, 3:].abs().sum() == 0  # no in-batch negatives here


def test_missing_target_column_is_named(cross_encoder):
    with pytest.raises(ValueError, match=r"HingeLoss trains on 'labels'.*only has the target columns \['scores'\]"):
        run(HingeLoss(cross_encoder), {"scores": T})


def test_info_nce_list_without_positive(cross_encoder):
    with pytest.raises(ValueError, match="one positive"):
        run(InfoNCELoss(cross_encoder), {"labels": [[0, 0, 0], [0, 1, 0]]})


def test_row_requirements(cross_encoder):
    assert "MarginMSELoss needs lists of at least 2" in MarginMSELoss(cross_encoder).row_problem(1, {"scores": [1.0]})
    assert "no 'labels' column" in HingeLoss(cross_encoder).row_problem(3, {"scores": [1.0, 0.0, 2.0]})
    assert "one positive" in InfoNCELoss(cross_encoder).row_problem(2, {"labels": [0, 0]})
    assert InfoNCELoss(cross_encoder).row_problem(2, {"labels": [0, 1]}) is None


# -- the same formulas as sentence-transformers' own losses, on a real model's scores -----------------------------

TEXTS = [["cats purr softly", "dogs bark", "a font for the console"], ["lsof lists open files", "bash", "top and ps"]]
TARGETS = {
    "scores": [torch.tensor([3.0, 1.0, 0.0]), torch.tensor([0.5, 2.0, -1.0])],
    "ranks": [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 1.0, 3.0])],
    "labels": [torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])],
}


def flat_pairs(queries, documents):
    return [[q for q, docs in zip(queries, documents, strict=True) for _ in docs], [d for ds in documents for d in ds]]


def sentence_transformers_value(loss, queries, documents):
    """The loss as its sentence-transformers parent class computes it, scoring the pairs with the real model."""
    if isinstance(loss, MarginMSELoss):
        anchors = [int(torch.argmax(t)) for t in TARGETS["scores"]]
        columns = [queries, [docs[a] for docs, a in zip(documents, anchors, strict=True)]]
        order = [[i for i in range(3) if i != a] for a in anchors]
        columns += [[docs[o[c]] for docs, o in zip(documents, order, strict=True)] for c in range(2)]
        labels = torch.stack([t[[a, *o]] for t, a, o in zip(TARGETS["scores"], anchors, order, strict=True)])
        return st_losses.MarginMSELoss.forward(loss, columns, labels)
    if isinstance(loss, PointwiseMSELoss):
        return st_losses.MSELoss.forward(loss, flat_pairs(queries, documents), torch.cat(TARGETS["scores"]))
    if isinstance(loss, PointwiseBCELoss):
        return st_losses.BinaryCrossEntropyLoss.forward(
            loss, flat_pairs(queries, documents), torch.cat(TARGETS["labels"])
        )
    if isinstance(loss, KLDivergenceLoss):
        teacher = [t / loss.temperature for t in TARGETS["scores"]]
        cross_entropy = st_losses.ListNetLoss.forward(loss, [queries, documents], teacher)
        entropy = torch.stack([-(p * p.log()).sum() for p in (t.softmax(-1) for t in teacher)]).mean()
        return loss.temperature**2 * (cross_entropy - entropy)
    if isinstance(loss, ADRMSELoss):
        return st_losses.ADRMSELoss.forward(loss, [queries, documents], [-r for r in TARGETS["ranks"]])
    if isinstance(loss, DistillRankNetLoss):
        return st_losses.RankNetLoss.forward(loss, [queries, documents], [-r for r in TARGETS["ranks"]])
    positives = [int(torch.argmax(label)) for label in TARGETS["labels"]]  # InfoNCE
    columns = [queries, [docs[p] for docs, p in zip(documents, positives, strict=True)]]
    negatives = [[i for i in range(3) if i != p] for p in positives]
    columns += [[docs[n[c]] for docs, n in zip(documents, negatives, strict=True)] for c in range(2)]
    return st_losses.MultipleNegativesRankingLoss.forward(loss, columns, None)


@pytest.mark.parametrize(
    "make",
    [
        MarginMSELoss,
        PointwiseMSELoss,
        PointwiseBCELoss,
        lambda model: KLDivergenceLoss(model, temperature=2.0),
        ADRMSELoss,
        lambda model: DistillRankNetLoss(model, k=2),
        lambda model: DistillRankNetLoss(model, reduction_log="binary"),
        lambda model: InfoNCELoss(model, in_batch_negatives=True, scale=2.0),
    ],
    ids=["margin-mse", "mse", "bce", "kl", "adr-mse", "ranknet-top2", "ranknet-binary", "info-nce-in-batch"],
)
def test_loss_from_scores_equals_sentence_transformers_on_the_model(cross_encoder, make):
    """Each objective computes from scores what its sentence-transformers parent computes by calling the model; and
    called as a sentence-transformers loss (forward), it scores the joint pairs itself and gives the same value."""
    loss = make(cross_encoder)
    cross_encoder.eval()
    with torch.no_grad():
        expected = sentence_transformers_value(loss, QUERIES, TEXTS)
        scores = joint_pair_scores(cross_encoder, QUERIES, TEXTS, all_pairs=loss.in_batch_pairs)
        assert loss.loss_from_scores(scores, TARGETS).item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
        assert loss([QUERIES, TEXTS], TARGETS).item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
