r"""``rlhf-gym sft``: supervised fine-tuning of a causal LM on (prompt, response) pairs.

This is the supervised stage of Constitutional AI (SL-CAI): ``rlhf-gym cai revise`` writes one
record per prompt with its final revision, and ``rlhf-gym sft`` fine-tunes the model on
(prompt, final revision). The result is a Hugging Face checkpoint directory (model, tokenizer,
the base's generation config, and ``sft.json``) that ``rlhf-gym train --model DIR`` and
``gym.make("RLHF-v0", model=DIR)`` start from::

    rlhf-gym cai revise ... --out revisions.jsonl
    rlhf-gym sft --data revisions.jsonl --out sft-model [--model assistant] [--epochs 1]
    rlhf-gym train --model sft-model

Data (JSON Lines, one record a line, blank lines ignored): ``"prompt"`` and one response field,
the first present (and not ``null``) of

* ``"revision"``: ``rlhf-gym cai revise`` (``{"prompt", "initial", "rounds", "revision"}``);
* ``"completion"``: TRL's prompt-completion format;
* ``"response"``;
* ``"chosen"``: a preference record (``{"prompt", "chosen", "rejected"}``): the chosen one.

The prompt is the text before the response exactly as the policy sees it (``"Q: ... A:"``); the
response keeps its leading space (``" I can't ..."``). A malformed line raises ``ValueError``
naming the file, the line and the field (``data.jsonl:3: field 'prompt' must be a string``);
records with an empty (all-whitespace) response and exact repeats of an earlier (prompt,
response) are skipped and counted in :class:`SFTReadReport`.

Tokenisation: the prompt is encoded as the environment encodes it (the tokenizer's special
tokens included, e.g. a Llama BOS), the response separately without special tokens, and EOS is
appended to the response; the two are concatenated, so the boundary is exact and the model
learns to end its response. Labels are ``-100`` on the prompt and on padding: the loss is the
mean negative log-likelihood over the *response tokens* (EOS included) of the batch
(:func:`sft_loss`). A sequence longer than the window (``max_length``, at most the model's)
keeps its response and loses the start of its prompt (one prompt token is always kept; a
response that does not fit even so loses its end, EOS included); both are counted and reported.
Batches are right-padded with the tokenizer's pad token, or with EOS when it has none; padding
is told apart by the attention mask, never by token id.

Training: AdamW (betas 0.9/0.95, no weight decay), gradient norm clipped to 1, peak ``lr``
with a linear warm-up over the first 10% of the steps and a cosine decay to 0, the model in
``train()`` mode (dropout as its config says), seeded (deterministic on CPU). The prompts are
split (``heldout`` of the distinct prompts, so no prompt is in both parts); the held-out loss
(``eval()`` mode, no gradients) is measured before training, every ``eval_every`` steps and at
the end. The final weights are kept (there is no early stopping).

TensorBoard scalars (in ``logdir``, default ``OUT/logs``), x-axis the optimiser step:

* ``sft/train_loss``: the batch's mean NLL per response token;
* ``sft/heldout_loss``: the mean NLL per response token on the held-out records (step 0: the
  base model);
* ``sft/lr``: the learning rate of the step.

Python API: :func:`read_sft_data` (``[(prompt, response), ...]``), :func:`train_sft` (trains a
loaded model in place, no files written), :func:`run_sft` (load, train, save: what the command
runs).

Example:
    >>> import json, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "sft.jsonl"
    >>> rows = [{"prompt": "Q: hi A:", "initial": " Go away.", "rounds": [],
    ...          "revision": " Hello! How can I help?"},
    ...         {"prompt": "Q: bye A:", "completion": " Goodbye."},
    ...         {"prompt": "Q: yo A:", "chosen": " Hi there.", "rejected": " What?"}]
    >>> _ = path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    >>> for prompt, response in read_sft_data(path):
    ...     print(repr(prompt), repr(response))
    'Q: hi A:' ' Hello! How can I help?'
    'Q: bye A:' ' Goodbye.'
    'Q: yo A:' ' Hi there.'

    and, in Python rather than on the command line::

        result = run_sft(SFTConfig(data="sft.jsonl", out="sft-model", epochs=2))
        result.initial_heldout_loss, result.final_heldout_loss
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlhf_gym.agents.config import DTYPES
from rlhf_gym.agents.config import config_field as _f

__all__ = [
    "RESPONSE_FIELDS",
    "TRAIN_LOSS",
    "HELDOUT_LOSS",
    "LEARNING_RATE",
    "Encoded",
    "SFTConfig",
    "SFTReadReport",
    "SFTResult",
    "add_options",
    "encode_pair",
    "load_model",
    "make_batch",
    "read_sft_data",
    "read_sft_file",
    "run",
    "run_sft",
    "sft_loss",
    "split_by_prompt",
    "train_sft",
]

RESPONSE_FIELDS = ("revision", "completion", "response", "chosen")
"""The response of a record: the first of these fields present (and not ``null``)."""

TRAIN_LOSS = "sft/train_loss"
HELDOUT_LOSS = "sft/heldout_loss"
LEARNING_RATE = "sft/lr"
GLOSSARY: dict[str, str] = {
    TRAIN_LOSS: "the batch's mean negative log-likelihood per response token (EOS included)",
    HELDOUT_LOSS: "the same on the held-out records (prompts never trained on); step 0: the base",
    LEARNING_RATE: "the learning rate of the step (linear warm-up, then cosine decay to 0)",
}
"""The TensorBoard tags of ``rlhf-gym sft`` and their meaning (``docs/metrics.md``)."""
IGNORE = -100
"""The label of a token that carries no loss (prompt and padding)."""


# ------------------------------------------------------------------------------ configuration
@dataclass
class SFTConfig:
    """``rlhf-gym sft``'s options (one per field with help text) and :func:`train_sft`'s
    hyper-parameters (``data``, ``out``, ``model``, ``device``, ``dtype`` and ``logdir`` are
    used by :func:`run_sft` only)."""

    data: str | None = _f(None, "JSONL of prompt + revision/completion/response/chosen (required)")
    out: str | None = _f(None, "directory to write the fine-tuned model to (required)")
    model: str = _f(
        "assistant",
        "model to fine-tune: assistant (the embedded model of rlhf-gym cai), default (the "
        "embedded LM of the sentiment and harmless tasks), a path or hub name",
    )
    epochs: int = _f(1, "passes over the training records")
    lr: float = _f(3e-4, "peak learning rate (AdamW, 10% linear warm-up, cosine decay to 0)")
    batch_size: int = _f(16, "records per optimiser step")
    heldout: float = _f(0.1, "share of the prompts held out to measure the loss (0: none)")
    max_length: int = _f(
        0, "longest sequence in tokens; longer prompts lose their start (0: the window)"
    )
    eval_every: int = _f(0, "steps between held-out evaluations (0: once per epoch)")
    seed: int = _f(0, "seed of the split, the batch order and dropout")
    device: str = _f("auto", "auto, cpu, cuda, cuda:N or mps")
    dtype: str = _f("float32", "model dtype: float32, bfloat16, float16 or auto")
    logdir: str | None = _f(None, "TensorBoard directory (default: OUT/logs)")

    def validate(self) -> None:
        """Raise ``ValueError`` naming the option of the first bad value."""
        checks = (
            ("epochs", _is_int(self.epochs) and self.epochs >= 1, "a positive integer"),
            ("lr", _is_number(self.lr) and 0 < self.lr < math.inf, "a positive number"),
            ("batch_size", _is_int(self.batch_size) and self.batch_size >= 1, "a positive integer"),
            ("heldout", _is_number(self.heldout) and 0 <= self.heldout < 1, "in [0, 1)"),
            ("max_length", _is_int(self.max_length) and self.max_length >= 0, "0 or more"),
            ("eval_every", _is_int(self.eval_every) and self.eval_every >= 0, "0 or more"),
            ("seed", _is_int(self.seed), "an integer"),
            ("dtype", self.dtype in DTYPES, f"one of {', '.join(DTYPES)}"),
        )
        for name, ok, what in checks:
            if not ok:
                raise ValueError(f"{_flag(name)} must be {what}, got {getattr(self, name)!r}")
        if self.max_length == 1:
            raise ValueError("--max-length must be 0 (the window) or at least 2, got 1")

    def validate_paths(self) -> None:
        """What :func:`run_sft` needs besides :meth:`validate`: ``data`` and ``out`` given, and
        ``out`` new, empty or an earlier ``rlhf-gym sft`` output (never another model)."""
        if not self.data:
            raise ValueError("--data is required: the JSONL of prompts and responses")
        if not self.out:
            raise ValueError("--out is required: the directory to write the model to")
        out = Path(self.out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            if not (out / "sft.json").is_file():
                raise ValueError(
                    f"--out {self.out!r} exists and is not an earlier rlhf-gym sft output: "
                    "choose a new or empty directory"
                )
        from rlhf_gym.cli import check_output_path

        check_output_path(out, "--out", "directory")
        if self.logdir:
            check_output_path(self.logdir, "--logdir", "directory")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or isinstance(value, float)


# ------------------------------------------------------------------------------ the data
@dataclass
class SFTReadReport:
    """What :func:`read_sft_file` kept and skipped (line numbers are 1-based).

    Attributes:
        path: The file read.
        lines: Non-blank lines read.
        records: Records kept.
        fields: How many kept records took their response from each field.
        empty: Lines whose response is empty or all whitespace (skipped).
        duplicates: Lines repeating an earlier (prompt, response) (skipped).
    """

    path: str
    lines: int = 0
    records: int = 0
    fields: dict[str, int] = field(default_factory=dict)
    empty: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        """Lines skipped in all."""
        return len(self.empty) + len(self.duplicates)

    def summary(self) -> str:
        """One line, e.g. ``sft.jsonl: 200 records from 201 lines (revision 200); skipped 1 …``."""
        used = ", ".join(f"{k} {v}" for k, v in self.fields.items())
        text = f"{self.path}: {self.records} records from {self.lines} lines ({used or 'none'})"
        parts = [
            f"{len(lines)} {what} (lines {_line_list(lines)})"
            for what, lines in (
                ("with an empty response", self.empty),
                ("duplicates", self.duplicates),
            )
            if lines
        ]
        return text + ("; skipped " + ", ".join(parts) if parts else "")


def _line_list(lines: Sequence[int], shown: int = 8) -> str:
    head = ", ".join(map(str, lines[:shown]))
    return head + (f", … {len(lines) - shown} more" if len(lines) > shown else "")


def read_sft_file(path: str | Path) -> tuple[list[tuple[str, str]], SFTReadReport]:
    """``([(prompt, response), ...], report)`` of a JSON Lines file (see the module docstring).

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: on the first malformed line (file, line and field named), or when the file
            holds no usable record.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SFT data file {str(path)!r} does not exist")
    report = SFTReadReport(path=str(path))
    records: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    fields: Counter[str] = Counter()
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            report.lines += 1
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
            prompt = _text(row, "prompt", where)
            key = next((k for k in RESPONSE_FIELDS if row.get(k) is not None), None)
            if key is None:
                raise ValueError(
                    f"{where}: no response field: expected one of "
                    f"{', '.join(map(repr, RESPONSE_FIELDS))} (the record has {sorted(row)})"
                )
            response = _text(row, key, where)
            if not response.strip():
                report.empty.append(lineno)
            elif (prompt, response) in seen:
                report.duplicates.append(lineno)
            else:
                seen.add((prompt, response))
                records.append((prompt, response))
                fields[key] += 1
    report.records = len(records)
    report.fields = dict(fields)
    if not report.lines:
        raise ValueError(f"{path}: no records (the file is empty)")
    if not records:
        raise ValueError(f"{path}: no usable records ({report.summary()})")
    return records, report


