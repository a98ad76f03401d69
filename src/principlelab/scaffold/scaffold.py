"""Scaffold a pip-installable principle plugin package (what ``plab new-principle`` writes).

:func:`scaffold` validates the slot and the name, renders the templates under ``templates/`` (the
slot's plugin module and tests, and the common ``pyproject.toml``, ``README.md``, ``campaign.toml``
and ``__init__.py``) and writes them to a new directory::

    principlelab-<name>/
        pyproject.toml            entry point [project.entry-points.principlelab] <name> = "<pkg>.<name>"
        README.md                 next steps
        campaign.toml             <name> against the slot's built-in baseline, on digits, < 1 minute
        src/<pkg>/__init__.py
        src/<pkg>/<name>.py       the principle: a working minimal implementation and its @hookimpl
        tests/test_<name>.py      the slot's conformance suite and a behaviour test

Templates use ``{{key}}`` placeholders, replaced verbatim (no other syntax), so Python and TOML
braces in them need no escaping.
"""

from __future__ import annotations

import importlib
import keyword
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from principlelab.core.recipe import SLOTS
from principlelab.errors import ConfigError

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
"""A new principle's name: it is also a Python module and a campaign/leaderboard key."""
PACKAGE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_NAME_LENGTH = 64
RESERVED_NAMES = frozenset({"all"})
"""Names a campaign file would misread (``growth = "all"`` means every principle)."""
RESERVED_PACKAGES = frozenset({"principlelab", "tests", "test", "src"})
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@dataclass(frozen=True)
class SlotTemplate:
    """What differs between slots: the base class, the hook, the conformance suite, the baseline."""

    base: str
    """The principle ABC in ``principlelab.core.principles``."""
    kind: str
    """The slot in words (``growth rule``)."""
    hook: str
    """The registration hook the plugin implements."""
    conformance: str
    """The conformance suite in ``principlelab.testing`` its tests subclass."""
    baseline: str
    """The built-in it is compared with in ``campaign.toml``."""
    run_flags: str
    """Extra ``plab run`` options that make a one-recipe run exercise it."""


SLOT_TEMPLATES: dict[str, SlotTemplate] = {
    "connectivity": SlotTemplate("Connectivity", "connectivity", "register_connectivities",
                                 "ConnectivityConformance", "dense", ""),
    "learning": SlotTemplate("LearningRule", "learning rule", "register_learning_rules",
                             "LearningRuleConformance", "backprop", ""),
    "trigger": SlotTemplate("Trigger", "trigger", "register_triggers", "TriggerConformance", "every_k",
                            " --growth random"),
    "growth": SlotTemplate("GrowthRule", "growth rule", "register_growth_rules", "GrowthRuleConformance",
                           "random", " --trigger every_k"),
    "composition": SlotTemplate("Composition", "composition", "register_compositions",
                                "CompositionConformance", "sequential", ""),
}

CAMPAIGN_PRINCIPLES: dict[str, str] = {slot: SLOT_TEMPLATES[slot].baseline for slot in SLOTS}
"""The principle of every slot the campaign does not compare (growth every epoch, so growth and
trigger principles act)."""
CAMPAIGN_FIXED: dict[str, object] = {
    "learning.backprop.optimizer": "adam",
    "learning.backprop.lr": 0.003,
    "learning.backprop.weight_decay": 0.0,
    "trigger.every_k.k": 1,
    "growth.random.units": 8,
    "growth.random.operator": "split",
}
"""Every searchable parameter of :data:`CAMPAIGN_PRINCIPLES`, held at its default (``every_k.k``
at 1): one recipe per built-in, so top-3 promotion always reaches the new principle's recipes."""

# Names the templates import or define; a class name equal to one gets a suffix.
_TEMPLATE_NAMES = frozenset({
    "Callable", "ClassVar", "Composition", "Config", "Connectivity", "Field", "Firing", "GrowthEvent",
    "GrowthRule", "LearningRule", "Network", "NetworkSpec", "PrincipleConfig", "Sequential", "Signals",
    "TYPE_CHECKING", "Trigger",
})


@dataclass(frozen=True)
class Scaffolded:
    """What :func:`scaffold` wrote."""

    slot: str
    name: str
    package: str
    distribution: str
    class_name: str
    root: Path
    files: tuple[str, ...]
    """Paths relative to ``root``, in the order written."""


