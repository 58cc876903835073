"""Checkpoints safe to share (no pickle) and to kill (``latest`` always names a complete one).

The trainer state round-trips through safetensors + JSON (:func:`checkpoint.flatten`); the old
pickle format is refused unless asked for; corrupt or truncated checkpoints give clear errors;
and ``rlhf-gym train`` killed with SIGKILL at random moments, many of them during checkpoint
writes, always leaves a checkpoint it can resume from.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rlhf_gym.agents import checkpoint
from rlhf_gym.agents.ppo import PPO, PPOConfig
from rlhf_gym.cli import main


def assert_same(a, b, path="state"):
    """Exact equality of nested states: types (tuple vs list), dtypes, values, key order."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
        return
    assert type(a) is type(b), f"{path}: {type(a)} != {type(b)}"
    if isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape) == (b.dtype, b.shape), path
        assert torch.equal(a, b), path
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and (a == b).all(), path
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}.{i}")
    elif isinstance(a, float) and a != a:
        assert b != b, path
    else:
        assert a == b, path


# ---------------------------------------------------------------------- flatten / unflatten
def nested_state():
    lin = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(lin.parameters(), betas=(0.8, 0.99))
    lin(torch.randn(4, 3)).sum().backward()
    opt.step()
    tied = torch.randn(4, 4)
    return {
        "critic": lin.state_dict(),
        "optimizer": opt.state_dict(),  # int keys, tuples (betas), 0-d step tensors
        "torch_rng": torch.get_rng_state(),  # a uint8 tensor
        "python_rng": random.Random(5).getstate(),  # (3, (625 ints), None)
        "numpy_rng": np.random.RandomState(5).get_state(),  # ('MT19937', uint32 array, …)
        "numpy_generator": np.random.default_rng(5).bit_generator.state,  # 128-bit ints
        "numbers": [1, -2.5, float("nan"), float("-inf"), True, None, np.float64(0.25)],
        "tied": {"a": tied, "b": tied, "t": tied.t(), "empty": torch.zeros(0, 3)},
        "bf16": torch.ones(2, dtype=torch.bfloat16),
        "keys": {("pair", 1): "tuple key", 7: "int key", "__tuple__": "a tag as a key"},
        "a.b": torch.ones(1),
        "a": {"b": torch.zeros(1)},  # the same dotted path as "a.b"
        "buffer": [{"prompt": [1, 2], "rewards": [0.1, 1 / 3]}],
        "config": {"seed": 3, "milestones": (1, 2), "name": "ppo"},
    }


def test_flatten_round_trips_exactly(tmp_path):
    state = nested_state()
    skeleton, tensors = checkpoint.flatten(state)
    assert all(isinstance(t, torch.Tensor) for t in tensors.values())
    assert {"critic.weight", "optimizer.state.0.exp_avg", "torch_rng", "a.b"} <= tensors.keys()
    text = json.dumps(skeleton, allow_nan=False)  # strict JSON: no NaN, no tensors
    assert_same(checkpoint.unflatten(json.loads(text), tensors), state)
    # and through the files
    checkpoint.save_state(state, tmp_path)
    assert_same(checkpoint.load_state(tmp_path), state)
    assert json.loads((tmp_path / "trainer_state.json").read_text())["state"]["config"] == {
        "seed": 3,
        "milestones": {"__tuple__": [1, 2]},
        "name": "ppo",
    }


def test_flatten_names_what_it_cannot_store():
    with pytest.raises(TypeError, match=r"config\.path: cannot store a pathlib"):
        checkpoint.flatten({"config": {"path": Path("x")}})
    with pytest.raises(ValueError, match="tensor 'gone' is missing"):
        checkpoint.unflatten({"x": {"__tensor__": "gone"}}, {})


# ---------------------------------------------------------------------- the checkpoint files
def toy_ppo(**kw):
    return PPO(PPOConfig(env_id="RLHFToy-v0", num_envs=8, total_episodes=16, seed=1, **kw))


