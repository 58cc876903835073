"""Same seed, same bytes (on CPU); and the defaults never touch the network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from rlhf_gym.agents.checkpoint import STATE_JSON, STATE_TENSORS
from rlhf_gym.cli import main


def _train(logdir: Path, lm: Path, rm: Path) -> Path:
    """``rlhf-gym train`` on the tiny models, small budget; the final checkpoint directory."""
    argv = ["train", "--model", str(lm), "--reward-model", str(rm), "--seed", "3"]
    argv += ["--total-episodes", "16", "--num-envs", "8", "--max-new-tokens", "4"]
    argv += ["--device", "cpu", "--eval-episodes", "8", "--logdir", str(logdir)]
    assert main(argv) == 0
    (run,) = logdir.iterdir()
    root = run / "checkpoints"
    return root / (root / "latest").read_text().strip()


def test_two_runs_with_the_same_seed_give_identical_checkpoints(
    tmp_path, tiny_lm_dir, tiny_rm_dir, capsys
):
    a = _train(tmp_path / "a", tiny_lm_dir, tiny_rm_dir)
    b = _train(tmp_path / "b", tiny_lm_dir, tiny_rm_dir)
    capsys.readouterr()
    assert a.name == b.name == "update_000002"
    policy = "policy/model.safetensors"
    assert (a / policy).read_bytes() == (b / policy).read_bytes()
    ta, tb = load_file(str(a / STATE_TENSORS)), load_file(str(b / STATE_TENSORS))
    assert list(ta) == list(tb)
    for name in ta:  # optimizer moments, critic, RNG states
        assert ta[name].dtype == tb[name].dtype and torch.equal(ta[name], tb[name]), name
    assert (a / STATE_TENSORS).read_bytes() == (b / STATE_TENSORS).read_bytes()
    sa, sb = (json.loads((d / STATE_JSON).read_text()) for d in (a, b))
    assert sa == sb  # update index, episodes, KL coefficient, config


NO_NETWORK = r"""
import json, socket, sys

attempts = []

def refuse(kind):
    def blocked(*args, **kwargs):
        attempts.append([kind, repr(args[:2])[:200]])
        raise OSError(f"network access blocked by the test ({kind})")
    return blocked

socket.socket.connect = refuse("connect")
socket.socket.connect_ex = refuse("connect_ex")
socket.create_connection = refuse("create_connection")
socket.getaddrinfo = refuse("getaddrinfo")

import gymnasium as gym
import rlhf_gym
from rlhf_gym.cli import main

env = gym.make("RLHF-v0", device="cpu")
obs, info = env.reset(seed=0)
env.action_space.seed(0)  # unseeded, a random token is EOS once in 1,024 draws
for _ in range(3):
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    if terminated:
        break
env.close()
code = main(["eval", "--episodes", "8", "--num-envs", "8", "--best-of", "", "--device", "cpu"])
print("RESULT " + json.dumps({"code": code, "attempts": attempts}))
"""


def test_the_defaults_make_no_network_access(tmp_path):
    """Importing rlhf_gym, ``gym.make("RLHF-v0")`` and a few steps, and ``rlhf-gym eval`` on
    the defaults, in a fresh interpreter whose sockets refuse to connect or resolve: nothing
    tries (the hub's offline switch is *not* set, so a download attempt would show)."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    env["HF_HOME"] = str(tmp_path / "hf")  # an empty cache: nothing to find there either
    env["RLHF_GYM_TORCH_THREADS"] = "1"
    out = subprocess.run(
        [sys.executable, "-c", NO_NETWORK],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    assert lines, out.stdout + out.stderr
    result = json.loads(lines[-1][len("RESULT ") :])
    assert result == {"code": 0, "attempts": []}, result
