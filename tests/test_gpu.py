"""GPU checks (skipped without CUDA): the cached reference, the vector env and PPO on CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from rlhf_gym.agents import tags
from rlhf_gym.agents.ppo import PPO, PPOConfig
from rlhf_gym.envs.lm import IncrementalLM
from rlhf_gym.envs.rlhf_env import RLHFEnv, RLHFVectorEnv

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
PROMPTS = ["the movie was", "i did not like", "a wonderful film"]


@pytest.fixture
def kw(tiny_kw):
    return tiny_kw(prompts=PROMPTS, device="cuda")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cached_logits_on_cuda(tiny_lm_dir, dtype):
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).to("cuda", dtype).eval()
    lm = IncrementalLM(model, 2, pad_token_id=1)
    seqs = [[5, 6, 7], [8]]
    lm.start([0, 1], seqs)
    for step in range(6):
        lm.advance(np.array([9 + step, 20 + step]), np.array([True, step % 2 == 0]))
        seqs[0].append(9 + step)
        if step % 2 == 0:
            seqs[1].append(20 + step)
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    for r, s in enumerate(seqs):
        with torch.no_grad():
            ref = model(input_ids=torch.tensor([s], device="cuda")).logits[0, -1].float()
        torch.testing.assert_close(lm.logits[r], ref, atol=tol, rtol=tol)


def test_vector_env_equals_single_envs_on_cuda(kw):
    venv = RLHFVectorEnv(num_envs=2, **kw)
    singles = [RLHFEnv(**kw) for _ in range(2)]
    vobs, _ = venv.reset(seed=4)
    for i, s in enumerate(singles):
        s.reset(seed=4 + i)
    for t in range(5):
        actions = np.array([7 + t, 11 + t])
        vobs, vr, *_ = venv.step(actions)
        for i, s in enumerate(singles):
            obs, r, *_ = s.step(int(actions[i]))
            np.testing.assert_array_equal(vobs["input_ids"][i], obs["input_ids"])
            assert vr[i] == pytest.approx(r, abs=1e-4)


def test_ppo_first_minibatch_on_cuda(tiny_lm_dir, tiny_rm_dir):
    cfg = PPOConfig(
        model=str(tiny_lm_dir),
        num_envs=8,
        num_minibatches=2,
        total_episodes=16,
        max_new_tokens=6,
        device="cuda",
    )
    agent = PPO(cfg, env_kwargs=dict(reward_model=str(tiny_rm_dir), prompts=PROMPTS, gold="none"))
    stats = agent.train()
    assert agent.first_minibatch[tags.RATIO] == pytest.approx(1.0, abs=1e-6)
    assert stats[tags.LOGPROB_MISMATCH] < 1e-3


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cai_feedback_model_and_sampling_on_cuda(tiny_lm_dir, dtype):
    from rlhf_gym.cai.generate import PromptedLM

    cpu = PromptedLM.load(str(tiny_lm_dir), device="cpu")
    gpu = PromptedLM.load(str(tiny_lm_dir), device="cuda", dtype=dtype)
    texts = [
        "Q: a ? A:\nWhich ?\n(A) x\n(B) y\nThe answer is:",
        "the movie was good\nThe answer is:",
    ]
    tol = 1e-4 if dtype == "float32" else 3e-2
    assert np.allclose(cpu.option_probs(texts), gpu.option_probs(texts), atol=tol)
    torch.manual_seed(0)
    out = gpu.generate(texts, max_new_tokens=5, temperature=1.0)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)


def test_sft_on_cuda(tmp_path, tiny_lm_dir):
    import json

    from rlhf_gym.cli import main

    data = tmp_path / "d.jsonl"
    rows = [{"prompt": f"Q: q{i} ? A:", "completion": " check the chain ."} for i in range(40)]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "sft"
    argv = ["sft", "--data", str(data), "--out", str(out), "--model", str(tiny_lm_dir)]
    assert main([*argv, "--device", "cuda", "--dtype", "bfloat16", "--epochs", "3"]) == 0
    result = json.loads((out / "sft.json").read_text())["result"]
    assert result["final_heldout_loss"] < result["initial_heldout_loss"]


def test_sample_tokens_on_cuda():
    from rlhf_gym.envs.policy import sample_tokens

    logits = torch.tensor([[1.0, -4.0, float("-inf"), 0.0, 2.5, -1.0]], device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    tokens = sample_tokens(logits.expand(200_000, -1).contiguous(), g)
    assert tokens.device.type == "cuda"
    freq = torch.bincount(tokens, minlength=6).double().cpu() / len(tokens)
    assert freq[2] == 0
    assert torch.allclose(freq, logits[0].softmax(-1).double().cpu(), atol=5e-3)


def uncached(model, seq: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([seq], device="cuda")).logits[0, -1].float()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_cuda_graph_decode_equals_uncached(arch, tiny_lm_dir, tiny_llama_dir):
    """The static cache's decode step, captured as a CUDA graph, through restarts, releases,
    shifts and one growth of the cache (which captures the graph again)."""
    from rlhf_gym.envs.static_lm import StaticIncrementalLM

    path = tiny_lm_dir if arch == "gpt2" else tiny_llama_dir
    model = AutoModelForCausalLM.from_pretrained(path).to("cuda").eval()
    rng = np.random.default_rng(0)
    B, V = 3, model.config.vocab_size
    lm = StaticIncrementalLM(model, B, pad_token_id=1, columns=8)
    seqs = [rng.integers(2, V, size=n).tolist() for n in (2, 5, 3)]
    lm.start(range(B), seqs)
    for step in range(40):
        active = rng.random(B) < 0.8
        toks = rng.integers(2, V, size=B)
        lm.advance(toks, active)
        assert lm.graphed, "the decode step should run as a CUDA graph"
        for r in range(B):
            if active[r]:
                seqs[r].append(int(toks[r]))
        if step % 4 == 3:
            r = int(rng.integers(B))
            seqs[r] = rng.integers(2, V, size=int(rng.integers(1, 9))).tolist()
            lm.start([r], [seqs[r]])
        for r in range(B):
            torch.testing.assert_close(lm.logits[r], uncached(model, seqs[r]), atol=1e-4, rtol=1e-4)
    assert lm.columns > 8  # the cache grew at least once, and the graph was captured again


def test_cuda_graph_follows_an_in_place_weight_update(tiny_lm_dir):
    """An optimizer updates the weights in place: after reset() the same graph (no new
    capture) gives the new weights' logits."""
    from rlhf_gym.envs.policy import LMPolicy

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).to("cuda")
    policy = LMPolicy(model, num_envs=2, pad_token_id=1, seed=0, cuda_graphs=True)
    ids = np.array([[5, 6, 7, 1], [8, 1, 1, 1]])
    mask = (ids != 1).astype(np.int64)
    policy.action_logits({"input_ids": ids, "attention_mask": mask})
    ids2, mask2 = ids.copy(), mask.copy()
    ids2[:, 3], mask2[:, 3] = [9, 1], [1, 0]
    ids2[1, 1], mask2[1, 1] = 10, 1
    policy.action_logits({"input_ids": ids2, "attention_mask": mask2})
    graph = policy.lm.graph
    assert policy.lm.graphed and graph is not None
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model(input_ids=torch.tensor([[5, 6, 7, 9]], device="cuda")).logits.sum().backward()
    opt.step()
    model.eval()
    policy.reset()
    policy.action_logits({"input_ids": ids, "attention_mask": mask})
    logits = policy.action_logits({"input_ids": ids2, "attention_mask": mask2})
    assert policy.lm.graph is graph
    for r, seq in enumerate([[5, 6, 7, 9], [8, 10]]):
        torch.testing.assert_close(logits[r], uncached(model, seq), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("reference_pass", ["per_step", "deferred"])
def test_env_with_cuda_graphs_equals_without(kw, reference_pass):
    envs = [
        RLHFVectorEnv(num_envs=3, reference_pass=reference_pass, cuda_graphs=g, **kw)
        for g in (False, True)
    ]
    for e in envs:
        e.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(12):  # the vector env's autoreset restarts finished rows
        actions = rng.integers(2, 40, size=3)
        out = [e.step(actions) for e in envs]
        np.testing.assert_array_equal(out[0][0]["input_ids"], out[1][0]["input_ids"])
        np.testing.assert_allclose(out[0][1], out[1][1], atol=1e-4)


def test_a_step_that_cannot_be_captured_runs_eagerly(tiny_lm_dir):
    """A model whose forward pass synchronises with the host cannot be recorded: the rows
    warn once and run the same step eagerly on the static cache, with the same logits."""
    import functools

    from rlhf_gym.envs.static_lm import StaticIncrementalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).to("cuda").eval()
    forward = model.forward

    @functools.wraps(forward)
    def syncing_forward(*args, **kwargs):
        out = forward(*args, **kwargs)
        float(out.logits[0, -1, 0])  # a host sync: not allowed while a graph is recorded
        return out

    model.forward = syncing_forward
    lm = StaticIncrementalLM(model, 2, pad_token_id=1)
    seqs = [[5, 6, 7], [8]]
    lm.start([0, 1], seqs)
    with pytest.warns(RuntimeWarning, match="could not be captured as a CUDA graph"):
        lm.advance(np.array([9, 10]), np.array([True, True]))
    lm.advance(np.array([11, 12]), np.array([True, False]))
    assert not lm.graphed and lm.graph is None
    model.forward = forward
    for r, s in enumerate([[5, 6, 7, 9, 11], [8, 10]]):
        torch.testing.assert_close(lm.logits[r], uncached(model, s), atol=1e-4, rtol=1e-4)
