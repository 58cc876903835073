r"""Bradley-Terry reward-model training: preference records → a scorer the environment takes.

The model is a Hugging Face ``AutoModelForSequenceClassification`` with one output (``r``); it
reads ``prompt + response`` exactly as :class:`rlhf_gym.envs.rewards.HFRewardModel` will score
it in the environment (no EOS appended; the *start* is cut when the text is too long, so the
response is always seen). For a record with ``d = r(prompt + a) - r(prompt + b)``, label
``p = p_a`` and margin ``m`` the loss is

    loss = -[p · log σ(d - m) + (1 - p) · log σ(-d - m)]  +  c · (r_a + r_b)²

which is the usual ``-log σ(r_chosen - r_rejected - m)`` for a hard label (``p`` = 1 or 0),
the cross-entropy against ``p`` for a soft one, and with ``c > 0`` TRL's centering term
(``center_rewards_coefficient``, 0.01 recommended) that keeps the rewards near zero.

What the trainer does that users of other trainers have asked for (``docs/feedback.md``):

* dropout off (the model stays in ``eval()`` mode while it learns);
* a pad token distinct from EOS (one is added, and the embeddings resized, if the tokenizer
  has none or pads with EOS);
* truncation is *counted and reported*; no pair is ever dropped for its length;
* a held-out split *by prompt* (no prompt is in both), evaluated every ``eval_every`` steps;
  the weights with the best held-out accuracy are kept and training stops after ``patience``
  evaluations without improvement;
* batches of similar lengths (little padding); both responses of a pair in one forward pass.

:func:`train_reward_model` is the one implementation: ``rlhf-gym reward train`` and the
embedded-default build (:mod:`rlhf_gym.embedded.build`) both call it.
"""

from __future__ import annotations

import copy
import json
import math
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rlhf_gym.agents.config import config_field as _f
from rlhf_gym.envs.rewards import model_window
from rlhf_gym.feedback.records import Preference
from rlhf_gym.feedback.tags import (
    HELDOUT_ACCURACY,
    HELDOUT_LOSS,
    HELDOUT_MARGIN,
    LEARNING_RATE,
    TRAIN_ACCURACY,
    TRAIN_LOSS,
    TRAIN_MARGIN,
    TRAIN_REWARD_MAX,
    TRAIN_REWARD_MEAN,
    TRAIN_REWARD_MIN,
)

PAD_TOKEN = "<|pad|>"


def bradley_terry_loss(
    r_a: torch.Tensor,
    r_b: torch.Tensor,
    p_a: torch.Tensor,
    margin: torch.Tensor | float = 0.0,
    center: float = 0.0,
) -> torch.Tensor:
    """The mean loss of a batch (see the module docstring); all tensors ``(B,)``.

    >>> r_a, r_b = torch.tensor([1.0]), torch.tensor([0.0])
    >>> round(bradley_terry_loss(r_a, r_b, torch.tensor([1.0])).item(), 4)  # -log σ(1)
    0.3133
    >>> round(bradley_terry_loss(r_a, r_b, torch.tensor([0.5])).item(), 4)  # ½(0.3133+1.3133)
    0.8133
    """
    d = r_a - r_b
    loss = -(p_a * F.logsigmoid(d - margin) + (1 - p_a) * F.logsigmoid(-d - margin))
    if center:
        loss = loss + center * (r_a + r_b) ** 2
    return loss.mean()


def pair_accuracy(r_a: np.ndarray, r_b: np.ndarray, p_a: np.ndarray) -> tuple[float, int]:
    """Share of pairs with a preference (``p_a != 0.5``) that the scores order the same way.

    >>> pair_accuracy(np.array([1.0, 0.0, 2.0]), np.array([0.0, 1.0, 0.0]),
    ...               np.array([1.0, 1.0, 0.5]))
    (0.5, 2)
    """
    decided = p_a != 0.5
    right = (r_a > r_b) == (p_a > 0.5)
    n = int(decided.sum())
    return (float(right[decided].mean()) if n else float("nan")), n


