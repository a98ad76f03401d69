"""``plab new-principle``: the scaffolded package installs, passes its own tests, is listed by
``plab plugins`` and reaches a campaign's fine leaderboard; plus the command's validation."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from principlelab.cli.scaffold_cmd import new_principle
from principlelab.core.recipe import SLOTS
from principlelab.registry import PluginSource, Registry, get_registry
from principlelab.scaffold import SLOT_TEMPLATES, class_name_for, distribution_name, next_steps, scaffold
from principlelab.scaffold.scaffold import PLACEHOLDER, builtin_names
from principlelab.studies.campaign_file import load_campaign
from principlelab.studies.space import SearchSpace

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial.md"
TEMPLATES = ROOT / "src" / "principlelab" / "scaffold" / "templates"
NEW_NAMES = {"connectivity": "wide_init", "learning": "plain_sgd", "trigger": "every_other",
             "growth": "grow_somewhere", "composition": "tempered"}


def plab_group() -> click.Group:
    """The real ``plab`` group once new-principle is registered there, else one wrapping the command
    the same way (PrincipleLabError -> ``plab: error: ...``, exit 2)."""
    from principlelab.cli import _Group, main

    if "new-principle" in main.commands:
        return main
    group = _Group("plab")
    group.add_command(new_principle)
    return group


def new(*args: str) -> Result:
    return CliRunner().invoke(plab_group(), ["new-principle", *args])


def python(*args: str, env: dict[str, str], cwd: Path | None = None,
           timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def load_generated(pkg: Path, package: str, name: str) -> Any:
    """Import the generated plugin module from its source tree (no install)."""
    path = pkg / "src" / package / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{package}.{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -------------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("slot", [pytest.param(s, marks=() if s == "growth" else pytest.mark.slow) for s in SLOTS])
def test_scaffold_installs_tests_lists_and_reaches_the_leaderboard(slot: str, tmp_path: Path) -> None:
    name = NEW_NAMES[slot]
    pkg = tmp_path / "pkg"
    done = new(slot, name, "--dir", str(pkg))
    assert done.exit_code == 0, done.output
    assert "pip install -e ." in done.output and f"--campaign {name}" in done.output

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(pkg)], check=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("PRINCIPLELAB_DISABLE_PLUGIN_AUTOLOAD", None)  # a real user's environment autoloads plugins

    tests = python("-m", "pytest", str(pkg / "tests"), "-q", "-p", "no:cacheprovider", env=env, cwd=pkg)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout and "failed" not in tests.stdout

    listed = python("-m", "principlelab", "plugins", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {(r["slot"], r["name"]): r for r in json.loads(listed.stdout)}
    row = rows[(slot, name)]
    assert row["package"] == distribution_name(name) and row["version"] == "0.1.0"
    assert row["class"] == f"principlelab_{name}.{name}.{class_name_for(name)}"
    assert [p["name"] for p in row["parameters"]] and row["parameters"][0]["search"]

    url = f"sqlite:///{tmp_path / 'c.db'}"
    run = python("-m", "principlelab", "campaign", "run", str(pkg / "campaign.toml"), "--storage", url, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    board = python("-m", "principlelab", "leaderboard", "--storage", url, "--campaign", name, "--fidelity", "fine",
                   "--group-by", "recipe", "--json", env=env)
    assert board.returncode == 0, board.stderr
    fine = json.loads(board.stdout)
    ours = [r for r in fine if r[slot] == name]
    assert ours, f"{name} missing from the fine leaderboard: {[r[slot] for r in fine]}"
    assert all(r["level"] == "fine" and r["count"] == 2 and r["mean"] > 0 for r in ours)
    assert {r[slot] for r in fine} <= {name, SLOT_TEMPLATES[slot].baseline}


# ------------------------------------------------------------------------------ what is written


@pytest.mark.parametrize("slot", SLOTS)
def test_generated_files_are_valid_and_consistent(slot: str, tmp_path: Path) -> None:
    name = NEW_NAMES[slot]
    result = scaffold(slot, name, tmp_path / "pkg")
    pkg, package = result.root, f"principlelab_{name}"
    assert result.package == package and result.class_name == class_name_for(name)
    assert set(result.files) == {"pyproject.toml", "README.md", "campaign.toml", f"src/{package}/__init__.py",
                                 f"src/{package}/{name}.py", f"tests/test_{name}.py"}
    for relative in result.files:
        text = (pkg / relative).read_text()
        assert not PLACEHOLDER.search(text), f"unrendered placeholder in {relative}"
        if relative.endswith(".py"):
            ast.parse(text, filename=relative)
            assert all(len(line) <= 120 for line in text.splitlines()), relative

    project = tomllib.loads((pkg / "pyproject.toml").read_text())
    assert project["build-system"]["build-backend"] == "setuptools.build_meta"
    assert project["project"]["name"] == distribution_name(name)
    assert project["project"]["dependencies"] == ["principlelab"]
    assert project["project"]["entry-points"]["principlelab"] == {name: f"{package}.{name}"}

    module = load_generated(pkg, package, name)
    cls = getattr(module, result.class_name)
    base = SLOT_TEMPLATES[slot]
    assert cls.name == name and cls.slot == slot and base.base in [b.__name__ for b in cls.__mro__]
    registered: list[type] = []
    getattr(module, base.hook)(registered.append)
    assert registered == [cls]
    field, info = next(iter(cls.Config.model_fields.items()))
    assert info.json_schema_extra["search"], f"{field} has no search hint"  # type: ignore[index]
    test_text = (pkg / "tests" / f"test_{name}.py").read_text()
    assert f"({base.conformance})" in test_text and "def principle_class(self)" in test_text

    # the campaign file validates, and its space compares the new principle with the built-in baseline
    spec, _ = load_campaign(pkg / "campaign.toml")
    assert spec.name == name and spec.levels[0].trials == 8 and spec.promotion.k == 3
    registry = Registry()
    builtins = get_registry()
    for s, n, c in builtins.items():
        registry.add(c, builtins.source(s, n))
    registry.add(cls, PluginSource(distribution_name(name), "0.1.0", module.__name__))
    space = SearchSpace(registry, spec.search.principles(), spec.search.fixed)
    assert space.choices[slot] == tuple(sorted([name, base.baseline]))
    assert all(len(space.choices[other]) == 1 for other in SLOTS if other != slot)
    searched = [p.principle for params in space.params.values() for p in params]
    assert set(searched) == {name}, f"only the new principle's fields should be searched, got {searched}"


def test_generated_code_is_ruff_clean(tmp_path: Path) -> None:
    ruff = shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is None:
        pytest.skip("ruff is not installed")
    for slot in SLOTS:
        pkg = scaffold(slot, NEW_NAMES[slot], tmp_path / slot).root
        done = subprocess.run([ruff, "check", "--no-cache", "--output-format", "concise", "."], cwd=pkg,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{slot}: {done.stdout}{done.stderr}"


def test_default_directory_and_custom_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    done = new("trigger", "loss_spike")
    assert done.exit_code == 0, done.output
    pkg = tmp_path / "principlelab-loss_spike"
    assert (pkg / "src" / "principlelab_loss_spike" / "loss_spike.py").is_file()
    lines = done.output.splitlines()
    assert lines[0] == ("Created the trigger 'loss_spike' (class principlelab_loss_spike.loss_spike.LossSpike) "
                        "in the package principlelab-loss-spike:")
    assert "  principlelab-loss_spike/tests/test_loss_spike.py" in lines
    assert "  cd principlelab-loss_spike" in lines and "  plab plugins --slot trigger" in lines

    done = new("growth", "widest", "--dir", "mine", "--package", "my_rules")
    assert done.exit_code == 0, done.output
    assert (tmp_path / "mine" / "src" / "my_rules" / "widest.py").is_file()
    project = tomllib.loads((tmp_path / "mine" / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["principlelab"] == {"widest": "my_rules.widest"}
    assert "from my_rules.widest import Widest" in (tmp_path / "mine" / "tests" / "test_widest.py").read_text()


def test_empty_directory_is_fine(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = scaffold("composition", "mixer", tmp_path / "empty")
    assert (result.root / "campaign.toml").is_file()
    assert next_steps(result)[0] == f"cd {tmp_path / 'empty'}"


def test_builtin_names_are_the_registered_builtins() -> None:
    registry = get_registry()  # built-ins only: the test suite disables plugin autoload
    assert builtin_names() == {name: slot for slot, name, _ in registry.items()}


def test_class_names_avoid_template_names() -> None:
    assert class_name_for("grow_where_gradients_are_large") == "GrowWhereGradientsAreLarge"
    assert class_name_for("network") == "NetworkPrinciple"
    assert class_name_for("trigger") == "TriggerPrinciple"
    assert class_name_for("v2_rule") == "V2Rule"


def test_templates_ship_as_package_data(tmp_path: Path) -> None:
    """A wheel of principlelab built from this source tree carries every template."""
    project = tmp_path / "project"
    project.mkdir()
    for item in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / item, project / item)
    shutil.copytree(ROOT / "src", project / "src",
                    ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(tmp_path / "dist"), str(project)], check=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("principlelab-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"principlelab/scaffold/templates/{p.relative_to(TEMPLATES).as_posix()}"
                for p in TEMPLATES.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert len(expected) == 14 and expected <= names, sorted(expected - names)


# ------------------------------------------------------------------------------------- errors


def assert_one_line_error(done: Result, *fragments: str) -> None:
    assert done.exit_code == 2, done.output
    lines = done.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("plab: error: "), done.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_unknown_slot_lists_the_slots(tmp_path: Path) -> None:
    done = new("growht", "mine", "--dir", str(tmp_path / "x"))
    assert_one_line_error(done, "unknown slot 'growht'", "connectivity, learning, trigger, growth, composition")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(("name", "why"), [
    ("Grow", "must match ^[a-z][a-z0-9_]*$"),
    ("grow-wide", "must match"),
    ("2fast", "must match"),
    ("grow wide", "must match"),
    ("class", "Python keyword"),
    ("all", "reserved"),
    ("x" * 65, "at most 64"),
])
def test_bad_name_says_why(name: str, why: str, tmp_path: Path) -> None:
    done = new("growth", name, "--dir", str(tmp_path / "x"))
    assert_one_line_error(done, repr(name), why)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(("slot", "name", "why"), [
    ("growth", "random", "the built-in growth rule"),
    ("trigger", "every_k", "the built-in trigger"),
    ("growth", "dense", "a built-in connectivity (slot connectivity)"),
])
def test_builtin_name_is_refused(slot: str, name: str, why: str, tmp_path: Path) -> None:
    done = new(slot, name, "--dir", str(tmp_path / "x"))
    assert_one_line_error(done, f"'{name}' is already taken by {why}")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("package", ["principlelab", "1pkg", "my-pkg", "import"])
def test_bad_package_is_refused(package: str, tmp_path: Path) -> None:
    done = new("growth", "mine", "--dir", str(tmp_path / "x"), "--package", package)
    assert_one_line_error(done, f"package name {package!r}")
    assert not (tmp_path / "x").exists()


def test_existing_directory_is_not_overwritten(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    done = new("growth", "mine", "--dir", str(target))
    assert_one_line_error(done, "already exists and is not empty", "refusing to overwrite")
    assert [p.name for p in target.iterdir()] == ["notes.txt"]

    (tmp_path / "file").write_text("")
    assert_one_line_error(new("growth", "mine", "--dir", str(tmp_path / "file")), "not a directory")
    # a directory that cannot be created: one line, not a FileNotFoundError traceback
    assert_one_line_error(new("growth", "mine", "--dir", str(tmp_path / "file" / "sub")), "cannot write the package")


# ------------------------------------------------------------------------------------ tutorial


@pytest.mark.slow
def test_tutorial_code_passes_its_tests(tmp_path: Path) -> None:
    """docs/tutorial.md's rule and tests, written over a fresh scaffold, pass (the kit included)."""
    doc = TUTORIAL.read_text()
    files = re.findall(r"<!-- tutorial-file: (\S+) -->\n```python\n(.*?)```", doc, re.S)
    assert [path for path, _ in files] == ["src/principlelab_hungriest_layer/hungriest_layer.py",
                                          "tests/test_hungriest_layer.py"]
    pkg = scaffold("growth", "hungriest_layer", tmp_path / "principlelab-hungriest_layer").root
    campaign = (pkg / "campaign.toml").read_text()  # what the tutorial says it edits
    assert "hidden = [32]\n" in campaign and "epochs = 3\ntrials = 8\n" in campaign and "seeds = 2\n" in campaign
    shown = re.search(r"```toml\n(\[search\]\n.*?)```", doc, re.S)
    assert shown is not None and shown.group(1) in campaign, "the tutorial's [search] excerpt is out of date"
    for path, code in files:
        (pkg / path).write_text(code)
    env = {**os.environ, "PYTHONPATH": str(pkg / "src")}
    done = python("-m", "pytest", "tests", "-q", "-p", "no:cacheprovider", env=env, cwd=pkg)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "25 passed" in done.stdout, done.stdout[-500:]
