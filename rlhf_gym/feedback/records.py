r"""Preference records: one format of our own, and readers for the formats in use.

A :class:`Preference` compares two responses to one prompt: ``p_a`` is the probability that
response A is preferred (1 or 0 for a hard label, anything in between for a soft one, 0.5 for a
tie). On disk (JSON Lines, one record per line) a record has one of two shapes:

* hard label (the TRL convention)::

      {"prompt": "Q: ...", "chosen": " A good reply.", "rejected": " A bad one.", "margin": 1.0}

  ``margin`` is optional (default 0): how strongly ``chosen`` is preferred, subtracted inside
  the Bradley-Terry loss ``-log sigmoid(r_chosen - r_rejected - margin)``.
* soft label (AI feedback, ties, several annotators)::

      {"prompt": "Q: ...", "response_a": " ...", "response_b": " ...", "p_a": 0.73}

The prompt is the text before the responses, exactly as the policy saw it: a reward model
reads ``prompt + response``. Any other key (``"annotator"``, ``"source"`` ...) is kept in
:attr:`Preference.meta` and written back.

Readers (:func:`read_preferences`, ``format="auto"`` picks one per file from its first record):

* ``"jsonl"``: the two shapes above.
* ``"hh"``: Anthropic HH-RLHF, whole dialogues ``"\n\nHuman: ... \n\nAssistant: ..."`` in
  ``chosen`` and ``rejected`` and no ``prompt``. The prompt is the shared text up to and
  including the last ``"\n\nAssistant:"``; the responses are what follows it.
* ``"best_of_k"``: OpenAI lm-human-preferences style rankings: ``{"prompt"|"query",
  "responses": [...] | "sample0" ... "sample<k-1>", "best": i}``. Each ranking becomes k - 1
  hard pairs: the best against every other sample that differs from it.

Malformed lines raise :class:`PreferenceFormatError`, whose message names the file, the line
and the field. Records that carry no information are dropped *and reported* in
:class:`ReadReport`: an empty (or all-whitespace) response, two identical responses, and exact
duplicates of an earlier record (same prompt and the same two responses, in either order).

Example:
    >>> import json, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "prefs.jsonl"
    >>> rows = [{"prompt": "Q: hi A:", "chosen": " Hello!", "rejected": " Go away."},
    ...         {"prompt": "Q: hi A:", "response_a": " Hi.", "response_b": " Hey!", "p_a": 0.4},
    ...         {"prompt": "Q: hi A:", "chosen": " Hello!", "rejected": " Go away."}]
    >>> _ = path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    >>> data = read_preferences(path)
    >>> [(p.response_a, p.p_a) for p in data.records]
    [(' Hello!', 1.0), (' Hi.', 0.4)]
    >>> data.report.duplicates
    [3]
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMATS = ("auto", "jsonl", "hh", "best_of_k")
"""What :func:`read_preferences` reads (``auto`` decides per file from its first record)."""

ASSISTANT = "\n\nAssistant:"
"""Where an HH-RLHF dialogue hands over to the assistant."""

_HARD = ("prompt", "chosen", "rejected")
_SOFT = ("prompt", "response_a", "response_b", "p_a")


class PreferenceFormatError(ValueError):
    """A preference file that cannot be read: the message names the file, line and field."""


@dataclass(frozen=True)
class Preference:
    """Two responses to one prompt and which one a judge preferred.

    Attributes:
        prompt: The text before the responses (a reward model reads ``prompt + response``).
        response_a: The first response (``chosen`` for a hard label).
        response_b: The second response (``rejected`` for a hard label).
        p_a: Probability that A is preferred, in [0, 1] (1.0: A chosen; 0.5: a tie).
        margin: How strongly the preferred response wins (Bradley-Terry margin, >= 0).
        meta: Any other fields of the record (annotator, source, order shown ...).
    """

    prompt: str
    response_a: str
    response_b: str
    p_a: float = 1.0
    margin: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_hard(self) -> bool:
        """Whether the label is a plain choice (``p_a`` is 0 or 1)."""
        return self.p_a in (0.0, 1.0)

    def oriented(self) -> Preference:
        """The same judgment with the preferred response as A (``p_a >= 0.5``)."""
        if self.p_a >= 0.5:
            return self
        return Preference(
            self.prompt, self.response_b, self.response_a, 1.0 - self.p_a, self.margin, self.meta
        )

    def to_json(self) -> dict[str, Any]:
        """The on-disk record: the hard shape for hard labels, else the soft one."""
        if self.is_hard:
            p = self.oriented()
            out: dict[str, Any] = {
                "prompt": p.prompt,
                "chosen": p.response_a,
                "rejected": p.response_b,
            }
            if p.margin:
                out["margin"] = p.margin
        else:
            out = {
                "prompt": self.prompt,
                "response_a": self.response_a,
                "response_b": self.response_b,
                "p_a": self.p_a,
            }
            if self.margin:
                out["margin"] = self.margin
        return out | {k: v for k, v in self.meta.items() if k not in out}


@dataclass
class ReadReport:
    """What a reader kept and what it dropped, by line number (1-based) of the source file.

    Attributes:
        path: The file read.
        format: The format it was read as.
        lines: Non-blank lines read.
        records: Records kept (a best-of-k line gives several).
        empty: Lines with an empty or all-whitespace response (dropped).
        identical: Lines whose two responses are the same text (dropped).
        duplicates: Lines repeating an earlier record (dropped).
    """

    path: str
    format: str
    lines: int = 0
    records: int = 0
    empty: list[int] = field(default_factory=list)
    identical: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)

    @property
    def dropped(self) -> int:
        """Lines (or best-of-k pairs) dropped in all."""
        return len(self.empty) + len(self.identical) + len(self.duplicates)

    def summary(self) -> str:
        """One line for people, e.g. ``prefs.jsonl: 300 records from 302 lines; dropped ...``."""
        text = f"{self.path}: {self.records} records from {self.lines} lines ({self.format})"
        parts = [
            f"{len(lines)} {what} (lines {_line_list(lines)})"
            for what, lines in (
                ("with an empty response", self.empty),
                ("with two identical responses", self.identical),
                ("duplicates", self.duplicates),
            )
            if lines
        ]
        return text + ("; dropped " + ", ".join(parts) if parts else "")


def _line_list(lines: Sequence[int], shown: int = 8) -> str:
    head = ", ".join(map(str, lines[:shown]))
    return head + (f", … {len(lines) - shown} more" if len(lines) > shown else "")


@dataclass
class PreferenceData:
    """The records of a file and the :class:`ReadReport` of reading it."""

    records: list[Preference]
    report: ReadReport


# ------------------------------------------------------------------------------------- reading
def read_preferences(path: str | Path, format: str = "auto") -> PreferenceData:
    """Read a preference file (JSON Lines) of one of :data:`FORMATS`.

    Args:
        path: The file.
        format: ``auto`` (decided from the first record), ``jsonl``, ``hh`` or ``best_of_k``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        PreferenceFormatError: on the first malformed line (file, line and field named), or if
            the file holds no usable record.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"preference file {str(path)!r} does not exist")
    rows = list(json_lines(path))
    if not rows:
        raise PreferenceFormatError(f"{path}: no records (the file is empty)")
    if format == "auto":
        format = detect_format(rows[0][1], path, rows[0][0])
    report = ReadReport(path=str(path), format=format, lines=len(rows))
    parse = {"jsonl": _parse_ours, "hh": _parse_hh, "best_of_k": _parse_best_of_k}[format]
    records: list[Preference] = []
    seen: set[tuple[str, frozenset[str]]] = set()
    for lineno, row in rows:
        for rec in parse(row, _Where(path, lineno)):
            if not rec.response_a.strip() or not rec.response_b.strip():
                report.empty.append(lineno)
            elif rec.response_a == rec.response_b:
                report.identical.append(lineno)
            elif (key := (rec.prompt, frozenset((rec.response_a, rec.response_b)))) in seen:
                report.duplicates.append(lineno)
            else:
                seen.add(key)
                records.append(rec)
    report.records = len(records)
    if not records:
        raise PreferenceFormatError(f"{path}: no usable records ({report.summary()})")
    return PreferenceData(records, report)


