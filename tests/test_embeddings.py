"""Early-layer embeddings of cross-encoders and MICE models, the light dual encoder (DE-2) and `mice distill-embedder`.

Exact equivalences: every layer of the one-pass sweep against a model cut to that layer, the saved
SentenceTransformer folder in a fresh process against the function that built it, a MICE model's pooled document
states against the early-layer embedding of the same text (every encoder family), and the pair format against the
tokenizer's own pair encoding. Then training, resuming, the card, MTEB retrieval, and clear one-line errors.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from loaders import load_script
from safetensors.numpy import load_file
from tiny_models import build_tiny_backbone
from transformers import AutoModel, AutoTokenizer

from embeddings.distillation import (
    EmbedderDistillationConfig,
    build_light_dual_encoder,
    config_from_preset,
    distill_embedder,
    embedding_rows,
    labelled_pairs,
    ranking_rows,
    read_texts,
)
from embeddings.early_layers import (
    EarlyLayerEncoder,
    EarlyLayerError,
    early_layer_embeddings,
    pool_document_states,
    save_early_layer_model,
)
from modeling_mice import MiceForSequenceClassification

REPO_ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "0 A.D. is a free, open-source real-time strategy game of ancient warfare",
    "a",
    "A library for parsing XML documents, with bindings for Python and Perl " * 4,
]
FAMILIES = ("bert", "roberta", "electra", "mpnet", "deberta-v2", "modernbert")


@pytest.fixture(scope="module")
def models(tmp_path_factory, one_thread) -> Path:
    return tmp_path_factory.mktemp("embedding-models")


def cross_encoder(folder: Path, family: str = "bert") -> Path:
    target = folder / f"{family}-ce"
    return target if target.is_dir() else build_tiny_backbone(folder, family, cross_encoder=True)


def embed_in_fresh_process(folder: Path, texts: list[str], trust_remote_code: bool = False) -> np.ndarray:
    """Load a SentenceTransformer folder in a new interpreter and return its embeddings of ``texts``."""
    code = textwrap.dedent(
        f"""
        import json, sys
        from sentence_transformers import SentenceTransformer
        model = SentenceTransformer({str(folder)!r}, trust_remote_code={trust_remote_code})
        print(json.dumps(model.encode(json.loads(sys.stdin.read())).tolist()))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(texts), capture_output=True, text=True, check=True, timeout=600
    )
    return np.asarray(json.loads(result.stdout.strip().splitlines()[-1]), dtype=np.float32)


@pytest.mark.parametrize("family", ["bert", "modernbert", "deberta-v2"])
def test_one_pass_gives_every_layer_of_a_model_cut_to_that_layer(models, family):
    encoder = EarlyLayerEncoder.from_pretrained(cross_encoder(models, family))
    sweep = encoder.encode(TEXTS, layers=range(encoder.num_layers + 1))
    np.testing.assert_allclose(
        sweep[0], EarlyLayerEncoder.from_pretrained(cross_encoder(models, family), 0).encode(TEXTS, 0)[0], atol=1e-5
    )
    for layer in range(1, encoder.num_layers + 1):
        cut = EarlyLayerEncoder.from_pretrained(cross_encoder(models, family), layer)
        np.testing.assert_allclose(sweep[layer], cut.encode(TEXTS)[layer], atol=1e-5)
        np.testing.assert_allclose(sweep[layer], cut.sentence_transformer().encode(TEXTS), atol=1e-5)
    assert not np.allclose(sweep[1], sweep[2])


def test_single_text_is_embedded_as_the_cross_encoder_embeds_a_document(models):
    folder = cross_encoder(models)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    base = AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    batch["token_type_ids"] = torch.ones_like(batch["input_ids"])  # the second segment of a pair
    with torch.no_grad():
        states = base(**batch, output_hidden_states=True).hidden_states[2]
    mask = batch["attention_mask"][..., None].float()
    expected = ((states * mask).sum(1) / mask.sum(1)).numpy()
    np.testing.assert_allclose(early_layer_embeddings(folder, TEXTS, layer=2), expected, atol=1e-5)