@dataclass
class RewardTrainConfig:
    """Hyper-parameters of :func:`train_reward_model` (``rlhf-gym reward train`` adds its own).

    Attributes:
        epochs: Passes over the training pairs (unless ``max_steps`` is set).
        min_steps: At least this many steps when ``epochs`` decide: a few hundred labels make
            only a handful of batches per epoch, too few for the model to learn anything.
        max_steps: Optimiser steps; 0: ``epochs`` (and ``min_steps``) decide.
        batch_size: Pairs per step.
        lr: Peak learning rate (AdamW; 5% warm-up, cosine decay to 10%). 3e-4 suits the
            embedded base (1M weights); models of 100M+ weights want 1e-5 to 5e-5.
        weight_decay: AdamW weight decay.
        max_length: Longest text in tokens (longer ones lose their start); 0: the model's window.
        heldout: Share of the prompts held out for early stopping (0: none, no early stopping).
        eval_every: Steps between held-out evaluations; 0: once per epoch.
        patience: Evaluations without a better held-out accuracy before stopping (0: never).
        center: Centering coefficient ``c`` (TRL's ``center_rewards_coefficient``).
        seed: Seed of the split, the batches and the new weights.
    """

    epochs: float = _f(2.0, "passes over the training pairs (unless --max-steps is set)")
    min_steps: int = _f(100, "at least this many steps when --epochs decide (small data sets)")
    max_steps: int = _f(0, "optimiser steps (0: --epochs and --min-steps decide)")
    batch_size: int = _f(32, "pairs per optimiser step")
    lr: float = _f(3e-4, "peak learning rate (AdamW, 5% warm-up, cosine decay to 10%)")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    max_length: int = _f(0, "longest text in tokens, longer ones lose their start (0: the window)")
    heldout: float = _f(0.1, "share of the prompts held out for early stopping (0: none)")
    eval_every: int = _f(0, "steps between held-out evaluations (0: once per epoch)")
    patience: int = _f(3, "evaluations without a better held-out accuracy before stopping")
    center: float = _f(0.0, "reward centering coefficient (TRL's center_rewards_coefficient)")
    seed: int = _f(0, "seed of the split, the batches and the new weights")

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        checks = {
            "epochs": self.epochs > 0,
            "min_steps": self.min_steps >= 0,
            "max_steps": self.max_steps >= 0,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "max_length": self.max_length >= 0,
            "heldout": 0 <= self.heldout < 1,
            "eval_every": self.eval_every >= 0,
            "patience": self.patience >= 0,
            "center": self.center >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"{name} is out of range: {getattr(self, name)!r}")


@dataclass
class TrainResult:
    """What :func:`train_reward_model` did.

    Attributes:
        steps: Optimiser steps taken.
        best_step: The step whose weights were kept (the best held-out accuracy).
        stopped_early: Whether patience ran out before the last step.
        train_pairs: Pairs trained on.
        heldout_pairs: Pairs held out.
        truncated_texts: Distinct texts cut to ``max_length`` (none dropped).
        max_length: The length limit used.
        heldout: The held-out metrics of the kept weights (``accuracy``, ``loss``, ``margin``).
        train_accuracy: Accuracy on the training labels over the last 10% of steps.
        pairs_per_second: Training throughput (held-out evaluations excluded).
        history: ``(step, held-out accuracy)`` of every evaluation.
    """

    steps: int = 0
    best_step: int = 0
    stopped_early: bool = False
    train_pairs: int = 0
    heldout_pairs: int = 0
    truncated_texts: int = 0
    max_length: int = 0
    heldout: dict[str, float] = field(default_factory=dict)
    train_accuracy: float = float("nan")
    pairs_per_second: float = 0.0
    history: list[tuple[int, float]] = field(default_factory=list)


