"""Prompt sources: built-in sets, ``.txt`` and ``.jsonl`` files, or a list of strings.

File formats:
    * ``.txt``: one prompt per line; blank lines are skipped; a trailing newline is not part
      of the prompt, other whitespace is kept.
    * ``.jsonl``: one JSON value per line, either a string or an object with a ``"prompt"``
      string field; blank lines are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from rlhf_gym.envs.lm import DATA_DIR

BUILTIN_PROMPTS: dict[str, Path] = {
    "sentiment": DATA_DIR / "prompts" / "sentiment-train.txt",
    "sentiment-eval": DATA_DIR / "prompts" / "sentiment-eval.txt",
    "harmless": DATA_DIR / "prompts" / "harmless-train.txt",
    "harmless-eval": DATA_DIR / "prompts" / "harmless-eval.txt",
    "helpful_harmless": DATA_DIR / "prompts" / "helpful_harmless-train.txt",
    "helpful_harmless-eval": DATA_DIR / "prompts" / "helpful_harmless-eval.txt",
}


def load_prompts(source: str | Path | Sequence[str]) -> list[str]:
    """Return the prompts of a built-in set name, a ``.txt``/``.jsonl`` path, or a list.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: unknown extension, malformed line (with its number), or no prompts at all.
    """
    if isinstance(source, (list, tuple)):
        prompts = list(source)
        bad = [p for p in prompts if not isinstance(p, str)]
        if bad:
            raise ValueError(f"prompts must be strings; got {type(bad[0]).__name__}: {bad[0]!r}")
        where = "the prompts list"
    elif isinstance(source, (str, Path)):
        key = str(source)
        path = BUILTIN_PROMPTS.get(key, Path(key).expanduser())
        prompts, where = _read_file(path, key), str(path)
    else:
        raise ValueError(
            f"prompts must be a built-in name ({', '.join(BUILTIN_PROMPTS)}), a path to a .txt "
            f"or .jsonl file, or a list of strings; got {type(source).__name__}"
        )
    if not prompts:
        raise ValueError(f"no prompts in {where}")
    for n, prompt in enumerate(prompts):
        try:  # a lone surrogate ("\ud800") is a str but no text: tokenizers fail obscurely
            prompt.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(
                f"prompt {n} in {where} is not valid Unicode text: {e.reason} at character "
                f"{e.start} ({prompt[e.start : e.end]!r}) of {prompt[:80]!r}"
            ) from e
    return prompts


def _read_file(path: Path, given: str) -> list[str]:
    if given in BUILTIN_PROMPTS and not path.is_file():
        raise FileNotFoundError(
            f"prompts={given!r}: the embedded prompt set is missing at {path}; rebuild it with "
            "`python -m rlhf_gym.embedded`"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"prompts={given!r} is neither a built-in set ({', '.join(BUILTIN_PROMPTS)}) "
            f"nor an existing file"
        )
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix == ".txt":
        return [line for line in lines if line.strip()]
    if path.suffix == ".jsonl":
        return [_jsonl_prompt(line, path, n) for n, line in enumerate(lines, 1) if line.strip()]
    raise ValueError(f"prompts file {path} must end in .txt or .jsonl")


def _jsonl_prompt(line: str, path: Path, lineno: int) -> str:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
    if isinstance(value, dict):
        value = value.get("prompt")
    if not isinstance(value, str):
        raise ValueError(f'{path}:{lineno}: expected a string or an object with a "prompt" string')
    return value
