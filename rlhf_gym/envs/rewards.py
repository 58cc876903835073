"""Reward models: the protocol the environment scores responses with, and its implementations.

A reward model sees *text*: the prompt and the decoded response. So any reward model works
with any policy, whatever their tokenizers (a reward model with its own tokenizer re-encodes
the text). Scores are computed once per episode, at its last step, in batches.

Implementations:
    * :class:`HFRewardModel`: a Hugging Face sequence classifier scoring ``prompt + response``.
    * :class:`FunctionReward`: a Python function of one ``(prompt, response)`` pair.
    * :class:`WeightedReward`: a weighted sum of several reward models (helpful + harmless).

Whatever a reward model returns enters the environment through :func:`score_responses`, which
turns anything but one finite number per response (NaN, inf, a wrong count or shape, a
non-number, an exception) into a :class:`RewardModelError` naming the reward model, the bad
value and the episode's prompt: a silent NaN never reaches ``info``, the rewards or an agent.

Example:
    >>> rm = WeightedReward({"short": FunctionReward(lambda p, r: -len(r) / 10),
    ...                      "polite": FunctionReward(lambda p, r: float("please" in r))},
    ...                     weights={"short": 1.0, "polite": 2.0})
    >>> rm.score(["Q: help? A:"], [" please wait"]).tolist()
    [0.8]
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from rlhf_gym.envs.lm import DATA_DIR, from_pretrained, prepare_frozen, resolve_model_path

BUILTIN_REWARD_MODELS: dict[str, Path] = {
    "sentiment": DATA_DIR / "reward-sentiment",
    "harmless": DATA_DIR / "reward-harmless",
    "helpful_harmless": DATA_DIR / "reward-helpful_harmless",
}


@runtime_checkable
class RewardModel(Protocol):
    """Scores finished responses: ``score(prompts, responses) -> (N,) float array``."""

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """One float per ``(prompt, response)`` pair, as an ``(N,)`` array."""
        ...


class RewardModelError(ValueError):
    """A reward model (or gold labeler) raised, or returned something other than one finite
    number per response. The message names the model, the bad value and the episode's prompt."""


def callable_name(fn: Any) -> str:
    """``module.qualname`` of a function (``functools.partial`` unwrapped), else its type's."""
    inner = getattr(fn, "func", None)  # functools.partial
    if inner is not None and callable(inner):
        return f"partial({callable_name(inner)})"
    named = fn if hasattr(fn, "__qualname__") else type(fn)
    module = getattr(named, "__module__", None)
    qualname = getattr(named, "__qualname__", repr(named))
    return qualname if module in (None, "builtins") else f"{module}.{qualname}"


def reward_model_name(reward_model: Any) -> str:
    """How error messages name a reward model: its ``repr`` for the classes of this module,
    else its class (or function) name: never an address that changes from run to run."""
    if isinstance(reward_model, (FunctionReward, HFRewardModel, WeightedReward)):
        return repr(reward_model)
    return callable_name(reward_model if not hasattr(reward_model, "score") else type(reward_model))


def shorten(text: str, limit: int = 80) -> str:
    """``repr(text)`` cut to about ``limit`` characters (control characters stay visible)."""
    return repr(text) if len(text) <= limit else repr(text[: limit - 1]) + "…"


def show(value: Any, limit: int = 80) -> str:
    """``repr(value)`` (a NumPy scalar as its Python value) cut to about ``limit`` characters."""
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pair(prompt: str, response: str) -> str:
    return f"prompt {shorten(prompt)}, response {shorten(response)}"


def _one_number(value: Any) -> float | None:
    """``value`` as a float if it is one real number (a Python or NumPy number, a 0-d or
    one-element array or tensor), else ``None``. Text is never a number: ``"1.5"`` is a bug."""
    if isinstance(value, (str, bytes)):
        return None
    if isinstance(value, torch.Tensor):
        value = value.detach().float().cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.size != 1 or value.dtype.kind not in "biuf":
            return None
        value = value.reshape(()).item()
    if isinstance(value, (numbers.Real, np.bool_)):
        return float(value)
    return None


