"""Converting a trained cross-encoder into MICE (trainers.conversion): inputs, the objective, a whole conversion."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from loaders import load_script
from tiny_models import build_tiny_backbone
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from modeling_mice import MiceForSequenceClassification
from ranking_data.synthetic_queries import generate_queries
from ranking_data.work_folders import WorkFolderError
from trainers.conversion import (
    ConversionConfig,
    ConversionError,
    ConversionLoss,
    agreement,
    convert,
    inspect_parent,
    joint_pairs,
    resolve_layers,
    student_document_length,
)

WORDS = (
    "debian package library tool editor server client network parser image audio video font theme game kernel module "
    "python perl ruby java data file system manager viewer converter compiler debugger plugin driver"
).split()


def write_corpus(folder: Path, documents: int = 60, queries: int | None = 40, splits: tuple[str, ...] = ("train",)):
    """A small BEIR-layout folder of word-salad documents; queries are titles, judged in ``splits``."""
    import random

    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    lines, titles = [], {}
    for index in range(documents):
        title = " ".join(rng.sample(WORDS, 3))
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30))) + "."
        titles[f"d{index}"] = title
        lines.append(json.dumps({"_id": f"d{index}", "title": title, "text": text}))
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if queries is None:
        return folder
    records = [json.dumps({"_id": f"q{i}", "text": titles[f"d{i}"]}) for i in range(queries)]
    (folder / "queries.jsonl").write_text("\n".join(records) + "\n", encoding="utf-8")
    (folder / "qrels").mkdir(exist_ok=True)
    share = queries // len(splits)
    for number, split in enumerate(splits):
        judged = range(number * share, (number + 1) * share)
        rows = "".join(f"q{i}\td{i}\t1\n" for i in judged)
        (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> str:
    return str(build_tiny_backbone(tmp_path_factory.mktemp("parent"), "bert", num_hidden_layers=4, cross_encoder=True))


def small_config(parent: str, data: Path, output: Path, **overrides) -> ConversionConfig:
    settings = dict(
        cross_encoder=parent,
        data=str(data),
        output=str(output),
        steps=6,
        max_queries=24,
        held_out_queries=4,
        depth=8,
        list_size=4,
        batch_size=4,
        learning_rate=1e-3,
        max_document_length=48,
        max_query_length=16,
    )
    return ConversionConfig(**(settings | overrides))


@pytest.mark.parametrize("family", ["bert", "roberta", "mpnet", "modernbert"])
def test_joint_pairs_equal_the_parent_tokenizer_pairs(tmp_path, family):
    folder = build_tiny_backbone(tmp_path, family, num_hidden_layers=2, cross_encoder=True)
    mice = MiceForSequenceClassification.from_backbone(
        str(folder), fusion_layer=1, interaction_layers=1, mask_cls_to_doc=False
    )
    tokenizer = AutoTokenizer.from_pretrained(folder)
    queries = ["a video editor", "kernel"]
    documents = ["python parser for data files", "a game", "font theme manager", "the network server"]
    query_inputs = mice.tokenize_queries(tokenizer, queries)
    document_inputs = mice.tokenize_documents(tokenizer, documents)
    joint = joint_pairs(
        query_inputs["query_input_ids"],
        query_inputs["query_attention_mask"],
        document_inputs["document_input_ids"],
        document_inputs["document_attention_mask"],
        mice.config,
    )
    expected = tokenizer(
        [q for q in queries for _ in range(2)], documents, padding=True, return_tensors="pt", return_token_type_ids=True
    )
    assert torch.equal(joint["input_ids"], expected["input_ids"])
    assert torch.equal(joint["attention_mask"], expected["attention_mask"])
    if family == "bert":
        assert torch.equal(joint["token_type_ids"], expected["token_type_ids"])


def test_bad_parents_get_clear_errors(tmp_path):
    bi_encoder = build_tiny_backbone(tmp_path / "bi", "bert")
    with pytest.raises(ConversionError, match="not a cross-encoder"):
        inspect_parent(str(bi_encoder))
    cross_encoder = build_tiny_backbone(tmp_path / "ce", "bert", cross_encoder=True)
    mice_folder = tmp_path / "mice"
    MiceForSequenceClassification.from_backbone(
        str(cross_encoder), fusion_layer=2, interaction_layers=2
    ).save_pretrained(mice_folder)
    with pytest.raises(ConversionError, match="already a MICE model"):
        inspect_parent(str(mice_folder))
    from transformers import GPT2Config, GPT2ForSequenceClassification

    gpt2 = tmp_path / "gpt2"
    GPT2ForSequenceClassification(GPT2Config(n_layer=2, n_embd=16, n_head=2, num_labels=1)).save_pretrained(gpt2)
    with pytest.raises(ConversionError, match="MICE supports the encoder families"):
        inspect_parent(str(gpt2))
    with pytest.raises(ConversionError, match="cannot read a model config"):
        inspect_parent(str(tmp_path / "nowhere"))


def test_layers_default_and_bounds(parent, tmp_path):
    info = inspect_parent(parent)
    assert info.depth == 4
    config = small_config(parent, tmp_path, tmp_path / "out")
    assert resolve_layers(config, info) == (2, 2)
    # Four interaction layers by default: all above layer 2 up to six layers, the top four of a deeper parent.
    assert [resolve_layers(config, replace(info, depth=depth)) for depth in (3, 6, 12)] == [(1, 2), (2, 4), (8, 4)]
    for fusion in (0, 4, 7):
        with pytest.raises(ConversionError, match="outside the parent's 4 layers"):
            resolve_layers(small_config(parent, tmp_path, tmp_path / "out", fusion_layer=fusion), info)
    with pytest.raises(ConversionError, match="choose 1 to 1 interaction layers"):
        resolve_layers(small_config(parent, tmp_path, tmp_path / "out", fusion_layer=3, interaction_layers=2), info)


def test_student_reads_every_document_token_its_parent_reads(parent, tmp_path):
    info = inspect_parent(parent)
    config = small_config(parent, tmp_path, tmp_path / "out", max_document_length=256)
    # A parent reading 96-token pairs reads up to 92 document tokens beside a one-token query: 94 with MICE's own
    # [CLS] and [SEP].
    assert student_document_length(config, replace(info, max_length=96, positions=512)) == 94
    assert student_document_length(replace(config, max_document_length=64), replace(info, max_length=96)) == 64
    assert student_document_length(config, replace(info, max_length=None, positions=40)) == 40


def test_empty_corpus_and_missing_corpus_are_reported(parent, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConversionError, match="holds no corpus.jsonl"):
        convert(small_config(parent, empty, tmp_path / "out"))
    (empty / "corpus.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(ConversionError, match="holds no records"):
        convert(small_config(parent, empty, tmp_path / "out"))


def test_generated_queries_are_reproducible_and_come_from_their_documents():
    corpus = {f"d{i}": {"title": "" if i % 2 else f"title number {i}", "text": f"word{i} " * 20} for i in range(30)}
    first = generate_queries(corpus, 10, seed=3)
    assert first == generate_queries(corpus, 10, seed=3)
    assert len(first) == 10
    for query_id, text in first.items():
        document = corpus[query_id.removeprefix("generated:")]
        assert text in document["title"] or text in document["text"]
        assert 2 <= len(text.split()) <= 12
    with pytest.raises(ValueError, match="to make a query from"):
        generate_queries({"d": {"title": "", "text": "two words"}}, 5)


def test_agreement_of_a_model_with_its_own_scores_is_perfect(parent):
    mice = MiceForSequenceClassification.from_backbone(parent, fusion_layer=2, interaction_layers=2).eval()
    tokenizer = AutoTokenizer.from_pretrained(parent)
    documents = [" ".join(WORDS[i : i + 5]) for i in range(12)]
    with torch.no_grad():
        states = mice.encode_documents(**mice.tokenize_documents(tokenizer, documents))
        own = mice.score(**mice.tokenize_queries(tokenizer, ["video editor"]), document_states=states).logits[:, 0]
    rows = [{"query": "video editor", "documents": documents, "scores": own.tolist()}]
    same = agreement(mice, tokenizer, rows)
    assert same["kendall_tau"] == pytest.approx(1.0) and same["top1_agreement"] == same["top10_overlap"] == 1.0
    reversed_rows = [{**rows[0], "scores": (-own).tolist()}]
    result = agreement(mice, tokenizer, reversed_rows)
    assert result["kendall_tau"] == pytest.approx(-1.0) and result["top1_agreement"] == 0.0


def test_alignment_is_zero_for_the_parent_own_states_and_positive_otherwise(parent):
    """The alignment compares the right tokens and layers: fed the parent's own states, it is exactly zero."""
    mice = MiceForSequenceClassification.from_backbone(parent, fusion_layer=2, interaction_layers=2).eval()
    tokenizer = AutoTokenizer.from_pretrained(parent)
    parent_model = AutoModelForSequenceClassification.from_pretrained(parent).eval()
    loss = ConversionLoss(None, parent_model, alignment_weight=1.0)
    query_inputs = mice.tokenize_queries(tokenizer, ["video editor", "a python data parser tool"])
    document_inputs = mice.tokenize_documents(tokenizer, ["font theme", "game server", "kernel module", "audio"])
    joint = joint_pairs(*query_inputs.values(), *document_inputs.values(), mice.config)
    with torch.no_grad():
        reference = parent_model(**joint, output_hidden_states=True).hidden_states
        states = mice.encode_documents(**document_inputs)
        student = mice.score(**query_inputs, document_states=states, output_hidden_states=True).hidden_states
    length = query_inputs["query_input_ids"].shape[1]
    own = (reference[2][:, :length], reference[3][:, :length], reference[-1][:, :1])
    assert loss.alignment(mice, query_inputs, document_inputs, own).item() == 0.0
    assert loss.alignment(mice, query_inputs, document_inputs, student).item() > 0.0