def test_pair_format_is_the_text_paired_with_itself(models):
    folder = cross_encoder(models)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    base = AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(TEXTS, TEXTS, padding=True, truncation="longest_first", max_length=128, return_tensors="pt")
    with torch.no_grad():
        states = base(**batch, output_hidden_states=True).hidden_states[3]
    mask = batch["attention_mask"][..., None].float()
    expected = ((states * mask).sum(1) / mask.sum(1)).numpy()
    np.testing.assert_allclose(early_layer_embeddings(folder, TEXTS, 3, "pair"), expected, atol=1e-5)
    cls = early_layer_embeddings(folder, TEXTS, 3, "pair", pooling="cls")
    np.testing.assert_allclose(cls, states[:, 0].numpy(), atol=1e-5)


@pytest.mark.parametrize("input_format", ["single", "pair"])
def test_saved_folder_loads_in_a_fresh_process_with_the_same_embeddings(models, input_format):
    folder = cross_encoder(models)
    saved = save_early_layer_model(folder, models / f"early-{input_format}", layer=2, input_format=input_format)
    expected = early_layer_embeddings(folder, TEXTS, layer=2, input_format=input_format)
    # The pair format is a module of this package, which sentence-transformers imports only with remote code on.
    loaded = embed_in_fresh_process(saved, TEXTS, trust_remote_code=input_format == "pair")
    np.testing.assert_allclose(loaded, expected, atol=1e-5)
    modules = json.loads((saved / "modules.json").read_text())
    assert modules[0]["type"].endswith("SelfPairTransformer" if input_format == "pair" else "Transformer")
    assert json.loads((saved / "config.json").read_text())["num_hidden_layers"] == 2


@pytest.mark.parametrize("family", FAMILIES)
def test_mice_pooled_document_states_are_the_early_layer_embedding(models, family):
    source = cross_encoder(models, family)
    mice = MiceForSequenceClassification.from_backbone(str(source), fusion_layer=2, interaction_layers=2).eval()
    folder = models / f"{family}-mice"
    mice.save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.save_pretrained(folder)
    with torch.no_grad():
        states = mice.encode_documents(**mice.tokenize_documents(tokenizer, TEXTS))  # what re-ranking stores
        pooled = pool_document_states(mice, states).numpy()
    np.testing.assert_allclose(pooled, early_layer_embeddings(folder, TEXTS), atol=1e-5)
    np.testing.assert_allclose(pooled, early_layer_embeddings(source, TEXTS, layer=2), atol=1e-5)


@pytest.mark.parametrize("family", ["bert", "modernbert", "deberta-v2"])
def test_new_layers_seeded_from_the_top_are_the_cross_encoder_top_layers_moved_down(models, family):
    from embeddings.early_layers import _layer_index, _renumber_layer

    folder = cross_encoder(models, family)
    reference = EarlyLayerEncoder.from_pretrained(folder)
    last = reference.num_layers - 1
    built = build_light_dual_encoder(folder, layers=3, copied_layers=1, new_layers="top")
    state = built[0].auto_model.state_dict()
    layers = {}
    for name, tensor in reference.encoder.state_dict().items():
        layers.setdefault(_layer_index(name), {})[name] = tensor
    # Layer 0 and the embeddings copied, layers 1 and 2 from the top two (last - 1, last): every weight, exactly.
    for source, target in ((-1, -1), (0, 0), (last - 1, 1), (last, 2)):
        assert layers[source]
        for name, tensor in layers[source].items():
            moved = _renumber_layer(name, target) if source >= 0 else name
            if name.endswith("token_type_embeddings.weight"):
                tensor = tensor[1:2]  # a single text is embedded as the cross-encoder's document (type 1)
            assert torch.equal(state[moved], tensor), moved
    assert {_layer_index(name) for name in state} == {-1, 0, 1, 2}
    with pytest.raises(EarlyLayerError, match="beyond the model"):
        build_light_dual_encoder(folder, layers=last + 2, copied_layers=1, new_layers="top")


def test_light_dual_encoder_starts_from_the_cross_encoder_layers(models):
    folder = cross_encoder(models)
    seeded = build_light_dual_encoder(folder, layers=3, copied_layers=1, new_layers="next")
    np.testing.assert_allclose(seeded.encode(TEXTS), early_layer_embeddings(folder, TEXTS, layer=3), atol=1e-5)
    fresh = build_light_dual_encoder(folder, layers=2, copied_layers=1, new_layers="random")
    state = fresh[0].auto_model.state_dict()
    reference = EarlyLayerEncoder.from_pretrained(folder).encoder.state_dict()
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight"):
        assert torch.equal(state[name], reference[name])
    assert not torch.equal(
        state["encoder.layer.1.attention.self.query.weight"], reference["encoder.layer.1.attention.self.query.weight"]
    )


