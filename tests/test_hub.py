"""Push to a local Hub server (tests/hub_server.py) and load back in fresh processes, as users would.

Every client runs in a subprocess whose environment points huggingface_hub, transformers and datasets at the
server (HF_ENDPOINT, HF_TOKEN, HF_HUB_DISABLE_XET=1, HF_HUB_OFFLINE=0) with an empty HF_HOME, so nothing is
read from a cache or a stored login and the test process itself stays offline.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hub_server import HubServer, hub_environment
from test_cards import make_cross_encoder_folder, make_mice_folder, metrics, teacher_dataset, write_evaluation
from tiny_models import build_tiny_backbone
from transformers import AutoTokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
PUSH_SCRIPT = REPO_ROOT / "scripts" / "push_to_hub.py"
PAIRS = [
    ["how do I mount an iso image", "mount -o loop image.iso /mnt gives access to the files"],
    ["how do I mount an iso image", "nano is a small text editor for the terminal"],
    ["terminal text editor", "nano is a small text editor for the terminal, with syntax highlighting and undo"],
    ["terminal text editor", "iso"],
]
# What remote code may import besides its sibling files (docs/design.md, modeling_mice row).
ALLOWED_REMOTE_IMPORTS = {"torch", "transformers", "__future__"} | set(sys.stdlib_module_names)

LOAD_MODEL = """
import json, shutil, sys
import torch
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from sentence_transformers import CrossEncoder
from transformers import AutoModelForSequenceClassification, AutoTokenizer

repo, revision, pairs, code_dir = json.loads(sys.argv[1])
tokenizer = AutoTokenizer.from_pretrained(repo, trust_remote_code=True)
inputs = tokenizer([q for q, _ in pairs], [d for _, d in pairs], padding=True, truncation=True, return_tensors="pt")
model = AutoModelForSequenceClassification.from_pretrained(repo, trust_remote_code=True).eval()
pinned = AutoModelForSequenceClassification.from_pretrained(repo, trust_remote_code=True, revision=revision).eval()
with torch.no_grad():
    auto, auto_pinned = model(**inputs).logits[:, 0].tolist(), pinned(**inputs).logits[:, 0].tolist()
cross_encoder = CrossEncoder(repo, trust_remote_code=True)
predicted = cross_encoder.predict([tuple(p) for p in pairs], activation_fn=torch.nn.Identity()).tolist()
files = HfApi().list_repo_files(repo)
for name in files:
    if name.endswith(".py"):
        shutil.copy(hf_hub_download(repo, name), f"{code_dir}/{name}")
card = ModelCard.load(repo)
print("RESULT " + json.dumps({
    "auto": auto, "pinned": auto_pinned, "cross_encoder": predicted, "module": type(model).__module__,
    "eval_results": [[r.dataset_name, r.metric_name, r.metric_value] for r in card.data.eval_results],
    "files": files, "card": card.text,
}))
"""

LOAD_DATASET = """
import json, sys
import datasets
from huggingface_hub import DatasetCard

repo = sys.argv[1]
rows = {name: datasets.load_dataset(repo, name, split="train").to_list() for name in ("train", "queries", "documents")}
card = DatasetCard.load(repo, repo_type="dataset")
print("RESULT " + json.dumps({"rows": rows, "configs": [c["config_name"] for c in card.data.configs], "card": card.text}))
"""


@pytest.fixture(scope="module")
def hub():
    with HubServer() as server:
        yield server


def client_env(hub: HubServer, home: Path, token: str | None = "server") -> dict[str, str]:
    """The inherited environment minus any Hugging Face setting, plus the local server's, with an empty HF_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    return {**env, **hub_environment(hub, token=token), "HF_HOME": str(home)}


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    # No stdin: a prompt (e.g. transformers asking to trust remote code) must fail the test, not wait for an answer.
    return subprocess.run(
        command, env=env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300
    )


def push(kind: str, folder: Path, repo_id: str, env: dict[str, str], *options: str) -> subprocess.CompletedProcess:
    return run([sys.executable, str(PUSH_SCRIPT), kind, str(folder), "--repo-id", repo_id, *options], env)


def output_json(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.split("RESULT ", 1)[1])


