"""Push a trained model folder or a teacher-score dataset to the Hugging Face Hub, with a card filled from its records.

    python scripts/push_to_hub.py model   mice-quickstart/models/mice --repo-id you/mice-minilm-l4-3
    python scripts/push_to_hub.py dataset mice-quickstart/teacher_dataset --repo-id you/debian-teacher-scores --private
    python scripts/push_to_hub.py task-vectors runs/entity-lens/gemma-3-270m/raw/task_vectors --repo-id you/lens

`model` pushes the safetensors weights, config, tokenizer and remote code, then README.md rendered from
training_record.json (and evaluation.json when found: next to the model or two folders up). `dataset` pushes the
configs train / queries / documents with `datasets` and a dataset card. `task-vectors` pushes Entity Lens task vectors
(task_vectors.safetensors, entity_lens.json) and their card. Set HF_ENDPOINT to push to another Hub.
"""

from __future__ import annotations

import argparse
import sys

from huggingface_hub.errors import HfHubHTTPError

from hub_cards.push import PushError, push_model, push_teacher_dataset
from hub_cards.records import RecordError
from hub_cards.task_vectors import push_task_vectors


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["model", "dataset", "task-vectors"], help="what FOLDER holds")
    parser.add_argument("folder", help="a training output folder, or a teacher-score dataset folder")
    parser.add_argument("--repo-id", required=True, help="namespace/name on the Hub")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", "--branch", dest="revision", help="branch to push to (created if missing)")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of pushing to the branch")
    parser.add_argument("--commit-message", help="message of the commit that uploads the weights or the data")
    parser.add_argument("--token", help="Hub token with write access (default: HF_TOKEN or the stored login)")
    parser.add_argument("--no-create", action="store_true", help="fail if the repository does not exist yet")
    parser.add_argument("--license", help="licence of the weights/data (default: the backbone's, or the recorded one)")
    model = parser.add_argument_group("model only")
    model.add_argument("--evaluation", help="evaluation.json to report (default: found next to the model)")
    model.add_argument("--latency", help="a scripts/bench_latency.py result to tabulate in the card")
    model.add_argument("--base-model", help="Hub id of the backbone, when training recorded a local folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common = dict(
        token=args.token,
        private=args.private,
        revision=args.revision,
        create_pr=args.create_pr,
        commit_message=args.commit_message,
        create_repo=not args.no_create,
        license=args.license,
    )
    try:
        if args.kind == "model":
            result = push_model(
                args.folder,
                args.repo_id,
                evaluation=args.evaluation,
                latency=args.latency,
                base_model=args.base_model,
                **common,
            )
        elif args.kind == "task-vectors":
            result = push_task_vectors(args.folder, args.repo_id, **common)
        else:
            result = push_teacher_dataset(args.folder, args.repo_id, **common)
    except (PushError, RecordError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        hint = " (the token was refused: check that it is valid and has write access)" if status in (401, 403) else ""
        print(f"error: the Hub refused the push{hint}: {error}", file=sys.stderr)
        return 1
    print(f"pushed {args.kind} to {result.repo_id} at {result.revision}")
    print(f"content commit (pin this revision): {result.content_commit_oid}")
    print(f"card commit: {result.commit_url}")
    if result.pr_url:
        print(f"pull request: {result.pr_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