# ------------------------------------------------------------------------------ the model
def ensure_pad_token(model: Any, tokenizer: Any) -> bool:
    """Give the tokenizer a pad token distinct from EOS (:data:`PAD_TOKEN`, resizing the
    embeddings if it is new to the vocabulary) and tell the model which it is.

    Returns:
        Whether the pad token changed.
    """
    changed = tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id
    if changed:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    return changed


def load_base(base: str, device: torch.device | str = "cpu") -> tuple[Any, Any]:
    """A sequence classifier with one output and its tokenizer, from ``base``.

    ``base`` is ``default`` (the embedded causal LM: its transformer with a new score head,
    as reward models are initialised from the policy in the RLHF papers), a local directory
    or a hub name. A base with a classification head of another size gets a new one.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlhf_gym.envs.lm import from_pretrained, resolve_model_path, transformers_errors_only
    from rlhf_gym.envs.rlhf_env import BUILTIN_MODELS

    path = resolve_model_path(base, "base", BUILTIN_MODELS)
    with transformers_errors_only():  # a new score head is expected: no "MISSING" load report
        model = from_pretrained(
            AutoModelForSequenceClassification,
            path,
            "base",
            BUILTIN_MODELS,
            num_labels=1,
            ignore_mismatched_sizes=True,
        )
    tokenizer = from_pretrained(AutoTokenizer, path, "base", BUILTIN_MODELS)
    ensure_pad_token(model, tokenizer)
    return model.to(device), tokenizer


# ------------------------------------------------------------------------------ the data
def split_by_prompt(
    records: Sequence[Preference], share: float, seed: int
) -> tuple[list[Preference], list[Preference]]:
    """``(train, heldout)``: about ``share`` of the distinct prompts, all their pairs held out.

    >>> recs = [Preference(f"p{i % 10}", "a", "b") for i in range(100)]
    >>> train, held = split_by_prompt(recs, 0.2, 0)
    >>> len(held), {r.prompt for r in held} & {r.prompt for r in train}
    (20, set())
    """
    prompts = sorted({r.prompt for r in records})
    if share <= 0 or len(prompts) < 2:
        return list(records), []
    rng = random.Random(seed)
    rng.shuffle(prompts)
    held = set(prompts[: max(1, round(share * len(prompts)))])
    return [r for r in records if r.prompt not in held], [r for r in records if r.prompt in held]


class _Encoded:
    """Token ids of every distinct text, cut from the left to ``max_length``."""

    def __init__(self, tokenizer: Any, texts: Sequence[str], max_length: int) -> None:
        unique = sorted(set(texts))
        ids = tokenizer(unique, add_special_tokens=True, truncation=False)["input_ids"]
        self.truncated = sum(len(x) > max_length for x in ids)
        self.ids = {t: x[-max_length:] for t, x in zip(unique, ids, strict=True)}
        self.pad_id = int(tokenizer.pad_token_id)

    def batch(self, texts: Sequence[str], device: torch.device) -> dict[str, torch.Tensor]:
        ids, mask = pad_right([self.ids[t] for t in texts], self.pad_id)
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def pad_right(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pads token lists into ``(input_ids, attention_mask)``, both ``(B, T)``."""
    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        mask[row, : len(sequence)] = 1
    return ids, mask


def _texts(rec: Preference) -> tuple[str, str]:
    return rec.prompt + rec.response_a, rec.prompt + rec.response_b


def length_bucketed_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random
) -> Iterator[list[int]]:
    """Endless batches of indices; each epoch shuffled, then sorted by length within chunks of
    32 batches (little padding) and the batches' order shuffled again."""
    indices = list(range(len(lengths)))
    while True:
        rng.shuffle(indices)
        chunk = batch_size * 32
        batches = []
        for start in range(0, len(indices), chunk):
            part = sorted(indices[start : start + chunk], key=lambda i: lengths[i])
            batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
        rng.shuffle(batches)
        yield from batches


def _scores(model: Any, enc: _Encoded, texts: Sequence[str], device: torch.device) -> torch.Tensor:
    return model(**enc.batch(texts, device)).logits[:, 0].float()


