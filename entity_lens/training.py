"""Training a task vector: only v (or, in the linear-map variant, only the d×d map) learns; the LLM stays frozen.

The recipe of arXiv 2510.09421 (its public code): next-token cross-entropy on the mention's tokens plus EOS, Adam at
learning rate 1e-2, batch 64, 5 epochs, v ~ N(0, 1), the learning rate constant for 3 epochs and then annealed to a
tenth (here one cosine over the remaining epochs; the code restarts its cosine each epoch), and the v with the best
token accuracy on a dev set of at most 2,000 examples is kept. `init="arrow"` starts v from the embedding of the `>`
it replaces instead of N(0, 1): with a few hundred steps rather than thousands it matters where N(0, 1) is ten times
longer than the model's token embeddings (SmolLM2, GPT-2; Gemma scales its embeddings to about that length).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .errors import EntityLensError
from .prompt import MentionSet, build_batch, mention_loss, prompt_ids, prompt_tokens, target_logits
from .task_vectors import TaskVector


@dataclass
class TrainingConfig:
    """How one task vector is trained (defaults: the paper's recipe)."""

    learning_rate: float = field(default=1e-2, metadata={"help": "Adam's learning rate"})
    batch_size: int = field(default=64, metadata={"help": "examples per step"})
    epochs: int = field(default=5, metadata={"help": "passes over the training examples"})
    constant_epochs: int = field(
        default=3, metadata={"help": "epochs at the full learning rate before the cosine annealing starts"}
    )
    final_lr_ratio: float = field(default=0.1, metadata={"help": "the annealing ends at learning_rate × this"})
    max_dev_examples: int = field(default=2000, metadata={"help": "dev examples used to choose the best v"})
    evaluations_per_epoch: int = field(default=1, metadata={"help": "dev evaluations (and best-v checks) per epoch"})
    variant: str = field(
        default="vector",
        metadata={"help": "'vector': learn v; 'linear': learn a d×d map on the representation, v frozen"},
    )
    init: str = field(
        default="normal",
        metadata={
            "help": "v's start: 'normal', N(0, 1) (the paper), or 'arrow', the embedding of the `>` it replaces "
            "(token scale: far fewer steps where N(0, 1) is much longer than the model's token embeddings)"
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of v's initialisation and of the example order"})

    def __post_init__(self) -> None:
        if self.variant not in ("vector", "linear"):
            raise EntityLensError(f"unknown variant {self.variant!r}: use 'vector' or 'linear'")
        if self.init not in ("normal", "arrow"):
            raise EntityLensError(f"unknown init {self.init!r}: use 'normal' or 'arrow'")
        if self.batch_size < 1 or self.epochs < 1 or self.evaluations_per_epoch < 1:
            raise EntityLensError("batch_size, epochs and evaluations_per_epoch must be at least 1")


@dataclass
class TrainingResult:
    task_vector: TaskVector  # the best one on dev
    history: list[dict[str, float]]  # per evaluation: epoch, step, train_loss, dev_loss, dev_token_accuracy, lr
    best_dev_token_accuracy: float
    steps: int
    seconds: float
    config: dict[str, Any]


def learning_rate_factor(step: int, steps_per_epoch: int, config: TrainingConfig) -> float:
    """1 for the first `constant_epochs` epochs, then a cosine from 1 down to `final_lr_ratio` at the last step."""
    constant = config.constant_epochs * steps_per_epoch
    annealed = max(config.epochs * steps_per_epoch - constant, 1)
    if step < constant:
        return 1.0
    progress = min((step - constant) / annealed, 1.0)
    return config.final_lr_ratio + (1 - config.final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _batches(model, tokenizer, examples: MentionSet, order: list[int], batch_size: int):
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        contexts = [examples.contexts[i] if examples.contexts else None for i in rows]
        batch = build_batch(
            tokenizer, [prompt_ids(tokenizer, c) for c in contexts], [examples.targets[i] for i in rows]
        )
        yield batch, examples.representations[rows]


@torch.no_grad()
def evaluate_tokens(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task_vector: TaskVector,
    examples: MentionSet,
    batch_size: int = 64,
) -> dict[str, float]:
    """Teacher-forced loss and token accuracy (argmax = the reference token) over the mention tokens and EOS."""
    total_loss, correct, tokens = 0.0, 0, 0
    for batch, representations in _batches(model, tokenizer, examples, list(range(len(examples))), batch_size):
        logits, labels = target_logits(model, batch, task_vector.transform(representations), task_vector.vector)
        total_loss += mention_loss(logits, labels).item() * len(labels)
        correct += (logits.argmax(dim=-1) == labels).sum().item()
        tokens += len(labels)
    return {"loss": total_loss / max(tokens, 1), "token_accuracy": correct / max(tokens, 1)}


def train_task_vector(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train: MentionSet,
    dev: MentionSet,
    config: TrainingConfig | None = None,
    initial: TaskVector | None = None,
    progress: bool | str = True,
) -> TrainingResult:
    """Train a task vector on `train`, keeping the one with the best dev token accuracy.

    `initial`: v to start from (default: as `config.init` says); the linear-map variant needs it (the v it keeps
    frozen).
    `progress`: show a progress bar (a string is used as its description).
    """
    config = config or TrainingConfig()
    if not len(train) or not len(dev):
        raise EntityLensError(f"training needs examples: {len(train)} training and {len(dev)} dev examples given")
    generator = torch.Generator().manual_seed(config.seed)
    d_model = model.config.get_text_config().hidden_size
    if config.variant == "linear":
        if initial is None:
            raise EntityLensError("the linear-map variant keeps a trained v frozen: pass it as `initial`")
        task_vector = initial.with_identity_map()
    elif initial is not None:
        task_vector = TaskVector(initial.vector)
    elif config.init == "arrow":
        arrow = torch.tensor([prompt_tokens(tokenizer)[-1]])
        task_vector = TaskVector(model.get_input_embeddings()(arrow)[0])
    else:
        task_vector = TaskVector.random(d_model, generator)
    parameters = list(task_vector.linear.parameters()) if config.variant == "linear" else [task_vector.vector]
    if dev and len(dev) > config.max_dev_examples:
        dev = dev.subset(torch.randperm(len(dev), generator=generator)[: config.max_dev_examples].tolist())
    optimizer = torch.optim.Adam(parameters, lr=config.learning_rate)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, steps_per_epoch, config)
    )
    evaluate_every = max(steps_per_epoch // config.evaluations_per_epoch, 1)
    best = {"token_accuracy": -1.0}
    best_state = {k: v.clone() for k, v in task_vector.state_dict().items()}
    history: list[dict[str, float]] = []
    began, step, running, counted = time.perf_counter(), 0, 0.0, 0
    bar = tqdm(
        total=steps_per_epoch * config.epochs,
        desc=progress if isinstance(progress, str) else "task vector",
        disable=not progress,
        leave=False,
    )
    for epoch in range(config.epochs):
        order = torch.randperm(len(train), generator=generator).tolist()
        for index, (batch, representations) in enumerate(_batches(model, tokenizer, train, order, config.batch_size)):
            logits, labels = target_logits(model, batch, task_vector.transform(representations), task_vector.vector)
            loss = mention_loss(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            running, counted = running + loss.item(), counted + 1
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}", best_dev_acc=f"{max(best['token_accuracy'], 0):.3f}")
            if (index + 1) % evaluate_every == 0 or index + 1 == steps_per_epoch:
                scores = evaluate_tokens(model, tokenizer, task_vector, dev, config.batch_size)
                history.append(
                    {
                        "epoch": round(epoch + (index + 1) / steps_per_epoch, 3),
                        "step": step,
                        "train_loss": running / counted,
                        "dev_loss": scores["loss"],
                        "dev_token_accuracy": scores["token_accuracy"],
                        "learning_rate": optimizer.param_groups[0]["lr"],
                    }
                )
                running, counted = 0.0, 0
                if scores["token_accuracy"] >= best["token_accuracy"]:  # ties go to the later (more trained) v
                    best = scores
                    best_state = {k: v.detach().clone() for k, v in task_vector.state_dict().items()}
    bar.close()
    task_vector.load_state_dict(best_state)
    task_vector.requires_grad_(False)
    return TrainingResult(
        task_vector=task_vector,
        history=history,
        best_dev_token_accuracy=best["token_accuracy"],
        steps=step,
        seconds=time.perf_counter() - began,
        config=asdict(config),
    )
