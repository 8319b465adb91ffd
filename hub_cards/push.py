"""Push trained model folders and teacher-score datasets to the Hub, with cards rendered from their records.

A thin layer over `huggingface_hub` (model folders) and `datasets` (teacher datasets): it checks what is pushed,
refuses pickle weights, and turns the Hub's usual failures into errors that say what to do.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import CommitOperationAdd, DatasetCard, HfApi, ModelCard, get_token, hf_hub_download

from .dataset_card import render_dataset_card
from .model_card import render_model_card
from .records import find_evaluation_file, read_teacher_dataset, read_training_record

PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")
# Training leftovers that are not part of the model, and the README that the card replaces.
NOT_PUSHED = [
    *PICKLE_WEIGHTS,
    "README.md",
    "checkpoint-*/**",
    "runs/**",
    "__pycache__/**",
    "*.pyc",
    "optimizer.*",
    "scheduler.*",
    "rng_state*",
    "trainer_state.json",
]


class PushError(RuntimeError):
    """What was wrong with a push and what to do about it."""


@dataclass
class PushResult:
    repo_id: str
    revision: str  # the branch or pull-request reference that received the commits
    commit_oid: str  # the last commit (the card)
    content_commit_oid: str  # the commit holding the weights / data: the revision to pin
    commit_url: str
    pr_url: str | None


def check_model_folder(folder: str | Path) -> Path:
    """Raise `PushError` unless `folder` is a model folder that can be pushed: config, safetensors weights (never
    pickle), the remote-code files its `auto_map` names, and a training record for the card."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PushError(f"{folder} is not a folder: pass the output folder of a training run")
    if not (folder / "config.json").is_file():
        raise PushError(f"{folder} has no config.json: it is not a saved model (use save_pretrained)")
    if not any(folder.glob("*.safetensors")):
        pickles = sorted(p.name for pattern in PICKLE_WEIGHTS for p in folder.glob(pattern))
        if pickles:
            raise PushError(
                f"{folder} holds only pickle weights ({', '.join(pickles)}); refusing to push them. Re-save the model "
                "with model.save_pretrained(folder) (safetensors is the default) and push again"
            )
        raise PushError(f"{folder} holds no weights (no *.safetensors file): save the model before pushing it")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    for references in (config.get("auto_map") or {}).values():
        # AutoTokenizer maps to a [slow, fast] pair; "other/repo--module.Class" lives in another repository.
        for reference in references if isinstance(references, list) else [references]:
            module = f"{reference.rsplit('.', 1)[0]}.py" if reference and "--" not in reference else None
            if module and not (folder / module).is_file():
                raise PushError(
                    f"config.json's auto_map names {reference!r} but {folder / module} is missing: save the model "
                    "with save_pretrained after register_for_auto_class so that the remote code is copied"
                )
    read_training_record(folder)
    return folder


def resolve_token(token: str | None) -> str:
    """The token to push with: the one given, else HF_TOKEN or the stored login."""
    token = token or get_token()
    if not token:
        raise PushError(
            "no Hugging Face token: pass --token, set HF_TOKEN, or run `hf auth login` (a token with write access)"
        )
    return token


def _prepare_repo(
    api: HfApi, repo_id: str, repo_type: str, *, private: bool, revision: str | None, create_repo: bool
) -> None:
    if create_repo:
        # private=None (not False) leaves an organisation's default visibility alone.
        api.create_repo(repo_id, repo_type=repo_type, private=private or None, exist_ok=True)
    elif not api.repo_exists(repo_id, repo_type=repo_type):
        raise PushError(
            f"the {repo_type} repository {repo_id!r} does not exist on {api.endpoint} (or this token cannot see it): "
            "check the id, or push without --no-create to create it"
        )
    if revision and revision != "main" and not revision.startswith("refs/pr/"):
        api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)


