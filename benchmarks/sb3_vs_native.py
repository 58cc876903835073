"""Env steps (response tokens) per second: SB3 PPO with the LM policy against our native PPO.

    python benchmarks/sb3_vs_native.py                        # default task, CPU
    python benchmarks/sb3_vs_native.py --episodes 128 --json

Both agents train the same model on the same task with the same number of parallel episodes
(``--num-envs``) for ``--episodes`` episodes; the first update of each is a warm-up. Reported:
each agent's median env steps per second over rollout *and* update, and the ratio
native / SB3, from the same run.

Where the difference comes from: the native PPO samples with a KV cache, so each step runs the
LM on one new token per sequence and the whole batch is one call (``gym.make_vec``); its update
runs one forward pass per *sequence* and scores every token of it at once. SB3's per-step API
hands the policy a fixed-shape observation, so each step re-runs the LM over the whole prefix
(O(T) per step, O(T²) per episode), the ``num_envs`` single environments of a ``DummyVecEnv``
each make their own reference and reward-model calls, and PPO's update runs one forward pass
per *state* (token), recomputing the shared prefix for every token of a response.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from rlhf_gym.agents import tags
from rlhf_gym.agents.ppo import PPO, PPOConfig
from rlhf_gym.agents.sb3 import SB3PPO, SB3PPOConfig


def native_steps_per_second(model: str, num_envs: int, episodes: int, kw: dict) -> float:
    cfg = PPOConfig(
        model=model,
        num_envs=num_envs,
        total_episodes=episodes,
        device="cpu",
        max_new_tokens=kw.pop("max_new_tokens"),
    )
    agent = PPO(cfg, env_kwargs=kw)
    sps: list[float] = []
    agent.train(callback=lambda a, s: sps.append(s[tags.STEPS_PER_SECOND]))
    return statistics.median(sps[1:] or sps)


def sb3_steps_per_second(model: str, num_envs: int, episodes: int, kw: dict) -> float:
    cfg = SB3PPOConfig(
        model=model,
        num_envs=num_envs,
        total_episodes=episodes,
        device="cpu",
        n_steps=kw["max_new_tokens"],
        batch_size=64,
        max_new_tokens=kw.pop("max_new_tokens"),
    )
    agent = SB3PPO(cfg, env_kwargs=kw)
    sps: list[float] = []
    agent.train(callback=lambda a, s: sps.append(s[tags.STEPS_PER_SECOND]))
    return statistics.median(sps[1:] or sps)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="default", help="policy and reference: name or path")
    p.add_argument("--reward-model", default=None, help="default: the task's embedded one")
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--episodes", type=int, default=64, help="per agent (a multiple of num-envs)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    kw = {"max_new_tokens": args.max_new_tokens}
    if args.reward_model:
        kw.update(reward_model=args.reward_model, gold="none")
    start = time.perf_counter()
    native = native_steps_per_second(args.model, args.num_envs, args.episodes, dict(kw))
    sb3 = sb3_steps_per_second(args.model, args.num_envs, args.episodes, dict(kw))
    report = {
        "model": args.model,
        "num_envs": args.num_envs,
        "episodes": args.episodes,
        "max_new_tokens": args.max_new_tokens,
        "native_steps_per_s": native,
        "sb3_steps_per_s": sb3,
        "ratio_native_over_sb3": native / sb3,
        "wall_s": time.perf_counter() - start,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"env steps/s on CPU, {args.model}, {args.num_envs} envs: native PPO {native:.0f}, "
            f"SB3 PPO {sb3:.0f}, ratio native/SB3 {native / sb3:.1f}x"
        )
    return report


if __name__ == "__main__":
    main()
