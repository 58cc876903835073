"""The ``rlhf-gym`` command: ``train``, ``eval``, ``compare`` and ``build-default``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys


def _eval(args: argparse.Namespace) -> int:

    import rlhf_gym  # noqa: F401
    from rlhf_gym.agents.common import heldout_prompts
    from rlhf_gym.evaluate import best_of_n, evaluate

    heldout = heldout_prompts(args.env)  # None for the toy, which fixes prompts and device
    kwargs = {"device": args.device} if heldout is not None else {}
    if args.prompts is not None:
        kwargs["prompts"] = args.prompts
    elif heldout is not None:
        kwargs["prompts"] = args.prompts = heldout
    result = evaluate(
        args.env,
        policy=args.policy,
        episodes=args.episodes,
        seed=args.seed,
        num_envs=args.num_envs,
        **kwargs,
    )
    summary = result.summary()
    ns = [int(n) for n in args.best_of.split(",")] if args.best_of else []
    bon = best_of_n(args.env, ns=ns, seed=args.seed, **kwargs) if ns else {}
    if args.json:
        print(
            json.dumps(
                {
                    **summary,
                    "samples": result.samples,
                    "best_of_n": {str(n): v for n, v in bon.items()},
                }
            )
        )
        return 0
    who = args.policy or "the reference model"
    print(
        f"{args.env}, {who}, {summary['episodes']} episodes on prompts {args.prompts!r}, "
        f"seed {args.seed}"
    )
    for name in ("score", "gold_score", "kl", "response_length"):
        if name in summary:
            s = summary[name]
            print(f"  {name:<16} mean {s['mean']:+.3f}   std {s['std']:.3f}")
    if bon:
        print("best-of-n from the reference (per prompt, the reward model's favourite of n):")
        print(f"  {'n':>3} {'score':>8} {'gold':>8} {'KL bound':>9}")
        for n, v in bon.items():
            gold = f"{v['gold_score']:+8.3f}" if v["gold_score"] is not None else f"{'-':>8}"
            print(f"  {n:>3} {v['score']:+8.3f} {gold} {v['kl']:9.3f}")
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
    train(
        args.agent,
        config_cls(**values),
        logdir=args.logdir,
        resume=args.resume,
        eval_episodes=args.eval_episodes,
    )
    return 0


def _compare(args: argparse.Namespace) -> int:
    from rlhf_gym.compare import CompareConfig, compare

    cc = CompareConfig(
        agents=tuple(a.strip() for a in args.agents.split(",") if a.strip()),
        seeds=args.seeds,
        env_id=args.env,
        total_episodes=args.total_episodes,
        num_envs=args.num_envs,
        eval_episodes=args.eval_episodes,
        best_of=_int_list(args.best_of, "--best-of"),
        out=args.out,
        model=args.model,
        device=args.device,
    )
    result = compare(cc, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(result["table"], end="")
    for name, path in result["paths"].items():
        print(f"{name:<12} {path}")
    return 0


def _int_list(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"{flag} expects comma-separated integers, got {text!r}") from None


def _chosen_agent(argv: list[str] | None) -> str:
    """``train --agent NAME`` decides which config's options the parser offers."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--agent", default="ppo")
    known, _ = pre.parse_known_args(sys.argv[1:] if argv is None else argv)
    return known.agent