def push_model(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    create_repo: bool = True,
    evaluation: str | Path | None = None,
    latency: str | Path | None = None,
    base_model: str | None = None,
    license: str | None = None,  # noqa: A002 - the Hub's metadata field name
) -> PushResult:
    """Push a trained model folder, then its card (filled from its records, pinned to the commit just made).

    Two commits: the model files, then README.md (+ `evaluation.json` when one was found), so the card can name the
    commit that holds the weights and the remote code. With `create_pr`, both go to one new pull request.
    """
    folder = check_model_folder(folder)
    evaluation = Path(evaluation) if evaluation else find_evaluation_file(folder)
    return push_folder_with_card(
        folder,
        repo_id,
        lambda content_oid: render_model_card(
            folder,
            evaluation=evaluation,
            latency=latency,
            repo_id=repo_id,
            pinned_revision=content_oid,
            base_model=base_model,
            license=license,
        ),
        token=token,
        private=private,
        revision=revision,
        create_pr=create_pr,
        create_repo=create_repo,
        commit_message=commit_message or f"Upload {read_training_record(folder)['model_type']} model",
        card_message="Add model card",
        ignore_patterns=NOT_PUSHED,
        extra_files={"evaluation.json": evaluation} if evaluation else None,
    )


def push_folder_with_card(
    folder: Path,
    repo_id: str,
    render_card: Callable[[str], ModelCard],
    *,
    token: str | None,
    private: bool,
    revision: str | None,
    create_pr: bool,
    create_repo: bool,
    commit_message: str,
    card_message: str,
    ignore_patterns: list[str] | None = None,
    allow_patterns: list[str] | None = None,
    extra_files: dict[str, Path] | None = None,
) -> PushResult:
    """Upload a folder to a model repository, then its card (with `extra_files`) in a second commit.

    `render_card` receives the content commit's id, so that a card can pin the revision that holds the weights; with
    `create_pr` both commits go to one new pull request.
    """
    token = resolve_token(token)
    api = HfApi(token=token)
    _prepare_repo(api, repo_id, "model", private=private, revision=revision, create_repo=create_repo)
    content = api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        revision=revision,
        create_pr=create_pr,
        commit_message=commit_message,
        ignore_patterns=ignore_patterns,
        allow_patterns=allow_patterns,
    )
    target = content.pr_revision or revision or "main"
    card = render_card(content.oid)
    card.validate(repo_type="model")
    operations = [CommitOperationAdd("README.md", str(card).encode())]
    operations += [CommitOperationAdd(name, str(path)) for name, path in (extra_files or {}).items()]
    card_commit = api.create_commit(
        repo_id=repo_id, operations=operations, revision=target, commit_message=card_message
    )
    return PushResult(repo_id, target, card_commit.oid, content.oid, card_commit.commit_url, content.pr_url)


def push_teacher_dataset(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    create_repo: bool = True,
    license: str | None = None,  # noqa: A002 - the Hub's metadata field name
) -> PushResult:
    """Push the three configs of a teacher-score dataset with `datasets`' `push_to_hub`, then its card.

    The card keeps the `configs` / `dataset_info` metadata that `push_to_hub` wrote, so `load_dataset(repo_id,
    "train" | "queries" | "documents")` works on the result.
    """
    dataset = read_teacher_dataset(folder)
    token = resolve_token(token)
    api = HfApi(token=token)
    _prepare_repo(api, repo_id, "dataset", private=private, revision=revision, create_repo=create_repo)
    target, pr_url, commit = revision, None, None
    for name, config in dataset.configs.items():
        commit = config.push_to_hub(
            repo_id,
            config_name=name,
            split="train",
            private=private or None,
            token=token,
            revision=target,
            create_pr=create_pr and pr_url is None,
            commit_message=commit_message or f"Upload teacher-score config {name!r}",
        )
        if commit.pr_url:
            target, pr_url = commit.pr_revision, commit.pr_url
    content_oid = commit.oid
    target = target or "main"
    readme = hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=target, token=token)
    hub_metadata = DatasetCard.load(readme).data.to_dict()
    hub_metadata = {k: v for k, v in hub_metadata.items() if k in ("configs", "dataset_info")}
    card = render_dataset_card(dataset, repo_id=repo_id, hub_metadata=hub_metadata, license=license)
    card.validate(repo_type="dataset")
    card_commit = api.create_commit(
        repo_id=repo_id,
        repo_type="dataset",
        operations=[CommitOperationAdd("README.md", str(card).encode())],
        revision=target,
        commit_message="Add dataset card",
    )
    return PushResult(repo_id, target, card_commit.oid, content_oid, card_commit.commit_url, pr_url)
