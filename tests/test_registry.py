"""The registry and the plugin manager, built from fake plugin modules (hermetic: no autoload)."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import types
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pluggy
import pytest
from pydantic import BaseModel, Field

import principlelab.registry
from principlelab.core.principles import GrowthRule, Trigger
from principlelab.core.recipe import SLOTS, Recipe
from principlelab.errors import ConfigError, PluginError, UnknownNameError
from principlelab.registry import PluginSource, PluginWarning, Registry, get_plugin_manager, get_registry
from principlelab.registry import manager as manager_mod
from principlelab.registry.describe import describe_field, plugin_infos
from principlelab.registry.manager import DiscoveredPlugin

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "principlelab-example-plugin"
SRC_ROOT = Path(principlelab.registry.__file__).resolve().parents[2]

HEADER = """\
from pydantic import Field
from principlelab.core import principles as P
from principlelab.registry import hookimpl
"""

# Five trivial principles, one per slot, with names unlike the built-ins' so they never clash.
CORE = HEADER + """
class Conn(P.Connectivity):
    name = "t_dense"
    def build(self, spec, *, in_features, num_classes, width_cap, generator):
        raise NotImplementedError

class Learn(P.LearningRule):
    name = "t_backprop"
    def setup(self, net, composition): pass
    def step(self, net, composition, x, y, signals): raise NotImplementedError

class Never(P.Trigger):
    name = "t_never"
    def on_step(self, signals): return None

class Grow(P.GrowthRule):
    '''Grows nothing.

    More text.'''
    name = "t_grow"
    class Config(P.PrincipleConfig):
        rate: float = Field(0.1, gt=0, le=1, description="fraction of units",
                            json_schema_extra={"search": {"low": 0.01, "high": 0.5, "log": True}})
        mode: str = Field("zero", json_schema_extra={"search": {"choices": ["zero", "clone"]}})
    def grow(self, net, signals, generator): return []

class Seq(P.Composition):
    name = "t_seq"
    def forward(self, net, x): raise NotImplementedError

@hookimpl
def register_connectivities(register): register(Conn)
@hookimpl
def register_learning_rules(register): register(Learn)
@hookimpl
def register_triggers(register): register(Never)
@hookimpl
def register_growth_rules(register): register(Grow)
@hookimpl
def register_compositions(register): register(Seq)
"""


def growth_plugin(name: str, *, extra: str = "") -> str:
    """A plugin module registering one growth rule called ``name``."""
    return HEADER + f"""