@pytest.mark.slow
def test_distill_embedder_trains_resumes_and_writes_a_card(models, sample_data, tmp_path, capsys):
    from embeddings.cli import main as cli

    folder = cross_encoder(models)
    output = tmp_path / "embedder"
    argv = ["--cross-encoder", str(folder), "--data", str(sample_data), "--output", str(output)]
    argv += ["--max-queries", "24", "--candidates", "4", "--negatives", "2", "--batch-size", "6"]
    argv += ["--train-max-length", "48", "--save-steps", "2", "--learning-rate", "1e-3", "--quiet"]
    assert cli([*argv, "--max-steps", "2"]) == 0
    first = json.loads((output / "embedder_record.json").read_text())
    assert first["final_train_loss"] > 0 and first["resumed_from"] is None
    assert cli([*argv, "--max-steps", "4"]) == 0  # more steps: resumes from the checkpoint at step 2
    # Other settings would resume the same checkpoint under another recipe: refused, in one line.
    assert cli([*argv, "--max-steps", "6", "--negatives", "1"]) == 2
    error = capsys.readouterr().err
    assert f"{output}-work holds a distill-embedder run with other settings (negatives: 2 there, 1 now)" in error
    record = json.loads((output / "embedder_record.json").read_text())
    assert record["resumed_from"].endswith("checkpoint-2")
    assert [o["name"] for o in record["objectives"]] == ["MultipleNegativesRankingLoss", "DistillKLDivLoss"]
    assert record["data"]["train_rows"] == 24 and record["layers"] == 2 and record["copied_layers"] == 1

    from sentence_transformers import SentenceTransformer

    trained = SentenceTransformer(str(output))
    np.testing.assert_allclose(embed_in_fresh_process(output, TEXTS), trained.encode(TEXTS), atol=1e-5)
    assert not np.allclose(trained.encode(TEXTS), early_layer_embeddings(folder, TEXTS, layer=2), atol=1e-3)
    card = (output / "README.md").read_text()
    assert "Can Cross Encoders Produce Useful Sentence Embeddings?" in card
    assert "| Layers | 2 |" in card and "MultipleNegativesRankingLoss" in card
    capsys.readouterr()
    assert cli([*argv, "--max-steps", "4"]) == 0  # complete with these settings: nothing to redo
    assert capsys.readouterr().out.strip() == f"wrote {output}"


def test_ranking_rows_take_the_positive_from_labels_then_qrels_then_the_teacher():
    class Scores:  # the shape of TeacherDataset.training_rows(): documents in the teacher's order
        def __init__(self, *rows):
            self.rows = rows

        def training_rows(self):
            return iter(self.rows)

    labelled = {"query": "q1", "documents": ["a", "b", "c"], "scores": [3.0, 2.0, 1.0], "labels": [0, 1, 0]}
    unlabelled = {"query": "q2", "documents": ["d", "e", "f"], "scores": [6.0, 5.0, 4.0], "labels": [0, 0, 0]}
    missing = {"query": "q3", "documents": ["g", "h", "i"], "scores": [9.0, 8.0, 7.0], "labels": [0, 0, 0]}
    rows = ranking_rows(Scores(labelled, unlabelled, missing), 2, relevant={"q1": {"c"}, "q2": {"f"}, "q3": {"x"}})
    # q1 keeps its own label (b), q2 takes its qrels' (f), q3's relevant document is not a candidate: left out.
    assert rows["query"] == ["q1", "q2"] and rows["positive"] == ["b", "f"]
    assert rows["negative_1"] == ["a", "d"] and rows["label"] == [[2.0, 3.0, 1.0], [4.0, 6.0, 5.0]]
    without_labels = {"query": "q4", "documents": ["j", "k", "l"], "scores": [1.0, 0.5, 0.2]}
    assert ranking_rows(Scores(without_labels), 1)["positive"] == ["j"]  # no labels at all: the teacher's best


