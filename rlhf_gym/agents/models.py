"""What an agent acts in and trains: its vector environment, and the policy network built
from that environment's reference."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from rlhf_gym.agents.episodes import episode_envs


def make_vector_env(
    config: Any, env_kwargs: dict[str, Any] | None = None, num_envs: int | None = None
) -> Any:
    """``gym.make_vec(config.env_id, num_envs=config.num_envs, ...)`` with the config's
    environment arguments (:meth:`~rlhf_gym.agents.config.AgentConfig.env_kwargs`), overridden
    by ``env_kwargs`` (a reward model path, a prompt file …); ``num_envs`` overrides the batch
    (one rank's share of it in a multi-process run). Built by
    :func:`~rlhf_gym.agents.episodes.episode_envs`: the agents collect one episode per row,
    without autoreset unless ``env_kwargs`` says otherwise."""
    kwargs = {**config.env_kwargs(), **(env_kwargs or {})}
    return episode_envs(config.env_id, num_envs or config.num_envs, **kwargs)


def trainable_policy(env: Any) -> nn.Module:
    """:func:`make_policy` on the environment's device, in eval mode (dropout off, also while
    training: dropout makes log-probabilities random, a classic cause of negative KL)."""
    policy = make_policy(env).to(env.device)
    policy.eval()
    return policy.requires_grad_(True)


def make_policy(env: Any) -> nn.Module:
    """A trainable copy of the environment's reference model (float32 if it was float16).

    The toy's reference is a table, not a network: its policy is then a fresh one-layer GPT-2
    over the same 4 tokens (random start, so the KL starts high and training pulls it in).

    Args:
        env: an unwrapped :class:`~rlhf_gym.envs.RLHFEnv` or :class:`~rlhf_gym.envs.RLHFVectorEnv`.
    """
    try:
        model = env.reference_model
    except AttributeError:
        return _toy_policy(env)
    policy = copy.deepcopy(model)
    policy = policy.float() if model.dtype == torch.float16 else policy
    return policy.requires_grad_(True)  # the reference is frozen; its copy must not be


def _toy_policy(env: Any) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=env.vocab_size,
        n_positions=max(8, env.max_prompt_tokens + env.max_new_tokens),
        n_layer=1,
        n_head=2,
        n_embd=32,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        eos_token_id=env.eos_token_id,
        bos_token_id=env.eos_token_id,
        pad_token_id=env.pad_token_id,
    )
    return GPT2LMHeadModel(cfg)
