"""How fast ``rlhf-gym --help`` answers, against importing torch (what it used to pay).

    python benchmarks/cli_startup.py [--runs 7] [--json]

Each command runs ``--runs`` times in a fresh interpreter, interleaved; the medians are
reported with the ratio ``help / import torch`` (below 1: ``--help`` no longer loads torch)
and the absolute median of ``--help`` (the target is under 1 s on our 2-core machines).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python": [sys.executable, "-c", "pass"],
    "import torch": [sys.executable, "-c", "import torch"],
    "rlhf-gym --help": [sys.executable, "-m", "rlhf_gym.cli", "--help"],
    "rlhf-gym compare --help": [sys.executable, "-m", "rlhf_gym.cli", "compare", "--help"],
    "rlhf-gym train --help": [sys.executable, "-m", "rlhf_gym.cli", "train", "--help"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.runs):
        for name, cmd in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    out = {
        "median_s": medians,
        "help_vs_import_torch": medians["rlhf-gym --help"] / medians["import torch"],
        "runs": args.runs,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for name, m in medians.items():
        print(f"{name:<26} median {m:6.3f} s")
    print(f"rlhf-gym --help / import torch: {out['help_vs_import_torch']:.2f}")


if __name__ == "__main__":
    main()