# -- validation -------------------------------------------------------------------------------------


def validate_slot(slot: str) -> str:
    """``slot`` if it is one of the five slots, else a one-line :class:`ConfigError` listing them."""
    if slot not in SLOT_TEMPLATES:
        raise ConfigError(f"unknown slot {slot!r}; the slots are {', '.join(SLOTS)}")
    return slot


def builtin_names() -> dict[str, str]:
    """``{name: slot}`` of every principle principlelab itself registers.

    Calls the hooks of the built-in plugin modules directly: no installed plugin is imported, so a
    broken one cannot warn or fail here.
    """
    from principlelab.registry.hookspecs import SLOT_HOOKS
    from principlelab.registry.manager import DEFAULT_PLUGINS

    names: dict[str, str] = {}
    for path in DEFAULT_PLUGINS:
        module = importlib.import_module(path)
        for hook, slot in SLOT_HOOKS.items():
            register = getattr(module, hook, None)
            if callable(register):
                register(lambda cls, slot=slot: names.setdefault(cls.name, slot))
    return names


def validate_name(name: str, slot: str, *, builtins: Mapping[str, str] | None = None) -> str:
    """``name`` if it can name a new principle of ``slot``, else a one-line :class:`ConfigError` saying why.

    It must match :data:`NAME_RE` (it becomes a module, a class and a campaign key), be no Python
    keyword, and not be a built-in principle's name (in any slot, so ``slot=name`` filters and
    recipe files stay unambiguous); ``builtins`` defaults to :func:`builtin_names`.
    """
    if not NAME_RE.match(name):
        raise ConfigError(f"principle name {name!r} must match {NAME_RE.pattern} (a lowercase letter, then lowercase "
                          "letters, digits or underscores), e.g. grow_widest")
    if len(name) > MAX_NAME_LENGTH:
        raise ConfigError(f"principle name {name!r} is {len(name)} characters long; use at most {MAX_NAME_LENGTH}")
    if keyword.iskeyword(name):
        raise ConfigError(f"principle name {name!r} is a Python keyword and cannot name a module; choose another")
    if name in RESERVED_NAMES:
        raise ConfigError(f"principle name {name!r} is reserved (a campaign's {slot} = \"all\" means every "
                          f"{SLOT_TEMPLATES[slot].kind}); choose another")
    known = builtin_names() if builtins is None else builtins
    if name in known:
        other = known[name]
        where = f"the built-in {SLOT_TEMPLATES[other].kind}" if other == slot else \
            f"a built-in {SLOT_TEMPLATES[other].kind} (slot {other})"
        raise ConfigError(f"principle name {name!r} is already taken by {where}; choose another name")
    return name


def validate_package(package: str) -> str:
    """``package`` if it is a valid, non-shadowing import name, else a one-line :class:`ConfigError`."""
    if not PACKAGE_RE.match(package) or keyword.iskeyword(package):
        raise ConfigError(f"package name {package!r} is not a valid Python import name (letters, digits and "
                          "underscores, not starting with a digit, not a keyword), e.g. my_principles")
    if package in RESERVED_PACKAGES:
        raise ConfigError(f"package name {package!r} would shadow {package!r} on the import path; choose another")
    return package


# -- names ------------------------------------------------------------------------------------------


def default_package(name: str) -> str:
    """``principlelab_<name>``: the import name of the scaffolded package."""
    return f"principlelab_{name}"


def distribution_name(name: str) -> str:
    """``principlelab-<name>`` (underscores as dashes, the normalised form): the pip distribution."""
    return f"principlelab-{name.replace('_', '-')}"


def default_directory(name: str) -> Path:
    """``./principlelab-<name>``."""
    return Path(f"principlelab-{name}")


def class_name_for(name: str) -> str:
    """``grow_widest`` -> ``GrowWidest``; suffixed ``Principle`` if that clashes with a template name."""
    camel = "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)
    return camel + "Principle" if camel in _TEMPLATE_NAMES else camel


# -- rendering --------------------------------------------------------------------------------------


def template_text(relative: str) -> str:
    """The text of ``templates/<relative>`` (shipped as package data)."""
    return resources.files("principlelab.scaffold").joinpath("templates", *relative.split("/")).read_text(
        encoding="utf-8")


