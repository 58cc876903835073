"""The policy network an agent trains, built from the environment it acts in."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


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