def test_checkpoint_layout_and_no_pickle(tmp_path, monkeypatch):
    agent = toy_ppo()
    agent.train()
    path = checkpoint.save(tmp_path, agent)
    names = {p.name for p in path.iterdir()}
    assert names == {"policy", "checkpoint.json", "trainer_state.json", "trainer_state.safetensors"}
    assert (tmp_path / "checkpoints" / "latest").read_text() == "update_000002\n"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "latest",
        "update_000002",
    ]

    def no_pickle(*a, **k):
        raise AssertionError("torch.load called")

    monkeypatch.setattr(torch, "load", no_pickle)
    fresh = toy_ppo()
    checkpoint.load(tmp_path, fresh)
    assert_same(fresh.state_dict(), agent.state_dict())


def test_saving_an_update_again_replaces_it_and_keeps_latest(tmp_path):
    agent = toy_ppo()
    first = checkpoint.save(tmp_path, agent)
    agent.episodes_seen = 99
    again = checkpoint.save(tmp_path, agent)
    assert again == first and json.loads((again / "checkpoint.json").read_text())["episodes"] == 99
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "latest",
        "update_000000",
    ]


def test_leftovers_of_dead_processes_are_removed(tmp_path):
    agent = toy_ppo()
    root = tmp_path / "checkpoints"
    checkpoint.save(tmp_path, agent)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (root / f".tmp-update_000001-{dead.pid}" / "policy").mkdir(parents=True)
    (root / f".latest-{dead.pid}").write_text("update_000001\n")
    (root / f".tmp-update_000001-{os.getppid()}").mkdir()  # a live process: left alone
    agent.update_idx = 1
    checkpoint.save(tmp_path, agent)
    assert sorted(p.name for p in root.iterdir()) == [
        f".tmp-update_000001-{os.getppid()}",
        "latest",
        "update_000000",
        "update_000001",
    ]


def make_legacy(path: Path, agent) -> None:
    """Turn a checkpoint into the pickle format written before safetensors."""
    torch.save(agent.state_dict(), path / "trainer_state.pt")
    (path / "trainer_state.json").unlink()
    (path / "trainer_state.safetensors").unlink()
    meta = json.loads((path / "checkpoint.json").read_text())
    del meta["format"], meta["files"]
    (path / "checkpoint.json").write_text(json.dumps(meta))