def read_sft_data(path: str | Path) -> list[tuple[str, str]]:
    """The ``(prompt, response)`` pairs of a JSON Lines file (:func:`read_sft_file` without
    its report)."""
    return read_sft_file(path)[0]


def _text(row: dict[str, Any], key: str, where: str) -> str:
    if key not in row:
        raise ValueError(f"{where}: field {key!r} is missing (the record has {sorted(row)})")
    if not isinstance(row[key], str):
        raise ValueError(f"{where}: field {key!r} must be a string, got {type(row[key]).__name__}")
    return row[key]


def split_by_prompt(
    records: Sequence[tuple[str, str]], share: float, seed: int
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``(train, heldout)``: about ``share`` of the distinct prompts, all their records held
    out (none when ``share`` is 0 or there is only one prompt).

    >>> recs = [(f"p{i % 10}", f"r{i}") for i in range(100)]
    >>> train, held = split_by_prompt(recs, 0.2, 0)
    >>> len(held), {p for p, _ in held} & {p for p, _ in train}
    (20, set())
    """
    prompts = sorted({p for p, _ in records})
    if share <= 0 or len(prompts) < 2:
        return list(records), []
    rng = random.Random(seed)
    rng.shuffle(prompts)
    held = set(prompts[: max(1, round(share * len(prompts)))])
    return [r for r in records if r[0] not in held], [r for r in records if r[0] in held]


# ------------------------------------------------------------------------------ tokenisation
@dataclass(frozen=True)
class Encoded:
    """One record as token ids: ``ids = prompt part + response part`` (EOS at its end unless the
    response was cut); ``prompt_len`` tokens carry no loss."""

    ids: tuple[int, ...]
    prompt_len: int
    prompt_cut: bool  # the prompt lost its start to fit the window
    response_cut: bool  # even the response did not fit: it lost its end


def encode_pair(tokenizer: Any, prompt: str, response: str, max_length: int) -> Encoded:
    """Tokenise ``prompt`` (with the tokenizer's special tokens, as the environment does) and
    ``response`` + EOS (without) separately; fit them into ``max_length`` (>= 2) tokens by cutting
    the prompt's start (keeping at least one prompt token) and, only if that is not enough, the
    response's end."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no EOS token: the model could not learn to stop")
    prompt_ids = list(tokenizer(prompt)["input_ids"])
    if not prompt_ids:  # the first response token needs something to be predicted from
        bos = tokenizer.bos_token_id
        prompt_ids = [bos if bos is not None else eos]
    response_ids = list(tokenizer(response, add_special_tokens=False)["input_ids"]) + [eos]
    response_cut = len(response_ids) > max_length - 1
    response_ids = response_ids[: max_length - 1]
    keep = max_length - len(response_ids)
    prompt_cut = len(prompt_ids) > keep
    prompt_ids = prompt_ids[-keep:]
    return Encoded(tuple(prompt_ids + response_ids), len(prompt_ids), prompt_cut, response_cut)


def make_batch(encoded: Sequence[Encoded], pad_id: int) -> dict[str, Any]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (all ``(B, T)``): labels are
    the ids on response tokens and ``-100`` on prompt tokens and padding (padding is known by
    position, so a pad id equal to EOS is harmless)."""
    import torch

    length = max(len(e.ids) for e in encoded)
    ids = torch.full((len(encoded), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), length), dtype=torch.long)
    labels = torch.full((len(encoded), length), IGNORE, dtype=torch.long)
    for row, e in enumerate(encoded):
        seq = torch.tensor(e.ids, dtype=torch.long)
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
        labels[row, e.prompt_len : len(seq)] = seq[e.prompt_len :]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def sft_loss(logits: Any, labels: Any) -> tuple[Any, int]:
    """``(mean NLL over the labelled tokens, their number)``: position ``t``'s logits predict
    token ``t + 1``; ``logits`` ``(B, T, V)``, ``labels`` ``(B, T)`` with ``-100`` for none."""
    import torch.nn.functional as F

    target = labels[:, 1:]
    count = int((target != IGNORE).sum())
    total = F.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]),
        target.reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )
    return total / max(count, 1), count


def _batch_loss(model: Any, batch: dict[str, Any], device: Any) -> tuple[Any, int]:
    """:func:`sft_loss` of one batch (from :func:`make_batch`) through ``model`` on ``device``."""
    logits = model(
        input_ids=batch["input_ids"].to(device),
        attention_mask=batch["attention_mask"].to(device),
        use_cache=False,
    ).logits
    return sft_loss(logits, batch["labels"].to(device))


# ------------------------------------------------------------------------------ training
@dataclass
class SFTResult:
    """What :func:`train_sft` did.

    Attributes:
        steps: Optimiser steps taken.
        epochs: Passes over the training records.
        train_records: Records trained on.
        heldout_records: Records held out (their prompts are in no training record).
        train_tokens: Response tokens (EOS included) of the training records, per epoch.
        heldout_tokens: Response tokens of the held-out records.
        max_length: The sequence length limit used.
        truncated: Records whose prompt lost its start to fit ``max_length``.
        response_cut: Records whose response lost its end even so.
        initial_heldout_loss: Held-out loss of the model before training (``None``: no
            held-out records).
        final_heldout_loss: Held-out loss of the final weights.
        final_train_loss: Mean training loss per response token over the last epoch.
        history: ``(step, held-out loss)`` of every evaluation, step 0 included.
        seconds: Wall time of training (held-out evaluations included).
    """

    steps: int = 0
    epochs: int = 0
    train_records: int = 0
    heldout_records: int = 0
    train_tokens: int = 0
    heldout_tokens: int = 0
    max_length: int = 0
    truncated: int = 0
    response_cut: int = 0
    initial_heldout_loss: float | None = None
    final_heldout_loss: float | None = None
    final_train_loss: float = float("nan")
    history: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0


def _window(model: Any, tokenizer: Any) -> int:
    from rlhf_gym.envs.rewards import model_window

    return model_window(model, tokenizer)


def _cosine_with_warmup(total: int) -> Callable[[int], float]:
    """The learning-rate factor of step ``s`` (0-based): linear warm-up over the first 10% of
    the steps, then a cosine decay towards 0 (the last step keeps a small positive rate)."""
    warmup = max(1, round(0.1 * total))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup + 1) / (total - warmup + 1)))

    return factor


def _heldout_loss(model: Any, batches: Sequence[dict[str, Any]], device: Any) -> float:
    """Mean NLL per response token over all ``batches`` (``eval()`` mode, no gradients); the
    model's mode is restored."""
    import torch

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            loss, n = _batch_loss(model, batch, device)
            total, count = total + loss.item() * n, count + n
    model.train(was_training)
    return total / max(count, 1)


def train_sft(
    model: Any,
    tokenizer: Any,
    records: Sequence[tuple[str, str]],
    config: SFTConfig,
    *,
    writer: Any = None,
    progress: bool = False,
    log: Callable[[str], None] = lambda msg: None,
) -> SFTResult:
    """Fine-tune ``model`` (in place) on ``(prompt, response)`` pairs; writes no files.

    Args:
        model: A Hugging Face causal LM, on the device (and in the dtype) to train in.
        tokenizer: Its tokenizer (it needs an EOS token; without a pad token EOS pads).
        records: The pairs; ``config.heldout`` of the prompts are held out.
        config: Hyper-parameters (``epochs``, ``lr``, ``batch_size``, ``heldout``,
            ``max_length``, ``eval_every``, ``seed``; the paths are not used).
        writer: A TensorBoard ``SummaryWriter`` for the ``sft/`` scalars (or ``None``).
        progress: Show a tqdm bar on stderr (the batch loss as its postfix).
        log: Where one-line messages (truncation, held-out losses) go when there is no
            progress bar (with one, they are printed above it).

    Returns:
        An :class:`SFTResult`; the model holds the final weights, in ``eval()`` mode.
    """
    import torch

    from rlhf_gym.envs.lm import transformers_errors_only

    config.validate()
    if not records:
        raise ValueError("no records to train on")
    train, held = split_by_prompt(records, config.heldout, config.seed)
    if not train:
        raise ValueError(
            f"no training records left after holding out {config.heldout:g} of the "
            f"{len({p for p, _ in records})} prompts: lower --heldout"
        )
    if config.heldout > 0 and not held:
        log("no held-out records: all records share one prompt")
    window = _window(model, tokenizer)
    max_length = min(config.max_length or window, window)
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    # no "Token indices sequence length is longer than ..." warning: long prompts are cut here
    with transformers_errors_only():
        enc_train = [encode_pair(tokenizer, p, r, max_length) for p, r in train]
        enc_held = [encode_pair(tokenizer, p, r, max_length) for p, r in held]
    every = enc_train + enc_held
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = config.epochs * steps_per_epoch
    result = SFTResult(
        epochs=config.epochs,
        train_records=len(train),
        heldout_records=len(held),
        train_tokens=sum(len(e.ids) - e.prompt_len for e in enc_train),
        heldout_tokens=sum(len(e.ids) - e.prompt_len for e in enc_held),
        max_length=max_length,
        truncated=sum(e.prompt_cut for e in every),
        response_cut=sum(e.response_cut for e in every),
    )
    if result.truncated:
        log(
            f"{result.truncated} of {len(every)} records are longer than {max_length} tokens: "
            "their prompt loses its start"
            + (
                f" ({result.response_cut} responses do not fit even so and lose their end)"
                if result.response_cut
                else ""
            )
        )
    device = next(model.parameters()).device
    # held-out batches sorted by length (little padding); they never change
    order = sorted(range(len(enc_held)), key=lambda i: len(enc_held[i].ids))
    held_batches = [
        make_batch([enc_held[i] for i in order[k : k + config.batch_size]], pad_id)
        for k in range(0, len(order), config.batch_size)
    ]
    eval_every = config.eval_every or steps_per_epoch
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.lr,
        betas=(0.9, 0.95),
        weight_decay=0.0,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine_with_warmup(total))
    bar = None
    if progress:
        from rlhf_gym.train import progress_bar

        bar = progress_bar(total)

    def say(message: str) -> None:  # above the progress bar, if there is one
        if bar is not None:
            bar.write(message, file=sys.stderr)
        else:
            log(message)

    def evaluate(step: int) -> float:
        loss = _heldout_loss(model, held_batches, device)
        result.history.append((step, loss))
        if writer is not None:
            writer.add_scalar(HELDOUT_LOSS, loss, step)
        return loss

    tic = time.perf_counter()
    if held:
        result.initial_heldout_loss = evaluate(0)
        say(f"step 0/{total}: held-out loss {result.initial_heldout_loss:.4f}")
    model.train()
    step = 0
    try:
        for _epoch in range(config.epochs):
            indices = list(range(len(enc_train)))
            rng.shuffle(indices)
            epoch_nll, epoch_tokens = 0.0, 0
            for k in range(0, len(indices), config.batch_size):
                batch = make_batch(
                    [enc_train[i] for i in indices[k : k + config.batch_size]], pad_id
                )
                loss, n = _batch_loss(model, batch, device)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                lr = scheduler.get_last_lr()[0]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                value = loss.item()
                epoch_nll, epoch_tokens = epoch_nll + value * n, epoch_tokens + n
                if writer is not None:
                    writer.add_scalar(TRAIN_LOSS, value, step)
                    writer.add_scalar(LEARNING_RATE, lr, step)
                if bar is not None:
                    bar.set_postfix_str(f"loss {value:.3f}", refresh=False)
                    bar.update(1)
                if held and (step % eval_every == 0 or step == total):
                    loss_held = evaluate(step)
                    say(f"step {step}/{total}: held-out loss {loss_held:.4f}")
            result.final_train_loss = epoch_nll / max(epoch_tokens, 1)
    finally:
        if bar is not None:
            bar.close()
        model.eval()
    result.steps = step
    if held:
        result.final_heldout_loss = result.history[-1][1]
    result.seconds = time.perf_counter() - tic
    return result


# ------------------------------------------------------------------------------ the command
def load_model(name: str, device: Any, dtype: str) -> tuple[Any, Any]:
    """A causal LM (on ``device``, in ``dtype``) and its tokenizer from a built-in name
    (``default``: the embedded LM), a local directory or a hub name."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf_gym.envs.lm import from_pretrained, resolve_dtype, resolve_model_path
    from rlhf_gym.envs.rlhf_env import BUILTIN_MODELS

    path = resolve_model_path(name, "model", BUILTIN_MODELS)
    model = from_pretrained(AutoModelForCausalLM, path, "model", BUILTIN_MODELS)
    tokenizer = from_pretrained(AutoTokenizer, path, "model", BUILTIN_MODELS)
    return model.to(device=device, dtype=resolve_dtype(dtype, device)), tokenizer


def run_sft(config: SFTConfig, *, quiet: bool = False) -> SFTResult:
    """Read ``config.data``, load ``config.model``, :func:`train_sft`, and save the model, its
    tokenizer, the base's generation config and ``sft.json`` to ``config.out``.

    Nothing is written (not even ``out``) until the data have been read and the model loaded.
    Unless ``quiet``, the data report and the losses go to stderr (with a progress bar) and a
    summary to stdout.
    """
    from rlhf_gym.envs.lm import resolve_device
    from rlhf_gym.feedback.trainer import save_model
    from rlhf_gym.train import make_writer

    config.validate()
    config.validate_paths()
    assert config.data is not None and config.out is not None
    err = (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    records, report = read_sft_file(config.data)
    err(report.summary())
    device = resolve_device(config.device)
    model, tokenizer = load_model(config.model, device, config.dtype)
    out = Path(config.out)
    logdir = Path(config.logdir) if config.logdir else out / "logs"
    writer = make_writer(logdir)
    try:
        result = train_sft(
            model, tokenizer, records, config, writer=writer, progress=not quiet, log=err
        )
    finally:
        writer.close()
    summary = {
        "config": asdict(config),
        "data": asdict(report),
        "result": asdict(result),
        "tensorboard": str(logdir),
    }
    save_model(model, tokenizer, out, summary, summary_name="sft.json")
    if not quiet:
        print(summary_text(config, report, result, logdir))
    return result


def summary_text(config: SFTConfig, report: SFTReadReport, result: SFTResult, logdir: Path) -> str:
    """What ``rlhf-gym sft`` prints at the end."""
    held = (
        f"held-out loss {result.initial_heldout_loss:.4f} → {result.final_heldout_loss:.4f} "
        f"on {result.heldout_records} records"
        if result.initial_heldout_loss is not None and result.final_heldout_loss is not None
        else "no held-out records"
    )
    lines = [
        f"{report.records} records ({report.skipped} skipped): trained on "
        f"{result.train_records} ({result.steps} steps, {result.epochs} epoch"
        f"{'s' if result.epochs != 1 else ''}, {result.seconds:.0f} s); {held}",
        f"model: {config.out}   TensorBoard: {logdir}",
        f"next: rlhf-gym train --model {config.out}",
    ]
    if result.truncated:
        lines.insert(
            1, f"{result.truncated} records were cut to {result.max_length} tokens (prompt start)"
        )
    return "\n".join(lines)


def add_options(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """``rlhf-gym sft``'s options, from :class:`SFTConfig`."""
    from rlhf_gym.cli import add_options as add

    add(parser, SFTConfig, "supervised fine-tuning")


def run(args: argparse.Namespace) -> int:
    """Run ``rlhf-gym sft``; the exit status."""
    from rlhf_gym.cli import from_args

    run_sft(from_args(SFTConfig, args))
    return 0