def render(text: str, values: Mapping[str, str]) -> str:
    """Replace every ``{{key}}`` in ``text``; an unknown key is a bug in the template (``KeyError``)."""
    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(f"template placeholder {{{{{key}}}}} has no value")
        return values[key]

    return PLACEHOLDER.sub(substitute, text)


def _toml_value(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def template_values(slot: str, name: str, package: str) -> dict[str, str]:
    """Every placeholder's value for a principle ``name`` of ``slot`` in package ``package``."""
    spec = SLOT_TEMPLATES[slot]
    values = {
        "slot": slot,
        "name": name,
        "package": package,
        "dist": distribution_name(name),
        "class_name": class_name_for(name),
        "kind": spec.kind,
        "base": spec.base,
        "hook": spec.hook,
        "conformance": spec.conformance,
        "baseline": spec.baseline,
        "run_example": f"plab run --task digits --epochs 5 --{slot} {name}{spec.run_flags}",
        "fixed": "\n".join(f'"{key}" = {_toml_value(value)}' for key, value in CAMPAIGN_FIXED.items()),
    }
    for other in SLOTS:
        chosen = [name, spec.baseline] if other == slot else [CAMPAIGN_PRINCIPLES[other]]
        values[f"search_{other}"] = "[" + ", ".join(f'"{n}"' for n in chosen) + "]"
    return values


def plan(slot: str, name: str, package: str) -> dict[str, str]:
    """``{relative path: content}`` of the package for an already validated slot, name and package."""
    values = template_values(slot, name, package)
    sources = {
        "pyproject.toml": "common/pyproject.toml.tmpl",
        "README.md": "common/README.md.tmpl",
        "campaign.toml": "common/campaign.toml.tmpl",
        f"src/{package}/__init__.py": "common/__init__.py.tmpl",
        f"src/{package}/{name}.py": f"{slot}/plugin.py.tmpl",
        f"tests/test_{name}.py": f"{slot}/test_plugin.py.tmpl",
    }
    return {path: render(template_text(source), values) for path, source in sources.items()}


# -- writing ----------------------------------------------------------------------------------------


def check_target(directory: Path) -> None:
    """Refuse a path that is a file or a non-empty directory (one-line :class:`ConfigError`)."""
    if directory.is_dir():
        if any(directory.iterdir()):
            raise ConfigError(f"directory {str(directory)!r} already exists and is not empty; refusing to "
                              "overwrite it (pass --dir with a new or empty directory)")
    elif directory.exists():
        raise ConfigError(f"{str(directory)!r} exists and is not a directory; pass --dir with a new directory")


def scaffold(slot: str, name: str, directory: str | Path | None = None, *, package: str | None = None,
             builtins: Mapping[str, str] | None = None) -> Scaffolded:
    """Write a new plugin package for the principle ``name`` of ``slot`` and return what was written.

    Args:
        slot: connectivity, learning, trigger, growth or composition.
        name: the principle's registry name (also its module and campaign name); see :func:`validate_name`.
        directory: where to write (default ``./principlelab-<name>``); must be new or empty.
        package: the import name (default ``principlelab_<name>``).
        builtins: ``{name: slot}`` of the names to refuse (default: principlelab's built-ins).

    Raises:
        ConfigError: a bad slot, name or package, a directory that is not new or empty, or one that
            cannot be written.
    """
    validate_slot(slot)
    validate_name(name, slot, builtins=builtins)
    package = validate_package(package) if package is not None else default_package(name)
    root = Path(directory) if directory is not None else default_directory(name)
    check_target(root)
    files = plan(slot, name, package)
    try:
        for relative, content in files.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the package into {str(root)!r}: {exc.strerror or exc}; pick another "
                          "--dir") from None
    return Scaffolded(slot, name, package, distribution_name(name), class_name_for(name), root, tuple(files))


def next_steps(result: Scaffolded) -> list[str]:
    """The shell commands that install, test, list, campaign and rank the new principle."""
    return [
        f"cd {result.root}",
        "pip install -e .",
        "python -m pytest",
        f"plab plugins --slot {result.slot}",
        "plab campaign run campaign.toml",
        f"plab leaderboard --campaign {result.name} --fidelity fine --group-by recipe",
    ]
