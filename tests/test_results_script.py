"""Smoke test of ``benchmarks/results.py`` (``--quick``) and the check of ``docs/principles.md``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from principlelab.core.recipe import SLOTS
from principlelab.registry import get_registry

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "results.py"
INDEX = REPO / "docs" / "principles.md"
PAGES = REPO / "docs" / "principles"
ACCURACY = re.compile(r"\b[01]\.\d{3} ± \d\.\d{3}\b")

# Built-ins that have no page in docs/principles/ yet (the index links their module instead).
# A new built-in must come with a page; when one of these gets a page, link it and drop it here.
PAGELESS: set[tuple[str, str]] = set()  # every built-in has a page


@pytest.fixture(scope="module")
def quick_doc(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("results")
    env = {**os.environ, "PRINCIPLELAB_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--workers", "1", "--out", str(out / "r.md"),
         "--json", str(out / "r.json")],
        capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "[1/" in proc.stdout  # progress is printed
    return (out / "r.md").read_text(), json.loads((out / "r.json").read_text())


def _tables(doc: str) -> dict[str, list[str]]:
    """``### heading`` -> the body rows of the table under it (header and separator dropped)."""
    tables: dict[str, list[str]] = {}
    heading = None
    for line in doc.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("|") and heading is not None:
            tables.setdefault(heading, []).append(line)
    return {h: [r for r in rows[2:]] for h, rows in tables.items()}


def test_quick_run_writes_every_table_with_numbers(quick_doc: tuple[str, dict]) -> None:
    doc, data = quick_doc
    for section in ("## 1. Learning rules", "## 2. Growth targeting", "## 3. Triggers"):
        assert section in doc
    assert "benchmarks/results.py --quick" in doc  # the exact command
    tables = _tables(doc)
    expected = {
        "budget = backprop x 2 epochs": ["backprop (sequential)", "forward_forward",
                                         "paper r=3 (routing_iterations=2)", "r=0 uniform coupling"],
        "two hidden layers": ["none (start size)", "random", "extrema (percentile)", "katz", "extrema (auto",
                              "static [96, 96]"],
        "one hidden layer": ["none (start size)", "random", "extrema (percentile)", "katz", "extrema (auto",
                             "static [128]"],
        "": ["never", "every_k", "grad_variance", "signal_economy", "plateau"],  # the trigger tables
    }
    for task in ("digits", "mnist1d"):
        for part, labels in expected.items():
            heading = next((h for h in tables if h.startswith(task) and part in h)
                           if part else (h for h in tables if h == task), None)
            assert heading is not None, f"no table for {task} {part!r}"
            rows = tables[heading]
            assert len(rows) == len(labels), (heading, rows)
            for label, row in zip(labels, rows, strict=True):
                assert label in row, (heading, label, row)
                assert ACCURACY.search(row), f"no accuracy in row {row!r}"
    assert doc.count("**What the numbers say.**") == len(tables) == 8
    assert len(data["runs"]) == data["info"]["runs"] >= 2 * (4 + 6 + 6 + 5)  # + phase-2 static runs
    growth = [r for r in data["runs"] if r["table"] == "growth1" and r["row"] in ("random", "katz (in-influence)")]
    assert {r["units_added"] for r in growth} == {64}
    assert len({(r["task"], r["params"]) for r in growth}) == 2  # equal final size per task


def _index_entries() -> dict[tuple[str, str], str]:
    """``(slot, name)`` -> link target of every entry of docs/principles.md."""
    entries: dict[tuple[str, str], str] = {}
    slot = None
    for line in INDEX.read_text().splitlines():
        if line.startswith("## "):
            slot = line[3:].strip()
        match = re.match(r"^- `([^`]+)`: .*\[(?:page|module)\]\(([^)]+)\)", line)
        if match:
            assert slot in SLOTS, f"entry {match.group(1)!r} outside a slot section"
            assert (slot, match.group(1)) not in entries, f"{slot}/{match.group(1)} listed twice"
            entries[(slot, match.group(1))] = match.group(2)
    return entries


def test_principles_index_lists_every_builtin() -> None:
    registry = get_registry()
    builtins = {(s, n) for s, n, _ in registry.items() if registry.source(s, n).package == "principlelab"}
    entries = _index_entries()
    assert set(entries) == builtins, f"missing: {builtins - set(entries)}; extra: {set(entries) - builtins}"
    for (slot, name), target in entries.items():
        assert (INDEX.parent / target).resolve().is_file(), f"{slot}/{name} links to missing {target}"
        page = PAGES / f"{slot}_{name}.md"
        if page.is_file():
            assert target == f"principles/{page.name}", f"{slot}/{name} has a page; link it, not {target}"
    pageless = {key for key in builtins if not (PAGES / f"{key[0]}_{key[1]}.md").is_file()}
    assert pageless == PAGELESS, (f"built-ins without a page in docs/principles/: {sorted(pageless)}; "
                                  "update PAGELESS and docs/principles.md")
    linked = {Path(t).name for t in entries.values()}
    assert {p.name for p in PAGES.glob("*.md")} <= linked, "a page in docs/principles/ is not linked"


def test_principle_pages_say_which_fields_campaigns_search() -> None:
    """A page's search column is a dash exactly when campaigns do not search the field (a bool or
    Literal field is searched without a hint; three pages once said otherwise)."""
    from principlelab.studies.search_hints import field_distribution

    registry = get_registry()
    checked = 0
    for page in sorted(PAGES.glob("*.md")):
        slot, name = page.stem.split("_", 1)
        cls = registry.get(slot, name)
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            if not re.match(r"^\| (field|parameter) \| default \|", line):
                continue
            end = next((j for j in range(i + 2, len(lines)) if not lines[j].startswith("|")), len(lines))
            for row in lines[i + 2:end]:  # this table's rows
                cells = [c.strip() for c in row.strip("|").split("|")]
                for field in cells[0].strip("`").split("`, `"):
                    searched = field_distribution(cls, field, cls.Config.model_fields[field]) is not None
                    assert searched == (cells[3] not in ("-", "\u2013", "not searched")), (page.name, field, cells[3])
                    checked += 1
    assert checked > 60
