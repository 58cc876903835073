"""The ``rlhf-gym`` command: ``train``, ``eval`` and ``build-default``."""

from __future__ import annotations

import argparse
import dataclasses
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


def _train(args: argparse.Namespace) -> int:
    from rlhf_gym.train import AGENTS, train

    if args.agent not in AGENTS:
        raise ValueError(f"--agent {args.agent!r} is not one of {sorted(AGENTS)}")
    _, config_cls = AGENTS[args.agent]
    names = {f.name for f in dataclasses.fields(config_cls)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    values["env_id"] = args.env
    train(args.agent, config_cls(**values), logdir=args.logdir, resume=args.resume,
          eval_episodes=args.eval_episodes)
    return 0


def _add_config_options(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """One ``--flag`` per config field: its type, default and help come from the dataclass."""
    group = parser.add_argument_group(f"{config_cls.__name__} (agent options)")
    for f in dataclasses.fields(config_cls):
        if f.name in ("env_id",) or f.name in {a.dest for a in parser._actions}:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = {"int": int, "float": float, "str": str, "bool": _bool}[str(f.type)]
        group.add_argument(flag, type=kind, default=None,
                           help=f"{f.metadata.get('help', '')} (default: {f.default})")


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


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
    from rlhf_gym.agents.ppo import PPOConfig

    tr = sub.add_parser("train", help="train an agent (default: PPO on RLHF-v0)")
    tr.add_argument("--agent", default="ppo", help="agent name (ppo)")
    tr.add_argument("--env", default="RLHF-v0", help="a registered environment id")
    tr.add_argument("--seed", type=int, default=None, help="seed (default: 0)")
    tr.add_argument("--logdir", default="runs", help="TensorBoard runs and checkpoints go here")
    tr.add_argument("--resume", default=None, help="checkpoint, checkpoints/ or run directory")
    tr.add_argument("--eval-episodes", type=int, default=128,
                    help="held-out episodes for the before/after summary")
    _add_config_options(tr, PPOConfig)
    tr.set_defaults(func=_train)
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
