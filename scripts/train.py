"""Train a cross-encoder or a MICE re-ranker from a teacher-score dataset (see ``trainers/train_cli.py``).

python scripts/train.py --config run.yaml
accelerate launch scripts/train.py --config run.yaml        # several GPUs, unchanged
"""

from trainers.train_cli import main

if __name__ == "__main__":
    main()
