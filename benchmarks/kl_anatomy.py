"""Where a trained policy's KL from the reference goes: by position, by token, and entropy.

    python benchmarks/kl_anatomy.py --beta 1.0 [--agent ppo:lam=1.0] [--episodes 4096] [--json]
    python benchmarks/kl_anatomy.py --policy runs/<run>/checkpoints/update_000064/policy

Trains the agent on the default task at ``kl_coef=--beta`` (its defaults otherwise, seed 0;
an agent spec as in ``benchmarks/frontier.py``), or loads ``--policy``, then plays
``--eval-episodes`` held-out episodes with it and records at every step the exact KL
``KL(π(·|s) ‖ π_ref(·|s))`` (the environment's ``kl_estimator="full"``), the policy's entropy and
the reference's. Prints the per-sequence KL, the KL per token and its share by response
position, the entropies (a policy that only sharpens the reference spends KL without changing
what it says), the quantiles of the per-token KL and the share the top 5 % of tokens carry
(a heavy tail: a few tokens the reference finds nearly impossible). ``--json`` prints one JSON
object instead. A diagnostic for ``benchmarks/frontier.py``'s question: why an agent ends
below the optimum of its own objective.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from frontier import ENV_ID, PROMPTS, parse_agent  # noqa: E402

BUCKETS = ((0, 1), (1, 4), (4, 8), (8, 16), (16, 10_000))


def entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = logits.float().log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


def anatomy(policy: torch.nn.Module | str, episodes: int, seed: int) -> dict:
    """Play ``episodes`` held-out episodes with ``policy`` (a causal LM or a model directory,
    loaded by the environment's own code); the KL and entropy statistics."""
    from rlhf_gym.agents.episodes import episode_envs, first_episodes
    from rlhf_gym.evaluate import acting_policy

    num_envs = min(64, episodes)
    envs = episode_envs(ENV_ID, num_envs, prompts=PROMPTS, kl_estimator="full")
    acting = acting_policy(envs, policy, 1.0, seed)
    envs.unwrapped.set_policy(acting)
    pos, kl, h_pi, h_ref = [], [], [], []
    entropies: list[tuple[np.ndarray, np.ndarray]] = []

    def act(obs: dict[str, np.ndarray]) -> np.ndarray:
        # both distributions at the state acted in, read before the step moves the env on
        ref = envs.unwrapped.reference_logits
        entropies.append(
            (entropy(acting.action_logits(obs)).cpu().numpy(), entropy(ref).cpu().numpy())
        )
        return acting.act(obs)

    for rep in range(episodes // num_envs):
        for t, step in enumerate(first_episodes(envs, act, seed=seed + rep)):
            pi, ref = entropies.pop()
            h_pi.append(pi[step.rows])
            h_ref.append(ref[step.rows])
            kl.append(np.asarray(step.info["kl"])[step.rows])
            pos.append(np.full(len(step.rows), t))
    envs.close()
    pos_a, kl_a = np.concatenate(pos), np.concatenate(kl)
    hp, hr = np.concatenate(h_pi), np.concatenate(h_ref)
    n_seq = (episodes // num_envs) * num_envs
    by_position = []
    for lo, hi in BUCKETS:
        m = (pos_a >= lo) & (pos_a < hi)
        if m.any():
            by_position.append(
                {
                    "positions": f"{lo}-{min(hi, int(pos_a.max()) + 1) - 1}",
                    "tokens": int(m.sum()),
                    "kl_per_token": float(kl_a[m].mean()),
                    "kl_share": float(kl_a[m].sum() / kl_a.sum()),
                    "entropy_policy": float(hp[m].mean()),
                    "entropy_reference": float(hr[m].mean()),
                }
            )
    top = np.sort(kl_a)[::-1]
    return {
        "sequences": n_seq,
        "tokens_per_sequence": len(kl_a) / n_seq,
        "kl_per_sequence": float(kl_a.sum() / n_seq),
        "entropy_policy": float(hp.mean()),
        "entropy_reference": float(hr.mean()),
        "kl_token_quantiles": {str(q): float(np.quantile(kl_a, q)) for q in (0.5, 0.9, 0.99)},
        "kl_share_top_5pct_tokens": float(top[: max(1, len(top) // 20)].sum() / top.sum()),
        "by_position": by_position,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--policy", help="a trained policy directory (else train --agent)")
    p.add_argument("--agent", default="ppo", help="agent spec, as benchmarks/frontier.py's")
    p.add_argument("--beta", type=float, default=0.05, help="kl_coef of the training run")
    p.add_argument("--episodes", type=int, default=4096, help="training episodes")
    p.add_argument("--eval-episodes", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.policy:
        policy: torch.nn.Module | str = args.policy
        source = {"policy": args.policy}
    else:
        from rlhf_gym.agents import agent_class

        name, overrides = parse_agent(args.agent)
        cls = agent_class(name)
        fields = dict(
            kl_coef=args.beta, total_episodes=args.episodes, seed=args.seed, checkpoint_every=0
        )
        trained = cls(cls.config_class(**{**fields, **overrides}))
        trained.train()
        policy = trained.policy.eval()
        source = {"agent": args.agent, "beta": args.beta, "episodes": args.episodes}
    try:
        report = {**source, **anatomy(policy, args.eval_episodes, 10_000 + args.seed)}
    except (FileNotFoundError, ValueError) as e:  # a bad --policy: the loader's own message
        p.error(str(e))
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"KL {report['kl_per_sequence']:.3f} nats/sequence over "
            f"{report['tokens_per_sequence']:.1f} tokens; entropy policy "
            f"{report['entropy_policy']:.3f}, reference {report['entropy_reference']:.3f}"
        )
        print(
            f"{'positions':>10} {'tokens':>7} {'KL/token':>9} {'share':>6} "
            f"{'H(π)':>6} {'H(ref)':>7}"
        )
        for b in report["by_position"]:
            print(
                f"{b['positions']:>10} {b['tokens']:>7} {b['kl_per_token']:>9.4f} "
                f"{b['kl_share']:>6.2f} {b['entropy_policy']:>6.3f} {b['entropy_reference']:>7.3f}"
            )
        q = report["kl_token_quantiles"]
        print(
            f"per-token KL quantiles 50/90/99 %: {q['0.5']:.4f} / {q['0.9']:.4f} / {q['0.99']:.4f};"
            f" the top 5 % of tokens carry {report['kl_share_top_5pct_tokens']:.0%} of the KL"
        )
    return report


if __name__ == "__main__":
    main()
