"""Bad input gets a clear error that names the problem."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import rlhf_gym  # noqa: F401
from rlhf_gym.envs.policy import PrecomputedLogits
from rlhf_gym.envs.rlhf_env import RLHFEnv, RLHFVectorEnv

PROMPTS = ["the movie was", "a wonderful film"]


@pytest.fixture
def kw(tiny_kw):
    return tiny_kw(prompts=PROMPTS, max_new_tokens=4)


@pytest.fixture
def env(kw):
    e = RLHFEnv(**kw)
    e.reset(seed=0)
    return e


@pytest.mark.parametrize("action", [10**6, -1])
def test_action_out_of_range(env, action):
    with pytest.raises(ValueError, match=r"out of range: token ids are in \[0, \d+\)"):
        env.step(action)


@pytest.mark.parametrize("action", [1.5, "3", [1, 2], True, None])
def test_action_of_wrong_type(env, action):
    with pytest.raises(ValueError, match=r"action must be one integer token id"):
        env.step(action)


def test_numpy_integer_actions_are_fine(env):
    env.step(np.int64(5))
    env.step(np.array([6]))


def test_step_before_reset_and_after_end(kw):
    env = RLHFEnv(**kw)
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(3)
    env.reset(seed=0)
    env.step(env.tokenizer.eos_token_id)
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step(3)
    venv = RLHFVectorEnv(num_envs=2, **kw)
    with pytest.raises(RuntimeError, match="before reset"):
        venv.step(np.array([3, 3]))


def test_vector_action_shape(kw):
    venv = RLHFVectorEnv(num_envs=2, **kw)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match=r"actions must be 2 integer token id"):
        venv.step(np.array([1, 2, 3]))


def test_unknown_model_paths(kw):
    with pytest.raises(FileNotFoundError, match=r"model='\./no/such/dir': no such directory"):
        RLHFEnv(**{**kw, "model": "./no/such/dir"})
    with pytest.raises(ValueError, match=r"model='no-such-org/no-such-model' could not be loaded"):
        RLHFEnv(**{**kw, "model": "no-such-org/no-such-model"})
    with pytest.raises(FileNotFoundError, match=r"reward_model='/nope': no such directory"):
        RLHFEnv(**{**kw, "reward_model": "/nope"})


def test_model_file_instead_of_directory(kw, tmp_path):
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file; expected a model directory"):
        RLHFEnv(**{**kw, "model": str(tmp_path / "model.bin")})


@pytest.mark.parametrize(
    "override, message",
    [
        ({"kl_estimator": "k2"}, r"kl_estimator='k2' is not one of \['k1', 'k3', 'full'\]"),
        ({"device": "tpu"}, r"device='tpu'"),
        ({"dtype": "float8"}, r"dtype='float8' is not one of"),
        ({"reward_form": "kl2"}, r"reward_form='kl2' is not one of"),
        ({"kl_coef": -1}, r"kl_coef must be a number >= 0"),
        ({"task": "poetry"}, r"task='poetry' is not one of"),
        ({"max_new_tokens": 0}, r"max_new_tokens must be a positive integer"),
        ({"gold": "oracle"}, r"gold='oracle' is not one of"),
        ({"max_new_tokens": 200}, r"exceeds the model's context window of 128"),
        ({"kl_target": 0.0}, r"kl_target must be > 0"),
    ],
)
def test_bad_arguments(kw, override, message):
    with pytest.raises(ValueError, match=message):
        RLHFEnv(**{**kw, **override})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is absent")
def test_cuda_when_absent(kw):
    with pytest.raises(ValueError, match="CUDA is not available"):
        RLHFEnv(**{**kw, "device": "cuda"})


def test_prompt_files(kw, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(ValueError, match=f"no prompts in {empty}"):
        RLHFEnv(**{**kw, "prompts": str(empty)})
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": \n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        RLHFEnv(**{**kw, "prompts": str(bad)})
    wrong = tmp_path / "p.jsonl"
    wrong.write_text('{"text": "ok"}\n')
    with pytest.raises(
        ValueError, match=r'p.jsonl:1: expected a string or an object with a "prompt"'
    ):
        RLHFEnv(**{**kw, "prompts": str(wrong)})
    csv = tmp_path / "p.csv"
    csv.write_text("a\n")
    with pytest.raises(ValueError, match=r"must end in .txt or .jsonl"):
        RLHFEnv(**{**kw, "prompts": str(csv)})
    with pytest.raises(FileNotFoundError, match=r"neither a built-in set .* nor an existing file"):
        RLHFEnv(**{**kw, "prompts": str(tmp_path / "missing.txt")})
    good = tmp_path / "good.jsonl"
    good.write_text('"plain string"\n\n{"prompt": "from object"}\n')
    env = RLHFEnv(**{**kw, "prompts": str(good), "max_prompt_tokens": 32})
    assert set(env.prompts) == {"plain string", "from object"}


def test_long_prompt_is_truncated_and_flagged(kw):
    long = "the movie was " * 20
    env = RLHFEnv(**{**kw, "prompts": [long]})
    obs, info = env.reset(seed=0)
    assert info["prompt_truncated"] is True
    assert obs["attention_mask"].sum() == 8  # max_prompt_tokens, the end of the prompt kept
    assert long.rstrip().endswith(info["prompt_text"].strip())


def test_policy_with_wrong_shape(kw):
    env = RLHFEnv(**kw)
    handoff = PrecomputedLogits()
    env.set_policy(handoff)
    env.reset(seed=0)
    handoff.set(torch.zeros(1, 7))
    with pytest.raises(ValueError, match=r"returned shape \(1, 7\); expected"):
        env.step(3)
    with pytest.raises(ValueError, match="action_logits"):
        env.set_policy(object())


def test_gym_make_step_before_reset(kw):
    env = gym.make("RLHFToy-v0")
    with pytest.raises(gym.error.ResetNeeded):
        env.step(1)
    with pytest.raises(ValueError, match=r"RLHFToy-v0 fixes \['model'\]"):
        gym.make("RLHFToy-v0", model="gpt2")