@torch.no_grad()
def _scores_by_length(
    model: Any, enc: _Encoded, texts: Sequence[str], device: torch.device, batch_size: int
) -> np.ndarray:
    """Scores ``(N,)`` of ``texts``, in batches of similar lengths (little padding)."""
    order = sorted(range(len(texts)), key=lambda i: len(enc.ids[texts[i]]))
    out = np.empty(len(texts))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        out[idx] = _scores(model, enc, [texts[i] for i in idx], device).cpu().numpy()
    return out


@torch.no_grad()
def score_texts(
    model: Any, tokenizer: Any, texts: Sequence[str], max_length: int = 0, batch_size: int = 128
) -> np.ndarray:
    """Scores ``(N,)`` of full texts (``prompt + response``), as training sees them."""
    device = next(model.parameters()).device
    enc = _Encoded(tokenizer, texts, max_length or model_window(model, tokenizer))
    was_training = model.training
    model.eval()
    out = _scores_by_length(model, enc, texts, device, batch_size)
    model.train(was_training)
    return out


def _metrics(
    model: Any, enc: _Encoded, records: Sequence[Preference], center: float, device: torch.device
) -> dict[str, float]:
    texts = [t for rec in records for t in _texts(rec)]
    scores = _scores_by_length(model, enc, texts, device, 256)
    r_a, r_b = torch.tensor(scores[0::2]), torch.tensor(scores[1::2])
    p = torch.tensor([rec.p_a for rec in records], dtype=torch.float64)
    m = torch.tensor([rec.margin for rec in records], dtype=torch.float64)
    accuracy, _ = pair_accuracy(r_a.numpy(), r_b.numpy(), p.numpy())
    sign = torch.where(p >= 0.5, 1.0, -1.0)
    return {
        "accuracy": accuracy,
        "loss": bradley_terry_loss(r_a, r_b, p, m, center).item(),
        "margin": float((sign * (r_a - r_b)).mean()),
    }


