"""Builds the teaching notebooks: each ``NN_name.py`` (jupytext percent format, the source of
truth, readable in a diff) becomes ``NN_name.ipynb``, executed top to bottom with its outputs.

    python notebooks/build.py                  # every notebook, full budgets: the committed outputs
    python notebooks/build.py 03               # only the notebooks whose name starts with "03"
    python notebooks/build.py --smoke          # RLHF_GYM_SMOKE=1: small budgets, same code path
    python notebooks/build.py --check          # execute in smoke mode into a temporary folder only

Execution is nbclient's (the library under ``jupyter nbconvert --execute`` and papermill): it
runs a notebook in a real Jupyter kernel exactly as a learner's "Run all" does, with no
parameter-injection cell to explain, and fails on the first cell that raises. The working
directory of every notebook is ``notebooks/``; each prints nothing it does not explain.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CELL_TIMEOUT_S = 900


def sources(prefixes: list[str]) -> list[Path]:
    """The notebooks' sources (``NN_*.py``), those starting with one of ``prefixes`` if any."""
    found = sorted(p for p in HERE.glob("[0-9][0-9]_*.py"))
    if prefixes:
        found = [p for p in found if any(p.stem.startswith(x) for x in prefixes)]
    if not found:
        raise SystemExit(f"no notebook source matches {prefixes} in {HERE}")
    return found


def execute(source: Path, out: Path, smoke: bool) -> float:
    """Converts ``source`` to a notebook, executes it, writes ``out``; returns the seconds."""
    import jupytext
    from nbclient import NotebookClient

    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    env_before = os.environ.get("RLHF_GYM_SMOKE")
    os.environ["RLHF_GYM_SMOKE"] = "1" if smoke else "0"
    started = time.perf_counter()
    try:
        NotebookClient(
            nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}
        ).execute()
    finally:
        if env_before is None:
            os.environ.pop("RLHF_GYM_SMOKE", None)
        else:
            os.environ["RLHF_GYM_SMOKE"] = env_before
    seconds = time.perf_counter() - started
    jupytext.write(nb, out, fmt="ipynb")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("prefixes", nargs="*", help="only notebooks whose name starts so")
    parser.add_argument("--smoke", action="store_true", help="RLHF_GYM_SMOKE=1 budgets")
    parser.add_argument("--check", action="store_true", help="smoke run into a temporary folder")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="rlhf-gym-notebooks-")) if args.check else None
    for source in sources(args.prefixes):
        out = (tmp or HERE) / f"{source.stem}.ipynb"
        seconds = execute(source, out, smoke=args.smoke or args.check)
        print(f"{source.name}: executed in {seconds:.0f} s -> {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
