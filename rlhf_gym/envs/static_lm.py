""":class:`StaticIncrementalLM`: :class:`~rlhf_gym.envs.lm.IncrementalLM` over a preallocated KV
cache, with the decode step replayed as one CUDA graph.

On a GPU a small model's decode step is bound by kernel launches, not arithmetic: a GPT-2-small
forward pass over one token per row is some 400 kernels, each launched from Python
(README, "Benchmarks": about 11 ms a pass on an H100, the same in ``generate``). A CUDA graph
records those launches once and replays them with one call. A graph needs fixed shapes and
fixed addresses, so this class keeps

* a KV cache of fixed shape ``(B, H, C, D)`` per layer, every row in its own slot (row ``r``
  is slot ``r``; a released row stays in its slot, fully masked);
* a write column ``w`` shared by all rows: a decode step writes every row's new key and value
  at column ``w`` and sets the row's mask there to whether the row is active. A (re)started
  row's prefill is written right-aligned just before ``w``, with the rest of its mask cleared
  (the same layout :class:`~rlhf_gym.envs.lm.IncrementalLM` grows by concatenation);
* positions counted per row from the mask, as in the parent class, so logits equal an uncached
  forward pass over the row's tokens (``tests/test_incremental_lm.py`` runs the parent's
  equality tests on this class too).

When ``w`` reaches ``C`` the used columns are shifted left in place (addresses unchanged, the
graph stays valid); when every column is in use the cache doubles and the graph is captured
again. The prefill (variable width) runs eagerly through the model's own cache and is copied in.

The model sees the cache through :class:`_ColumnCache`, which has the one method the attention
layers call (``update``), and a 4-D additive attention mask, which Hugging Face models take as
given; neither depends on the version of ``transformers``. If capturing the graph fails (a model
whose forward pass synchronises with the host), the step runs eagerly on the same static cache
and :attr:`graph` is ``None``; on the CPU it always runs eagerly.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers.cache_utils import Cache

from rlhf_gym.envs.lm import IncrementalLM, _host


def make_incremental(model: Any, num_rows: int, pad_token_id: int, cuda_graphs: bool) -> Any:
    """KV-cached rows of ``model``: a :class:`StaticIncrementalLM` with ``cuda_graphs`` on a CUDA
    device, else an :class:`~rlhf_gym.envs.lm.IncrementalLM` (on the CPU a static cache only
    adds masked work)."""
    device = next(model.parameters()).device
    if cuda_graphs and device.type == "cuda":
        return StaticIncrementalLM(model, num_rows, pad_token_id, graphs=True)
    return IncrementalLM(model, num_rows, pad_token_id)


class _ColumnCache(Cache):
    """The KV cache as the model's attention layers see it: ``update`` writes the new key and
    value of every row at column ``col`` and returns the whole static buffers.

    A ``transformers`` ``Cache`` for the models' ``isinstance`` checks, but none of its
    machinery: ``Cache.__init__``'s arguments differ between releases, so it is not called."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], col: torch.Tensor):
        self.layers: list[Any] = []
        self.keys, self.values, self.col = keys, values, col
        self.seen = 0  # host count of written columns, for models that ask the cache's length

    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        layer_idx: int,
        *_: Any,
        **__: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        keys.index_copy_(2, self.col, key_states.to(keys.dtype))
        values.index_copy_(2, self.col, value_states.to(values.dtype))
        return keys, values

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen

    def __len__(self) -> int:
        return len(self.keys)