def test_labelled_pairs_draw_further_judged_queries_with_their_first_relevant_document():
    from ranking_data.beir import BeirData

    corpus = {d: {"title": d.upper(), "text": f"text of {d}"} for d in ("a", "b", "c", "d")}
    queries = {"q1": "one", "q2": "two", "q3": "three", "q4": "four"}
    qrels = {"q1": {"b": 1, "a": 1}, "q2": {"c": 2}, "q3": {"d": 0}, "q4": {"d": 1, "c": 0}}
    data = BeirData("toy", corpus, queries, qrels, "train")
    pairs = labelled_pairs(data, 2, exclude={"two"}, seed=0)
    # q2 is already a ranking row and q3 has no relevant document: q1 and q4 are the only candidates.
    assert sorted(zip(pairs["anchor"], pairs["positive"], strict=True)) == [
        ("four", "D text of d"),
        ("one", "A text of a"),
    ]
    with pytest.raises(ValueError, match="pair_queries is 3 but toy has only 2 further judged queries"):
        labelled_pairs(data, 3, exclude={"two"}, seed=0)


def test_labelled_pairs_take_bm25s_best_non_relevant_documents_as_hard_negatives():
    from ranking_data.beir import BeirData

    texts = {"a": "apple pie", "b": "apple", "c": "cherry tart", "d": "cherry", "e": "fig", "f": "fig jam"}
    corpus = {d: {"title": "", "text": text} for d, text in texts.items()}
    queries = {"q1": "apple", "q2": "cherry", "q3": "zebra", "q4": "fig jam"}
    qrels = {"q1": {"b": 1}, "q2": {"d": 1}, "q3": {"a": 1}, "q4": {"e": 1, "f": 1}}
    pairs = labelled_pairs(BeirData("toy", corpus, queries, qrels, "train"), 4, exclude=set(), seed=0, negatives=1)
    # q3 matches no document and q4's only BM25 matches are both relevant: neither has a negative, so both go.
    assert sorted(zip(pairs["anchor"], pairs["positive"], pairs["negative_1"], strict=True)) == [
        ("apple", "apple", "apple pie"),
        ("cherry", "cherry", "cherry tart"),
    ]


@pytest.mark.slow
def test_distill_embedder_with_pairs_and_an_embedding_teacher(models, sample_data, tmp_path):
    folder = cross_encoder(models)
    teacher = tmp_path / "teacher"
    build_light_dual_encoder(folder, layers=2, copied_layers=2).save(str(teacher))
    config = EmbedderDistillationConfig(
        str(folder), str(sample_data), str(tmp_path / "embedder"), max_queries=8, candidates=3, negatives=1,
        pair_queries=10, embedding_teacher=str(teacher), batch_size=4, max_steps=3, train_max_length=32,
        learning_rate=1e-3,
    )  # fmt: skip
    output = distill_embedder(config, show_progress=False)
    record = json.loads((output / "embedder_record.json").read_text())
    assert [o["name"] for o in record["objectives"]] == [
        "MultipleNegativesRankingLoss", "DistillKLDivLoss", "MultipleNegativesRankingLoss", "EmbedDistillLoss",
    ]  # fmt: skip
    assert record["data"]["train_rows"] == 8 and record["data"]["pair_rows"] == 10
    # 8 queries with 2 documents each, 10 pairs: every distinct text, embedded by the teacher once.
    [targets] = (config.work / "embedding_targets").iterdir()
    labels = load_file(str(targets / "chunk-00000.safetensors"))["label"]
    assert 10 < len(labels) == record["data"]["embedding_texts"] <= 8 * 3 + 10 * 2
    from hub_cards import render_embedder_card

    assert "(8 teacher-scored rows, 10 labelled pairs)" in str(render_embedder_card(output))


