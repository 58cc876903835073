"""LoRA through peft: one copy of the weights for policy and reference; checkpoints hold the
adapter; gradient checkpointing and mixed precision (the memory options) change no result."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

import rlhf_gym  # noqa: F401
from rlhf_gym import cli
from rlhf_gym.agents import checkpoint, lora
from rlhf_gym.agents.ppo import PPO, PPOConfig, enable_gradient_checkpointing
from rlhf_gym.envs.lm import DATA_DIR
from rlhf_gym.envs.policy import LMPolicy

pytest.importorskip("peft")


def lora_agent(**kw) -> PPO:
    cfg = dict(num_envs=4, num_minibatches=2, total_episodes=8, lora_r=4, device="cpu")
    return PPO(PPOConfig(**{**cfg, **kw}))


def perturb_adapters(agent: PPO, scale: float = 0.3) -> None:
    """LoRA's B matrices start at 0 (policy = reference); give them weight so the KL is not 0."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in agent.peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)


def test_kl_against_the_adapter_off_reference_equals_a_separate_frozen_copy() -> None:
    agent = lora_agent(kl_estimator="full", reference_pass="per_step")  # a KL at every step
    perturb_adapters(agent)
    separate = gym.make_vec("RLHF-v0", num_envs=4, kl_estimator="full", device="cpu")
    twin = LMPolicy(agent.policy, 4, pad_token_id=separate.unwrapped.pad_token_id, seed=0)
    separate.unwrapped.set_policy(twin)
    obs_a, _ = agent.envs.reset(seed=3)
    obs_b, _ = separate.reset(seed=3)
    total = 0.0
    for _ in range(12):
        np.testing.assert_array_equal(obs_a["input_ids"], obs_b["input_ids"])
        actions = agent.sampler.act(obs_a)
        obs_a, r_a, term_a, _, info_a = agent.envs.step(actions)
        obs_b, r_b, term_b, _, info_b = separate.step(actions)
        np.testing.assert_allclose(info_a["kl"], info_b["kl"], atol=1e-5)
        np.testing.assert_allclose(r_a, r_b, atol=1e-5)
        total += float(np.abs(info_a["kl"]).sum())
    assert total > 0.05  # the adapter moved the policy: the KL compared is not 0 = 0


def test_lora_trains_the_adapters_and_the_value_head_only() -> None:
    agent = lora_agent()
    named = dict(agent.model.named_parameters())
    trained = {n for n, p in named.items() if p.requires_grad}
    assert trained and all("lora_" in n or n.startswith("critic.") for n in trained)
    base = {n: p.detach().clone() for n, p in named.items() if not p.requires_grad}
    before = {n: named[n].detach().clone() for n in trained}
    agent.train()
    assert all(torch.equal(named[n], base[n]) for n in base)  # the reference did not move
    assert any(not torch.equal(named[n], before[n]) for n in trained if "lora_B" in n)
    full = sum(p.numel() for p in named.values())
    assert lora.trainable_parameters(agent.model) < 0.1 * full


def test_checkpoint_holds_the_adapter_loads_everywhere_and_merges(tmp_path) -> None:
    agent = lora_agent()
    perturb_adapters(agent)
    agent.train()
    path = checkpoint.save(tmp_path / "run", agent)
    policy_dir = path / "policy"
    assert lora.is_adapter(policy_dir) and not (policy_dir / "model.safetensors").exists()
    assert json.loads((policy_dir / "adapter_config.json").read_text())["r"] == 4

    ids = torch.tensor([[5, 17, 33, 8, 9]])
    with torch.no_grad():
        want = agent.policy(input_ids=ids).logits
        loaded = AutoModelForCausalLM.from_pretrained(policy_dir)  # transformers + peft
        torch.testing.assert_close(loaded(input_ids=ids).logits, want, atol=1e-5, rtol=1e-5)
        env = gym.make("RLHF-v0", model=str(policy_dir), device="cpu")  # the env's loader
        assert env.unwrapped.vocab_size == agent.env.vocab_size
        assert cli.main(["merge", str(policy_dir), str(tmp_path / "merged")]) == 0
        merged = tmp_path / "merged"
        assert not lora.is_adapter(merged)
        plain = AutoModelForCausalLM.from_pretrained(merged)
        torch.testing.assert_close(plain(input_ids=ids).logits, want, atol=1e-5, rtol=1e-5)

    resumed = lora_agent()
    checkpoint.load(path, resumed)
    for (n, p), (_, q) in zip(
        agent.peft_model.named_parameters(), resumed.peft_model.named_parameters(), strict=True
    ):
        assert torch.equal(p, q), n
    assert resumed.update_idx == agent.update_idx


def test_lora_defaults_to_a_tenfold_learning_rate() -> None:
    assert PPOConfig().base_lr == 2e-4
    assert PPOConfig(lora_r=8).base_lr == 2e-3
    assert PPOConfig(lora_r=8, learning_rate=3e-4).base_lr == 3e-4
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        PPOConfig(learning_rate=0.0)


def test_bad_lora_input_is_named(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"lora_target_modules='q_proj' does not fit .*c_attn"):
        lora_agent(lora_target_modules="q_proj")
    with pytest.raises(ValueError, match="reference is a table"):
        PPOConfig(env_id="RLHFToy-v0", lora_r=4)
    with pytest.raises(ValueError, match="lora_r must be an integer >= 0"):
        PPOConfig(lora_r=-1)
    full = PPO(PPOConfig(num_envs=4, num_minibatches=2, total_episodes=4, device="cpu"))
    path = checkpoint.save(tmp_path / "full", full)
    with pytest.raises(ValueError, match="holds a whole model, but this run uses LoRA"):
        checkpoint.load(path, lora_agent())
    with pytest.raises(ValueError, match="no adapter_config.json"):
        lora.merge_adapter(path / "policy", tmp_path / "out")
    assert cli.main(["merge", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2


def test_gradient_checkpointing_recomputes_and_changes_no_gradient() -> None:
    def grads(checkpointing: bool) -> tuple[dict[str, torch.Tensor], int]:
        model = AutoModelForCausalLM.from_pretrained(DATA_DIR / "lm")
        model.eval()  # as the agents keep it: dropout off
        if checkpointing:
            enable_gradient_checkpointing(model)
        calls = []
        model.transformer.h[0].attn.register_forward_hook(lambda *a: calls.append(1))
        ids = torch.tensor([[5, 17, 33, 8, 9, 4, 2], [7, 7, 1, 2, 3, 9, 12]])
        logp = model(input_ids=ids, use_cache=False).logits.log_softmax(-1)
        logp[:, :-1].gather(2, ids[:, 1:, None]).sum().backward()
        return {n: p.grad for n, p in model.named_parameters()}, len(calls)

    plain, plain_calls = grads(False)
    ckpt, ckpt_calls = grads(True)
    assert (plain_calls, ckpt_calls) == (1, 2)  # the layer ran again in the backward pass
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("extra", [dict(gradient_checkpointing=True), dict(mixed_precision="bf16")])
def test_memory_options_train(extra) -> None:
    agent = lora_agent(**extra)
    stats = agent.train()
    assert np.isfinite(stats["losses/policy_loss"]) and np.isfinite(stats["losses/value_loss"])
    assert agent.first_minibatch["losses/ratio_mean"] == pytest.approx(1.0, abs=1e-6)