class FunctionReward:
    """Wrap ``fn(prompt, response) -> float`` as a :class:`RewardModel`.

    A function that raises or returns anything but a real number gets a
    :class:`RewardModelError` naming it and the ``(prompt, response)`` pair.
    """

    def __init__(self, fn: Callable[[str, str], float], role: str = "reward function") -> None:
        self.fn, self.role = fn, role  # role: how error messages call it ("gold labeler")

    def __repr__(self) -> str:
        return f"FunctionReward({callable_name(self.fn)})"

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Score each ``(prompt, response)`` pair with the function."""
        out = np.empty(len(prompts), dtype=np.float64)
        for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
            try:
                value = self.fn(p, r)
            except Exception as e:
                raise RewardModelError(
                    f"the {self.role} {callable_name(self.fn)} raised {type(e).__name__}: "
                    f"{e} ({_pair(p, r)})"
                ) from e
            number = _one_number(value)
            if number is None:
                raise RewardModelError(
                    f"the {self.role} {callable_name(self.fn)} returned {show(value)} "
                    f"of type {type(value).__name__}, not a number ({_pair(p, r)})"
                )
            out[i] = number
        return out


class WeightedReward:
    """``Σ_k w_k · reward_k``; :attr:`last_parts` keeps each part of the last call."""

    def __init__(
        self, parts: Mapping[str, RewardModel], weights: Mapping[str, float] | None = None
    ) -> None:
        if not parts:
            raise ValueError("WeightedReward needs at least one part")
        weights = dict(weights or {k: 1.0 for k in parts})
        if set(weights) != set(parts):
            raise ValueError(
                f"weights {sorted(weights)} must name exactly the parts {sorted(parts)}"
            )
        self.parts, self.weights = dict(parts), weights
        self.last_parts: dict[str, np.ndarray] = {}

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={reward_model_name(rm)}" for k, rm in self.parts.items())
        return f"WeightedReward({parts})"

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """The weighted sum of the parts' scores (each kept in :attr:`last_parts`); a part
        that fails or returns a bad value is named in the :class:`RewardModelError`."""
        self.last_parts = {
            k: score_responses(rm, prompts, responses, name=f"{reward_model_name(rm)} (part {k!r})")
            for k, rm in self.parts.items()
        }
        return sum(self.weights[k] * v for k, v in self.last_parts.items())


def model_window(model: Any, tokenizer: Any) -> int:
    """The longest input a model reads, in tokens: the tokenizer's limit, the position
    embeddings (``max_position_embeddings`` or ``n_positions``), and 4,096 at most.

    The environment's scorer and the reward-model trainer both cut texts to this, so a reward
    model is scored on the same window it was trained on.
    """
    limit = min(int(getattr(tokenizer, "model_max_length", 512)), 4096)
    for key in ("max_position_embeddings", "n_positions"):
        if hasattr(model.config, key):
            limit = min(limit, int(getattr(model.config, key)))
    return limit


class HFRewardModel:
    """A Hugging Face sequence classifier as a reward model.

    The input text is ``prompt + response``; when it is longer than the model's window, the
    start is cut (``truncation_side="left"``) so the response is always scored. The score is the
    logit of ``label``: with one label, that logit; otherwise by default the label whose name
    contains "pos" (``POSITIVE`` in ``lvwerra/distilbert-imdb``), else the last one. A config
    attribute ``score_shift`` (written by :func:`rlhf_gym.feedback.trainer.normalise` for models
    whose score head has no bias to hold it) is added to every score.

    Args:
        model: a loaded ``AutoModelForSequenceClassification`` (it is frozen, dropout off).
        tokenizer: its tokenizer.
        label: index or name of the label whose logit is the score.
        batch_size: texts per forward pass.
    """

    def __init__(
        self, model: Any, tokenizer: Any, label: int | str | None = None, batch_size: int = 64
    ) -> None:
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.name = str(getattr(model, "name_or_path", "") or type(model).__name__)
        model.eval()
        model.requires_grad_(False)
        tokenizer.truncation_side = "left"
        if tokenizer.pad_token is None:  # GPT-2-style tokenizers ship none
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        self.label = self._label_index(label)
        self.shift = float(getattr(model.config, "score_shift", 0.0) or 0.0)
        self.max_length = model_window(model, tokenizer)

    def _label_index(self, label: int | str | None) -> int:
        id2label = {int(k): str(v) for k, v in self.model.config.id2label.items()}
        n = self.model.config.num_labels
        if label is None:
            positive = [i for i, name in id2label.items() if "pos" in name.lower()]
            return 0 if n == 1 else (positive[0] if positive else n - 1)
        if isinstance(label, str):
            names = {v: k for k, v in id2label.items()}
            if label not in names:
                raise ValueError(f"reward label {label!r} is not one of {sorted(names)}")
            return names[label]
        if not 0 <= label < n:
            raise ValueError(f"reward label {label} is out of range for {n} labels")
        return label

    def __repr__(self) -> str:
        return f"HFRewardModel({self.name!r})"

    def _encode(self, texts: list[str]) -> Any:
        """Tokenize and pad a batch. A text that encodes to no token at all (an empty prompt
        and response, with a tokenizer that adds no special tokens) is scored as the one
        start token, as the environment conditions on an empty prompt: a model cannot read
        nothing, and the score must not depend on the rest of the batch."""
        kw = dict(return_tensors="pt", padding=True, truncation=True, max_length=self.max_length)
        enc = self.tokenizer(texts, **kw)
        empty = (enc["attention_mask"].sum(dim=1) == 0).tolist()
        if not any(empty):
            return enc
        tok = self.tokenizer
        start = tok.bos_token or tok.eos_token or tok.cls_token or tok.unk_token or tok.pad_token
        if start is None:
            raise ValueError(
                "the reward model's tokenizer encodes an empty text to no tokens and has no "
                "special token to stand for it"
            )
        return self.tokenizer([start if e else t for t, e in zip(texts, empty, strict=True)], **kw)

    @classmethod
    def load(
        cls, name_or_path: str, device: torch.device, dtype: torch.dtype = torch.float32, **kw: Any
    ) -> HFRewardModel:
        """Load a built-in name (``sentiment``, ``harmless``), a local directory or a hub name."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = resolve_model_path(name_or_path, "reward_model", BUILTIN_REWARD_MODELS)
        args = ("reward_model", BUILTIN_REWARD_MODELS)
        model = from_pretrained(AutoModelForSequenceClassification, path, *args)
        tokenizer = from_pretrained(AutoTokenizer, path, *args)
        return cls(prepare_frozen(model, device, dtype), tokenizer, **kw)

    @torch.no_grad()
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """The logit of ``label`` for each ``prompt + response`` text, in batches."""
        texts = [p + r for p, r in zip(prompts, responses, strict=True)]
        device = next(self.model.parameters()).device
        scores = []
        for i in range(0, len(texts), self.batch_size):
            enc = self._encode(texts[i : i + self.batch_size])
            logits = self.model(**enc.to(device)).logits  # (n, num_labels)
            scores.append(logits[:, self.label].float().cpu().numpy())
        return np.concatenate(scores) + self.shift


