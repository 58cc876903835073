"""The ``rlhf-gym`` command: ``eval`` and ``build-default``."""

from __future__ import annotations

import argparse
import json
import sys


def _eval(args: argparse.Namespace) -> int:
    from rlhf_gym.evaluate import evaluate

    import gymnasium as gym

    import rlhf_gym  # noqa: F401

    kwargs = {"device": args.device}
    spec = gym.spec(args.env)
    if args.prompts is not None:
        kwargs["prompts"] = args.prompts
    elif spec.entry_point == "rlhf_gym.envs.rlhf_env:RLHFEnv":  # held-out prompts of its task
        kwargs["prompts"] = args.prompts = f"{spec.kwargs.get('task', 'sentiment')}-eval"
    result = evaluate(args.env, policy=args.policy, episodes=args.episodes, seed=args.seed,
                      num_envs=args.num_envs, **kwargs)
    summary = result.summary()
    if args.json:
        print(json.dumps({**summary, "samples": result.samples}))
        return 0
    who = args.policy or "the reference model"
    print(f"{args.env}, {who}, {summary['episodes']} episodes on prompts {args.prompts!r}, "
          f"seed {args.seed}")
    for name in ("score", "gold_score", "kl", "response_length"):
        if name in summary:
            s = summary[name]
            print(f"  {name:<16} mean {s['mean']:+.3f}   std {s['std']:.3f}")
    print("samples:")
    for prompt, response, score in result.samples:
        print(f"  [{score:+.2f}] {prompt}|{response}")
    return 0


def _build_default(args: argparse.Namespace) -> int:
    from rlhf_gym import build_default

    return build_default.main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlhf-gym", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("eval", help="score, gold score and KL of a policy on held-out prompts")
    ev.add_argument("--env", default="RLHF-v0", help="a registered environment id")
    ev.add_argument("--policy", default=None, help="policy model directory (default: reference)")
    ev.add_argument("--prompts", default=None,
                    help="prompt set name or file (default: the task's held-out set)")
    ev.add_argument("--episodes", type=int, default=256)
    ev.add_argument("--num-envs", type=int, default=32)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--device", default="auto")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.set_defaults(func=_eval)
    bd = sub.add_parser("build-default", help="rebuild the embedded default models",
                        add_help=False)
    bd.add_argument("rest", nargs=argparse.REMAINDER)
    bd.set_defaults(func=_build_default)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        print(f"rlhf-gym {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
