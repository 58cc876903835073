"""The constitution: written principles that tell a model how to critique, revise and compare.

A constitution is a TOML file (``docs/cai.md`` documents it; the default is
``rlhf_gym/cai/constitution.toml``, written for this project)::

    name = "my constitution"

    [[principle]]
    name = "harm"
    critique_request = "Point out anything in the reply that could hurt ..."
    revision_request = "Rewrite the reply so that it hurts no one ..."
    comparison = "Which reply is less harmful?"

    [[comparison_example]]          # optional few-shot examples for `rlhf-gym cai label`
    prompt = "Q: ... A:"
    response_a = " ..."
    response_b = " ..."
    answer = "A"
    principle = "harm"              # optional: whose question the example shows

    [[revision_example]]            # optional few-shot examples for `rlhf-gym cai revise`
    prompt = "Q: ... A:"
    response = " ..."
    principle = "harm"
    critique = " ..."
    revision = " ..."

Every principle needs all four fields as non-empty strings, and names are unique. A bad file
raises :class:`ConstitutionError` naming the file, the principle and the field.

Example:
    >>> from rlhf_gym.cai.constitution import load_constitution
    >>> c = load_constitution()
    >>> c.principles[0].name, c.principles[0].comparison
    ('harm', 'Which reply is less harmful?')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tomllib

DEFAULT_CONSTITUTION = Path(__file__).resolve().parent / "constitution.toml"
"""The constitution shipped with the package."""

PRINCIPLE_FIELDS = ("name", "critique_request", "revision_request", "comparison")
COMPARISON_EXAMPLE_FIELDS = ("prompt", "response_a", "response_b", "answer")
REVISION_EXAMPLE_FIELDS = ("prompt", "response", "principle", "critique", "revision")


class ConstitutionError(ValueError):
    """A constitution file that cannot be used; the message names the principle and field."""


@dataclass(frozen=True)
class Principle:
    """One principle: how to critique a reply, how to revise it, how to compare two."""

    name: str
    critique_request: str
    revision_request: str
    comparison: str


@dataclass(frozen=True)
class ComparisonExample:
    """A worked comparison put in front of every labeling prompt (few-shot)."""

    prompt: str
    response_a: str
    response_b: str
    answer: str  # "A" or "B"
    principle: str | None = None


@dataclass(frozen=True)
class RevisionExample:
    """A worked critique and revision put in front of every critique prompt (few-shot)."""

    prompt: str
    response: str
    principle: str
    critique: str
    revision: str


@dataclass(frozen=True)
class Constitution:
    """The principles, and the optional few-shot examples."""

    name: str
    principles: tuple[Principle, ...]
    comparison_examples: tuple[ComparisonExample, ...] = ()
    revision_examples: tuple[RevisionExample, ...] = ()
    path: str = ""

    def principle(self, name: str) -> Principle:
        """The principle called ``name`` (a clear error for an unknown one)."""
        for p in self.principles:
            if p.name == name:
                return p
        raise ConstitutionError(
            f"{self.path or 'constitution'}: no principle named {name!r}; "
            f"it has {', '.join(p.name for p in self.principles)}"
        )


def load_constitution(path: str | Path | None = None) -> Constitution:
    """Reads and checks a constitution file (default: the one shipped with the package).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ConstitutionError: the file is not TOML, or a principle or example lacks a field, has
            a field that is not a non-empty string, or repeats a name.
    """
    file = DEFAULT_CONSTITUTION if path is None else Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"--constitution {path}: no such file")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConstitutionError(f"{file}: not a TOML file ({e})") from None
    allowed = {"name", "principle", "comparison_example", "revision_example"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConstitutionError(
            f"{file}: unknown top-level key(s) {unknown}; allowed: {sorted(allowed)}"
        )
    raw = data.get("principle")
    if not isinstance(raw, list) or not raw:
        raise ConstitutionError(
            f"{file}: no [[principle]] tables; a constitution needs at least one"
        )
    principles: list[Principle] = []
    for i, table in enumerate(raw, 1):
        where = f"{file}: principle {i}"
        if isinstance(table, dict) and isinstance(table.get("name"), str) and table["name"]:
            where = f"{file}: principle {table['name']!r}"
        principles.append(Principle(**_strings(table, PRINCIPLE_FIELDS, where)))
    names = [p.name for p in principles]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConstitutionError(f"{file}: principle name(s) {repeated} appear more than once")

    comparisons = []
    for i, table in enumerate(data.get("comparison_example", []), 1):
        where = f"{file}: comparison_example {i}"
        fields = _strings(table, COMPARISON_EXAMPLE_FIELDS, where, optional=("principle",))
        if fields["answer"] not in ("A", "B"):
            raise ConstitutionError(
                f'{where}: field \'answer\' must be "A" or "B", got {fields["answer"]!r}'
            )
        if fields.get("principle") is not None and fields["principle"] not in names:
            raise ConstitutionError(
                f"{where}: field 'principle' names no principle: {fields['principle']!r}"
            )
        comparisons.append(ComparisonExample(**fields))
    revisions = []
    for i, table in enumerate(data.get("revision_example", []), 1):
        where = f"{file}: revision_example {i}"
        fields = _strings(table, REVISION_EXAMPLE_FIELDS, where)
        if fields["principle"] not in names:
            raise ConstitutionError(
                f"{where}: field 'principle' names no principle: {fields['principle']!r}"
            )
        revisions.append(RevisionExample(**fields))
    name = data.get("name", file.stem)
    if not isinstance(name, str):
        raise ConstitutionError(f"{file}: 'name' must be a string, got {name!r}")
    return Constitution(name, tuple(principles), tuple(comparisons), tuple(revisions), str(file))


def _strings(
    table: object, required: tuple[str, ...], where: str, optional: tuple[str, ...] = ()
) -> dict[str, str]:
    """The fields of one table, each checked to be a non-empty string."""
    if not isinstance(table, dict):
        raise ConstitutionError(f"{where}: expected a table of fields, got {table!r}")
    unknown = sorted(set(table) - set(required) - set(optional))
    if unknown:
        raise ConstitutionError(
            f"{where}: unknown field(s) {unknown}; allowed: {list(required + optional)}"
        )
    out: dict[str, str] = {}
    for key in required + optional:
        if key not in table:
            if key in optional:
                continue
            raise ConstitutionError(f"{where}: missing field {key!r}")
        value = table[key]
        if not isinstance(value, str) or not value.strip():
            raise ConstitutionError(
                f"{where}: field {key!r} must be a non-empty string, got {value!r}"
            )
        out[key] = value
    return out
