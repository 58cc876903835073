"""The ``rlhf-gym`` command: train, eval, compare, reward, label, cai, sft and build-default.

This module only dispatches. Each command's options are generated from its dataclasses (the
agent's config and :class:`~rlhf_gym.train.RunOptions`, :class:`~rlhf_gym.evaluate.EvalConfig`,
:class:`~rlhf_gym.compare.CompareConfig`): a field with help text becomes ``--field-name``
(``env_id`` becomes ``--env``), so each default and its help are written once. Imports are
lazy: only the chosen command's module is imported, so ``rlhf-gym --help`` loads no torch.

Errors: a user error (a bad option value, a missing or corrupt file, a full disk …) is one line,
``rlhf-gym COMMAND: error: MESSAGE``, and exit status 2; anything else is a bug and keeps its
traceback. ``rlhf-gym --debug COMMAND …`` or ``RLHF_GYM_DEBUG=1`` show the traceback of a user
error too (for bug reports).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


class UserError(ValueError):
    """A mistake in what the user asked for (an option value, a file): ``main`` prints its
    message on one line and exits with 2, without a traceback (unless ``--debug``)."""


USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)
"""What ``main`` reports as a user error: ``ValueError`` (``UserError`` included) for bad
values, ``OSError`` (``FileNotFoundError``, ``PermissionError``, a full disk …) for paths."""

DEBUG_ENV = "RLHF_GYM_DEBUG"


def check_output_path(path: str | Path, option: str, kind: str = "file") -> None:
    """Raise a ``UserError`` naming ``option`` if ``path`` cannot be written as a ``kind``
    (``"file"`` or ``"directory"``): it (or a parent) is a file where a directory is needed, it
    is a directory where a file is needed, or its nearest existing parent is not writable. The
    check is done before any work, so that a typo fails in a second rather than after training.
    """
    p = Path(path).expanduser()
    if kind == "directory" and p.exists() and not p.is_dir():
        raise UserError(f"{option} {str(path)!r} is a file; expected a directory")
    if kind == "file" and p.is_dir():
        raise UserError(f"{option} {str(path)!r} is a directory; expected a file name")
    parent = p if kind == "directory" else p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise UserError(f"{option} {str(path)!r}: {str(parent)!r} is a file, not a directory")
    if p.exists() and kind == "file":
        if not os.access(p, os.W_OK):
            raise UserError(f"{option} {str(path)!r}: permission denied (cannot write the file)")
    elif p.exists():
        if not os.access(p, os.W_OK | os.X_OK):
            raise UserError(f"{option} {str(path)!r}: permission denied (cannot write in it)")
    elif not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(
            f"{option} {str(path)!r}: permission denied (cannot create it in {str(parent)!r})"
        )


def error_message(e: BaseException) -> str:
    """The one-line message of a user error: an ``OSError`` as ``reason: 'path'`` (without
    ``[Errno N]``), anything else as its text."""
    if isinstance(e, OSError) and e.strerror:
        paths = [repr(str(f)) for f in (e.filename, e.filename2) if f is not None]
        return e.strerror + (": " + " -> ".join(paths) if paths else "")
    return str(e).strip() or type(e).__name__


# field type (as written in the dataclass) -> argparse type; tuples are parsed after argparse
_TYPES: dict[str, Callable[[str], Any]] = {
    "int": int,
    "float": float,
    "str": str,
    "str | None": str,
    "int | None": int,
    "float | None": float,
    "str | Path": str,
    "tuple[int, ...]": str,
    "tuple[str, ...]": str,
}


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


_TYPES["bool"] = _bool


def _flag(name: str) -> str:
    return "--env" if name == "env_id" else "--" + name.replace("_", "-")


def _options(config_cls: type) -> list[dataclasses.Field]:
    """The fields of ``config_cls`` that are command-line options (those with help text)."""
    return [f for f in dataclasses.fields(config_cls) if "help" in f.metadata]


def add_options(parser: argparse.ArgumentParser, config_cls: type, title: str) -> None:
    """One ``--flag`` per option field of ``config_cls``: type, default and help from it."""
    group = parser.add_argument_group(title)
    for f in _options(config_cls):
        if str(f.type) not in _TYPES:
            raise TypeError(f"{config_cls.__name__}.{f.name}: no option type for {f.type!r}")
        default = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
        flag = _flag(f.name)
        group.add_argument(
            flag,
            dest=f.name,
            metavar=flag[2:].upper().replace("-", "_"),
            type=_TYPES[str(f.type)],
            default=None,  # unset options keep the dataclass default
            # argparse %-formats help texts: "5% warm-up" must reach it as "5%% warm-up"
            help=(
                f.metadata["help"] + ("" if default is None else f" (default: {default})")
            ).replace("%", "%%"),
        )


def from_args(config_cls: type, args: argparse.Namespace) -> Any:
    """``config_cls`` built from the options given; comma-separated lists become tuples."""
    values: dict[str, Any] = {}
    for f in _options(config_cls):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        if str(f.type) == "tuple[int, ...]":
            value = _split(value, int, _flag(f.name), "integers")
        elif str(f.type) == "tuple[str, ...]":
            value = _split(value, str, _flag(f.name), "names")
        values[f.name] = value
    return config_cls(**values)


def _split(text: str, kind: type, flag: str, what: str) -> tuple:
    try:
        return tuple(kind(x.strip()) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"{flag} expects comma-separated {what}, got {text!r}") from None


# ---------------------------------------------------------------------- the commands
def _add_train(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    from rlhf_gym.agents import AGENTS, config_class
    from rlhf_gym.train import RunOptions

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--agent", default="ppo")
    agent = pre.parse_known_args(argv)[0].agent  # its config decides the options offered
    parser.add_argument(
        "--agent",
        default="ppo",
        help=f"agent name: {', '.join(sorted(AGENTS))} (the options below are this "
        "agent's: see `rlhf-gym train --agent NAME --help`)",
    )
    add_options(parser, RunOptions, "run")
    config_cls = config_class(agent if agent in AGENTS else "ppo")
    add_options(parser, config_cls, f"{config_cls.__name__} (agent options)")


def _train(args: argparse.Namespace) -> int:
    from rlhf_gym.agents import config_class
    from rlhf_gym.train import RunOptions, train

    run = from_args(RunOptions, args)
    cfg = from_args(config_class(args.agent), args)
    train(
        args.agent,
        cfg,
        logdir=run.logdir,
        resume=run.resume,
        eval_episodes=run.eval_episodes,
        allow_pickle=run.allow_pickle,
    )
    return 0


def _add_eval(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    from rlhf_gym.evaluate import EvalConfig

    add_options(parser, EvalConfig, "evaluation")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _eval(args: argparse.Namespace) -> int:
    from rlhf_gym.evaluate import EvalConfig, report, run

    cfg = from_args(EvalConfig, args)
    out = run(cfg)
    print(json.dumps(out) if args.json else report(cfg, out))
    return 0


def _add_compare(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    from rlhf_gym.compare import CompareConfig

    add_options(parser, CompareConfig, "comparison")


def _compare(args: argparse.Namespace) -> int:
    from rlhf_gym.compare import CompareConfig, compare

    cc = from_args(CompareConfig, args)
    result = compare(cc, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(result["table"], end="")
    for name, path in result["paths"].items():
        print(f"{name:<12} {path}")
    return 0


def _add_merge(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    parser.add_argument("adapter", help="a LoRA checkpoint's policy/ directory (an adapter)")
    parser.add_argument("out", help="where to write the merged, standalone model")


def _merge(args: argparse.Namespace) -> int:
    from rlhf_gym.agents.lora import merge_adapter

    check_output_path(args.out, "out", "directory")
    print(merge_adapter(args.adapter, args.out))
    return 0


def _add_build_default(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    # `main` hands everything after "build-default" to build.main (its own parser and --help)
    parser.add_argument("rest", nargs=argparse.REMAINDER)


def _build_default(args: argparse.Namespace) -> int:
    from rlhf_gym.embedded import build

    return build.main(args.rest)


def _add_reward(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    from rlhf_gym.feedback import cli

    cli.add_reward_options(parser, argv)


def _reward(args: argparse.Namespace) -> int:
    from rlhf_gym.feedback import cli

    return cli.run_reward(args)


def _add_label(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    from rlhf_gym.feedback.label import cli

    cli.add_options(parser, argv)


def _label(args: argparse.Namespace) -> int:
    from rlhf_gym.feedback.label import cli

    return cli.run(args)


def _add_cai(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    from rlhf_gym.cai import cli

    cli.add_cai_options(parser, argv)


def _cai(args: argparse.Namespace) -> int:
    from rlhf_gym.cai import cli

    return cli.run_cai(args)


def _add_sft(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    from rlhf_gym import sft

    sft.add_options(parser, argv)


def _sft(args: argparse.Namespace) -> int:
    from rlhf_gym import sft

    return sft.run(args)


Setup = Callable[[argparse.ArgumentParser, list[str]], None]
COMMANDS: dict[str, tuple[str, Setup, Callable[[argparse.Namespace], int]]] = {
    "train": ("train an agent (default: PPO on RLHF-v0)", _add_train, _train),
    "eval": ("score, gold score and KL of a policy on held-out prompts", _add_eval, _eval),
    "compare": (
        "train several agents with the same env, budget and seeds; write a figure and a table",
        _add_compare,
        _compare,
    ),
    "reward": (
        "preference data and reward models: simulate labels, train, evaluate",
        _add_reward,
        _reward,
    ),
    "cai": (
        "Constitutional AI: critique and revise replies (revise), AI preference labels (label)",
        _add_cai,
        _cai,
    ),
    "sft": (
        "supervised fine-tuning on (prompt, response) pairs, e.g. cai revise's output",
        _add_sft,
        _sft,
    ),
    "label": ("the labeling page: compare pairs of responses in a browser", _add_label, _label),
    "merge": (
        "fold a LoRA checkpoint's adapter into its base model (a standalone model directory)",
        _add_merge,
        _merge,
    ),
    "build-default": ("rebuild the embedded default models", _add_build_default, _build_default),
}
"""name → (help, add its options to a parser, run it)."""


def _chosen(argv: list[str]) -> int | None:
    """The index of the command in ``argv`` (the first argument that is not an option)."""
    return next((i for i, a in enumerate(argv) if not a.startswith("-")), None)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the command named in ``argv`` gets its options (and its imports)."""
    argv = sys.argv[1:] if argv is None else argv
    index = _chosen(argv)
    chosen = None if index is None else argv[index]
    parser = argparse.ArgumentParser(
        prog="rlhf-gym",
        description="RLHF as an ordinary Gymnasium problem: train, evaluate "
        "and compare agents on the RLHF environments.",
        epilog="A user error (a bad option, a missing or corrupt file, a full disk) prints one "
        "line and exits with 2; --debug or RLHF_GYM_DEBUG=1 show its traceback too.",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the full traceback of a user error too, for bug reports (also: {DEBUG_ENV}=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add, run) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, add_help=name != "build-default")
        cmd.set_defaults(func=run)
        if name == chosen:
            add(cmd, argv)
    return parser


