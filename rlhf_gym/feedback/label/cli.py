"""``rlhf-gym label``: serve the labeling page, or export its judgments.

::

    rlhf-gym label [--data pairs.jsonl | --policy DIR] [--task T] [--db FILE] [--port N]
    rlhf-gym label --db FILE --export prefs.jsonl [--ties drop|keep]

The first form fills a new ``--db`` once (from ``--data``, or ``--pairs`` pairs sampled from
``--policy`` or the task's reference) and serves the page; with an existing ``--db`` it serves
the pairs stored there (``--data``/``--policy`` may be left out, and are never read again). The
second form writes the judgments as preference JSONL and starts no server. Options come from
:class:`LabelConfig` (``rlhf_gym/cli.py`` generates them); ``--allow-remote`` is a plain flag.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from rlhf_gym.agents.config import config_field as _f
from rlhf_gym.feedback.label.store import TIES, LabelStore, export
from rlhf_gym.feedback.records import json_lines
from rlhf_gym.feedback.simulate import TASK_ENVS, sample_pairs

Triple = tuple[str, str, str]


@dataclass
class LabelConfig:
    """``rlhf-gym label`` (its options are generated from these fields)."""

    data: str | None = _f(
        None,
        "JSONL of pairs to label: our preference format (its labels are ignored) or "
        "prompt/response_a/response_b records",
    )
    policy: str | None = _f(
        None, "model directory to sample pairs from (default: the task's reference model)"
    )
    task: str = _f(
        "sentiment", f"task whose prompts (and reference) to sample: {', '.join(TASK_ENVS)}"
    )
    pairs: int = _f(100, "pairs to sample from the policy, once, when --db is created")
    db: str = _f("labels.db", "SQLite file of the pairs and judgments, created if missing")
    host: str = _f("127.0.0.1", "address to serve on; a non-loopback one needs --allow-remote")
    port: int = _f(8765, "port to serve on, 0 for any free port")
    seed: int = _f(0, "seed of the sampling and of each pair's left/right order")
    device: str = _f("cpu", "where the policy samples: auto, cpu, cuda, cuda:N or mps")
    export: str | None = _f(None, "write the judgments of --db to this preference JSONL and exit")
    ties: str = _f(
        "drop", "--export: drop pairs whose mean vote is exactly 0.5, or keep them as p_a = 0.5"
    )

    def __post_init__(self) -> None:
        if self.data is not None and self.policy is not None:
            raise ValueError("give --data or --policy, not both")
        if self.export is not None and (self.data is not None or self.policy is not None):
            raise ValueError("--export reads --db only: leave out --data and --policy")
        if self.ties not in TIES:
            raise ValueError(f"--ties must be one of {', '.join(TIES)}; got {self.ties!r}")
        if self.pairs < 1:
            raise ValueError(f"--pairs must be >= 1; got {self.pairs}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be in 0..65535; got {self.port}")
        if self.task not in TASK_ENVS:
            raise ValueError(f"--task must be one of {', '.join(TASK_ENVS)}; got {self.task!r}")


def add_options(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """The options of ``rlhf-gym label`` (``argv`` is unused: the options never vary)."""
    from rlhf_gym.cli import add_options as add_config_options

    add_config_options(parser, LabelConfig, "labeling")
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host (anyone who can reach it can read and label)",
    )


def run(args: argparse.Namespace) -> int:
    """Export (``--export``) or serve; the exit status."""
    from rlhf_gym.cli import check_output_path, from_args

    cfg: LabelConfig = from_args(LabelConfig, args)
    if cfg.export is not None:
        if not Path(cfg.db).is_file():
            raise FileNotFoundError(f"--db {cfg.db!r} does not exist: nothing to export")
        check_output_path(cfg.export, "--export", "file")
        store = LabelStore(cfg.db)
        try:
            print(export(store, cfg.export, cfg.ties).summary())
        finally:
            store.close()
        return 0
    if not _is_loopback(cfg.host) and not args.allow_remote:
        raise ValueError(
            f"--host {cfg.host!r} is not a loopback address: anyone who can reach it could read "
            "the pairs and post judgments; add --allow-remote to serve it anyway"
        )
    check_output_path(cfg.db, "--db", "file")
    store = open_store(cfg)
    try:
        serve(store, cfg.host, cfg.port)
    finally:
        store.close()
    return 0


def open_store(cfg: LabelConfig) -> LabelStore:
    """``cfg.db``, filled with its pairs if it holds none yet (a restart reuses them)."""
    source = _source(cfg)
    if Path(cfg.db).is_file():
        store = LabelStore(cfg.db)
        if (total := store.total()) > 0:
            stored = store.meta("source")
            if source is not None and source != stored:
                store.close()
                raise ValueError(
                    f"--db {cfg.db!r} already holds {total} pairs from {stored}, not from "
                    f"{source}: use another --db to label other pairs"
                )
            print(f"{cfg.db}: {total} pairs from {stored}; continuing", flush=True)
            return store
        store.close()
    if cfg.data is not None:
        pairs, note = read_pairs(cfg.data)
    else:
        what = cfg.policy or f"the {cfg.task} reference model"
        print(f"sampling {cfg.pairs} pairs from {what} (once: they are kept in {cfg.db})")
        pairs = sample_pairs(
            cfg.pairs, task=cfg.task, policy=cfg.policy, seed=cfg.seed, device=cfg.device
        )
        note = f"{len(pairs)} pairs sampled"
    store = LabelStore(cfg.db)
    store.add_pairs(pairs, source=source or f"reference:{cfg.task}", seed=cfg.seed)
    print(f"{cfg.db}: {note}", flush=True)
    return store


def _source(cfg: LabelConfig) -> str | None:
    """Where ``cfg`` asks the pairs to come from (``None``: whatever ``--db`` holds)."""
    if cfg.data is not None:
        return f"data:{Path(cfg.data).resolve()}"
    if cfg.policy is not None:
        path = Path(cfg.policy)
        return f"policy:{path.resolve() if path.exists() else cfg.policy}:{cfg.task}"
    return None


def read_pairs(path: str | Path) -> tuple[list[Triple], str]:
    """``(prompt, response_a, response_b)`` of every usable record of ``path``, and a summary.

    Reads our preference format and the others :func:`~rlhf_gym.feedback.records.read_preferences`
    knows (labels are ignored), and files of unlabeled ``{"prompt", "response_a",
    "response_b"}`` records (decided from the first record). Empty, identical and duplicate
    pairs are dropped and counted.
    """
    from rlhf_gym.feedback.records import read_preferences

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--data {str(path)!r} does not exist")
    rows = list(json_lines(path))
    first = rows[0][1] if rows else {}
    if "response_a" not in first or "p_a" in first:
        data = read_preferences(path)
        return [(r.prompt, r.response_a, r.response_b) for r in data.records], data.report.summary()
    pairs: list[Triple] = []
    seen: set[tuple[str, frozenset[str]]] = set()
    for lineno, row in rows:
        texts = [row.get(k) for k in ("prompt", "response_a", "response_b")]
        if not all(isinstance(t, str) for t in texts):
            raise ValueError(
                f"{path}:{lineno}: expected string fields prompt, response_a and response_b "
                f"(the record has {sorted(row)})"
            )
        prompt, a, b = texts
        key = (prompt, frozenset((a, b)))
        if a.strip() and b.strip() and a != b and key not in seen:
            seen.add(key)
            pairs.append((prompt, a, b))
    if not pairs:
        raise ValueError(f"--data {str(path)!r}: no usable pairs")
    dropped = len(rows) - len(pairs)
    return pairs, f"{path}: {len(pairs)} pairs from {len(rows)} lines ({dropped} dropped)"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(store: LabelStore, host: str, port: int) -> None:
    """Serve the page for ``store`` on ``host:port`` until interrupted (Ctrl+C)."""
    from werkzeug.serving import make_server

    from rlhf_gym.feedback.label.server import LOOPBACK_HOSTS, create_app

    loopback = _is_loopback(host)
    app = create_app(store, allowed_hosts=(*LOOPBACK_HOSTS, host) if loopback else None)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    # bound here, not by make_server, which exits the process when the port is taken
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen()
    except OSError as e:
        sock.close()
        raise ValueError(f"cannot serve on --host {host} --port {port}: {e.strerror}") from None
    with sock:
        server = make_server(host, port, app, threaded=True, fd=sock.fileno())
    name = f"[{host}]" if ":" in host else host
    if not loopback:
        print(
            f"warning: serving on {host}, not only to this machine: anyone who can reach it can "
            "read the pairs and post judgments (there is no login)",
            file=sys.stderr,
        )
    print(f"labeling page: http://{name}:{server.port}/  (Ctrl+C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped; every judgment is saved in", store.path)
    finally:
        server.server_close()
