from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub

import torch

# The test models are tiny: one thread is faster than two, and far faster on a busy machine
# (OpenMP threads spin-waiting on a core another process holds).
torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).parent))

from tiny import save_tiny_lm, save_tiny_reward_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("tiny-llama"), arch="llama")


@pytest.fixture(scope="session")
def tiny_rm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_reward_model(tmp_path_factory.mktemp("tiny-rm"))


TINY_PROMPTS = [
    "the movie was",
    "i did not like",
    "a wonderful film",
    "Q: how do i fix my bike ? A:",
]


@pytest.fixture
def tiny_kw(tiny_lm_dir: Path, tiny_rm_dir: Path):
    """``gym.make``/``RLHFEnv`` arguments for the tiny local models: ``tiny_kw(**overrides)``."""

    def make(**overrides):
        base = dict(
            model=str(tiny_lm_dir),
            reward_model=str(tiny_rm_dir),
            prompts=TINY_PROMPTS,
            gold="none",
            max_new_tokens=6,
            max_prompt_tokens=8,
            device="cpu",
        )
        return {**base, **overrides}

    return make