def test_embedding_texts_are_distilled_too_and_proportional_sampling_gives_them_most_steps(
    models, sample_data, tmp_path, monkeypatch
):
    from sentence_transformers import SentenceTransformer

    from embeddings import distillation

    folder = cross_encoder(models)
    teacher = tmp_path / "teacher"
    build_light_dual_encoder(folder, layers=2, copied_layers=2).save(str(teacher))
    extra = [f"broad text number {i} about topic {i % 7}" for i in range(60)]
    (tmp_path / "texts.txt").write_text("\n".join(extra[:30]) + "\n\n  \n" + "\n".join(extra[30:]) + "\n")
    calls = {"embedding": 0, "other": 0}
    scaled = distillation._Scaled.forward

    def counted(self, features, labels):
        calls["embedding"] += 1
        return scaled(self, features, labels)

    monkeypatch.setattr(distillation._Scaled, "forward", counted)

    def run(name: str, sampler: str, texts: Path | None) -> dict:
        calls["embedding"] = 0
        config = EmbedderDistillationConfig(
            str(folder), str(sample_data), str(tmp_path / name), max_queries=8, candidates=3, negatives=1,
            embedding_teacher=str(teacher), embedding_texts=str(texts) if texts else None, sampler=sampler,
            batch_size=4, max_steps=6, train_max_length=32, learning_rate=1e-3,
        )  # fmt: skip
        record = json.loads((distill_embedder(config, show_progress=False) / "embedder_record.json").read_text())
        return {**record, "embedding_steps": calls["embedding"]}

    plain = run("plain", "round-robin", None)
    assert plain["embedding_steps"] == 3  # two datasets, six steps, in turns
    broad = run("broad", "proportional", tmp_path / "texts.txt")
    # Every line of the file (blank ones dropped) is embedded by the teacher after the rows' texts.
    assert broad["data"]["embedding_texts"] == plain["data"]["embedding_texts"] + 60
    [targets] = (tmp_path / "broad-work" / "embedding_targets").iterdir()
    labels = np.concatenate([load_file(str(chunk))["label"] for chunk in sorted(targets.iterdir())])
    np.testing.assert_allclose(labels[-60:], SentenceTransformer(str(teacher)).encode(extra), atol=1e-5)
    # 2 ranking batches against about 20 embedding batches: drawn in proportion, the embeddings take most of the steps.
    assert broad["embedding_steps"] >= 5 and broad["hyperparameters"]["sampler"] == "proportional"


def test_embedding_texts_must_be_readable_text(tmp_path):
    with pytest.raises(ValueError, match="has no text: give a UTF-8 file, one text per line"):
        (tmp_path / "empty.txt").write_text("\n  \n")
        read_texts(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="cannot read the embedding texts .*missing.txt"):
        read_texts(tmp_path / "missing.txt")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match="cannot read the embedding texts"):
        read_texts(tmp_path / "binary.txt")


def test_embedding_targets_are_kept_per_teacher_and_texts(models, tmp_path, monkeypatch):
    from sentence_transformers import SentenceTransformer

    first, second = tmp_path / "first", tmp_path / "second"
    build_light_dual_encoder(cross_encoder(models), layers=2, copied_layers=2).save(str(first))
    build_light_dual_encoder(cross_encoder(models), layers=1, copied_layers=1).save(str(second))
    folder = tmp_path / "targets"
    rows = embedding_rows(TEXTS, str(first), folder, show_progress=False)
    assert rows["text"] == TEXTS
    np.testing.assert_allclose(rows["label"], SentenceTransformer(str(first)).encode(TEXTS), atol=1e-6)
    # Another teacher of the same texts gets its own targets, not the first one's.
    other = embedding_rows(TEXTS, str(second), folder, show_progress=False)
    np.testing.assert_allclose(other["label"], SentenceTransformer(str(second)).encode(TEXTS), atol=1e-6)
    assert not np.allclose(other["label"], rows["label"], atol=1e-3)
    assert len(list(folder.iterdir())) == 2
    # The same teacher and texts again are read back without encoding; other texts are encoded.
    monkeypatch.setattr(SentenceTransformer, "encode", lambda *_, **__: pytest.fail("encoded again"))
    assert embedding_rows(TEXTS, str(first), folder, show_progress=False)["label"] == rows["label"]
    with pytest.raises(pytest.fail.Exception, match="encoded again"):
        embedding_rows(TEXTS[:2], str(first), folder, show_progress=False)


