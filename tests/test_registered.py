"""Every registered id passes Gymnasium's and SB3's checkers; the README quickstart runs."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import gymnasium as gym
import pytest

import rlhf_gym

IDS = [i for i in gym.registry if i.startswith("RLHF")]
README = Path(__file__).resolve().parent.parent / "README.md"


def test_ids_are_registered():
    assert set(IDS) == {"RLHF-v0", "RLHFHarmless-v0", "RLHFHelpfulHarmless-v0", "RLHFToy-v0"}
    assert gym.make("rlhf_gym:RLHFToy-v0").spec.id == "RLHFToy-v0"


@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_check_env(env_id):
    from gymnasium.utils.env_checker import check_env

    env = gym.make(env_id, max_new_tokens=8) if env_id != "RLHFToy-v0" else gym.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env.unwrapped)


@pytest.mark.parametrize("env_id", IDS)
def test_sb3_check_env(env_id):
    from stable_baselines3.common.env_checker import check_env

    env = gym.make(env_id, max_new_tokens=8) if env_id != "RLHFToy-v0" else gym.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env.unwrapped)


@pytest.mark.parametrize(
    "env_id, width",
    [("RLHF-v0", 64), ("RLHFHarmless-v0", 64), ("RLHFHelpfulHarmless-v0", 32 + 48)],
)
def test_default_env_reports_gold_and_vector_works(env_id, width):
    env = gym.make(env_id)
    obs, info = env.reset(seed=0)
    done = False
    while not done:
        obs, reward, done, truncated, info = env.step(env.action_space.sample())
    assert {"score", "gold_score", "response_text", "prompt_text"} <= set(info)
    venv = gym.make_vec(env_id, num_envs=3)
    obs, _ = venv.reset(seed=0)
    assert obs["input_ids"].shape == (3, width)


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_quickstart_runs(capsys):
    blocks = python_blocks(README.read_text())
    assert blocks, "README has no python example"
    exec(compile(blocks[0], "README quickstart", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert "score" in out and "gold_score" in out


def test_default_models_are_small():
    data = Path(rlhf_gym.__file__).parent / "data" / "default"
    size = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
    assert 0 < size <= 20 * 2**20
