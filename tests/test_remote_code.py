"""Saved MICE folders load as Hub remote code where this project cannot be imported, and work in CrossEncoder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from tiny_models import build_tiny_backbone
from transformers import AutoTokenizer

from modeling_mice import MiceForSequenceClassification

FAMILIES = ["bert", "roberta", "electra", "mpnet", "deberta-v3", "modernbert"]
QUERIES = ["what is a cat", "how do dogs bark", "what is a cat", ""]
DOCUMENTS = ["a cat is a small animal that purrs", "dogs bark", "the weather in paris is mild", "cats"]

# The child refuses every package of this project, so only the files saved next to the weights can run.
CHILD = textwrap.dedent(
    """
    import importlib.abc, json, sys
    import torch

    BLOCKED = {"modeling_mice", "trainers", "evaluation", "hub_cards", "mice_rerank"}

    class RefuseProject(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is not importable in this process")
            return None

    sys.meta_path.insert(0, RefuseProject())
    try:
        import modeling_mice  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("modeling_mice is importable: the test would prove nothing")

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(1)
    queries, documents, folders = json.loads(sys.stdin.read())
    results = {}
    for family, folder in folders.items():
        model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)  # it reads config.json's auto_map
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            joint = model(**tokenizer(queries, documents, padding=True, return_tensors="pt")).logits
            states = model.encode_documents(**model.tokenize_documents(tokenizer, documents))
            cached = model.score(**model.tokenize_queries(tokenizer, queries), document_states=states).logits
        results[family] = {"joint": joint.flatten().tolist(), "cached": cached.flatten().tolist()}
    print(json.dumps(results))
    """
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """MICE-ℓ2+2 of every family, saved with its tokenizer."""
    root = tmp_path_factory.mktemp("remote")
    folders = {}
    for family in FAMILIES:
        backbone = build_tiny_backbone(root / "backbones", family, cross_encoder=True)
        model = MiceForSequenceClassification.from_backbone(str(backbone), fusion_layer=2, interaction_layers=2)
        folders[family] = root / "mice" / family
        model.save_pretrained(folders[family])
        AutoTokenizer.from_pretrained(backbone).save_pretrained(folders[family])
    return folders


def local_scores(folder) -> torch.Tensor:
    model = MiceForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        return model(**tokenizer(QUERIES, DOCUMENTS, padding=True, return_tensors="pt")).logits.flatten()


def test_saved_folder_holds_remote_code(saved):
    for folder in saved.values():
        config = json.loads((folder / "config.json").read_text())
        assert config["auto_map"] == {
            "AutoConfig": "configuration_mice.MiceConfig",
            "AutoModelForSequenceClassification": "modeling_mice.MiceForSequenceClassification",
        }
        assert (folder / "configuration_mice.py").is_file() and (folder / "modeling_mice.py").is_file()
        assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))


def test_remote_code_in_a_process_without_this_project(saved, tmp_path):
    """A fresh interpreter that cannot import modeling_mice loads the folders with trust_remote_code and gets the same
    scores, on joint pairs and through cached document states."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "OMP_NUM_THREADS": "1"}
    payload = json.dumps([QUERIES, DOCUMENTS, {family: str(folder) for family, folder in saved.items()}])
    child = subprocess.run(
        [sys.executable, "-c", CHILD], input=payload, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert child.returncode == 0, child.stderr[-3000:]
    remote = json.loads(child.stdout.strip().splitlines()[-1])
    for family, folder in saved.items():
        local = local_scores(folder)
        assert torch.equal(torch.tensor(remote[family]["joint"], dtype=torch.float32), local), family
        assert (torch.tensor(remote[family]["cached"]) - local).abs().max() <= 1e-5, family


@pytest.mark.parametrize("family", ["bert", "roberta", "modernbert"])
def test_cross_encoder_predict_and_rank(saved, family):
    """sentence-transformers' CrossEncoder: predict gives our raw logits with Identity, sigmoid(logits) by default;
    rank orders the documents by those scores."""
    from sentence_transformers import CrossEncoder

    folder = saved[family]
    reference = local_scores(folder)
    cross_encoder = CrossEncoder(str(folder), trust_remote_code=True)
    pairs = list(zip(QUERIES, DOCUMENTS, strict=True))
    raw = cross_encoder.predict(pairs, activation_fn=torch.nn.Identity(), convert_to_tensor=True, batch_size=3)
    assert (raw.float() - reference).abs().max() <= 1e-5
    default = cross_encoder.predict(pairs, convert_to_tensor=True)
    assert (default.float() - torch.sigmoid(reference)).abs().max() <= 1e-5

    query, documents = QUERIES[0], DOCUMENTS
    model = MiceForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        q = model.tokenize_queries(tokenizer, query)
        expected = model(**q, **model.tokenize_documents(tokenizer, documents)).logits.flatten()
    ranking = cross_encoder.rank(query, documents, activation_fn=torch.nn.Identity())
    assert [hit["corpus_id"] for hit in ranking] == expected.argsort(descending=True).tolist()
    assert all(abs(hit["score"] - expected[hit["corpus_id"]].item()) <= 1e-5 for hit in ranking)