class G(P.GrowthRule):
    name = {name!r}
    def grow(self, net, signals, generator): return []
{extra}
@hookimpl
def register_growth_rules(register): register(G)
"""


RECIPE_NAMES = {"connectivity": "t_dense", "learning": "t_backprop", "trigger": "t_never",
                "growth": "t_grow", "composition": "t_seq"}


@pytest.fixture(autouse=True)
def hermetic(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in (manager_mod.ENV_DISABLE_AUTOLOAD, manager_mod.ENV_ALLOWLIST, manager_mod.ENV_STRICT):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(manager_mod, "discover_entry_points", lambda: [])
    monkeypatch.setattr(manager_mod, "_TASK_SOURCES", {})
    manager_mod.clear_cache()
    yield
    manager_mod.clear_cache()


@pytest.fixture
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], str]]:
    """Write a plugin module under tmp_path (on sys.path); returns its unique importable name."""
    root = tmp_path / "plugins"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    written: list[str] = []

    def write(stem: str, source: str) -> str:
        module = f"plab_fake_{stem}_{uuid.uuid4().hex[:8]}"
        (root / f"{module}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        written.append(module)
        return module

    yield write
    for module in written:
        sys.modules.pop(module, None)


@pytest.fixture
def entry_points(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[DiscoveredPlugin]]:
    """Fake the installed entry points: ``entry_points((name, module, package), ...)``."""

    def install(*plugins: tuple[str, str, str]) -> list[DiscoveredPlugin]:
        found = [DiscoveredPlugin(name=n, value=m, package=p, version="1.2.3") for n, m, p in plugins]
        monkeypatch.setattr(manager_mod, "discover_entry_points", lambda: list(found))
        return found

    return install


@pytest.fixture
def core(write_module: Callable[[str, str], str]) -> str:
    return write_module("core", CORE)


# -- registration and lookup --------------------------------------------------------------------


def test_registers_and_looks_up_builtin_style_plugins(core: str) -> None:
    reg = get_registry(default_plugins=[core])
    grow = reg.get("growth", "t_grow")
    assert issubclass(grow, GrowthRule) and grow.name == "t_grow"
    assert reg.names("trigger") == ["t_never"]
    assert [(s, n) for s, n, _ in reg.items()] == list(RECIPE_NAMES.items())
    assert ("growth", "t_grow") in reg and ("growth", "nope") not in reg
    source = reg.source("growth", "t_grow")
    assert source.package == "principlelab" and source.module == core
    digest = reg.config_schema_hash("growth", "t_grow")
    assert len(digest) == 12 and int(digest, 16) >= 0
    assert digest != reg.config_schema_hash("trigger", "t_never")
    assert reg.problems == []
    get_plugin_manager(default_plugins=[core]).check_pending()


def test_registry_is_cached_until_reload(core: str) -> None:
    first = get_registry(default_plugins=[core])
    assert get_registry(default_plugins=[core]) is first
    assert get_registry(default_plugins=[core], reload=True) is not first


def test_unknown_name_lists_known_names(core: str) -> None:
    reg = get_registry(default_plugins=[core])
    with pytest.raises(UnknownNameError, match=r"unknown growth principle 'nope'; known: t_grow"):
        reg.get("growth", "nope")
    with pytest.raises(UnknownNameError, match=r"unknown slot 'wiring'; known: composition, connectivity"):
        reg.names("wiring")


def test_register_rejects_a_class_of_another_slot() -> None:
    class T(Trigger):
        name: ClassVar[str] = "t"

        def on_step(self, signals: Any) -> None:
            return None

    reg = Registry()
    wrong = r"is a Trigger \(slot 'trigger'\) but was registered for slot 'growth'"
    with pytest.raises(PluginError, match=wrong):
        reg.add(T, PluginSource("pkg", "1", "m"), slot="growth")
    reg.add(T, PluginSource("pkg", "1", "m"))  # slot from the base class
    assert reg.get("trigger", "t") is T


@pytest.mark.parametrize(("body", "error"), [
    ("class X:\n    name = 'x'\n", "not a principle class"),
    ("class X(P.GrowthRule):\n    def grow(self, net, signals, generator): return []\n", "no registry name"),
    ("class X(P.GrowthRule):\n    name = 'a.b'\n    def grow(self, n, s, g): return []\n", "not allowed"),
    ("class X(P.GrowthRule):\n    name = 'x'\n    Config = dict\n    def grow(self, n, s, g): return []\n",
     "pydantic BaseModel"),
    ("class X(P.GrowthRule):\n    name = 'x'\n", "is abstract; implement grow"),
    ("class X(P.GrowthRule):\n    name = 'x'\n    class Config(P.PrincipleConfig):\n"
     "        k: int = Field(0, ge=1)\n    def grow(self, n, s, g): return []\n", "defaults do not validate"),
    ("from pydantic import BaseModel\nclass X(P.GrowthRule):\n    name = 'x'\n    class Config(BaseModel):\n"
     "        k: int = 1\n    def grow(self, n, s, g): return []\n", "accepts unknown keys; subclass PrincipleConfig"),
    ("class X(P.GrowthRule):\n    name = 'x'\n    required_signals = frozenset({'grad_norm'})\n"
     "    def grow(self, n, s, g): return []\n", r"required_signals must be a set of signal names from activation"),
    ("class X(P.GrowthRule):\n    name = 'x'\n    required_signals = 'loss'\n"
     "    def grow(self, n, s, g): return []\n", "required_signals must be a set"),
    # a hint campaigns cannot use had failed `plab plugins` and every campaign searching the slot
    ("class X(P.GrowthRule):\n    name = 'x'\n    class Config(P.PrincipleConfig):\n"
     "        units: int = Field(4, ge=1, json_schema_extra={'search': {'low': 32, 'high': 2}})\n"
     "    def grow(self, n, s, g): return []\n", r"growth\.x\.units: search hint low=32 is above high=2"),
    ("class X(P.GrowthRule):\n    name = 'x'\n    class Config(P.PrincipleConfig):\n"
     "        units: int = Field(4, ge=1, json_schema_extra={'search': {'low': 0, 'high': 8}})\n"
     "    def grow(self, n, s, g): return []\n", r"growth\.x\.units: search hint low=0 is not a valid value"),
])
def test_add_validates_classes(body: str, error: str) -> None:
    namespace: dict[str, Any] = {}
    exec(HEADER + body, namespace)
    with pytest.raises(PluginError, match=error):
        Registry().add(namespace["X"], PluginSource("pkg", "1", "m"), slot="growth")


def test_duplicate_name_raises_naming_both_sources() -> None:
    class A(GrowthRule):
        name: ClassVar[str] = "same"

        def grow(self, net: Any, signals: Any, generator: Any) -> list[Any]:
            return []

    class B(A):
        pass

    reg = Registry()
    reg.add(A, PluginSource("pkg-one", "1.0", "one.mod"))
    reg.add(A, PluginSource("pkg-one", "1.0", "one.mod"))  # the same class again is a no-op
    with pytest.raises(PluginError, match=r"duplicate growth principle 'same'.*pkg-two 2\.0.*pkg-one 1\.0"):
        reg.add(B, PluginSource("pkg-two", "2.0", "two.mod"))


def test_duplicate_across_plugins_warns_naming_both_packages(
        write_module: Callable[[str, str], str], entry_points: Callable[..., Any]) -> None:
    one = write_module("one", growth_plugin("same"))
    two = write_module("two", growth_plugin("same"))
    entry_points(("one", one, "pkg-one"), ("two", two, "pkg-two"))
    with pytest.warns(PluginWarning, match=r"pkg-two .*duplicate growth principle 'same'.*pkg-one") as record:
        reg = get_registry(default_plugins=())
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert reg.source("growth", "same").package == "pkg-one"  # the first one keeps the name
    with pytest.raises(PluginError, match=r"pkg-two.*pkg-one"):
        get_registry(default_plugins=(), strict=True)


# -- broken plugins -------------------------------------------------------------------------------

BROKEN = {
    "import_error": ("import not_a_module_that_exists_xyz\n", r"import failed: ModuleNotFoundError"),
    "raises_on_import": ("raise RuntimeError('boom at import')\n",
                         r"import failed: RuntimeError: boom at import"),
    "exits_on_import": ("import sys\nsys.exit(3)\n", r"import failed: SystemExit: 3"),
    "hook_raises": (HEADER + "@hookimpl\ndef register_triggers(register):\n    raise ValueError('bad')\n",
                    r"register_triggers raised ValueError: bad"),
    "wrong_base": (HEADER + "class T(P.Trigger):\n    name = 'tt'\n    def on_step(self, s): return None\n"
                   "@hookimpl\ndef register_growth_rules(register):\n    register(T)\n",
                   r"T is a Trigger \(slot 'trigger'\) but was registered for slot 'growth'"),
    "unknown_hook": (HEADER + "@hookimpl\ndef register_optimisers(register):\n    pass\n",
                     r"unknown hook\(s\) register_optimisers"),
    "bad_hook_args": (HEADER + "@hookimpl\ndef register_triggers(register, extra):\n    pass\n",
                      r"PluginValidationError"),
    "no_hooks": ("X = 1\n", r"defines no @hookimpl functions"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_plugin_is_skipped_with_a_warning(kind: str, write_module: Callable[[str, str], str],
                                                 entry_points: Callable[..., Any]) -> None:
    body, error = BROKEN[kind]
    good = write_module("good", growth_plugin("good_growth"))
    bad = write_module("bad", body)
    entry_points(("bad", bad, "broken-pkg"), ("good", good, "good-pkg"))
    with pytest.warns(PluginWarning, match=r"principlelab plugin broken-pkg 1\.2\.3 .* skipped( \(.*\))?: " + error):
        reg = get_registry(default_plugins=())
    assert reg.names("growth") == ["good_growth"]
    assert reg.names("trigger") == []
    assert len(reg.problems) == 1 and "broken-pkg" in reg.problems[0]
    get_plugin_manager(default_plugins=()).check_pending()

    with pytest.raises(PluginError, match=r"broken-pkg 1\.2\.3 .* failed.* strict mode is on .*: " + error):
        get_registry(default_plugins=(), strict=True)


def test_strict_mode_from_environment(write_module: Callable[[str, str], str],
                                      entry_points: Callable[..., Any],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    entry_points(("bad", write_module("bad", "raise ImportError('nope')\n"), "broken-pkg"))
    monkeypatch.setenv(manager_mod.ENV_STRICT, "1")
    with pytest.raises(PluginError, match="broken-pkg"):
        get_registry(default_plugins=())
    with pytest.warns(PluginWarning):  # an explicit argument wins over the environment
        get_registry(default_plugins=(), strict=False)


def test_missing_builtin_module_warns_with_principlelab_package() -> None:
    with pytest.warns(PluginWarning, match=r"principlelab .*\(principlelab\.plugins\.nope\) skipped: import"):
        reg = get_registry(default_plugins=("principlelab.plugins.nope",))
    assert list(reg.items()) == []


def test_hook_that_raises_after_registering_contributes_nothing(
        write_module: Callable[[str, str], str], entry_points: Callable[..., Any]) -> None:
    body = growth_plugin("half", extra="")
    body = body.replace("register(G)", "register(G); raise RuntimeError('then failed')")
    entry_points(("half", write_module("half", body), "half-pkg"))
    with pytest.warns(PluginWarning, match="half-pkg.*then failed"):
        reg = get_registry(default_plugins=())
    assert reg.names("growth") == []


def test_one_bad_class_does_not_drop_the_plugins_other_classes(
        write_module: Callable[[str, str], str], entry_points: Callable[..., Any]) -> None:
    body = growth_plugin("ok_one").replace("register(G)", "register(int); register(G)")
    entry_points(("mixed", write_module("mixed", body), "mixed-pkg"))
    with pytest.warns(PluginWarning, match=r"mixed-pkg .*: class int skipped \(the plugin's other principles "
                                           r"and tasks are kept\): .*not a principle class"):
        reg = get_registry(default_plugins=())
    assert reg.names("growth") == ["ok_one"]


# -- autoload, allowlist, local file --------------------------------------------------------------


def test_entry_points_are_loaded_with_their_distribution(
        core: str, write_module: Callable[[str, str], str], entry_points: Callable[..., Any]) -> None:
    mod = write_module("third", growth_plugin("third_growth"))
    entry_points(("third", mod, "third-pkg"))
    reg = get_registry(default_plugins=[core])
    assert reg.source("growth", "third_growth") == PluginSource("third-pkg", "1.2.3", mod)
    assert reg.names("growth") == ["t_grow", "third_growth"]


def test_disable_autoload_ignores_entry_points(core: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail() -> list[DiscoveredPlugin]:
        raise AssertionError("entry points must not be discovered")

    monkeypatch.setattr(manager_mod, "discover_entry_points", fail)
    for value in ("1", "true", "YES"):
        monkeypatch.setenv(manager_mod.ENV_DISABLE_AUTOLOAD, value)
        assert get_registry(default_plugins=[core], reload=True).names("growth") == ["t_grow"]


def test_allowlist_loads_only_named_plugins(write_module: Callable[[str, str], str],
                                            entry_points: Callable[..., Any],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    entry_points(("alpha", write_module("a", growth_plugin("alpha_g")), "alpha-pkg"),
                 ("beta", write_module("b", growth_plugin("beta_g")), "beta-pkg"),
                 ("gamma", write_module("c", growth_plugin("gamma_g")), "gamma-pkg"))
    monkeypatch.setenv(manager_mod.ENV_ALLOWLIST, "alpha, gamma-pkg")
    assert get_registry(default_plugins=()).names("growth") == ["alpha_g", "gamma_g"]
    monkeypatch.setenv(manager_mod.ENV_ALLOWLIST, "alpha,delta")
    missing = r"PRINCIPLELAB_PLUGINS names 'delta'.*installed: alpha \(alpha-pkg\), beta \(beta-pkg\), gamma"
    with pytest.warns(PluginWarning, match=missing):
        assert get_registry(default_plugins=()).names("growth") == ["alpha_g"]
    monkeypatch.setenv(manager_mod.ENV_ALLOWLIST, "Gamma_Pkg")  # as pip compares names: case, '-', '_', '.'
    assert get_registry(default_plugins=()).names("growth") == ["gamma_g"]


def test_local_principles_file_is_loaded(tmp_path: Path, core: str) -> None:
    local = tmp_path / "campaign"
    local.mkdir()
    (local / "principles.py").write_text(growth_plugin("local_growth"))
    reg = get_registry(default_plugins=[core], local_dir=local)
    source = reg.source("growth", "local_growth")
    assert source.package == f"local:{local.resolve() / 'principles.py'}"
    assert sys.modules[source.module].__file__ == str(local.resolve() / "principles.py")
    assert get_registry(default_plugins=[core], local_dir=tmp_path).names("growth") == ["t_grow"]


def test_broken_local_file_warns(tmp_path: Path) -> None:
    (tmp_path / "principles.py").write_text("def broken(:\n")
    with pytest.warns(PluginWarning, match=r"local:.*principles\.py .* skipped: import failed: SyntaxError"):
        get_registry(default_plugins=(), local_dir=tmp_path)


def test_register_tasks_delegates_to_core_tasks(write_module: Callable[[str, str], str],
                                                entry_points: Callable[..., Any],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, Any, str]] = []

    def register_task(name: str, loader: Any, *, description: str = "") -> None:
        if any(c[0] == name for c in calls):
            raise ValueError(f"task {name!r} already registered")
        calls.append((name, loader, description))

    fake = types.ModuleType("principlelab.core.tasks")
    fake.register_task = register_task  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "principlelab.core.tasks", fake)
    body = HEADER + "@hookimpl\ndef register_tasks(register):\n    register('blobs', len, description='d')\n"
    entry_points(("tasks", write_module("tasks", body), "task-pkg"))
    reg = get_registry(default_plugins=())
    assert calls == [("blobs", len, "d")]
    assert reg.task_sources["blobs"].package == "task-pkg"
    get_registry(default_plugins=(), reload=True)  # the same plugin again is not a duplicate
    assert len(calls) == 1


# -- recipes --------------------------------------------------------------------------------------


def incompatible_module(declared_on: str) -> str:
    if declared_on == "growth":
        return growth_plugin("picky", extra="    incompatible_with = {'trigger': frozenset({'t_never'})}\n")
    return HEADER + """
