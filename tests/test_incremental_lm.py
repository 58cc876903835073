"""KV-cached next-token logits equal uncached ones, through restarts, gaps and trimming; the
static-cache variant (``StaticIncrementalLM``, run eagerly here; its CUDA graph in
``tests/test_gpu.py``) gives the same logits through shifts and growth of its cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from rlhf_gym.envs.lm import IncrementalLM
from rlhf_gym.envs.static_lm import StaticIncrementalLM


def uncached_logits(model, seq: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([seq])).logits[0, -1].float()


def rows(kind: str, model, B: int):
    """The dynamic cache, or the static one with a small cache (8 columns, so that the run
    shifts it left, shifts it right for a long restart, and grows it)."""
    if kind == "dynamic":
        return IncrementalLM(model, B, pad_token_id=1)
    return StaticIncrementalLM(model, B, pad_token_id=1, columns=8)


@pytest.mark.parametrize("kind", ["dynamic", "static"])
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_cached_logits_equal_uncached(arch, kind, tiny_lm_dir, tiny_llama_dir):
    path = tiny_lm_dir if arch == "gpt2" else tiny_llama_dir
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    rng = np.random.default_rng(0)
    B, V = 3, model.config.vocab_size
    lm = rows(kind, model, B)
    seqs = [rng.integers(2, V, size=n).tolist() for n in (2, 5, 3)]
    lm.start(range(B), seqs)
    steps = 12 if kind == "dynamic" else 40
    for step in range(steps):
        active = rng.random(B) < 0.8
        toks = rng.integers(2, V, size=B)
        lm.advance(toks, active)
        for r in range(B):
            if active[r]:
                seqs[r].append(int(toks[r]))
        if step % 4 == 3:  # restart one row with a longer prompt than anything cached
            r = int(rng.integers(B))
            seqs[r] = rng.integers(2, V, size=int(rng.integers(1, 9))).tolist()
            lm.start([r], [seqs[r]])
        for r in range(B):
            torch.testing.assert_close(
                lm.logits[r], uncached_logits(model, seqs[r]), atol=1e-4, rtol=1e-4
            )
    # the cache never grows past the longest live row plus the gaps of one restart
    assert lm.mask.shape[1] <= 2 * max(len(s) for s in seqs) + 12


def test_static_cache_shifts_in_place_and_grows_only_when_full(tiny_lm_dir):
    """With rows restarted as they end (autoreset), the static cache's used window stays
    about one episode long: the write column wraps by shifting the columns left, in place
    (the buffers keep their addresses, which a captured graph reads), and the cache does
    not grow."""
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).eval()
    rng = np.random.default_rng(2)
    B, V = 4, model.config.vocab_size
    lm = StaticIncrementalLM(model, B, pad_token_id=1, columns=32)
    seqs = [rng.integers(2, V, size=4).tolist() for _ in range(B)]
    lm.start(range(B), seqs)
    address, C = lm.buffers[0].data_ptr(), lm.columns
    for step in range(100):  # each row restarts after 6 tokens, the rows staggered
        toks = rng.integers(2, V, size=B)
        lm.advance(toks, np.ones(B, dtype=bool))
        for r in range(B):
            seqs[r].append(int(toks[r]))
        for r in range(B):
            if (step + r) % 6 == 5:
                seqs[r] = rng.integers(2, V, size=4).tolist()
                lm.start([r], [seqs[r]])
    assert lm.columns == C and lm.buffers[0].data_ptr() == address
    for r in range(B):
        torch.testing.assert_close(
            lm.logits[r], uncached_logits(model, seqs[r]), atol=1e-4, rtol=1e-4
        )


@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_sync_follows_observations(kind, tiny_lm_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).eval()
    lm = rows(kind, model, 2)
    T = 10
    ids = np.zeros((2, T), dtype=np.int64)
    seqs = [[5, 6, 7], [8]]
    for step in range(5):
        mask = np.zeros((2, T), dtype=np.int64)
        for r, s in enumerate(seqs):
            ids[r, : len(s)], ids[r, len(s) :] = s, 1
            mask[r, : len(s)] = 1
        logits = lm.sync(ids, mask)
        for r, s in enumerate(seqs):
            torch.testing.assert_close(logits[r], uncached_logits(model, s), atol=1e-4, rtol=1e-4)
        seqs[0] = seqs[0] + [9 + step]
        if step == 2:
            seqs[1] = [4, 4]  # a reset


def test_released_rows_leave_the_decode_batch(tiny_lm_dir):
    """release() takes rows out of the cache (compacted, so later passes are smaller); the
    others' logits stay equal to uncached ones; a released row keeps its logits, cannot be
    advanced, and start() brings it back at the end of the batch."""
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).eval()
    rng = np.random.default_rng(1)
    B, V = 8, model.config.vocab_size
    lm = IncrementalLM(model, B, pad_token_id=1)
    seqs = [rng.integers(2, V, size=int(rng.integers(1, 6))).tolist() for _ in range(B)]
    lm.start(range(B), seqs)
    before = lm.logits[[2, 5]].clone()
    lm.release([2, 5])  # 2 of 8 slots: at least an eighth, so the cache is compacted
    assert lm.cache.layers[0].keys.shape[0] == B - 2 and lm.mask.shape[0] == B - 2
    active = np.ones(B, dtype=bool)
    active[[2, 5]] = False
    for _ in range(3):
        toks = rng.integers(2, V, size=B)
        lm.advance(toks, active)
        for r in np.flatnonzero(active):
            seqs[r].append(int(toks[r]))
        torch.testing.assert_close(lm.logits[[2, 5]], before)
        for r in np.flatnonzero(active):
            torch.testing.assert_close(
                lm.logits[r], uncached_logits(model, seqs[r]), atol=1e-4, rtol=1e-4
            )
    with pytest.raises(RuntimeError, match="row 2 is not in the decode batch"):
        lm.advance(np.full(B, 3), np.ones(B, dtype=bool))
    seqs[5] = rng.integers(2, V, size=9).tolist()  # longer than anything cached
    lm.start([5], [seqs[5]])
    assert lm.cache.layers[0].keys.shape[0] == B - 1
    active[5] = True
    toks = rng.integers(2, V, size=B)
    lm.advance(toks, active)
    for r in np.flatnonzero(active):
        seqs[r].append(int(toks[r]))
        torch.testing.assert_close(
            lm.logits[r], uncached_logits(model, seqs[r]), atol=1e-4, rtol=1e-4
        )
    lm.release(range(B))  # everything released: no cache left, start() begins afresh
    assert lm.cache is None
    lm.start([3], [seqs[3]])
    torch.testing.assert_close(lm.logits[3], uncached_logits(model, seqs[3]), atol=1e-4, rtol=1e-4)


def test_sync_releases_unchanged_rows_and_restarts_them_when_they_grow(tiny_lm_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).eval()
    lm = IncrementalLM(model, 2, pad_token_id=1)
    T = 10

    def obs(seqs):
        ids, mask = np.ones((2, T), dtype=np.int64), np.zeros((2, T), dtype=np.int64)
        for r, s in enumerate(seqs):
            ids[r, : len(s)], mask[r, : len(s)] = s, 1
        return ids, mask

    seqs = [[5, 6, 7], [8]]
    lm.sync(*obs(seqs), release_unchanged=True)
    seqs[0] = seqs[0] + [9]  # row 1 unchanged: released
    lm.sync(*obs(seqs), release_unchanged=True)
    assert lm.slot[1] < 0 and lm.cache.layers[0].keys.shape[0] == 1
    seqs[1] = seqs[1] + [4]  # a released row that grows is restarted from its tokens
    logits = lm.sync(*obs(seqs), release_unchanged=True)
    assert lm.slot[0] < 0 and lm.slot[1] >= 0  # now row 0 is the unchanged one
    for r, s in enumerate(seqs):
        torch.testing.assert_close(logits[r], uncached_logits(model, s), atol=1e-4, rtol=1e-4)


def test_static_released_rows_keep_their_logits_and_restart(tiny_lm_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).eval()
    rng = np.random.default_rng(3)
    B, V = 4, model.config.vocab_size
    lm = StaticIncrementalLM(model, B, pad_token_id=1, columns=8)
    seqs = [rng.integers(2, V, size=int(rng.integers(1, 6))).tolist() for _ in range(B)]
    lm.start(range(B), seqs)
    before = lm.logits[1].clone()
    lm.release([1])
    active = np.array([True, False, True, True])
    for _ in range(10):
        toks = rng.integers(2, V, size=B)
        lm.advance(toks, active)
        for r in np.flatnonzero(active):
            seqs[r].append(int(toks[r]))
    torch.testing.assert_close(lm.logits[1], before)
    with pytest.raises(RuntimeError, match="row 1 is not in the decode batch"):
        lm.advance(np.full(B, 3), np.ones(B, dtype=bool))
    seqs[1] = rng.integers(2, V, size=12).tolist()  # longer than the write column
    lm.start([1], [seqs[1]])
    lm.advance(np.full(B, 3), np.ones(B, dtype=bool))
    for r in range(B):
        seqs[r].append(3)
        torch.testing.assert_close(
            lm.logits[r], uncached_logits(model, seqs[r]), atol=1e-4, rtol=1e-4
        )


def test_fused_activations_compute_the_same_function(tiny_lm_dir, tiny_kw):
    """fuse_activations swaps gelu_new for the fused gelu_pytorch_tanh: same outputs and
    gradients to float rounding; the environment's reference (and so a policy copied from
    it) comes fused."""
    import copy

    from transformers.activations import NewGELUActivation

    from rlhf_gym.envs.lm import fuse_activations
    from rlhf_gym.envs.rlhf_env import RLHFEnv

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).eval()
    assert model.config.activation_function == "gelu_new"
    fused = fuse_activations(copy.deepcopy(model))
    kinds = lambda m: {type(x).__name__ for x in m.modules()}  # noqa: E731
    assert "NewGELUActivation" in kinds(model) and "NewGELUActivation" not in kinds(fused)
    ids = torch.randint(
        2, model.config.vocab_size, (3, 12), generator=torch.Generator().manual_seed(0)
    )
    a, b = model(input_ids=ids).logits, fused(input_ids=ids).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    a.float().log_softmax(-1)[..., 3].sum().backward()
    b.float().log_softmax(-1)[..., 3].sum().backward()
    for (name, p), q in zip(model.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)
    env = RLHFEnv(**tiny_kw())
    assert not any(
        isinstance(m, NewGELUActivation) for m in env.unwrapped.reference_model.modules()
    )
