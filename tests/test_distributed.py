"""PPO in two processes (torchrun, gloo on the CPU) equals one process on the same global batch.

The two ranks (``tests/distributed_worker.py``) each collect half of every rollout and train
with their gradients all-reduced by ``accelerate``'s DDP. One process then replays the same
global rollouts (the two halves concatenated, re-padded) with the same minibatches: its
weights must end where both ranks' weights end. The bad inputs of a multi-process run are
pinned down beside it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhf_gym.agents import distributed
from rlhf_gym.agents.ppo import PPO, PPOConfig, Rollout

sys.path.insert(0, str(Path(__file__).parent))
from distributed_worker import config_kwargs, weights  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def torchrun(*args: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=2 ARGS`` (by default the worker script)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    if not args or not args[0].startswith("-"):
        args = (str(ROOT / "tests" / "distributed_worker.py"), *args)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        *args,
    ]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    done = torchrun(str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_ranks_with_different_configs_refuse_to_start(tmp_path: Path) -> None:
    done = torchrun(str(tmp_path), "mismatch")
    assert done.returncode != 0
    assert "the ranks were started with different configs (fields ['seed']" in done.stderr


def merge(halves: list[dict], pad: int) -> Rollout:
    """The global rollout: the ranks' rows in rank order, prompts left- and responses
    right-padded to the longest of either half."""
    P = max(h["input_ids"].shape[1] - h["response_mask"].shape[1] for h in halves)
    L = max(h["response_mask"].shape[1] for h in halves)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in halves[0] if k != "kl_coef"}
    for h in halves:
        n, Lh = h["response_mask"].shape
        Ph = h["input_ids"].shape[1] - Lh
        for key, fill in (("input_ids", pad), ("attention_mask", 0)):
            x = h[key]
            left = torch.full((n, P - Ph), fill, dtype=x.dtype)
            right = torch.full((n, L - Lh), fill, dtype=x.dtype)
            parts[key].append(torch.cat([left, x[:, :Ph], x[:, Ph:], right], 1))
        for key in ("response_mask", "logprobs", "rewards"):
            x = h[key]
            parts[key].append(torch.cat([x, x.new_zeros((n, L - Lh))], 1))
        ref = h["ref_logprobs"]  # (n, Lh, V): padding is masked out, any finite value does
        parts["ref_logprobs"].append(torch.cat([ref, ref.new_zeros((n, L - Lh, ref.shape[2]))], 1))
    glued = {k: torch.cat(v) for k, v in parts.items()}
    return Rollout(episodes=None, kl_coef=halves[0]["kl_coef"], **glued)


def global_order(local: list[torch.Tensor], world: int, minibatches: int) -> list[torch.Tensor]:
    """The one-process permutation whose minibatch ``k`` is the union of the ranks' ``k``-th."""
    rows = len(local[0])
    mb = rows // minibatches
    out = []
    for perm in local:
        chunks = [
            torch.cat([r * rows + perm[k * mb : (k + 1) * mb] for r in range(world)])
            for k in range(minibatches)
        ]
        out.append(torch.cat(chunks))
    return out


def test_two_ranks_end_equal_to_each_other_and_to_one_process(two_process_run: Path) -> None:
    out = two_process_run
    rank0, rank1 = torch.load(out / "final_0.pt"), torch.load(out / "final_1.pt")
    for key in rank0:  # DDP: identical all-reduced gradients, identical weights
        assert torch.equal(rank0[key], rank1[key]), key

    cfg = PPOConfig(**config_kwargs())
    agent = PPO(cfg)  # one process: the same initial weights (same seed)
    initial = torch.load(out / "initial.pt")
    for key, value in weights(agent).items():
        assert torch.equal(value, initial[key]), key
    moved = 0.0
    for u in range(cfg.num_updates):
        halves = [torch.load(out / f"rollout_{u}_{r}.pt") for r in range(2)]
        ro = merge(halves, agent.env.pad_token_id)
        local = torch.load(out / f"order_{u}.pt")
        agent.minibatch_order = lambda rows, local=local: global_order(local, 2, 2)
        assert ro.response_mask.shape[0] == cfg.num_envs
        agent.update(ro)
        agent.update_idx += 1
    single = weights(agent)
    for key in single:
        moved = max(moved, float((rank0[key] - initial[key]).abs().max()))
        torch.testing.assert_close(single[key], rank0[key], atol=2e-5, rtol=1e-4, msg=key)
    assert moved > 1e-3  # the weights did move: the comparison is not of two initial states