# ------------------------------------------------------------------------------ training
def train_reward_model(
    model: Any,
    tokenizer: Any,
    records: Sequence[Preference],
    config: RewardTrainConfig,
    *,
    heldout_records: Sequence[Preference] | None = None,
    writer: Any = None,
    progress: bool = False,
    log: Callable[[str], None] = lambda msg: None,
) -> TrainResult:
    """Train ``model`` (in place) on ``records`` with the Bradley-Terry loss.

    Args:
        model: A sequence classifier with one output, on the device to train on.
        tokenizer: Its tokenizer (it must have a pad token: :func:`ensure_pad_token`).
        records: The preferences. Unless ``heldout_records`` is given, ``config.heldout`` of
            the prompts are split off for early stopping.
        config: Hyper-parameters.
        heldout_records: An explicit held-out set (then ``records`` are all trained on).
        writer: A TensorBoard ``SummaryWriter`` (or ``None``).
        progress: Show a tqdm bar on stderr.
        log: Where one-line messages (truncation, held-out evaluations, early stopping) go
            when there is no progress bar (with one, they are printed above it).

    Returns:
        A :class:`TrainResult`; the model holds the kept weights, in ``eval()`` mode.
    """
    import time

    config.validate()
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token: call ensure_pad_token(model, tokenizer)")
    if heldout_records is None:
        train, held = split_by_prompt(records, config.heldout, config.seed)
    else:
        train, held = list(records), list(heldout_records)
    if not train:
        raise ValueError("no training pairs left after the held-out split")
    device = next(model.parameters()).device
    window = model_window(model, tokenizer)
    max_length = min(config.max_length or window, window)
    enc = _Encoded(tokenizer, [t for rec in (*train, *held) for t in _texts(rec)], max_length)
    result = TrainResult(
        train_pairs=len(train),
        heldout_pairs=len(held),
        truncated_texts=enc.truncated,
        max_length=max_length,
    )
    if enc.truncated:
        log(
            f"{enc.truncated} texts are longer than {max_length} tokens: their start is cut "
            "(no pair is dropped)"
        )
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = config.max_steps or max(1, config.min_steps, round(config.epochs * steps_per_epoch))
    eval_every = config.eval_every or steps_per_epoch
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    lengths = [sum(len(enc.ids[t]) for t in _texts(rec)) for rec in train]
    batches = length_bucketed_batches(lengths, config.batch_size, rng)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.lr,
        betas=(0.9, 0.95),
        weight_decay=config.weight_decay,
    )
    warmup = max(1, total // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    model.eval()  # dropout off while it learns (transformers have no batch norm)
    p_all = torch.tensor([r.p_a for r in train], device=device)
    m_all = torch.tensor([r.margin for r in train], device=device)
    best, best_state, since_best = (-1.0, math.inf), None, 0
    correct = seen = 0
    train_seconds = 0.0
    bar = _bar(total) if progress else None

    def say(message: str) -> None:  # above the progress bar, if there is one
        if bar is not None:
            bar.write(message, file=sys.stderr)
        else:
            log(message)

    step = 0
    try:
        while step < total:
            tic = time.perf_counter()
            batch = next(batches)
            texts = [t for i in batch for t in _texts(train[i])]
            scores = _scores(model, enc, texts, device)
            r_a, r_b = scores[0::2], scores[1::2]
            idx = torch.tensor(batch, device=device)
            p, m = p_all[idx], m_all[idx]
            loss = bradley_terry_loss(r_a, r_b, p, m, config.center)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            train_seconds += time.perf_counter() - tic
            with torch.no_grad():
                acc, n = pair_accuracy(r_a.cpu().numpy(), r_b.cpu().numpy(), p.cpu().numpy())
                margin = float((torch.where(p >= 0.5, 1.0, -1.0) * (r_a - r_b)).mean())
            if step > 0.9 * total and n:
                correct, seen = correct + acc * n, seen + n
            if writer is not None:
                for tag, value in (
                    (TRAIN_LOSS, loss.item()),
                    (TRAIN_ACCURACY, acc),
                    (TRAIN_MARGIN, margin),
                    (TRAIN_REWARD_MEAN, scores.mean().item()),
                    (TRAIN_REWARD_MIN, scores.min().item()),
                    (TRAIN_REWARD_MAX, scores.max().item()),
                    (LEARNING_RATE, scheduler.get_last_lr()[0]),
                ):
                    writer.add_scalar(tag, value, step)
            if bar is not None:
                bar.set_postfix_str(f"loss {loss.item():.3f} acc {acc:.2f}", refresh=False)
                bar.update(1)
            if held and (step % eval_every == 0 or step == total):
                metrics = _metrics(model, enc, held, config.center, device)
                result.history.append((step, metrics["accuracy"]))
                say(
                    f"step {step}/{total}: held-out accuracy {metrics['accuracy']:.3f}, "
                    f"loss {metrics['loss']:.3f}"
                )
                if writer is not None:
                    writer.add_scalar(HELDOUT_ACCURACY, metrics["accuracy"], step)
                    writer.add_scalar(HELDOUT_LOSS, metrics["loss"], step)
                    writer.add_scalar(HELDOUT_MARGIN, metrics["margin"], step)
                # better: a higher accuracy, or the same with a lower loss (small held-out sets
                # often tie on accuracy)
                if (metrics["accuracy"], -metrics["loss"]) > (best[0], -best[1]):
                    best, since_best = (metrics["accuracy"], metrics["loss"]), 0
                    best_state = copy.deepcopy(model.state_dict())
                    result.best_step, result.heldout = step, metrics
                else:
                    since_best += 1
                    if config.patience and since_best >= config.patience and step < total:
                        result.stopped_early = True
                        say(
                            f"early stop at step {step}: held-out accuracy has not improved "
                            f"on {best[0]:.3f} (step {result.best_step}) for "
                            f"{since_best} evaluations"
                        )
                        break
    finally:
        if bar is not None:
            bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        result.best_step = step
    result.steps = step
    result.train_accuracy = correct / seen if seen else float("nan")
    result.pairs_per_second = step * config.batch_size / max(train_seconds, 1e-9)
    return result


def _bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", file=sys.stderr, dynamic_ncols=True)


# ------------------------------------------------------------------------------ normalisation
def _score_head(model: Any) -> torch.nn.Linear:
    """The final linear layer that produces the score (``score``, ``classifier`` …)."""
    for name in ("score", "classifier", "classification_head", "out_proj"):
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Linear):
            return head
        if head is not None and isinstance(getattr(head, "out_proj", None), torch.nn.Linear):
            return head.out_proj
    raise ValueError(f"cannot find the score head of {type(model).__name__}")


