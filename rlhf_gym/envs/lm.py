"""Loading causal LMs by name or path, and :class:`IncrementalLM`, a batch of KV-cached sequences.

:class:`IncrementalLM` is what makes the environment fast: it holds ``B`` token sequences
("rows") in one key/value cache, so each environment step costs one forward pass over one new
token per row, for all rows at once. Rows are restarted independently (a vector environment
resets a finished sub-environment while the others go on): the new prompt is prefilled and
spliced into the shared cache, right-aligned, with the columns before it masked out. Positions
are counted per row from the attention mask, so masked gaps never shift a row's positions, and
the cached next-token logits equal an uncached forward pass over the row's real tokens (a test
pins this down).
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

DATA_DIR = Path(
    os.environ.get("RLHF_GYM_DATA_DIR")
    or Path(__file__).resolve().parent.parent / "data" / "default"
)
"""Where the embedded default models live (built by ``python -m rlhf_gym.embedded``);
the environment variable ``RLHF_GYM_DATA_DIR`` points it at a rebuilt copy elsewhere."""

DEVICES_HELP = '"auto", "cpu", "cuda", "cuda:N" or "mps"'
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn ``"auto"`` (CUDA when present, else CPU) or a device name into a usable device."""
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise ValueError(f"device must be one of {DEVICES_HELP}; got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"device={device!r} is not a device; use one of {DEVICES_HELP}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for, but CUDA is not available here")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r} was asked for, but MPS is not available here")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={device!r} is not supported; use one of {DEVICES_HELP}")
    return dev


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``"auto"`` is bfloat16 on a CUDA device that supports it, float32 elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not one of {['auto', *DTYPES]}")
    return DTYPES[dtype]


def resolve_model_path(name_or_path: str, what: str, builtins: dict[str, Path]) -> str:
    """Map a built-in name to its shipped directory; reject local paths that do not exist.

    Anything else is returned unchanged and treated as a Hugging Face hub name by the caller.
    """
    if not isinstance(name_or_path, str) or not name_or_path:
        raise ValueError(f"{what} must be a non-empty name or path; got {name_or_path!r}")
    if name_or_path in builtins:
        path = builtins[name_or_path]
        if not path.is_dir():
            raise FileNotFoundError(
                f"{what}={name_or_path!r}: the embedded default is missing at {path}; "
                "rebuild it with `python -m rlhf_gym.embedded`"
            )
        return str(path)
    expanded = os.path.expanduser(name_or_path)
    if os.path.exists(expanded):
        if not os.path.isdir(expanded):
            raise ValueError(f"{what}={name_or_path!r} is a file; expected a model directory")
        return expanded
    looks_local = (
        name_or_path.startswith(("/", "./", "../", "~", ".\\")) or name_or_path.count("/") > 1
    )
    if looks_local:
        raise FileNotFoundError(f"{what}={name_or_path!r}: no such directory")
    return name_or_path


def from_pretrained(loader: Any, path: str, what: str, builtins: dict[str, Path], **kw: Any) -> Any:
    """Call ``loader.from_pretrained`` and turn its failure into an error that names ``what``."""
    from safetensors import SafetensorError

    try:
        return loader.from_pretrained(path, **kw)
    except (OSError, ValueError, SafetensorError) as e:
        lines = str(e).strip().splitlines()
        reason = f"{type(e).__name__}: {lines[0] if lines else ''}"
        if os.path.isdir(path):
            raise ValueError(
                f"{what}={path!r} could not be loaded: the directory is not a Hugging Face "
                f"model of that kind, or one of its files is corrupt or truncated ({reason})"
            ) from e
        named = f"a built-in name ({', '.join(builtins)}), " if builtins else ""
        if _hub_offline():
            hint = (
                "HF_HUB_OFFLINE is set, so the hub is not reached: the model must be "
                "downloaded first or given as a local path (`hf download NAME` where there is "
                "a network)"
            )
        else:
            hint = (
                "check the name and the network, or download the model first and give its "
                "local path"
            )
        raise ValueError(
            f"{what}={path!r} could not be loaded: it is not {named}an existing local "
            f"directory, and loading it as a Hugging Face hub name failed ({reason}); {hint}"
        ) from e


