"""``rlhf-gym cai revise | label``: the two data-making stages of Constitutional AI.

::

    rlhf-gym cai revise --out revisions.jsonl [--num-prompts N] [--rounds R] [--model M]
                        [--constitution FILE]
    rlhf-gym sft --data revisions.jsonl --out SL_CAI_DIR                 # rlhf_gym.sft
    rlhf-gym cai label --policy SL_CAI_DIR --out prefs.jsonl [--num-pairs N] [--constitution FILE]
    rlhf-gym reward train --data prefs.jsonl --out RM_DIR --task helpful_harmless
    rlhf-gym train --env RLHFHelpfulHarmless-v0 --model SL_CAI_DIR --reward-model RM_DIR

``docs/cai.md`` walks through it.
"""

from __future__ import annotations

import argparse
import json
import sys

from rlhf_gym.cli import add_options, from_args

SUBCOMMANDS = {
    "revise": (
        "sample replies, critique and revise them under the constitution (SL-CAI data)",
        "rlhf_gym.cai.revise:ReviseConfig",
    ),
    "label": (
        "AI preference labels: a feedback model answers (A) or (B) (RL-CAI data)",
        "rlhf_gym.cai.label:AILabelConfig",
    ),
}


def _config_class(name: str) -> type:
    import importlib

    module, cls = SUBCOMMANDS[name][1].split(":")
    return getattr(importlib.import_module(module), cls)


def add_cai_options(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Adds the ``revise`` and ``label`` subcommands (their modules load no torch)."""
    sub = parser.add_subparsers(dest="cai_command", required=True, metavar="COMMAND")
    for name, (help_text, _) in SUBCOMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        add_options(cmd, _config_class(name), name)
        cmd.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def run_cai(args: argparse.Namespace) -> int:
    """Runs the chosen ``rlhf-gym cai`` subcommand; the exit status."""
    cfg = from_args(_config_class(args.cai_command), args)
    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    if args.cai_command == "revise":
        from rlhf_gym.cai.revise import revise

        summary = revise(cfg, log=log)
    else:
        from rlhf_gym.cai.label import label

        summary = label(cfg, log=log)
    if args.json:
        print(json.dumps(summary))
    return 0
