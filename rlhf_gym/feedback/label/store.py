"""The labeling page's SQLite store: the pairs to judge, every judgment, and the export.

One file holds everything (``--db``), so a restart continues where the annotators stopped:

* ``pairs(id, prompt, response_a, response_b, order_shown, source)``: written once, in one
  transaction, when the file is created. ``order_shown`` (``"ab"`` or ``"ba"``) is the
  left/right order the page shows the pair in, drawn per pair from a seeded generator.
* ``judgments(id, pair_id, annotator, choice, order_shown, seconds, created_at)``: ``choice``
  is ``a``, ``b``, ``tie`` or ``skip`` in terms of the *underlying* responses (not screen
  sides); ``order_shown`` is the order the page showed. One row per (pair, annotator): judging
  a pair again replaces the earlier judgment. ``id`` grows with time, so the annotator's last
  judgment is the one with the largest id (what undo deletes).
* ``meta(key, value)``: the pairs' ``source``, the ``seed``, the ``created_at`` time.

Durability: the database runs in WAL mode with ``synchronous=FULL``, and every write commits
before its method returns, so a judgment the page was told is saved survives the server being
killed (or the machine losing power) right after. One connection serves all threads, behind a
lock.

Example:
    >>> import tempfile, pathlib
    >>> store = LabelStore(pathlib.Path(tempfile.mkdtemp()) / "labels.db")
    >>> store.add_pairs([("Q: hi A:", " Hello!", " Go away.")], source="example", seed=0)
    1
    >>> pair = store.next_pair("alice")
    >>> _ = store.judge(pair.id, "alice", "a", pair.order_shown)
    >>> store.next_pair("alice") is None, store.judged("alice")
    (True, 1)
    >>> store.undo("alice").choice
    'a'
    >>> store.close()
"""

from __future__ import annotations

import random
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from rlhf_gym.feedback.label.agreement import Agreement, pairwise_kappa
from rlhf_gym.feedback.records import Preference, write_preferences

CHOICES = ("a", "b", "tie", "skip")
"""A judgment, in terms of the pair's response_a / response_b."""

ORDERS = ("ab", "ba")
"""Left/right order on screen: ``"ab"`` shows response_a on the left."""

VOTE = {"a": 1.0, "b": 0.0, "tie": 0.5}
"""A judgment's vote for response_a; the export's ``p_a`` is the mean vote of a pair."""

TIES = ("drop", "keep")
"""What the export does with a pair whose mean vote is exactly 0.5."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pairs (
    id INTEGER PRIMARY KEY,
    prompt TEXT NOT NULL,
    response_a TEXT NOT NULL,
    response_b TEXT NOT NULL,
    order_shown TEXT NOT NULL CHECK (order_shown IN ('ab', 'ba')),
    source TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS judgments (
    id INTEGER PRIMARY KEY,
    pair_id INTEGER NOT NULL REFERENCES pairs (id),
    annotator TEXT NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('a', 'b', 'tie', 'skip')),
    order_shown TEXT NOT NULL CHECK (order_shown IN ('ab', 'ba')),
    seconds REAL,
    created_at TEXT NOT NULL,
    UNIQUE (pair_id, annotator)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Pair:
    """One pair to judge; ``order_shown`` says which response the page shows on the left."""

    id: int
    prompt: str
    response_a: str
    response_b: str
    order_shown: str
    source: str

    def sides(self) -> tuple[str, str]:
        """``(left, right)`` as the page shows them."""
        if self.order_shown == "ab":
            return self.response_a, self.response_b
        return self.response_b, self.response_a


@dataclass(frozen=True)
class Judgment:
    """One annotator's judgment of one pair (``choice`` in terms of response_a/b)."""

    pair_id: int
    annotator: str
    choice: str
    order_shown: str
    seconds: float | None
    created_at: str


