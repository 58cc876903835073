"""The teaching notebooks (``notebooks/``): the committed ones are executed, in order, with a
figure and no error, and match their sources; every notebook runs in smoke mode
(``RLHF_GYM_SMOKE=1``, small budgets, the same code path) — a notebook that raises fails CI."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
EXPECTED = (
    "01_rlhf_as_an_mdp",
    "02_reward_models_from_preferences",
    "03_ppo_and_the_kl_penalty",
    "04_q_learning_vs_ppo",
    "05_constitutional_ai",
    "06_bring_your_own_model",
)


def _build():
    spec = importlib.util.spec_from_file_location("notebooks_build", NOTEBOOKS / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_course_has_its_six_notebooks():
    assert tuple(p.stem for p in SOURCES) == EXPECTED


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_committed_notebook_is_executed_in_order_with_a_figure(source: Path):
    import jupytext
    import nbformat

    committed = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    code = [c for c in committed.cells if c.cell_type == "code"]
    assert code, "no code cells"
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), (
        "not executed top to bottom in one run: python notebooks/build.py " + source.stem[:2]
    )
    outputs = [o for c in code for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, f"error output: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure"
    # the committed notebook is its source, executed (no edits that the source lacks)
    expected = [c.source for c in jupytext.read(source).cells]
    assert [c.source for c in committed.cells] == expected, (
        "the .ipynb differs from its .py source: python notebooks/build.py " + source.stem[:2]
    )


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_uses_the_public_api_only(source: Path):
    text = source.read_text(encoding="utf-8")
    code = "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")
    )  # markdown cells are comment lines
    private = re.findall(r"\.(_[A-Za-z][A-Za-z0-9_]*)", code)
    assert not private, f"private names used: {sorted(set(private))}"


@pytest.mark.slow
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_mode(source: Path, tmp_path: Path):
    _build().execute(source, tmp_path / f"{source.stem}.ipynb", smoke=True)
