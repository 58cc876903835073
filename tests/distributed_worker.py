"""One rank of the two-process PPO run of ``tests/test_distributed.py`` (started by torchrun).

Trains PPO on the toy for a few updates and writes, under the directory given as the first
argument: the initial weights (rank 0), every rollout this rank trained on
(``rollout_<update>_<rank>.pt``), the permutations of its minibatches
(``order_<update>.pt``, rank 0), its final weights (``final_<rank>.pt``) and, from the last
exit handler, whether its process group was still alive (``exit_<rank>.txt``). With the second
argument ``mismatch`` each rank gets another seed (the run must refuse to start).
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import sys
from pathlib import Path

import torch


def config_kwargs() -> dict:
    """The config both the ranks and the one-process replay use."""
    return dict(
        env_id="RLHFToy-v0",
        num_envs=8,
        num_minibatches=2,
        ppo_epochs=2,
        total_episodes=24,
        learning_rate=3e-3,
        device="cpu",
        seed=0,
    )


def weights(agent) -> dict[str, torch.Tensor]:
    """Every trained tensor of the agent: the policy's and the critic's."""
    out = {f"policy.{k}": v.detach().clone() for k, v in agent.policy.state_dict().items()}
    out.update({f"critic.{k}": v.detach().clone() for k, v in agent.critic.state_dict().items()})
    return out


def record_group_at_exit(out: Path) -> None:
    """Write, after every exit handler registered later has run, whether the process group
    is still initialised (handlers run last-registered first, so this one runs last)."""

    def record() -> None:
        rank = os.environ["RANK"]
        (out / f"exit_{rank}.txt").write_text(str(torch.distributed.is_initialized()))

    atexit.register(record)


def main(out: Path, mismatch: bool = False) -> None:
    from rlhf_gym.agents.ppo import PPO, PPOConfig

    record_group_at_exit(out)

    kwargs = config_kwargs()
    if mismatch:  # a bad launch: every rank gets another seed
        kwargs["seed"] = int(os.environ["RANK"])
    agent = PPO(PPOConfig(**kwargs))
    assert agent.world == 2, f"expected 2 processes, got {agent.world}"
    if agent.rank == 0:
        torch.save(weights(agent), out / "initial.pt")
    collect, order = agent.collect, agent.minibatch_order

    def recording_collect():
        ro = collect()
        fields = {f.name: getattr(ro, f.name) for f in dataclasses.fields(ro)}
        fields.pop("episodes")
        torch.save(fields, out / f"rollout_{agent.update_idx}_{agent.rank}.pt")
        return ro

    def recording_order(rows: int):
        perms = order(rows)
        if agent.rank == 0:
            torch.save(perms, out / f"order_{agent.update_idx}.pt")
        return perms

    agent.collect, agent.minibatch_order = recording_collect, recording_order
    agent.train()
    torch.save(weights(agent), out / f"final_{agent.rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), mismatch=sys.argv[2:] == ["mismatch"])