class T(P.Trigger):
    name = "picky_trigger"
    incompatible_with = {"growth": frozenset({"t_grow"})}
    def on_step(self, signals): return None
@hookimpl
def register_triggers(register): register(T)
"""


@pytest.mark.parametrize("declared_on", ["growth", "trigger"])
def test_incompatible_principles_are_rejected_naming_both(
        declared_on: str, core: str, write_module: Callable[[str, str], str]) -> None:
    reg = get_registry(default_plugins=[core, write_module("picky", incompatible_module(declared_on))])
    names = dict(RECIPE_NAMES)
    names["growth" if declared_on == "growth" else "trigger"] = "picky" if declared_on == "growth" \
        else "picky_trigger"
    with pytest.raises(ConfigError, match=r"incompatible") as info:
        reg.check_compatible(names)
    message = str(info.value)
    assert (f"'{names['growth']}'" in message) and (f"'{names['trigger']}'" in message)
    with pytest.raises(ConfigError, match="incompatible"):
        reg.validate_recipe(Recipe.model_validate(names))
    reg.check_compatible(RECIPE_NAMES)  # the defaults are fine


def test_config_error_names_slot_principle_and_field(core: str) -> None:
    reg = get_registry(default_plugins=[core])
    bad = Recipe.model_validate({**RECIPE_NAMES, "growth": {"name": "t_grow", "config": {"rate": 5}}})
    with pytest.raises(ConfigError, match=r"growth\.t_grow\.rate: .*less than or equal to 1 \(got 5\)"):
        reg.validate_recipe(bad)
    extra = Recipe.model_validate({**RECIPE_NAMES, "growth": {"name": "t_grow", "config": {"speed": 1}}})
    with pytest.raises(ConfigError, match=r"growth\.t_grow\.speed"):
        reg.instantiate(extra)
    with pytest.raises(UnknownNameError, match="unknown trigger principle 'nope'"):
        reg.validate_recipe(Recipe.model_validate({**RECIPE_NAMES, "trigger": "nope"}))


def test_instantiate_builds_one_principle_per_slot(core: str) -> None:
    reg = get_registry(default_plugins=[core])
    recipe = Recipe.model_validate({**RECIPE_NAMES, "growth": {"name": "t_grow", "config": {"rate": 0.25}}})
    principles = reg.instantiate(recipe)
    assert set(principles) == set(RECIPE_NAMES)
    assert all(p.name == RECIPE_NAMES[slot] for slot, p in principles.items())
    assert principles["growth"].config.rate == 0.25 and principles["growth"].config.mode == "zero"


# -- descriptions -------------------------------------------------------------------------------


def test_plugin_infos_describe_parameters(core: str) -> None:
    rows = plugin_infos(get_registry(default_plugins=[core]))
    json.dumps(rows)  # JSON-ready
    grow = next(r for r in rows if r["name"] == "t_grow")
    assert grow["slot"] == "growth" and grow["package"] == "principlelab" and grow["module"] == core
    assert grow["description"] == "Grows nothing."
    assert len(grow["schema_hash"]) == 12
    rate, mode = grow["parameters"]
    assert rate == {"name": "rate", "type": "float", "default": 0.1, "required": False,
                    "bounds": {"gt": 0, "le": 1}, "description": "fraction of units",
                    "search": {"low": 0.01, "high": 0.5, "log": True}}
    assert mode["search"] == {"choices": ["zero", "clone"]} and mode["bounds"] == {}
    never = next(r for r in rows if r["name"] == "t_never")
    assert never["parameters"] == [] and never["description"] == ""


def test_describe_field_types_and_factories() -> None:
    class C(BaseModel):
        widths: tuple[int, ...] = Field(default_factory=lambda: (1, 2))
        cap: int | None = Field(None, ge=1, lt=10)

    widths = describe_field("widths", C.model_fields["widths"])
    assert widths["default"] == [1, 2] and widths["type"] == "tuple[int, ...]"
    cap = describe_field("cap", C.model_fields["cap"])
    assert cap["type"] == "int | None" and cap["bounds"] == {"ge": 1, "lt": 10}


def test_registry_plugin_manager_uses_the_principlelab_project(core: str) -> None:
    pm = get_plugin_manager(default_plugins=[core])
    assert isinstance(pm, pluggy.PluginManager) and pm.project_name == "principlelab"
    assert pm.get_plugin(core) is sys.modules[core]


# -- the example third-party package --------------------------------------------------------------


@pytest.mark.slow
def test_example_plugin_installs_and_is_discovered(tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE, project)  # build outside the repository (pip builds in place)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(project)], check=True, timeout=300)
    code = textwrap.dedent("""
        import json, warnings
        warnings.simplefilter("error")
        from principlelab.registry import manager
        found = {p.name: [p.value, p.package, p.version] for p in manager.discover_entry_points()}
        reg = manager.get_registry(default_plugins=(), strict=True)
        print(json.dumps({"found": found, "names": [[s, n] for s, n, _ in reg.items()],
                          "source": list(reg.source("growth", "narrowest_first").__dict__.values())}))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(SRC_ROOT)])}
    env.pop(manager_mod.ENV_DISABLE_AUTOLOAD, None)
    env.pop(manager_mod.ENV_ALLOWLIST, None)
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True,
                         timeout=120)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    package = ["principlelab-example-plugin", "0.1.0"]
    assert result["found"]["example"] == ["principlelab_example.plugin", *package]
    assert ["growth", "narrowest_first"] in result["names"] and ["trigger", "loss_below"] in result["names"]
    assert result["source"] == [*package, "principlelab_example.plugin"]