@torch.no_grad()
def normalise(model: Any, mean: float, std: float) -> str:
    """Make the affine change ``r → (r − mean) / std`` inside the model's weights.

    The scale divides the head's weight. The shift goes into the head's bias if it has one;
    else into the bias of a LayerNorm that feeds only the head (GPT-2's ``ln_f``): adding
    ``c · w / |w|²`` to it adds exactly ``c`` to every score; else it is written to the config
    as ``score_shift`` (which :class:`~rlhf_gym.envs.rewards.HFRewardModel` applies).

    Returns:
        Where the shift went: ``"bias"``, ``"ln_f"`` or ``"config"``.
    """
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise ValueError(f"cannot normalise with mean {mean!r} and std {std!r}")
    head = _score_head(model)
    head.weight.div_(std)
    shift = -mean / std
    if head.bias is not None:
        head.bias.div_(std).add_(shift)
        return "bias"
    ln_f = getattr(getattr(model, "transformer", None), "ln_f", None)
    if head.out_features == 1 and ln_f is not None and getattr(ln_f, "bias", None) is not None:
        row = head.weight[0]
        ln_f.bias.add_(row * shift / row.dot(row))
        return "ln_f"
    model.config.score_shift = getattr(model.config, "score_shift", 0.0) / std + shift
    return "config"


def normalise_on(model: Any, tokenizer: Any, texts: Sequence[str]) -> tuple[float, float, str]:
    """:func:`normalise` with the mean and std of the model's scores of ``texts``.

    Returns:
        The mean and std removed, and where the shift went.
    """
    scores = score_texts(model, tokenizer, texts)
    mean, std = float(scores.mean()), float(scores.std())
    return mean, std, normalise(model, mean, std)


# ------------------------------------------------------------------------------ saving
def save_model(
    model: Any,
    tokenizer: Any,
    path: str | Path,
    summary: dict | None = None,
    summary_name: str = "reward_model.json",
) -> Path:
    """Save in Hugging Face format (safetensors) that transformers 4.46+ and 5 both read, with
    ``summary`` (how it was trained) as ``summary_name`` beside it (``rlhf-gym sft`` writes
    ``sft.json``). Files are made world-readable; subdirectories (a run's logs) are left alone."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    # transformers 5 names the class "TokenizersBackend", which 4.x does not know; both
    # load "PreTrainedTokenizerFast" from the same tokenizer.json.
    config_path = path / "tokenizer_config.json"
    if config_path.is_file():
        tokenizer_config = json.loads(config_path.read_text(encoding="utf-8"))
        if tokenizer_config.get("tokenizer_class") == "TokenizersBackend":
            tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
            config_path.write_text(json.dumps(tokenizer_config, indent=2) + "\n", encoding="utf-8")
    if summary is not None:
        (path / summary_name).write_text(
            json.dumps(summary, indent=2, default=_jsonable) + "\n", encoding="utf-8"
        )
    for file in path.iterdir():
        if file.is_file():  # safetensors writes 0600; package data must be world-readable
            file.chmod(0o644)
    return path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