def test_conversion_trains_resumes_and_loads_as_mice(parent, tmp_path):
    data = write_corpus(tmp_path / "data", splits=("train", "test"))
    output = tmp_path / "mice"
    result = convert(small_config(parent, data, output, alignment_weight=1.0, max_queries=16))
    record = json.loads((output / "conversion.json").read_text())
    assert record["fusion_layer"] == 2 and record["interaction_layers"] == 2
    assert record["max_document_length"] == 48  # as asked: the tiny parent sets no pair limit and has 128 positions
    # Only the train split's queries are used (q0..q19): the test split's stay unseen.
    assert record["query_source"].startswith("queries of the train split")
    assert record["training_queries"] + record["held_out_queries"] == 20
    assert set(record["agreement_with_parent"]) == {"queries", "kendall_tau", "top1_agreement", "top10_overlap"}
    assert not (output / "_conversion").exists()
    training = json.loads((output / "training_record.json").read_text())
    assert training["model_type"] == "mice" and training["objectives"][0]["name"] == "ConversionLoss"
    assert result.record["conversion"] == record
    # The parent's weights were the start: the frozen embeddings equal the parent's.
    converted = MiceForSequenceClassification.from_pretrained(output)
    original = AutoModelForSequenceClassification.from_pretrained(parent)
    assert torch.equal(
        converted.mice.backbone.embeddings.word_embeddings.weight, original.bert.embeddings.word_embeddings.weight
    )
    # It loads with remote code in a process where this package cannot be imported.
    script = (
        "import sys; sys.path = [p for p in sys.path if 'work' not in p or 'site-packages' in p];"
        "from transformers import AutoModelForSequenceClassification as A;"
        f"m = A.from_pretrained({str(output)!r}, trust_remote_code=True); print(type(m).__name__)"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert run.stdout.strip() == "MiceForSequenceClassification"


def test_an_interrupted_conversion_resumes_only_with_its_own_settings(parent, tmp_path, monkeypatch):
    import trainers.conversion as conversion

    data = write_corpus(tmp_path / "data", splits=("train", "test"))
    output = tmp_path / "mice"

    def interrupt(*_, **__):
        raise KeyboardInterrupt

    monkeypatch.setattr(conversion, "build_student", interrupt)
    with pytest.raises(KeyboardInterrupt):  # after the parent scored the candidates
        convert(small_config(parent, data, output, steps=2))
    assert (output / "_conversion" / "parent_scores" / "train").is_dir()
    # Other candidates would be read from the scores of these: refused.
    with pytest.raises(WorkFolderError, match=r"holds a conversion run with other settings \(depth: 8 there, 6 now\)"):
        convert(small_config(parent, data, output, steps=2, depth=6))
    monkeypatch.undo()
    import ranking_data.teachers

    # The same settings resume from the saved scores: the parent scores nothing again.
    monkeypatch.setattr(ranking_data.teachers, "CrossEncoderTeacher", interrupt)
    result = convert(small_config(parent, data, output, steps=2))
    assert result.record["conversion"]["training_queries"] > 0 and not (output / "_conversion").exists()


def test_conversion_of_a_bare_corpus_uses_generated_queries(parent, tmp_path):
    data = write_corpus(tmp_path / "bare", queries=None)
    output = tmp_path / "mice"
    convert(small_config(parent, data, output, steps=2, mask_cls_to_doc=False, mask_query_to_cls=False))
    record = json.loads((output / "conversion.json").read_text())
    assert record["query_source"].startswith("pseudo-queries generated from the corpus")
    assert record["training_queries"] > 0
    # The parent's attention pattern, kept on request: the saved model carries both choices.
    config = json.loads((output / "config.json").read_text())
    assert config["mask_cls_to_doc"] is False and config["mask_query_to_cls"] is False


def test_training_lowers_the_distillation_loss(parent, tmp_path):
    """A few hundred tiny steps bring the student's scores closer to the parent's than they started."""
    from trainers.conversion import build_parent_scores, build_student, load_conversion_data

    data = write_corpus(tmp_path / "data")
    config = small_config(parent, data, tmp_path / "out", steps=60, max_queries=16, held_out_queries=0)
    info = inspect_parent(parent)
    model = build_student(config, info, 2, 2)
    dataset = build_parent_scores(config, load_conversion_data(config), tmp_path / "scores")
    rows = list(dataset.training_rows(list_size=4))
    loss = ConversionLoss(model, kl_weight=1.0, mse_weight=1.0)

    def total() -> float:
        with torch.no_grad():
            terms = loss(
                [r["query"] for r in rows], [r["documents"] for r in rows], [torch.tensor(r["scores"]) for r in rows]
            )
        return float(sum(terms.values()))

    before = total()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(30):
        optimizer.zero_grad()
        terms = loss(
            [r["query"] for r in rows], [r["documents"] for r in rows], [torch.tensor(r["scores"]) for r in rows]
        )
        sum(terms.values()).backward()
        optimizer.step()
    assert total() < 0.5 * before


def test_hidden_states_are_the_interaction_layers_inputs_and_outputs(parent):
    mice = MiceForSequenceClassification.from_backbone(parent, fusion_layer=1, interaction_layers=3).eval()
    tokenizer = AutoTokenizer.from_pretrained(parent)
    queries = mice.tokenize_queries(tokenizer, ["video editor", "python"])
    states = mice.encode_documents(**mice.tokenize_documents(tokenizer, ["a", "font theme", "game", "data file"]))
    with torch.no_grad():
        output = mice.score(**queries, document_states=states, output_hidden_states=True)
        plain = mice.score(**queries, document_states=states)
        lower = mice.mice.encode_queries(**queries)
    assert len(output.hidden_states) == 4
    assert torch.equal(output.hidden_states[0], lower.repeat_interleave(2, dim=0))
    assert output.hidden_states[-1].shape[1] == 1  # the [CLS]-pooled head computes only that row of the last layer
    assert torch.equal(output.logits, plain.logits)


def test_mice_convert_reports_a_bad_parent_in_one_line(tmp_path, capsys):
    from mice_rerank.cli import main

    bi_encoder = build_tiny_backbone(tmp_path / "bi", "bert")
    argv = ["convert", "--cross_encoder", str(bi_encoder), "--data", str(tmp_path), "--output", str(tmp_path / "out")]
    assert main(argv) == 2
    error, hint = capsys.readouterr().err.strip().splitlines()[-2:]
    assert error.startswith("error: ") and "not a cross-encoder" in error
    assert hint.startswith("hint: ") and "mice convert --help" in hint


def test_mice_convert_prints_the_layers_and_document_length_it_chose(parent, tmp_path, capsys):
    from mice_rerank.cli import main

    data = write_corpus(tmp_path / "data")
    output = tmp_path / "out"
    flags = ["--steps", "2", "--max_queries", "12", "--held_out_queries", "2", "--depth", "4", "--batch_size", "2"]
    assert main(["convert", "--cross_encoder", parent, "--data", str(data), "--output", str(output), *flags]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # The default 256 tokens, capped by the tiny parent's 128 positions (its tokenizer sets no pair limit).
    assert (summary["fusion_layer"], summary["interaction_layers"], summary["max_document_length"]) == (2, 2, 128)
    assert json.loads((output / "config.json").read_text())["max_document_length"] == 128


def test_sweep_converts_each_layer_choice_and_reports_retention_and_speedup(parent, tmp_path):
    sweep = load_script("convert_sweep")
    assert sweep.pareto_front([(1.0, 0.9), (2.0, 0.8), (1.5, 0.7), (2.0, 0.9)]) == [3]
    assert sweep.pareto_front([(1.0, 0.9), (2.0, 0.8), (1.5, 0.7)]) == [0, 1]

    data = write_corpus(tmp_path / "data", splits=("train", "test"))
    other = shutil.copytree(data, tmp_path / "other")  # "out of domain": the same lists under another name
    output = tmp_path / "sweep"
    argv = ["--cross_encoder", parent, "--data", str(data), "--output", str(output), "--steps", "2"]
    argv += ["--max_queries", "16", "--held_out_queries", "2", "--depth", "6", "--list_size", "4", "--batch_size", "2"]
    argv += ["--layers", "2+2", "1+2", "--evaluate", str(data), str(other), "--eval_depth", "5"]
    assert sweep.main(argv) == 0
    result = json.loads((output / "sweep.json").read_text())
    report = json.loads((output / "evaluation.json").read_text())
    parent_name = next(name for name, system in report["systems"].items() if system["kind"] == "cross-encoder")
    parent_ndcg = report["results"][parent_name]["data"]["metrics"]["ndcg@10"]
    assert [(row["fusion_layer"], row["interaction_layers"]) for row in result["rows"]] == [(2, 2), (1, 2)]
    for row in result["rows"]:
        ndcg = report["results"][row["model"]]["data"]["metrics"]["ndcg@10"]
        assert row["retained_in_domain"] == pytest.approx(ndcg / parent_ndcg)
        assert row["retained_out_of_domain_mean"] == pytest.approx(ndcg / parent_ndcg)  # the same lists again
        assert row["speedup"]["other"] == pytest.approx(
            report["results"][parent_name]["other"]["latency"]["mean_ms"]
            / report["results"][row["model"]]["other"]["latency"]["mean_ms"]
        )
    assert (output / "sweep.png").stat().st_size > 0
    assert "| ℓ1+2 |" in (output / "sweep.md").read_text()
    # Both conversions share one set of parent scores, and a re-run reuses the finished conversions.
    assert sorted(path.name for path in output.iterdir() if path.name.startswith("mice-")) == ["mice-l1+2", "mice-l2+2"]
    before = (output / "mice-l2+2" / "model.safetensors").stat().st_mtime_ns
    assert sweep.main(argv) == 0
    assert (output / "mice-l2+2" / "model.safetensors").stat().st_mtime_ns == before