def test_example_plugin_principles_validate() -> None:
    sys.path.insert(0, str(EXAMPLE / "src"))
    try:
        plugin = importlib.import_module("principlelab_example.plugin")
    finally:
        sys.path.remove(str(EXAMPLE / "src"))
        for name in ("principlelab_example.plugin", "principlelab_example"):
            sys.modules.pop(name, None)
    reg = Registry()
    source = PluginSource("principlelab-example-plugin", "0.1.0", "principlelab_example.plugin")
    plugin.register_growth_rules(lambda cls: reg.add(cls, source, slot="growth"))
    plugin.register_triggers(lambda cls: reg.add(cls, source, slot="trigger"))
    assert reg.names("growth") == ["narrowest_first"] and reg.names("trigger") == ["loss_below"]
    with pytest.raises(ConfigError, match=r"growth\.narrowest_first\.units"):
        reg.get("growth", "narrowest_first").validate_config({"units": 0})

    class Signals:
        last_loss = float("nan")  # before the first step

    trigger: Any = reg.get("trigger", "loss_below")(threshold=0.5)
    signals = Signals()
    assert trigger.on_step(signals) is None
    signals.last_loss = 0.9
    assert trigger.on_step(signals) is None
    signals.last_loss = 0.4
    assert "0.4 < 0.5" in trigger.on_step(signals).reason
    assert trigger.on_step(signals) is None  # fires once

    class Net:
        widths = [10, 8, 4, 4, 3]
        hidden_layers = range(1, 4)
        calls: list[tuple[Any, ...]] = []

        def add_units(self, layer: int, n: int, *, init: str, generator: Any) -> list[str]:
            self.calls.append((layer, n, init, generator))
            return ["event"]

    net = Net()
    growth: Any = reg.get("growth", "narrowest_first")(units=2)
    assert growth.grow(net, signals, "gen") == ["event"]
    assert net.calls == [(2, 2, "zero", "gen")]  # unit layer 2: the first of the two narrowest


def test_two_entry_points_naming_one_module_load_it_once_without_a_warning(
        write_module: Callable[[str, str], str], entry_points: Callable[..., Any]) -> None:
    module = write_module("shared", growth_plugin("shared_g"))
    entry_points(("one", module, "two-eps-pkg"), ("two", module, "two-eps-pkg"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reg = get_registry(default_plugins=())
    assert reg.names("growth") == ["shared_g"] and reg.problems == []


def test_every_run_records_its_package_versions_and_the_meaning_of_its_metrics() -> None:
    from principlelab import __version__
    from principlelab.core.trainer import METRICS_VERSION
    from principlelab.registry import get_registry
    from principlelab.registry.versions import versions_for

    recipe = Recipe(growth={"name": "random"}, trigger={"name": "every_k"})
    versions = versions_for(get_registry(), recipe)
    assert versions["principlelab"] == __version__ and versions["metrics"] == str(METRICS_VERSION)
    assert versions["growth.random"].startswith(f"principlelab=={__version__} schema=")
    assert set(versions) == {"principlelab", "torch", "metrics", *(f"{s}.{recipe.choice(s).name}" for s in SLOTS)}