def test_the_old_pickle_format_needs_allow_pickle(tmp_path, capsys):
    agent = toy_ppo()
    agent.train()
    path = checkpoint.save(tmp_path / "run", agent)
    make_legacy(path, agent)
    with pytest.raises(ValueError, match=r"pickle.*--allow-pickle true"):
        checkpoint.load(path, toy_ppo())
    with pytest.raises(ValueError, match="--allow-pickle"):
        checkpoint.resolve(tmp_path / "run")
    fresh = toy_ppo()
    assert checkpoint.load(tmp_path / "run", fresh, allow_pickle=True) == path
    assert_same(fresh.state_dict(), agent.state_dict())
    # the command: refused before anything is built, then accepted with the flag
    argv = ["train", "--env", "RLHFToy-v0", "--num-envs", "8", "--seed", "1"]
    argv += ["--total-episodes", "24", "--eval-episodes", "8", "--resume", str(path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "trainer_state.pt" in err and "--allow-pickle" in err and "trust" in err
    assert main([*argv, "--allow-pickle", "true"]) == 0
    assert "resumed from" in capsys.readouterr().out
    new = checkpoint.resolve(tmp_path / "run")
    assert new.name == "update_000003" and (new / "trainer_state.safetensors").is_file()


def test_allow_pickle_option_help(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--allow-pickle" in text and "unpickling runs any code in the file" in text


@pytest.fixture
def saved(tmp_path):
    agent = toy_ppo()
    agent.train()
    path = checkpoint.save(tmp_path, agent)
    agent.update_idx = 3
    checkpoint.save(tmp_path, agent)  # latest: update_000003, update_000002 complete
    return tmp_path, path.parent / "update_000003"


def test_truncated_safetensors_is_a_clear_error(saved):
    run, path = saved
    f = path / "trainer_state.safetensors"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(ValueError) as e:
        checkpoint.resolve(run)
    msg = str(e.value)
    assert "trainer_state.safetensors: truncated or changed" in msg and str(path) in msg
    assert "newest complete checkpoint there is" in msg and "update_000002" in msg
    with pytest.raises(ValueError, match="truncated"):
        checkpoint.load(path, toy_ppo())


def test_a_bad_safetensors_header_is_a_clear_error(saved):
    run, path = saved
    f = path / "trainer_state.safetensors"
    size = f.stat().st_size
    f.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json!!!!!!}" + bytes(size - 24))
    with pytest.raises(ValueError, match="trainer_state.safetensors: bad safetensors header"):
        checkpoint.resolve(run)
    f.write_bytes(bytes(3))
    with pytest.raises(ValueError, match="bad safetensors header"):
        checkpoint.load_state(path)


def test_bad_json_is_a_clear_error(saved):
    run, path = saved
    meta = json.loads((path / "checkpoint.json").read_text())
    (path / "trainer_state.json").write_text("{" + "x" * (meta["files"]["trainer_state.json"] - 1))
    with pytest.raises(ValueError, match=r"trainer_state.json: bad JSON \(Expecting"):
        checkpoint.resolve(run)
    (path / "checkpoint.json").write_text('{"agent": ')
    with pytest.raises(ValueError, match=r"checkpoint.json: bad JSON"):
        checkpoint.resolve(run)


def test_a_missing_marker_or_file_is_a_clear_error(saved):
    run, path = saved
    (path / "policy" / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="partial, policy/model.safetensors is missing"):
        checkpoint.resolve(run)
    (path / "checkpoint.json").unlink()
    with pytest.raises(
        ValueError, match=r"update_000003 is not a complete checkpoint \(no checkpoint"
    ):
        checkpoint.resolve(run)
    (run / "checkpoints" / "latest").write_text("update_000009\n")
    with pytest.raises(ValueError, match="names .*update_000009, which does not exist"):
        checkpoint.resolve(run)
    (run / "checkpoints" / "latest").write_text("../../etc\n")
    with pytest.raises(ValueError, match="does not name a checkpoint"):
        checkpoint.resolve(run)


# ---------------------------------------------------------------------- SIGKILL at random
# A fork server: imports the package once, then forks one `rlhf-gym train` per request, so
# that each of the many killed runs does not pay Python's and torch's start-up (seconds).
SERVER = r"""
import json, os, signal, sys, time, traceback
os.environ["TOKENIZERS_PARALLELISM"] = "false"
import torch
import transformers.models.gpt2.modeling_gpt2
from torch.utils.tensorboard import SummaryWriter
import rlhf_gym.agents.ppo, rlhf_gym.agents.soft_q, rlhf_gym.train
from rlhf_gym import cli
print("ready", flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "wait":
        print(os.waitpid(cmd["pid"], 0)[1], flush=True)
        continue
    pid = os.fork()
    if pid == 0:
        # every fsync waits 20 ms: the same writes in the same order, in a window wide enough
        # that kills land inside checkpoint writes even on a loaded machine
        _fsync = os.fsync
        def slow_fsync(fd, _fsync=_fsync):
            time.sleep(0.02)
            _fsync(fd)
        os.fsync = slow_fsync
        fd = os.open(cmd["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        try:
            code = cli.main(cmd["argv"])
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    print(pid, flush=True)
"""


class ForkServer:
    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout.readline().strip() == "ready"

    def ask(self, **cmd) -> int:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def read_latest(root: Path) -> str | None:
    try:
        return (root / "latest").read_text()
    except FileNotFoundError:
        return None


def wait_for(condition, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; the run's output:\n{log.read_text()}")
        time.sleep(0.002)


def checkpoint_dirs(root: Path) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in root.glob("update_*")} if root.is_dir() else {}


def killed_during_a_write(root: Path, pid: int, before: dict[str, int]) -> bool:
    """What the kill interrupted: a save leaves ``.tmp-…``/``.latest-…`` (and, for a replaced
    update, ``.old-…``/``.keep-…``) of its pid, or a checkpoint that this process renamed into
    place (not in ``before``) but that ``latest`` does not name yet."""
    if any(p.name.endswith(f"-{pid}") for p in root.iterdir() if p.name.startswith(".")):
        return True
    latest = (root / "latest").read_text().strip()
    return any(n > latest and before.get(n) != i for n, i in checkpoint_dirs(root).items())


@pytest.mark.slow
def test_sigkill_at_random_moments_always_leaves_a_resumable_checkpoint(
    tmp_path, tiny_lm_dir, tiny_rm_dir
):
    from rlhf_gym.agents.soft_q import SoftQ, SoftQConfig

    rng = random.Random(20240611)
    common = dict(model=str(tiny_lm_dir), reward_model=str(tiny_rm_dir), num_envs=4)
    common.update(max_new_tokens=4, total_episodes=100_000, device="cpu")
    series = {  # agent: (kills, its options, an agent built here to load each checkpoint)
        "ppo": (12, [], PPO(PPOConfig(**common))),
        "qlearning": (10, ["--batch-size", "4"], SoftQ(SoftQConfig(**common, batch_size=4))),
    }
    flags = ["--model", str(tiny_lm_dir), "--reward-model", str(tiny_rm_dir), "--device", "cpu"]
    flags += ["--num-envs", "4", "--max-new-tokens", "4", "--total-episodes", "100000"]
    flags += ["--checkpoint-every", "1", "--eval-episodes", "4"]
    during = between = 0
    server = ForkServer()
    try:
        for name, (kills, extra, agent) in series.items():
            logdir = tmp_path / name
            run, update = None, None
            for k in range(kills):
                log = tmp_path / f"{name}-{k}.log"
                argv = ["train", "--agent", name, *flags, *extra, "--logdir", str(logdir)]
                if run is not None:
                    argv += ["--resume", str(run)]
                before = None if run is None else read_latest(run / "checkpoints")
                dirs = {} if run is None else checkpoint_dirs(run / "checkpoints")
                pid = server.ask(op="run", argv=argv, log=str(log))
                if run is None:
                    wait_for(lambda d=logdir: any(d.glob("*/checkpoints/latest")), 99, "a run", log)
                    run = next(logdir.iterdir())
                root = run / "checkpoints"
                # the first checkpoint of this process, then a random moment: either any
                # time in the next few updates, or shortly after a checkpoint write began
                wait_for(lambda r=root, b=before: read_latest(r) != b, 120, "a checkpoint", log)
                if rng.random() < 0.5:
                    time.sleep(rng.uniform(0.0, 1.2))
                else:
                    wait_for(
                        lambda r=root: any(p.name.startswith(".tmp-") for p in r.iterdir()),
                        60,
                        "a checkpoint write",
                        log,
                    )
                    time.sleep(rng.uniform(0.0, 0.06))
                os.kill(pid, signal.SIGKILL)
                status = server.ask(op="wait", pid=pid)
                assert os.WIFSIGNALED(status), log.read_text()
                if update is not None:  # this process resumed where the last one stopped
                    assert f"at update {update}\n" in log.read_text()
                if killed_during_a_write(root, pid, dirs):
                    during += 1
                else:
                    between += 1
                # `latest` names a complete checkpoint, validated, loadable, and no older
                ckpt = checkpoint.resolve(run)
                assert (root / "latest").read_text() == ckpt.name + "\n"
                assert checkpoint.load(run, agent) == ckpt
                assert update is None or agent.update_idx > update
                update = agent.update_idx
            # a real `rlhf-gym train --resume` finishes the run two updates further on
            out = subprocess.run(
                [sys.executable, "-m", "rlhf_gym.cli", *argv[:-2], "--resume", str(run)]
                + ["--total-episodes", str(4 * (update + 2))],
                capture_output=True,
                text=True,
                timeout=300,
                env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
            )
            assert out.returncode == 0, out.stderr
            assert f"resumed from {root / f'update_{update:06d}'} at update {update}" in out.stdout
            assert checkpoint.resolve(run).name == f"update_{update + 2:06d}"
            assert not [p.name for p in root.iterdir() if p.name.startswith(".")]
    finally:
        server.close()
    print(f"\n{during + between} kills: {during} during a checkpoint write, {between} between")
    assert during + between >= 20
    assert during >= 4, "too few kills landed during checkpoint writes to test them"
