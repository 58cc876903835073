"""KV-cached next-token logits equal uncached ones, through restarts, gaps and trimming."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from rlhf_gym.envs.lm import IncrementalLM


def uncached_logits(model, seq: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([seq])).logits[0, -1].float()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_cached_logits_equal_uncached(arch, tiny_lm_dir, tiny_llama_dir):
    path = tiny_lm_dir if arch == "gpt2" else tiny_llama_dir
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    rng = np.random.default_rng(0)
    B, V = 3, model.config.vocab_size
    lm = IncrementalLM(model, B, pad_token_id=1)
    seqs = [rng.integers(2, V, size=n).tolist() for n in (2, 5, 3)]
    lm.start(range(B), seqs)
    for step in range(12):
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


def test_sync_follows_observations(tiny_lm_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).eval()
    lm = IncrementalLM(model, 2, pad_token_id=1)
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