def _quiet_libraries() -> None:
    """One progress bar (ours) and the results: no "Loading weights" / "Writing model shards"
    bars from transformers or the hub at every model load and checkpoint."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    disable_progress_bars()


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
    """Run ``rlhf-gym`` with ``argv`` (default: ``sys.argv[1:]``); the exit status.

    User errors print one line on stderr, ``rlhf-gym COMMAND: error: MESSAGE``, and give 2:
    ``ValueError`` (:class:`UserError` included: bad option values, corrupt files) and
    ``OSError`` (``FileNotFoundError``, ``PermissionError``, a full disk …). Any other exception
    is a bug and propagates with its traceback. ``--debug`` (``rlhf-gym --debug train …``) or
    the environment variable ``RLHF_GYM_DEBUG=1`` print the full traceback of a user error too
    (still exit status 2), for bug reports.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    index = _chosen(argv)
    rest = None
    if index is not None and argv[index] == "build-default":  # its options are build.py's own
        argv, rest = argv[: index + 1], argv[index + 1 :]
    args = build_parser(argv).parse_args(argv)
    if rest is not None:
        args.rest = rest
    debug = args.debug or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false")
    _set_threads()
    _quiet_libraries()
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        if debug:
            import traceback

            traceback.print_exc(file=sys.stderr)
        print(f"rlhf-gym {args.command}: error: {error_message(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