def _add_config_options(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """One ``--flag`` per config field: its type, default and help come from the dataclass."""
    group = parser.add_argument_group(f"{config_cls.__name__} (agent options)")
    for f in dataclasses.fields(config_cls):
        if f.name in ("env_id",) or f.name in {a.dest for a in parser._actions}:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = {"int": int, "float": float, "str": str, "bool": _bool}[str(f.type)]
        group.add_argument(
            flag,
            type=kind,
            default=None,
            help=f"{f.metadata.get('help', '')} (default: {f.default})",
        )


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _build_default(args: argparse.Namespace) -> int:
    from rlhf_gym import build_default

    return build_default.main(args.rest)


def build_parser(agent: str = "ppo") -> argparse.ArgumentParser:
    """The parser; ``train`` offers the options of ``agent``'s config (``ppo`` if unknown)."""
    parser = argparse.ArgumentParser(prog="rlhf-gym", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("eval", help="score, gold score and KL of a policy on held-out prompts")
    ev.add_argument("--env", default="RLHF-v0", help="a registered environment id")
    ev.add_argument("--policy", default=None, help="policy model directory (default: reference)")
    ev.add_argument(
        "--prompts", default=None, help="prompt set name or file (default: the task's held-out set)"
    )
    ev.add_argument("--episodes", type=int, default=256)
    ev.add_argument("--num-envs", type=int, default=32)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--device", default="auto")
    ev.add_argument(
        "--best-of",
        default="1,2,4,8,16",
        help="best-of-n baseline sizes, comma-separated ('' to skip)",
    )
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.set_defaults(func=_eval)
    from rlhf_gym.compare import CompareConfig
    from rlhf_gym.train import AGENTS

    tr = sub.add_parser("train", help="train an agent (default: PPO on RLHF-v0)")
    tr.add_argument(
        "--agent",
        default="ppo",
        help=f"agent name: {', '.join(sorted(AGENTS))} (the options below are this "
        "agent's: see `rlhf-gym train --agent NAME --help`)",
    )
    tr.add_argument("--env", default="RLHF-v0", help="a registered environment id")
    tr.add_argument("--seed", type=int, default=None, help="seed (default: 0)")
    tr.add_argument("--logdir", default="runs", help="TensorBoard runs and checkpoints go here")
    tr.add_argument("--resume", default=None, help="checkpoint, checkpoints/ or run directory")
    tr.add_argument(
        "--eval-episodes",
        type=int,
        default=128,
        help="held-out episodes for the before/after summary",
    )
    _add_config_options(tr, AGENTS.get(agent, AGENTS["ppo"])[1])
    tr.set_defaults(func=_train)
    cc = CompareConfig
    cp = sub.add_parser(
        "compare",
        help="train several agents with the same env, budget and seeds; write a figure and a table",
    )
    cp.add_argument(
        "--agents",
        default=",".join(cc.agents),
        help=f"comma-separated agent names among {', '.join(sorted(AGENTS))} "
        f"(default: {','.join(cc.agents)})",
    )
    cp.add_argument("--seeds", type=int, default=cc.seeds, help="runs per agent, seeds 0..N-1")
    cp.add_argument("--env", default=cc.env_id, help="a registered environment id")
    cp.add_argument(
        "--total-episodes",
        type=int,
        default=cc.total_episodes,
        help="episodes per run (the budget, a multiple of --num-envs)",
    )
    cp.add_argument(
        "--num-envs", type=int, default=cc.num_envs, help="episodes per rollout, for every agent"
    )
    cp.add_argument(
        "--eval-episodes",
        type=int,
        default=cc.eval_episodes,
        help="held-out episodes for each final evaluation",
    )
    cp.add_argument(
        "--best-of",
        default=",".join(map(str, cc.best_of)),
        help="n of the best-of-n reference points",
    )
    cp.add_argument("--model", default=cc.model, help="policy initialisation and reference")
    cp.add_argument("--device", default=cc.device)
    cp.add_argument("--out", default=str(cc.out), help="output directory")
    cp.set_defaults(func=_compare)
    bd = sub.add_parser("build-default", help="rebuild the embedded default models", add_help=False)
    bd.add_argument("rest", nargs=argparse.REMAINDER)
    bd.set_defaults(func=_build_default)
    return parser


def _set_threads() -> None:
    """One intra-op thread unless ``RLHF_GYM_TORCH_THREADS`` or ``OMP_NUM_THREADS`` says more.

    The embedded models are tiny (matrices of 64 × 128): splitting them over threads costs more
    than it saves, and on a busy machine OpenMP threads spin-waiting for a core another process
    holds made `rlhf-gym eval` 10-20 times slower (measured on a shared 2-core machine). Large
    models on CPU: set RLHF_GYM_TORCH_THREADS to the number of cores.
    """
    import os

    import torch

    threads = os.environ.get("RLHF_GYM_TORCH_THREADS") or os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(int(threads) if threads else 1)


def main(argv: list[str] | None = None) -> int:
    args = build_parser(_chosen_agent(argv)).parse_args(argv)
    _set_threads()
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        print(f"rlhf-gym {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