@pytest.mark.slow
def test_continue_from_trains_an_earlier_output_further(models, sample_data, tmp_path):
    from sentence_transformers import SentenceTransformer

    folder = cross_encoder(models)
    settings = dict(max_queries=8, candidates=3, negatives=1, batch_size=4, train_max_length=32)
    first = distill_embedder(
        EmbedderDistillationConfig(
            str(folder), str(sample_data), str(tmp_path / "first"), max_steps=2, learning_rate=1e-3, **settings
        ),
        show_progress=False,
    )
    # A learning rate of 0 keeps the starting weights: the second stage must start from the first's, not anew.
    second = distill_embedder(
        EmbedderDistillationConfig(
            str(folder), str(sample_data), str(tmp_path / "second"), max_steps=1, learning_rate=0.0,
            pair_queries=6, pair_negatives=1, continue_from=str(first), **settings,
        ),
        show_progress=False,
    )  # fmt: skip
    np.testing.assert_allclose(
        SentenceTransformer(str(second)).encode(TEXTS), SentenceTransformer(str(first)).encode(TEXTS), atol=1e-6
    )
    assert not np.allclose(SentenceTransformer(str(first)).encode(TEXTS), early_layer_embeddings(folder, TEXTS, 2))
    record = json.loads((second / "embedder_record.json").read_text())
    assert record["continued_from"]["path"] == str(first) and record["continued_from"]["max_steps"] == 2
    assert record["data"]["pair_negatives_per_row"] == 1 and 0 < record["data"]["pair_rows"] <= 6
    from hub_cards import render_embedder_card

    assert f"training continued from `{first}`, itself trained for 2 steps" in str(render_embedder_card(second))
    with pytest.raises(ValueError, match="has layers=2 but this run asks for 3; set layers to 2"):
        distill_embedder(
            EmbedderDistillationConfig(
                str(folder), str(sample_data), str(tmp_path / "x"), layers=3, continue_from=str(first)
            )
        )
    with pytest.raises(ValueError, match="has no embedder_record.json: give a folder written by distill-embedder"):
        distill_embedder(
            EmbedderDistillationConfig(str(folder), str(sample_data), str(tmp_path / "y"), continue_from=str(folder))
        )


@pytest.mark.slow
def test_mteb_retrieval_runs_the_saved_folder_unchanged(models, sample_data, tmp_path):
    import mteb
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
    from mteb.abstasks.task_metadata import TaskMetadata
    from sentence_transformers import SentenceTransformer

    from evaluation.first_stage import DenseFirstStage
    from evaluation.harness import subsample_queries
    from evaluation.metrics import evaluate_run
    from ranking_data.beir import load_beir

    data = subsample_queries(load_beir(sample_data, "test"), 10)
    data.corpus = dict(list(data.corpus.items())[:150]) | {d: data.corpus[d] for j in data.qrels.values() for d in j}
    saved = save_early_layer_model(cross_encoder(models), tmp_path / "early", layer=2)

    class LocalRetrieval(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name="LocalDebianRetrieval", type="Retrieval", main_score="ndcg_at_10", eval_splits=["test"],
            description="a slice of the packaged Debian sample", reference=None,
            dataset={"path": "NA", "revision": "NA"}, category="t2t", eval_langs=["eng-Latn"], date=None,
            dialect=[], domains=[], task_subtypes=[], license="not specified", annotations_creators="derived",
            modalities=["text"], sample_creation="found", bibtex_citation="",
        )  # fmt: skip

        def load_data(self, num_proc=None, **kwargs):
            ids = list(data.corpus)
            self.dataset = {"default": {"test": RetrievalSplitData(
                queries=Dataset.from_dict({"id": list(data.queries), "text": list(data.queries.values())}),
                corpus=Dataset.from_dict({"id": ids, "title": [""] * len(ids), "text": [data.document_text(d) for d in ids]}),
                relevant_docs=data.qrels, top_ranked=None,
            )}}  # fmt: skip
            self.data_loaded = True

    result = mteb.evaluate(SentenceTransformer(str(saved)), LocalRetrieval(), cache=None, show_progress_bar=False)
    mteb_ndcg = result.task_results[0].get_score()
    ours = evaluate_run(data.qrels, DenseFirstStage(str(saved)).retrieve(data, 100).run, ("ndcg@10",))["ndcg@10"]
    assert mteb_ndcg == pytest.approx(ours, abs=1e-3)


def test_bad_input_gets_a_clear_error(models, tmp_path):
    folder = cross_encoder(models)
    with pytest.raises(EarlyLayerError, match=r"layer 5 is beyond the model .*it has 4 layers.*from 0 to 4"):
        early_layer_embeddings(folder, TEXTS, layer=5)
    with pytest.raises(EarlyLayerError, match=r"layer 3 is beyond the model .*MICE-ℓ2\+2 has 2 independent layers"):
        MiceForSequenceClassification.from_backbone(str(folder), fusion_layer=2, interaction_layers=2).save_pretrained(
            tmp_path / "mice"
        )
        AutoTokenizer.from_pretrained(folder).save_pretrained(tmp_path / "mice")
        EarlyLayerEncoder.from_pretrained(tmp_path / "mice", 3)
    bi_encoder = save_early_layer_model(folder, tmp_path / "bi-encoder", layer=1)
    with pytest.raises(EarlyLayerError, match="is a sentence-transformers bi-encoder, not a cross-encoder"):
        EarlyLayerEncoder.from_pretrained(bi_encoder)
    with pytest.raises(EarlyLayerError, match="encoder without a classification head"):
        EarlyLayerEncoder.from_pretrained(build_tiny_backbone(tmp_path, "bert"))
    with pytest.raises(EarlyLayerError, match="no texts to embed"):
        early_layer_embeddings(folder, [], layer=1)
    with pytest.raises(EarlyLayerError, match="unknown input format 'triple'"):
        early_layer_embeddings(folder, TEXTS, layer=1, input_format="triple")