class StaticIncrementalLM(IncrementalLM):
    """:class:`~rlhf_gym.envs.lm.IncrementalLM` with a static KV cache and, on CUDA, the decode
    step as a CUDA graph (see the module's docstring). Same contract, same logits.

    Args:
        model: a Hugging Face causal LM in eval mode (GPT-2- and Llama-style models tested).
        num_rows: the batch size ``B``.
        pad_token_id: the id fed at masked positions.
        graphs: capture the decode step as a CUDA graph (only on a CUDA device; ``False``: run
            the static step eagerly).
        columns: the initial cache length ``C`` (at least 4× the first prefill's width is used).
    """

    def __init__(
        self,
        model: Any,
        num_rows: int,
        pad_token_id: int,
        graphs: bool = True,
        columns: int = 128,
    ) -> None:
        super().__init__(model, num_rows, pad_token_id)
        self.use_graphs = bool(graphs) and self.device.type == "cuda"
        self._min_columns = int(columns)
        self._keys: list[torch.Tensor] = []
        self._values: list[torch.Tensor] = []
        self._w = 0  # the next column a decode step writes
        self._graph: Any = None
        self._capture_failed = False
        B = num_rows
        self._ids = torch.full((B, 1), pad_token_id, dtype=torch.long, device=self.device)
        self._on = torch.zeros(B, dtype=torch.bool, device=self.device)
        self._col = torch.zeros(1, dtype=torch.long, device=self.device)
        self._out: torch.Tensor | None = None

    # -- layout ---------------------------------------------------------------------------
    @property
    def columns(self) -> int:
        """The cache's length ``C`` (0 before the first start)."""
        return int(self.mask.shape[1]) if self._keys else 0

    @property
    def buffers(self) -> list[torch.Tensor]:
        """The static cache: every layer's key buffer, then every layer's value buffer."""
        return [*self._keys, *self._values]

    @property
    def graph(self) -> Any:
        """The captured ``torch.cuda.CUDAGraph`` of the decode step (``None``: none yet, or the
        step runs eagerly)."""
        return self._graph

    @property
    def graphed(self) -> bool:
        """Whether the decode step runs as a captured graph."""
        return self._graph is not None

    def _allocate(self, C: int, like: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """(Re)allocate the cache at length ``C``, keeping the used columns ``[0, w)``; ``like``
        holds each layer's ``(keys, values)`` of any cache, for their heads, widths, dtype and
        device."""
        B = self.num_rows
        old_k, old_v, old_mask, used = self._keys, self._values, self.mask, self._w
        self._keys, self._values = [], []
        for keys, values in like:
            self._keys.append(keys.new_zeros((B, keys.shape[1], C, keys.shape[3])))
            self._values.append(values.new_zeros((B, values.shape[1], C, values.shape[3])))
        self.mask = torch.zeros((B, C), dtype=torch.bool, device=self.device)
        if old_k:  # copy the used columns to the start of the new cache
            for new, old in zip(self._keys + self._values, old_k + old_v, strict=True):
                new[:, :, :used] = old[:, :, :used]
            self.mask[:, :used] = old_mask[:, :used]
        self._graph = None  # new addresses: capture again

    def _shift(self, d: int) -> None:
        """Move every column by ``d`` (> 0: right, < 0: left) in place; vacated columns are
        zeroed (masked). Addresses do not change, so a captured graph stays valid."""
        if d == 0:
            return
        C = self.mask.shape[1]
        for buf in [*self._keys, *self._values, self.mask]:
            cols = buf.shape[-1] if buf is self.mask else buf.shape[2]
            assert cols == C
            view = buf if buf is self.mask else buf.transpose(1, 2)  # columns on dim 1
            if d > 0:
                view[:, d:] = view[:, : C - d].clone()
                view[:, :d] = 0
            else:
                view[:, : C + d] = view[:, -d:].clone()
                view[:, C + d :] = 0
        self._w += d

    def _first_used(self) -> int:
        used = self.mask.any(dim=0)
        return int(used.to(torch.int8).argmax()) if bool(used.any()) else self._w

    def _make_room(self, width: int, like: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Ensure ``width <= w`` (room for a prefill left of ``w``) and ``w < C`` (room for a
        decode column), shifting or growing the cache."""
        if not self._keys:
            self._allocate(max(self._min_columns, 4 * width), like)
            self._w = width
            return
        C = self.mask.shape[1]
        if width <= self._w < C:
            return
        first = self._first_used()
        span = self._w - first  # the used window [first, w)
        need = max(span, width) + 1  # the window, or the prefill, plus one decode column
        if need > C:
            self._shift(-first)
            self._allocate(max(2 * C, 2 * need), like)
            C = self.mask.shape[1]
        # put the window's end at max(width, span): left-most placement with room on the left
        self._shift(max(width, span) - self._w)

    # -- the contract -----------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every row. The cache's buffers are cleared in place and the captured graph is
        kept: the graph reads the weights at their addresses, which an optimizer updates in
        place, so it stays valid after a weight update."""
        self.logits = None
        self.slot[:] = -1
        self._seen_ids = self._seen_len = None
        if self._keys:
            self.mask.zero_()

    @torch.no_grad()
    def start(self, rows: Sequence[int], sequences: Sequence[Sequence[int]]) -> None:
        """Prefill ``sequences`` into ``rows`` (eagerly) and copy them into the static cache,
        right-aligned at the write column."""
        rows = list(rows)
        new_cache, mask = self._prefill(rows, sequences)
        width = mask.shape[1]
        idx = torch.as_tensor(rows, device=self.device)
        self._make_room(width, [(layer.keys, layer.values) for layer in new_cache.layers])
        w = self._w
        for big_k, big_v, layer in zip(self._keys, self._values, new_cache.layers, strict=True):
            big_k[idx, :, w - width : w] = layer.keys.to(big_k.dtype)
            big_v[idx, :, w - width : w] = layer.values.to(big_v.dtype)
        self.mask[idx] = False
        self.mask[idx, w - width : w] = mask.bool()
        self.slot[rows] = rows
        self.row_of = np.arange(self.num_rows, dtype=np.int64)

    def release(self, rows: Sequence[int] | np.ndarray) -> None:
        """Take ``rows`` out of the batch: their mask is cleared (they still occupy their slot,
        computed as masked dummies); they keep their logits until :meth:`start`."""
        rows = np.asarray(rows, dtype=np.int64)
        rows = rows[self.slot[rows] >= 0]
        if not rows.size:
            return
        self.slot[rows] = -1
        self.mask[torch.as_tensor(rows, device=self.device)] = False

    def _step(self) -> torch.Tensor:
        """The decode step on the static inputs ``_ids``, ``_on``, ``_col``: what the graph
        records. Idempotent for fixed inputs (positions leave column ``_col`` out), so the
        warm-up runs before the capture do not change its result."""
        on_col = self.mask.index_select(1, self._col)  # (B, 1): set by a warm-up run, if any
        pos = self.mask.sum(dim=1, keepdim=True) - on_col.long()  # real tokens before the column
        self.mask.index_copy_(1, self._col, self._on[:, None])
        dtype = self._keys[0].dtype
        additive = torch.zeros(self.mask.shape, dtype=dtype, device=self.device)
        additive.masked_fill_(~self.mask, torch.finfo(dtype).min)
        cache = _ColumnCache(self._keys, self._values, self._col)
        cache.seen = self._w
        out = self.model(
            input_ids=self._ids,
            attention_mask=additive[:, None, None, :],
            position_ids=pos,
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_kw: cache},
        )
        return out.logits[:, -1].float()

    def _capture(self) -> None:
        """Warm up on a side stream, then record :meth:`_step` as a CUDA graph."""
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._step()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                out = self._step()
        except Exception as err:  # noqa: BLE001 (a model that syncs cannot be captured)
            self._capture_failed = True
            warnings.warn(
                f"the decode step could not be captured as a CUDA graph ({err}); "
                "it runs eagerly on the static cache",
                RuntimeWarning,
                stacklevel=3,
            )
            return
        self._graph, self._out = graph, out

    @torch.no_grad()
    def advance(self, tokens: np.ndarray | torch.Tensor, active: np.ndarray | torch.Tensor) -> None:
        """Append ``tokens[r]`` to every active row: one decode step (a graph replay on CUDA)."""
        active_np = _host(active).astype(bool)
        self._check_seated(active_np, started=bool(self._keys))
        if not active_np.any():
            return
        if self._w >= self.mask.shape[1]:
            first = self._first_used()
            if first == 0:  # every column in use: grow
                like = list(zip(self._keys, self._values, strict=True))
                self._allocate(2 * self.mask.shape[1], like)
            else:
                self._shift(-first)
        ids_np = np.where(active_np, _host(tokens), self.pad_token_id)
        self._ids.copy_(torch.as_tensor(ids_np[:, None], dtype=torch.long))
        self._on.copy_(torch.as_tensor(active_np))
        self._col.fill_(self._w)
        if self.use_graphs and self._graph is None and not self._capture_failed:
            self._capture()
        if self._graph is not None:
            self._graph.replay()
            new_logits = self._out
        else:
            new_logits = self._step()
        self._w += 1
        assert self.logits is not None and new_logits is not None
        # a new tensor each step (a caller may keep the last one; the graph's output is reused)
        self.logits = torch.where(self._on[:, None], new_logits, self.logits)