def content_commit(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout.split("content commit (pin this revision): ")[1].split()[0]


@pytest.fixture(scope="module")
def pushed_mice(hub, tmp_path_factory):
    """A tiny MICE model in the quickstart layout, pushed with the CLI and loaded back in a fresh process."""
    root = tmp_path_factory.mktemp("mice-push")
    folder, model = make_mice_folder(root / "models")
    evaluation = write_evaluation(root / "evaluation.json", {"mice": ("models/mice", metrics(0.5, 0.25, 1.0, 0.375))})
    tokenizer = AutoTokenizer.from_pretrained(folder)
    inputs = tokenizer([q for q, _ in PAIRS], [d for _, d in PAIRS], padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs).logits[:, 0]
    env = client_env(hub, root / "hf-home")
    pushed = push("model", folder, "mice-tester/mice-tiny", env)
    revision = content_commit(pushed)
    code_dir = root / "remote-code"
    code_dir.mkdir()
    loaded = output_json(
        run(
            [sys.executable, "-c", LOAD_MODEL, json.dumps(["mice-tester/mice-tiny", revision, PAIRS, str(code_dir)])],
            env,
        )
    )
    return {
        "expected": expected,
        "loaded": loaded,
        "revision": revision,
        "code_dir": code_dir,
        "evaluation": evaluation,
    }


@pytest.mark.slow
def test_pushed_mice_model_loads_with_the_same_scores(pushed_mice):
    loaded, expected = pushed_mice["loaded"], pushed_mice["expected"]
    assert loaded["module"].startswith("transformers_modules"), "the Hub copy of the code must be what ran"
    for path in ("auto", "pinned", "cross_encoder"):
        torch.testing.assert_close(torch.tensor(loaded[path]), expected, rtol=0, atol=1e-5, msg=path)
    files = set(loaded["files"])
    assert {"model.safetensors", "config.json", "configuration_mice.py", "modeling_mice.py", "README.md"} <= files
    assert {"training_record.json", "evaluation.json", "tokenizer_config.json"} <= files
    assert not {f for f in files if f.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl"))}


@pytest.mark.slow
def test_pushed_card_keeps_eval_results_and_pins_the_content_commit(pushed_mice):
    loaded = pushed_mice["loaded"]
    recorded = pushed_mice["evaluation"]["results"]["mice"]["debian"]["metrics"]
    assert loaded["eval_results"] == [["debian", metric, value] for metric, value in recorded.items()]
    assert f'revision="{pushed_mice["revision"]}"' in loaded["card"]
    assert 'from_pretrained("mice-tester/mice-tiny", trust_remote_code=True)' in loaded["card"]


@pytest.mark.slow
def test_pushed_remote_code_imports_only_torch_transformers_stdlib_and_siblings(pushed_mice):
    code_dir = pushed_mice["code_dir"]
    siblings = {path.stem for path in code_dir.glob("*.py")}
    assert {"configuration_mice", "modeling_mice"} <= siblings
    for path in sorted(code_dir.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
                assert all(n.split(".")[0] in ALLOWED_REMOTE_IMPORTS for n in names), f"{path.name}: import {names}"
            elif isinstance(node, ast.ImportFrom) and node.level > 0:
                module = (node.module or "").split(".")[0]
                imported = [module] if module else [alias.name for alias in node.names]
                assert set(imported) <= siblings, f"{path.name}: relative import of {imported}, not a pushed sibling"
            elif isinstance(node, ast.ImportFrom):
                assert node.module.split(".")[0] in ALLOWED_REMOTE_IMPORTS, f"{path.name}: from {node.module} import"


@pytest.mark.slow
def test_pushed_teacher_dataset_loads_each_config_with_the_same_rows(hub, tmp_path):
    data = teacher_dataset()
    data.save_to_disk(tmp_path / "teacher")
    env = client_env(hub, tmp_path / "hf-home")
    pushed = push("dataset", tmp_path / "teacher", "mice-tester/teacher-tiny", env, "--private")
    assert pushed.returncode == 0, pushed.stderr[-4000:]
    assert hub.state.repos[("dataset", "mice-tester/teacher-tiny")].private
    loaded = output_json(run([sys.executable, "-c", LOAD_DATASET, "mice-tester/teacher-tiny"], env))
    for name, config in data.hub_configs().items():
        assert loaded["rows"][name] == config.to_list(), name
    assert sorted(loaded["configs"]) == ["documents", "queries", "train"]
    assert "| training queries (rows of `train`) | 2 |" in loaded["card"]
    assert "**Teacher:** hybrid" in loaded["card"]


@pytest.fixture(scope="module")
def cross_encoder_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cross-encoder")
    return make_cross_encoder_folder(root, str(build_tiny_backbone(root, "bert", num_hidden_layers=2)))


def test_push_to_a_pull_request_and_to_a_branch(hub, tmp_path, cross_encoder_folder):
    env = client_env(hub, tmp_path / "hf-home", token=None)  # the token comes from --token only
    repo_id = "mice-tester/ce-tiny"
    options = ["--token", hub.state.token, "--commit-message", "Add a cross-encoder"]
    in_pr = push("model", cross_encoder_folder, repo_id, env, "--create-pr", *options)
    in_branch = push("model", cross_encoder_folder, repo_id, env, "--revision", "dev", *options)
    repo = hub.state.repos[("model", repo_id)]
    main, pull, dev = (repo.commits[repo.refs[ref]] for ref in ("main", "refs/pr/1", "dev"))
    assert "model.safetensors" not in main and "README.md" not in main
    for tree, result in ((pull, in_pr), (dev, in_branch)):
        assert {"model.safetensors", "config.json", "training_record.json", "README.md"} <= set(tree)
        pinned = content_commit(result)
        assert "model.safetensors" in repo.commits[pinned]
        assert f'revision="{pinned}"' in tree["README.md"].content.decode()
    assert f"pull request: {hub.url}/{repo_id}/discussions/1" in in_pr.stdout


ERRORS = {
    "missing token": "error: no Hugging Face token: pass --token, set HF_TOKEN",
    "refused token": "the token was refused: check that it is valid and has write access",
    "repo does not exist": "does not exist on",
    "no weights": "holds no weights (no *.safetensors file)",
    "pickle only": "holds only pickle weights (pytorch_model.bin); refusing to push them",
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_push_errors_are_clear(hub, tmp_path, cross_encoder_folder, case):
    folder = tmp_path / "model"
    shutil.copytree(cross_encoder_folder, folder)
    if case in ("no weights", "pickle only"):
        (folder / "model.safetensors").unlink()
    if case == "pickle only":
        (folder / "pytorch_model.bin").write_bytes(b"a pickled state dict")
    token = {"missing token": None, "refused token": "hf_not_the_servers_token"}.get(case, "server")
    repo_id = f"mice-tester/error-{case.replace(' ', '-')}"
    options = ["--no-create"] if case == "repo does not exist" else []
    result = push("model", folder, repo_id, client_env(hub, tmp_path / "hf-home", token), *options)
    assert result.returncode == 1, result.stdout
    assert ERRORS[case] in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert ("model", repo_id) not in hub.state.repos