def _empty_corpus(folder: Path) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("")
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "cat"}\n')
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return folder


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("bi-encoder", "is a sentence-transformers bi-encoder, not a cross-encoder"),
        ("layers", "layer 9 is beyond the model"),
        ("empty corpus", "corpus.jsonl holds no records"),
        ("teacher width", "gives 384-dimensional embeddings, the dual encoder 32-dimensional ones"),
        ("texts", "cannot read the embedding texts"),
    ],
)
def test_distill_embedder_reports_bad_input_in_one_line(
    models, sample_data, minilm_path, tmp_path, capsys, case, message
):
    from embeddings.cli import main as cli

    folder, data = cross_encoder(models), sample_data
    extra = []
    if case == "bi-encoder":
        folder = save_early_layer_model(folder, tmp_path / "bi-encoder", layer=1)
    elif case == "layers":
        extra = ["--layers", "9"]
    elif case == "empty corpus":
        data = _empty_corpus(tmp_path / "empty")
    else:  # found once the teacher has scored: a few queries
        teacher = minilm_path if case == "teacher width" else str(cross_encoder(models))
        extra = ["--max-queries", "2", "--candidates", "3", "--negatives", "1", "--embedding-teacher", teacher]
        if case == "texts":
            extra += ["--embedding-texts", str(tmp_path / "missing.txt")]
    capsys.readouterr()
    code = cli(["--cross-encoder", str(folder), "--data", str(data), "--output", str(tmp_path / "out"), *extra])
    stderr = capsys.readouterr().err
    error = stderr.strip().splitlines()[-1]  # after any progress bar of the models loaded before the error
    assert code == 2 and error.startswith("error: ") and "Traceback" not in stderr and message in error
    assert not (tmp_path / "out").exists()


def test_distill_embedder_is_a_mice_verb(models, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mice_rerank.cli", "distill-embedder", "--help"],
        capture_output=True, text=True, check=True, cwd=REPO_ROOT, timeout=300,
    )  # fmt: skip
    assert "--cross-encoder" in result.stdout and "--layers" in result.stdout and "--preset" in result.stdout


def test_config_rejects_impossible_settings(tmp_path):
    with pytest.raises(ValueError, match="copied_layers <= layers"):
        EmbedderDistillationConfig("ce", "data", "out", layers=1, copied_layers=2).check()
    with pytest.raises(ValueError, match="must exceed negatives"):
        EmbedderDistillationConfig("ce", "data", "out", candidates=3, negatives=3).check()
    with pytest.raises(ValueError, match="max_steps must be at least 1"):
        distill_embedder(EmbedderDistillationConfig("ce", "data", "out", max_steps=0))
    with pytest.raises(ValueError, match="pair_queries must not be negative"):
        EmbedderDistillationConfig("ce", "data", "out", pair_queries=-1).check()
    with pytest.raises(ValueError, match="max_grad_norm must not be negative"):
        EmbedderDistillationConfig("ce", "data", "out", max_grad_norm=-1.0).check()
    with pytest.raises(ValueError, match="embedding_texts needs embedding_teacher"):
        EmbedderDistillationConfig("ce", "data", "out", embedding_texts="texts.txt").check()
    with pytest.raises(ValueError, match="sampler must be one of round-robin, proportional, not 'random'"):
        EmbedderDistillationConfig("ce", "data", "out", sampler="random").check()
    with pytest.raises(ValueError, match="pair_negatives needs pair_queries"):
        EmbedderDistillationConfig("ce", "data", "out", pair_negatives=1).check()
    with pytest.raises(ValueError, match="need 0 <= warmup_ratio < 1, got 1.0"):  # 1 would read as one step
        EmbedderDistillationConfig("ce", "data", "out", warmup_ratio=1.0).check()
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        config_from_preset("huge", cross_encoder="ce", data="data", output="out")