def detect_format(row: dict[str, Any], path: Path | str = "<data>", lineno: int = 1) -> str:
    """The format of a file whose first record is ``row`` (see :data:`FORMATS`)."""
    if "best" in row:
        return "best_of_k"
    if "chosen" in row and "prompt" not in row:
        return "hh"
    if "chosen" in row or "response_a" in row:
        return "jsonl"
    raise PreferenceFormatError(
        f"{path}:{lineno}: cannot tell the format from the keys {sorted(row)}: expected "
        "prompt/chosen/rejected, prompt/response_a/response_b/p_a, HH-RLHF chosen/rejected "
        "dialogues, or a best-of-k ranking with 'best'"
    )


def json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` of every non-blank line of a JSON Lines file.

    Raises:
        PreferenceFormatError: naming the file and line of one that is not a JSON object.
    """
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise PreferenceFormatError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise PreferenceFormatError(
                    f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}"
                )
            yield lineno, row


@dataclass(frozen=True)
class _Where:
    path: Path
    lineno: int

    def error(self, key: str, problem: str) -> PreferenceFormatError:
        return PreferenceFormatError(f"{self.path}:{self.lineno}: field {key!r} {problem}")

    def text(self, row: dict[str, Any], key: str) -> str:
        if key not in row:
            raise self.error(key, f"is missing (the record has {sorted(row)})")
        if not isinstance(row[key], str):
            raise self.error(key, f"must be a string, got {type(row[key]).__name__}")
        return row[key]

    def number(self, row: dict[str, Any], key: str, low: float, high: float) -> float:
        value = row[key]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or not low <= value <= high:
            raise self.error(key, f"must be a number in [{low:g}, {high:g}], got {value!r}")
        return float(value)


def _meta(row: dict[str, Any], used: Iterable[str]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in set(used)}


def _margin(row: dict[str, Any], where: _Where) -> float:
    return where.number(row, "margin", 0.0, math.inf) if "margin" in row else 0.0


def _parse_ours(row: dict[str, Any], where: _Where) -> list[Preference]:
    prompt = where.text(row, "prompt")
    if "chosen" in row or "rejected" in row:
        a, b = where.text(row, "chosen"), where.text(row, "rejected")
        return [Preference(prompt, a, b, 1.0, _margin(row, where), _meta(row, (*_HARD, "margin")))]
    if "response_a" in row or "response_b" in row:
        a, b = where.text(row, "response_a"), where.text(row, "response_b")
        if "p_a" not in row:
            raise where.error("p_a", "is missing (a soft label needs the probability A wins)")
        p_a = where.number(row, "p_a", 0.0, 1.0)
        return [Preference(prompt, a, b, p_a, _margin(row, where), _meta(row, (*_SOFT, "margin")))]
    raise where.error(
        "chosen",
        f"is missing: expected chosen/rejected or response_a/response_b "
        f"(the record has {sorted(row)})",
    )


def split_hh(dialogue_a: str, dialogue_b: str) -> tuple[str, str, str]:
    """``(prompt, response_a, response_b)`` of two HH-RLHF dialogues sharing their start.

    The prompt runs to the end of the last ``"\\n\\nAssistant:"`` of the text the two share.

    >>> split_hh("\\n\\nHuman: hi\\n\\nAssistant: Hello!", "\\n\\nHuman: hi\\n\\nAssistant: Bye.")
    ('\\n\\nHuman: hi\\n\\nAssistant:', ' Hello!', ' Bye.')
    """
    shared = 0
    for x, y in zip(dialogue_a, dialogue_b, strict=False):
        if x != y:
            break
        shared += 1
    cut = dialogue_a[:shared].rfind(ASSISTANT)
    if cut < 0:
        raise ValueError(f"the two dialogues share no {ASSISTANT!r} turn")
    end = cut + len(ASSISTANT)
    return dialogue_a[:end], dialogue_a[end:], dialogue_b[end:]


def _parse_hh(row: dict[str, Any], where: _Where) -> list[Preference]:
    chosen, rejected = where.text(row, "chosen"), where.text(row, "rejected")
    try:
        prompt, a, b = split_hh(chosen, rejected)
    except ValueError as e:
        raise where.error("chosen", str(e)) from None
    return [
        Preference(
            prompt, a, b, 1.0, _margin(row, where), _meta(row, ("chosen", "rejected", "margin"))
        )
    ]


def _parse_best_of_k(row: dict[str, Any], where: _Where) -> list[Preference]:
    key = "prompt" if "prompt" in row else "query"
    prompt = where.text(row, key)
    if "responses" in row:
        samples = row["responses"]
        if not isinstance(samples, list) or not all(isinstance(s, str) for s in samples):
            raise where.error("responses", "must be a list of strings")
        used = [key, "responses", "best"]
    else:
        names = sorted(
            (k for k in row if k.startswith("sample") and k[6:].isdigit()), key=lambda k: int(k[6:])
        )
        if [int(k[6:]) for k in names] != list(range(len(names))):
            raise where.error(
                "sample0", f"samples must be numbered from 0 without gaps, got {names}"
            )
        samples = [where.text(row, k) for k in names]
        used = [key, "best", *names]
    if len(samples) < 2:
        raise where.error("responses", f"needs at least 2 samples, got {len(samples)}")
    best = row.get("best")
    if not isinstance(best, int) or isinstance(best, bool) or not 0 <= best < len(samples):
        raise where.error("best", f"must be an index in [0, {len(samples) - 1}], got {best!r}")
    meta = _meta(row, used)
    winner = samples[best]
    return [
        Preference(prompt, winner, other, 1.0, 0.0, dict(meta))
        for i, other in enumerate(samples)
        if i != best and other != winner
    ]


# ------------------------------------------------------------------------------------- writing
def write_preferences(records: Iterable[Preference], path: str | Path) -> int:
    """Write ``records`` as JSON Lines in our format (the parent directory is created).

    Returns:
        The number of records written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    try:
        with path.open("w", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec.to_json(), ensure_ascii=False) + "\n")
                n += 1
    except OSError as e:  # a full disk says nothing of the file: name it
        raise with_filename(e, path) from e
    return n


def with_filename(e: OSError, path: str | Path) -> OSError:
    """``e`` with ``path`` as its file name if it has none (``ENOSPC`` on a write names no
    file), so that the message says which file could not be written."""
    if e.filename is not None or not e.errno:
        return e
    return type(e)(e.errno, e.strerror, str(path))