class LabelStore:
    """The SQLite file behind ``rlhf-gym label`` (created with its tables if missing).

    Raises:
        ValueError: if ``path`` exists but is not a database of this page.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existed = self.path.is_file() and self.path.stat().st_size > 0
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        try:
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
            if existed and "pairs" not in tables:
                raise sqlite3.DatabaseError("it has no pairs table")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise ValueError(f"--db {str(self.path)!r} is not a labeling database ({e})") from None

    def close(self) -> None:
        """Close the connection (everything is already committed)."""
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------------------ pairs
    def add_pairs(self, pairs: Iterable[tuple[str, str, str]], source: str, seed: int) -> int:
        """Store ``(prompt, response_a, response_b)`` pairs in one transaction; their count.

        Each pair's left/right order is drawn from ``random.Random(seed)``; ``source`` and
        ``seed`` go to ``meta``.
        """
        rng = random.Random(seed)
        rows = [(p, a, b, rng.choice(ORDERS), source) for p, a, b in pairs]
        now = _now()
        with self._lock, self._db:
            self._db.executemany(
                "INSERT INTO pairs (prompt, response_a, response_b, order_shown, source) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [("source", source), ("seed", str(seed)), ("created_at", now)],
            )
        return len(rows)

    def total(self) -> int:
        """Number of pairs."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM pairs").fetchone()[0]

    def meta(self, key: str) -> str | None:
        """A ``meta`` value (``source``, ``seed``, ``created_at``), or ``None``."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def pair(self, pair_id: int) -> Pair | None:
        """The pair with this id, or ``None``."""
        with self._lock:
            row = self._db.execute(f"{_PAIR} WHERE id = ?", (pair_id,)).fetchone()
        return None if row is None else Pair(*row)

    def next_pair(self, annotator: str) -> Pair | None:
        """The first pair (by id) ``annotator`` has not judged; ``None`` when all are."""
        with self._lock:
            row = self._db.execute(
                f"{_PAIR} WHERE id NOT IN (SELECT pair_id FROM judgments WHERE annotator = ?) "
                "ORDER BY id LIMIT 1",
                (annotator,),
            ).fetchone()
        return None if row is None else Pair(*row)

    # -------------------------------------------------------------------------- judgments
    def judge(
        self,
        pair_id: int,
        annotator: str,
        choice: str,
        order_shown: str,
        seconds: float | None = None,
    ) -> Judgment:
        """Record (and commit) a judgment, replacing this annotator's earlier one of the pair.

        Raises:
            KeyError: if there is no pair ``pair_id``.
            ValueError: for a ``choice`` not in :data:`CHOICES` or an order not in :data:`ORDERS`.
        """
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {', '.join(CHOICES)}; got {choice!r}")
        if order_shown not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}; got {order_shown!r}")
        judgment = Judgment(pair_id, annotator, choice, order_shown, seconds, _now())
        with self._lock, self._db:
            if self._db.execute("SELECT 1 FROM pairs WHERE id = ?", (pair_id,)).fetchone() is None:
                raise KeyError(pair_id)
            self._db.execute(
                "DELETE FROM judgments WHERE pair_id = ? AND annotator = ?", (pair_id, annotator)
            )
            self._db.execute(
                "INSERT INTO judgments (pair_id, annotator, choice, order_shown, seconds, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (pair_id, annotator, choice, order_shown, seconds, judgment.created_at),
            )
        return judgment

    def undo(self, annotator: str) -> Judgment | None:
        """Delete (and commit) ``annotator``'s last judgment; it, or ``None`` if there is none."""
        with self._lock, self._db:
            row = self._db.execute(
                f"SELECT id, {_JUDGMENT} FROM judgments WHERE annotator = ? "
                "ORDER BY id DESC LIMIT 1",
                (annotator,),
            ).fetchone()
            if row is None:
                return None
            self._db.execute("DELETE FROM judgments WHERE id = ?", (row[0],))
        return Judgment(*row[1:])

    def judged(self, annotator: str) -> int:
        """Number of pairs ``annotator`` has judged (skips included)."""
        with self._lock:
            return self._db.execute(
                "SELECT COUNT(*) FROM judgments WHERE annotator = ?", (annotator,)
            ).fetchone()[0]

    def judgments(self) -> list[Judgment]:
        """Every judgment, oldest first."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_JUDGMENT} FROM judgments ORDER BY id").fetchall()
        return [Judgment(*row) for row in rows]

    def agreement(self) -> Agreement:
        """Cohen's kappa between the annotators (skips excluded; see :mod:`.agreement`)."""
        votes: dict[str, dict[int, str]] = defaultdict(dict)
        for j in self.judgments():
            if j.choice != "skip":
                votes[j.annotator][j.pair_id] = j.choice
        return pairwise_kappa(votes)