def test_each_rank_destroys_its_process_group_before_the_interpreter_ends(
    two_process_run: Path,
) -> None:
    # Left alive, gloo's threads are torn down during interpreter finalisation, which now and
    # then aborts a finished rank ("terminate called without an active exception").
    for r in range(2):
        assert (two_process_run / f"exit_{r}.txt").read_text() == "False"


def test_rlhf_gym_train_under_torchrun_logs_and_checkpoints_once(tmp_path: Path) -> None:
    done = torchrun(
        "-m", "rlhf_gym.cli", "train", "--env", "RLHFToy-v0", "--num-envs", "8",
        "--total-episodes", "16", "--logdir", str(tmp_path), "--eval-episodes", "8",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    runs = list(tmp_path.iterdir())
    assert len(runs) == 1  # rank 0 alone writes
    assert len(list(runs[0].glob("events.out.tfevents.*"))) == 1
    assert (runs[0] / "checkpoints" / "update_000002" / "checkpoint.json").is_file()
    assert done.stdout.count("held-out") == 1  # one summary, printed by rank 0

    refused = torchrun(
        "-m", "rlhf_gym.cli", "train", "--agent", "qlearning", "--env", "RLHFToy-v0",
        "--logdir", str(tmp_path / "q"),
    )  # fmt: skip
    assert refused.returncode != 0
    assert "multi-process training is PPO's" in refused.stderr


def test_world_size_must_divide_the_batch_and_minibatches() -> None:
    with pytest.raises(ValueError, match=r"num_envs=12 .* processes \(8\) × num_minibatches"):
        distributed.check_divisible(12, 4, 8)
    distributed.check_divisible(16, 4, 2)


def test_fp16_on_the_cpu_is_refused() -> None:
    with pytest.raises(ValueError, match="fp16"):
        distributed.autocast_dtype("fp16", torch.device("cpu"))
    with pytest.raises(ValueError, match="fp16"):
        PPO(PPOConfig(env_id="RLHFToy-v0", num_envs=4, mixed_precision="fp16", device="cpu"))


def test_weight_sharding_engines_are_refused_with_the_reason() -> None:
    from types import SimpleNamespace

    def fake(kind: str, stage: int | None = None) -> SimpleNamespace:
        plugin = (
            None
            if stage is None
            else SimpleNamespace(deepspeed_config={"zero_optimization": {"stage": stage}})
        )
        return SimpleNamespace(
            distributed_type=f"DistributedType.{kind}",
            state=SimpleNamespace(deepspeed_plugin=plugin),
        )

    with pytest.raises(ValueError, match="FSDP shards the weights"):
        distributed.check_sharding(fake("FSDP"))
    with pytest.raises(ValueError, match="ZeRO-3 shards the weights"):
        distributed.check_sharding(fake("DEEPSPEED", 3))
    distributed.check_sharding(fake("MULTI_GPU"))
    distributed.check_sharding(fake("DEEPSPEED", 2))


@pytest.mark.parametrize("name", ["ddp.yaml", "ddp_two_nodes.yaml"])
def test_the_documented_accelerate_configs_are_valid(name: str) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / "examples" / "accelerate" / name))
    assert str(config.distributed_type).endswith("MULTI_GPU")
    assert config.num_processes >= 2