def as_reward_model(reward: Any) -> RewardModel:
    """Accept a :class:`RewardModel` or a plain ``fn(prompt, response) -> float``."""
    if isinstance(reward, type):
        raise ValueError(
            f"reward_model={reward.__name__} is a class: pass an instance of it (or a function "
            "fn(prompt, response) -> float)"
        )
    if callable(getattr(reward, "score", None)):
        return reward
    if callable(reward):
        return FunctionReward(reward)
    raise ValueError(
        "reward_model must be a built-in name (sentiment, harmless), a path or hub name of a "
        "sequence classifier, an object with score(prompts, responses), or a function "
        f"fn(prompt, response) -> float; got {type(reward).__name__}"
    )


def score_responses(
    reward_model: RewardModel,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    name: str | None = None,
    role: str = "reward model",
) -> np.ndarray:
    """``reward_model.score(prompts, responses)`` as an ``(N,)`` float64 array of finite numbers.

    The one door through which scores enter the environment (and a :class:`WeightedReward`'s
    parts enter its sum). Anything else is a :class:`RewardModelError` naming the model
    (``name``, else :func:`reward_model_name`), what was wrong with which value, and the
    prompt of that episode (the first prompt where no single response is to blame).

    Example:
        >>> score_responses(FunctionReward(lambda p, r: len(r)), ["a"], ["bc"]).tolist()
        [2.0]
    """
    name = name or reward_model_name(reward_model)
    n = len(prompts)
    try:
        raw = reward_model.score(prompts, responses)
    except RewardModelError:
        raise
    except Exception as e:
        raise RewardModelError(
            f"the {role} {name} raised {type(e).__name__}: {e} (scoring {_batch(prompts)})"
        ) from e
    if isinstance(raw, torch.Tensor):
        raw = raw.detach().float().cpu().numpy()
    try:
        arr = np.asarray(raw)
    except Exception as e:  # ragged lists and the like
        raise RewardModelError(
            f"the {role} {name} returned {show(raw)}, not an array of {n} number(s) "
            f"(scoring {_batch(prompts)})"
        ) from e
    if arr.shape != (n,):
        raise RewardModelError(
            f"the {role} {name} returned shape {arr.shape} for {n} response(s); expected "
            f"({n},): one number per (prompt, response) pair (scoring {_batch(prompts)})"
        )
    if arr.dtype.kind not in "biuf":
        numbers_ = [_one_number(v) for v in arr]
        bad = next((i for i, v in enumerate(numbers_) if v is None), None)
        if bad is not None:
            raise RewardModelError(
                f"the {role} {name} returned {show(arr[bad])} of type "
                f"{type(arr[bad]).__name__}, not a number, for response {bad + 1} of {n} "
                f"({_pair(prompts[bad], responses[bad])})"
            )
        arr = np.asarray(numbers_)
    scores = arr.astype(np.float64)
    bad_rows = np.flatnonzero(~np.isfinite(scores))
    if bad_rows.size:
        i = int(bad_rows[0])
        raise RewardModelError(
            f"the {role} {name} returned {scores[i]} for response {i + 1} of {n}, not a finite "
            f"number ({_pair(prompts[i], responses[i])})"
        )
    return scores


def _batch(prompts: Sequence[str]) -> str:
    """The prompts of a batch, for a message: the one prompt, or the first and a count."""
    if len(prompts) == 1:
        return f"the response to prompt {shorten(prompts[0])}"
    return f"{len(prompts)} responses, the first to prompt {shorten(prompts[0]) if prompts else ''}"