def _hub_offline() -> bool:
    """Whether the Hugging Face hub is switched off (``HF_HUB_OFFLINE`` or
    ``TRANSFORMERS_OFFLINE``, read now rather than when the hub library was imported)."""
    return any(
        os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


@contextlib.contextmanager
def transformers_errors_only() -> Iterator[None]:
    """Within the block, transformers logs errors only (its verbosity is restored after): for
    warnings that do not apply where they fire (an expected new score head, a mask that is
    passed, texts cut to the window by the caller)."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)


def prepare_frozen(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> Any:
    """Move ``model`` to ``device``/``dtype``, switch dropout off, freeze its weights and fuse
    its activations (:func:`fuse_activations`)."""
    model = model.to(device=device, dtype=dtype)
    model.eval()  # dropout off: dropout makes log-probabilities random (negative KL estimates)
    model.requires_grad_(False)
    return fuse_activations(model)


def fuse_activations(model: torch.nn.Module) -> torch.nn.Module:
    """Replace every ``gelu_new`` module of ``model`` in place by ``gelu_pytorch_tanh``.

    ``gelu_new`` (GPT-2's activation, ``transformers``' ``NewGELUActivation``) writes the
    tanh-approximated GELU as six elementwise operations, each a kernel and a tensor, and as
    many again in the backward pass; ``gelu_pytorch_tanh`` is the same function,
    ``0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))``, as PyTorch's one fused kernel
    (``F.gelu(x, approximate="tanh")``). Outputs and gradients agree to float rounding
    (``tests/test_incremental_lm.py``); on the CPU a decode step of the embedded model is about
    10 % faster and a training forward and backward pass about 15 %. The config keeps its
    name, so a saved model is the same model. Other activations are left alone.
    """
    from transformers.activations import ACT2FN, NewGELUActivation

    for module in model.modules():
        for name, child in module.named_children():
            if type(child) is NewGELUActivation:
                setattr(module, name, ACT2FN["gelu_pytorch_tanh"])
    return model


def _host(x: np.ndarray | torch.Tensor | Sequence[Any]) -> np.ndarray:
    """``x`` as a NumPy array (a tensor is copied to the host)."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def cache_argument(model: Any) -> str:
    """The name of ``model.forward``'s KV-cache argument: ``"cache"`` (transformers >= 5.2x)
    or ``"past_key_values"`` (earlier releases)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@runtime_checkable
class ReferenceRows(Protocol):
    """The frozen reference as the environment drives it: ``B`` rows of growing token sequences.

    :class:`IncrementalLM` implements it for any Hugging Face causal LM; the toy's table
    (:mod:`rlhf_gym.envs.toy`) implements it without a network. A reference object passed as
    ``model=`` provides one through ``incremental(num_rows, pad_token_id)``.
    """

    device: torch.device
    logits: torch.Tensor | None  # (B, V) next-token logits of every row

    def start(self, rows: Sequence[int], sequences: Sequence[Sequence[int]]) -> None:
        """(Re)start ``rows`` with new token sequences."""
        ...

    def advance(self, tokens: np.ndarray | torch.Tensor, active: np.ndarray | torch.Tensor) -> None:
        """Append ``tokens[r]`` to every row ``r`` with ``active[r]``."""
        ...

    # Optional, for reference_pass="deferred": one pass over whole sequences.
    # def next_token_logits(self, sequences, starts) -> list[torch.Tensor]: ...


class IncrementalLM:
    """Next-token logits for ``num_rows`` sequences that grow one token at a time.

    Contract:
        * :meth:`start` (re)starts some rows with new token sequences (a prefill pass).
        * :meth:`advance` appends one token to each *active* row (one decode pass for all rows;
          inactive rows get a masked dummy column and keep their logits).
        * :meth:`release` takes rows out of the decode batch (a finished episode that will not
          grow): their cache goes, so later passes do not compute them; they keep their
          logits, and :meth:`start` brings them back.
        * :attr:`logits` is ``(num_rows, V)`` float32: the model's next-token logits for each
          row, equal (up to float rounding) to an uncached forward pass over the row's tokens.
        * :meth:`sync` infers start/advance from right-padded observation arrays, for agents
          that only see observations.

    Args:
        model: a Hugging Face causal LM (any model taking ``attention_mask``, ``position_ids``
            and ``past_key_values``); used as is, so put it in eval mode first.
        num_rows: the batch size ``B``.
        pad_token_id: the id fed at masked positions (any valid id; it is never attended to).
    """

    def __init__(self, model: Any, num_rows: int, pad_token_id: int) -> None:
        self.model = model
        self.num_rows = num_rows
        self.pad_token_id = pad_token_id
        self.device = next(model.parameters()).device
        # The cache holds "slots": the rows in the decode batch, in slot order. slot[r] is row
        # r's slot (-1: not in the batch); row_of[k] is slot k's row (-1: released, awaiting
        # compaction: computed as a masked dummy until then).
        self.cache: Any = None
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=self.device)  # (slots, C)
        self.slot = np.full(num_rows, -1, dtype=np.int64)
        self.row_of = np.zeros(0, dtype=np.int64)
        self.logits: torch.Tensor | None = None  # (B, V) float32, by row
        self._seen_ids: np.ndarray | None = None  # last observation given to sync()
        self._seen_len: np.ndarray | None = None
        self._cache_kw = cache_argument(model)

    def reset(self) -> None:
        """Forget every row (call after the model's weights change: the cache is stale)."""
        self.cache, self.logits = None, None
        self.mask = self.mask.new_zeros((0, 0))
        self.slot[:] = -1
        self.row_of = np.zeros(0, dtype=np.int64)
        self._seen_ids = self._seen_len = None

    def _forward(
        self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: Any
    ) -> tuple[torch.Tensor, Any]:
        """One forward pass; returns the last position's float32 logits ``(n, V)`` and the cache."""
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            use_cache=True,
            logits_to_keep=1,  # only the last position's logits are needed: saves (B, T, V)
            **{self._cache_kw: cache},
        )
        new_cache = out["cache"] if "cache" in out else out["past_key_values"]
        return out.logits[:, -1].float(), new_cache

    def _prefill(
        self, rows: list[int], sequences: Sequence[Sequence[int]]
    ) -> tuple[Any, torch.Tensor]:
        """One forward pass over ``sequences`` left-padded to a common width (every row's last
        token at column −1): writes the rows' logits and returns the pass's cache and mask."""
        n, width = len(rows), max(len(s) for s in sequences)
        ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for j, seq in enumerate(sequences):
            ids[j, width - len(seq) :] = torch.as_tensor(list(seq), dtype=torch.long)
            mask[j, width - len(seq) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        new_logits, new_cache = self._forward(ids, mask, pos, None)  # (n, V)
        if self.logits is None:
            self.logits = new_logits.new_zeros((self.num_rows, new_logits.shape[1]))
        self.logits[torch.as_tensor(rows, device=self.device)] = new_logits
        return new_cache, mask

    def _check_seated(self, active: np.ndarray, started: bool) -> None:
        """Refuse to advance a row that is not in the decode batch (``started``: whether any
        row has been started since the last reset)."""
        if (self.slot[active] < 0).any():
            r = int(np.flatnonzero(active & (self.slot < 0))[0])
            if not started:
                raise RuntimeError("advance() before start()")
            raise RuntimeError(f"advance(): row {r} is not in the decode batch; start() it first")

    @torch.no_grad()
    def start(self, rows: Sequence[int], sequences: Sequence[Sequence[int]]) -> None:
        """Prefill ``sequences`` (each non-empty) into ``rows``, replacing what was there."""
        rows = list(rows)
        new_cache, mask = self._prefill(rows, sequences)
        n = len(rows)
        if self.cache is None:  # the prefill is the whole decode batch
            self.cache, self.mask = new_cache, mask
            self.slot[rows], self.row_of = np.arange(n), np.asarray(rows, dtype=np.int64)
            return
        if mask.shape[1] > self.mask.shape[1]:  # room on the left for the longest prefill
            self._pad_left(mask.shape[1] - self.mask.shape[1])
        seated = self.slot[rows] >= 0
        if seated.any():
            self._splice(np.flatnonzero(seated), rows, new_cache, mask)
        if not seated.all():
            self._add_slots(np.flatnonzero(~seated), rows, new_cache, mask)
        self._trim()

    def _splice(self, which: np.ndarray, rows: list[int], new_cache: Any, mask: Any) -> None:
        """Write prefilled entries ``which`` into their rows' slots, right-aligned."""
        width = mask.shape[1]
        idx = torch.as_tensor(self.slot[np.asarray(rows)[which]], device=self.device)
        src = torch.as_tensor(which, device=self.device)
        for big, small in zip(self.cache.layers, new_cache.layers, strict=True):
            big.keys[idx, :, -width:] = small.keys[src].to(big.keys.dtype)  # (n, H, width, D)
            big.values[idx, :, -width:] = small.values[src].to(big.values.dtype)
        self.mask[idx] = 0
        self.mask[idx, -width:] = mask[src]

    def _add_slots(self, which: np.ndarray, rows: list[int], new_cache: Any, mask: Any) -> None:
        """Append prefilled entries ``which`` as new slots at the end of the decode batch."""
        width, C = mask.shape[1], self.mask.shape[1]
        src = torch.as_tensor(which, device=self.device)
        for big, small in zip(self.cache.layers, new_cache.layers, strict=True):
            k, v = small.keys[src], small.values[src]  # (n, H, width, D)
            pad = k.new_zeros((k.shape[0], k.shape[1], C - width, k.shape[3]))
            big.keys = torch.cat([big.keys, torch.cat([pad, k.to(big.keys.dtype)], 2)], 0)
            big.values = torch.cat(
                [big.values, torch.cat([pad.to(v.dtype), v], 2).to(big.values.dtype)], 0
            )
        new_mask = self.mask.new_zeros((len(which), C))
        new_mask[:, C - width :] = mask[src]
        first = len(self.row_of)
        self.mask = torch.cat([self.mask, new_mask], 0)
        new_rows = np.asarray(rows, dtype=np.int64)[which]
        self.row_of = np.concatenate([self.row_of, new_rows])
        self.slot[new_rows] = first + np.arange(len(which))

    def release(self, rows: Sequence[int] | np.ndarray) -> None:
        """Take ``rows`` out of the decode batch (they keep their logits; :meth:`start` brings
        them back). The cache is compacted once an eighth of its slots are released."""
        rows = np.asarray(rows, dtype=np.int64)
        rows = rows[self.slot[rows] >= 0]
        if not rows.size:
            return
        self.row_of[self.slot[rows]] = -1
        self.slot[rows] = -1
        free = int((self.row_of < 0).sum())
        if free >= max(1, len(self.row_of) // 8):
            self._compact()

    def _compact(self) -> None:
        """Drop released slots from the cache and the mask."""
        keep = np.flatnonzero(self.row_of >= 0)
        if not keep.size:
            self.cache = None
            self.mask = self.mask.new_zeros((0, 0))
            self.row_of = np.zeros(0, dtype=np.int64)
            return
        idx = torch.as_tensor(keep, device=self.device)
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[idx], layer.values[idx]
        self.mask = self.mask[idx]
        self.row_of = self.row_of[keep]
        self.slot[self.row_of] = np.arange(len(keep))
        self._trim()

    def _pad_left(self, k: int) -> None:
        for layer in self.cache.layers:
            b, h, _, d = layer.keys.shape
            zeros = layer.keys.new_zeros((b, h, k, d))
            layer.keys = torch.cat([zeros, layer.keys], dim=2)
            layer.values = torch.cat([zeros.to(layer.values.dtype), layer.values], dim=2)
        self.mask = torch.cat([self.mask.new_zeros((self.mask.shape[0], k)), self.mask], dim=1)

    def _trim(self) -> None:
        """Drop leading columns that no row attends to, so the cache stays bounded."""
        used = self.mask.any(dim=0)
        first = int(used.to(torch.int8).argmax())  # first used column (0 when none is unused)
        if first > 0:
            for layer in self.cache.layers:
                layer.keys = layer.keys[:, :, first:]
                layer.values = layer.values[:, :, first:]
            self.mask = self.mask[:, first:]

    @torch.no_grad()
    def advance(self, tokens: np.ndarray | torch.Tensor, active: np.ndarray | torch.Tensor) -> None:
        """Append ``tokens[r]`` to every row ``r`` with ``active[r]``; one forward pass over the
        rows in the decode batch (an active row must be in it: started, not released).

        Everything after the forward pass is asynchronous on a GPU (index tensors are built
        before it), so the caller's CPU work overlaps the pass.
        """
        active_np = _host(active).astype(bool)
        self._check_seated(active_np, started=self.cache is not None)
        if self.cache is None:
            return
        seated = self.row_of >= 0
        rows = np.where(seated, self.row_of, 0)  # each slot's row (0 for a released slot)
        on_np = active_np[rows] & seated  # (slots,)
        ids_np = np.where(on_np, _host(tokens)[rows], self.pad_token_id)
        ids = torch.as_tensor(ids_np[:, None], dtype=torch.long, device=self.device)
        on = torch.as_tensor(on_np, device=self.device)
        identity = (
            len(rows) == self.num_rows
            and bool(seated.all())
            and bool((rows == np.arange(self.num_rows)).all())
        )
        if not identity:
            dst = torch.as_tensor(rows[on_np], device=self.device)
            src = torch.as_tensor(np.flatnonzero(on_np), device=self.device)
        pos = self.mask.sum(dim=1, keepdim=True)  # real tokens so far = next position
        mask = torch.cat([self.mask, on.long()[:, None]], dim=1)  # (slots, C + 1)
        new_logits, self.cache = self._forward(ids, mask, pos, self.cache)
        self.mask = mask
        assert self.logits is not None
        if identity:  # every row in its own slot: no indexing
            self.logits = torch.where(on[:, None], new_logits, self.logits)
        else:  # a new tensor each step, as a caller may keep the last one
            self.logits = self.logits.index_copy(0, dst, new_logits.index_select(0, src))

    @torch.no_grad()
    def next_token_logits(
        self, sequences: Sequence[Sequence[int]], starts: Sequence[int]
    ) -> list[torch.Tensor]:
        """The logits predicting each token of ``sequence[start:]``: ``(len − start, V)`` float32
        per sequence, from one forward pass over the batch (the deferred reference pass).

        Independent of the rows and their cache; ``start >= 1`` (a prompt token comes first).
        """
        n, width = len(sequences), max(len(s) for s in sequences)
        ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for j, seq in enumerate(sequences):  # right padding: causal attention never sees it
            ids[j, : len(seq)] = torch.as_tensor(np.asarray(seq), dtype=torch.long)
            mask[j, : len(seq)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            **{self._cache_kw: None},
            use_cache=False,
        )
        logits = out.logits
        return [logits[j, starts[j] - 1 : len(seq) - 1].float() for j, seq in enumerate(sequences)]

    def sync(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, release_unchanged: bool = False
    ) -> torch.Tensor:
        """Bring the rows up to date with right-padded observations and return :attr:`logits`.

        A row whose real tokens extend the last seen ones by exactly one token is advanced
        (restarted if it was released); a row that is unchanged is left alone, and with
        ``release_unchanged`` released (a finished row that a vector environment without
        autoreset leaves as it is); any other row is restarted from its tokens.
        """
        ids = np.asarray(input_ids, dtype=np.int64)
        lengths = np.asarray(attention_mask).sum(axis=1).astype(np.int64)
        if self._seen_ids is None or self._seen_ids.shape != ids.shape:
            restart = np.ones(self.num_rows, dtype=bool)
            grown = np.zeros(self.num_rows, dtype=bool)
        else:
            old_mask = np.arange(ids.shape[1])[None, :] < self._seen_len[:, None]
            same_prefix = ((ids == self._seen_ids) | ~old_mask).all(axis=1)
            grown = same_prefix & (lengths == self._seen_len + 1)
            restart = ~same_prefix | ((lengths != self._seen_len) & ~grown)
            if release_unchanged:
                self.release(np.flatnonzero(~restart & ~grown))
            restart |= grown & (self.slot < 0)  # a released row that grows again
            grown &= ~restart
        rows = np.flatnonzero(restart)
        if rows.size:
            self.start(rows.tolist(), [ids[r, : lengths[r]].tolist() for r in rows])
        if grown.any():
            last = ids[np.arange(self.num_rows), np.maximum(lengths - 1, 0)]
            self.advance(last, grown)
        self._seen_ids, self._seen_len = ids.copy(), lengths
        assert self.logits is not None
        return self.logits