_PAIR = "SELECT id, prompt, response_a, response_b, order_shown, source FROM pairs"
_JUDGMENT = "pair_id, annotator, choice, order_shown, seconds, created_at"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------- export
@dataclass(frozen=True)
class ExportReport:
    """What :func:`export` wrote and left out, counted in pairs.

    Attributes:
        path: The preference file written.
        exported: Pairs written (one record each).
        ties: Pairs dropped because their mean vote is exactly 0.5 (``ties="drop"``).
        skipped: Pairs judged only with skips.
        unjudged: Pairs nobody has judged.
        annotators: Number of annotators with at least one judgment.
        agreement: Cohen's kappa between the annotators.
    """

    path: str
    exported: int
    ties: int
    skipped: int
    unjudged: int
    annotators: int
    agreement: Agreement

    def summary(self) -> str:
        """A few lines for people."""
        return (
            f"wrote {self.exported} preferences to {self.path}\n"
            f"pairs: {self.exported} exported, {self.ties} dropped as ties, {self.skipped} "
            f"skipped (only skips), {self.unjudged} not judged; {self.annotators} annotators\n"
            f"agreement: {self.agreement.describe()}"
        )


def export(store: LabelStore, path: str | Path, ties: str = "drop") -> ExportReport:
    """Write the judged pairs to ``path`` as our preference JSONL (``write_preferences``).

    One record per pair with at least one non-skip judgment: ``p_a`` is the mean vote (A = 1,
    B = 0, tie = 0.5) of its annotators, so a unanimous A or B gives a hard record. Records are
    oriented so that ``p_a >= 0.5`` (response A is the preferred one); ``meta`` holds
    ``pair_id``, ``annotators`` (sorted names) and ``votes`` (annotator → vote for the record's
    response A, i.e. ``chosen`` in the hard shape). A pair whose mean vote is exactly 0.5 is
    dropped (``ties="drop"``) or kept with ``p_a = 0.5`` (``ties="keep"``).
    """
    if ties not in TIES:
        raise ValueError(f"--ties must be one of {', '.join(TIES)}; got {ties!r}")
    votes: dict[int, dict[str, float]] = defaultdict(dict)
    judged: set[int] = set()
    annotators: set[str] = set()
    for j in store.judgments():
        judged.add(j.pair_id)
        annotators.add(j.annotator)
        if j.choice != "skip":
            votes[j.pair_id][j.annotator] = VOTE[j.choice]
    records: list[Preference] = []
    dropped = 0
    for pair_id in sorted(votes):
        pair = store.pair(pair_id)
        assert pair is not None  # judgments reference pairs (a foreign key)
        by = votes[pair_id]
        p_a = sum(by.values()) / len(by)
        if p_a == 0.5 and ties == "drop":
            dropped += 1
            continue
        a, b = pair.response_a, pair.response_b
        if p_a < 0.5:  # the preferred response first, its votes flipped with it
            a, b, p_a, by = b, a, 1.0 - p_a, {name: 1.0 - v for name, v in by.items()}
        meta = {"pair_id": pair_id, "annotators": sorted(by), "votes": dict(sorted(by.items()))}
        records.append(Preference(pair.prompt, a, b, p_a, 0.0, meta))
    write_preferences(records, path)
    return ExportReport(
        path=str(path),
        exported=len(records),
        ties=dropped,
        skipped=len(judged - set(votes)),
        unjudged=store.total() - len(judged),
        annotators=len(annotators),
        agreement=store.agreement(),
    )