def test_bench_embedder_times_every_model_in_turns_and_divides_by_the_baseline(
    models, sample_data, tmp_path, capsys, monkeypatch
):
    """The benchmark prints one JSON object: per-round speeds of every model, their medians and the ratios."""
    bench = load_script("bench_embedder")
    one, two = tmp_path / "one", tmp_path / "two"
    build_light_dual_encoder(cross_encoder(models), layers=1).save(str(one))
    build_light_dual_encoder(cross_encoder(models), layers=2).save(str(two))
    argv = [
        "--models",
        f"one={one}",
        f"two={two}",
        "--data",
        str(sample_data),
        "--documents",
        "8",
        "--rounds",
        "3",
        "--max-length",
        "64",
    ]
    assert bench.main([*argv, "--json", str(tmp_path / "bench.json")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == json.loads((tmp_path / "bench.json").read_text())
    assert (result["baseline"], result["documents"], result["rounds"]) == ("two", 8, 3)
    for name in ("one", "two"):
        entry = result["models"][name]
        assert len(entry["documents_per_s_per_round"]) == 3
        assert entry["documents_per_s"] == pytest.approx(float(np.median(entry["documents_per_s_per_round"])))
    assert (result["models"]["one"]["layers"], result["models"]["two"]["layers"]) == (1, 2)
    assert bench.main([*argv, "--models", f"gone={tmp_path / 'gone'}"]) == 2
    assert "error: embedding model" in capsys.readouterr().err
    assert bench.main([*argv, "--data", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path} holds no corpus.jsonl; pass a BEIR folder with --data"
    assert bench.main([*argv, "--device", "abacus"]) == 2
    assert "error: --device 'abacus' is not a torch device" in capsys.readouterr().err
    with monkeypatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", lambda: False)
        assert bench.main([*argv, "--device", "cuda"]) == 2
    assert "this torch sees no CUDA device; pass --device cpu" in capsys.readouterr().err
    assert bench.main([*argv, "--dtype", "bfloat16"]) == 0
    half = json.loads(capsys.readouterr().out)
    assert half["device"] == "cpu"
    assert {entry["dtype"] for entry in half["models"].values()} == {"bfloat16"}  # read off the cast weights
    assert {entry["dtype"] for entry in result["models"].values()} == {"float32"}
    speedup = result["models"]["one"]["documents_per_s"] / result["models"]["two"]["documents_per_s"]
    assert result["models"]["one"]["speedup"] == pytest.approx(speedup)
    assert result["models"]["two"]["speedup"] == 1.0
    with pytest.raises(ValueError, match="need texts, models and at least one round"):
        bench.encoding_speed({}, ["a text"])


def test_pretokenized_speed_tokenizes_once_and_runs_the_same_forward_passes(models, monkeypatch):
    """``pretokenized`` tokenizes every batch once before the rounds; the rounds then run the forward passes that
    ``encode`` runs (the same length-sorted batches, the same embeddings), and tokenize nothing."""
    from embeddings.speed import encoding_speed

    model = build_light_dual_encoder(cross_encoder(models), layers=2)
    texts = [f"document {i}" + " word" * (3 * i % 10) for i in range(10)]  # ten lengths: one sorted order
    calls, forwards = [], []
    preprocess, forward = model.preprocess, model.forward
    monkeypatch.setattr(model, "preprocess", lambda batch, **kw: calls.append(len(batch)) or preprocess(batch, **kw))

    def recording_forward(features, **kwargs):
        output = forward(features, **kwargs)
        forwards.append(output["sentence_embedding"].detach().clone())
        return output

    monkeypatch.setattr(model, "forward", recording_forward)
    speeds = encoding_speed({"m": model}, texts, rounds=2, batch_size=4, pretokenized=True)
    assert len(speeds["m"]) == 2 and min(speeds["m"]) > 0
    assert calls == [4, 4, 2]  # once, before the warm-up batch and the two rounds
    assert len(forwards) == 1 + 2 * 3
    calls.clear()
    encoded = model.encode(texts, batch_size=4, convert_to_tensor=True)
    assert calls == [4, 4, 2]
    ordered = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    torch.testing.assert_close(torch.cat(forwards[-3:]), encoded[ordered])
