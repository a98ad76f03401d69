"""Builds the :class:`~principlelab.registry.registry.Registry` from plugins, with pluggy.

Plugins come from three places, in this order (the first to register a name keeps it):

1. the built-in modules in :data:`DEFAULT_PLUGINS` (source package ``principlelab``);
2. installed distributions' entry points in the ``principlelab`` group, unless
   ``PRINCIPLELAB_DISABLE_PLUGIN_AUTOLOAD`` is set to ``1``/``true``/``yes``; if
   ``PRINCIPLELAB_PLUGINS`` is set (comma-separated entry-point or distribution names), only those;
3. an optional ``principles.py`` in ``local_dir`` (e.g. next to a campaign file), source
   ``local:<path>``.

A broken plugin (fails to import, uses an unknown hook, a hook raises, registers a bad class or a
duplicate name) is skipped with a one-line :class:`PluginWarning` naming the package and the error;
in strict mode (``strict=True`` or ``PRINCIPLELAB_STRICT_PLUGINS=1``) it raises :class:`PluginError`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from principlelab.errors import PluginError, PrincipleLabError
from principlelab.registry import hookspecs
from principlelab.registry.hookspecs import PROJECT_NAME, SLOT_HOOKS, TASK_HOOK
from principlelab.registry.registry import PluginSource, Registry

DEFAULT_PLUGINS: tuple[str, ...] = (
    "principlelab.plugins.connectivity.dense",
    "principlelab.plugins.connectivity.sparse_random",
    "principlelab.plugins.connectivity.set",
    "principlelab.plugins.learning.backprop",
    "principlelab.plugins.learning.forward_forward",
    "principlelab.plugins.learning.soft_clamp",
    "principlelab.plugins.trigger.never",
    "principlelab.plugins.trigger.every_k",
    "principlelab.plugins.trigger.grad_variance",
    "principlelab.plugins.trigger.plateau",
    "principlelab.plugins.trigger.signal_economy",
    "principlelab.plugins.growth.none",
    "principlelab.plugins.growth.random",
    "principlelab.plugins.growth.extrema",
    "principlelab.plugins.growth.katz",
    "principlelab.plugins.composition.sequential",
    "principlelab.plugins.composition.capsule_routing",
    "principlelab.plugins.composition.snapshots",
)
"""The built-in plugin modules, registered exactly like third-party ones."""

ENTRY_POINT_GROUP = "principlelab"
ENV_DISABLE_AUTOLOAD = "PRINCIPLELAB_DISABLE_PLUGIN_AUTOLOAD"
ENV_ALLOWLIST = "PRINCIPLELAB_PLUGINS"
ENV_STRICT = "PRINCIPLELAB_STRICT_PLUGINS"
LOCAL_PLUGIN_FILE = "principles.py"
_TRUE = frozenset({"1", "true", "yes"})


class PluginWarning(UserWarning):
    """A plugin was skipped; the message names its package and the error."""


@dataclass(frozen=True)
class DiscoveredPlugin:
    """One entry point of the ``principlelab`` group and the distribution that declares it."""

    name: str
    value: str
    package: str
    version: str


def discover_entry_points() -> list[DiscoveredPlugin]:
    """Installed entry points of the ``principlelab`` group (tests monkeypatch this function)."""
    found = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        package = dist.name if dist is not None else ep.value.split(":")[0].split(".")[0]
        version = dist.version if dist is not None else "unknown"
        found.append(DiscoveredPlugin(name=ep.name, value=ep.value, package=package, version=version))
    return found


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _allowlist() -> frozenset[str] | None:
    raw = os.environ.get(ENV_ALLOWLIST)
    if raw is None or not raw.strip():
        return None
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def _normalized(name: str) -> str:
    """A distribution or entry-point name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _principlelab_version() -> str:
    module = sys.modules.get("principlelab")
    version = getattr(module, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return importlib.metadata.version("principlelab")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _describe(exc: BaseException) -> str:
    if isinstance(exc, PrincipleLabError):
        return _one_line(str(exc))
    return _one_line(f"{type(exc).__name__}: {exc}")


class _Builder:
    """One build of a plugin manager and its registry."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.plugins: list[tuple[str, PluginSource]] = []  # (pluggy plugin name, source), in order

    def fail(self, source: PluginSource | str, error: str, *, part: str | None = None) -> None:
        """Skip the plugin (warn; raise in strict mode), or with ``part`` only that part of it."""
        who = source if isinstance(source, str) else f"{source.package} {source.version} ({source.module})"
        if self.strict:  # nothing is skipped: the command stops here
            what = "" if part is None else f" ({part})"
            raise PluginError(_one_line(f"principlelab plugin {who} failed{what} and strict mode is on "
                                        f"(PRINCIPLELAB_STRICT_PLUGINS): {error}"))
        if part is None:
            message = _one_line(f"principlelab plugin {who} skipped: {error}")
        else:
            message = _one_line(f"principlelab plugin {who}: {part} skipped (the plugin's other principles "
                                f"and tasks are kept): {error}")
        self.registry.problems.append(message)
        warnings.warn(message, PluginWarning, stacklevel=2)

    # -- loading ------------------------------------------------------------------------------

    def add_module(self, load: Callable[[], object], source: PluginSource, plugin_name: str) -> None:
        try:
            plugin = load()
        except (Exception, SystemExit) as exc:  # a plugin calling sys.exit() at import must not end plab
            self.fail(source, f"import failed: {_describe(exc)}")
            return
        if self.pm.is_registered(plugin):  # a second entry point naming an already loaded module
            return
        try:
            self.pm.register(plugin, name=plugin_name)
        except Exception as exc:  # pluggy.PluginValidationError, or the name/object registered twice
            self.fail(source, _describe(exc))
            return
        hooks = self.pm.get_hookcallers(plugin) or []
        unknown = sorted(caller.name for caller in hooks if not caller.has_spec() and any(
            impl.plugin is plugin and not impl.optionalhook for impl in caller.get_hookimpls()))
        if unknown:
            self.pm.unregister(plugin)
            known = ", ".join([*SLOT_HOOKS, TASK_HOOK])
            self.fail(source, f"unknown hook(s) {', '.join(unknown)}; known hooks: {known}")
            return
        if not hooks:
            self.pm.unregister(plugin)
            self.fail(source, "defines no @hookimpl functions (use principlelab.registry.hookimpl)")
            return
        self.plugins.append((plugin_name, source))

    def add_builtins(self, modules: Sequence[str]) -> None:
        version = _principlelab_version()
        for path in modules:
            self.add_module(functools.partial(importlib.import_module, path),
                            PluginSource("principlelab", version, path), path)

    def add_entry_points(self) -> None:
        allow = _allowlist()
        found = discover_entry_points()
        if allow is not None:  # names compare as pip compares them: case, '-', '_' and '.' alike
            wanted = {_normalized(name): name for name in allow}
            available = {_normalized(p.name) for p in found} | {_normalized(p.package) for p in found}
            for key in sorted(set(wanted) - available):
                self.fail(f"{wanted[key]!r}", f"{ENV_ALLOWLIST} names {wanted[key]!r} but no installed plugin has "
                          f"that entry-point or distribution name; installed: "
                          f"{', '.join(sorted(f'{p.name} ({p.package})' for p in found)) or '(none)'}")
            found = [p for p in found if _normalized(p.name) in wanted or _normalized(p.package) in wanted]
        for plugin in found:
            ep = importlib.metadata.EntryPoint(name=plugin.name, value=plugin.value, group=ENTRY_POINT_GROUP)
            module = plugin.value.split(":")[0]
            self.add_module(ep.load, PluginSource(plugin.package, plugin.version, module),
                            f"{plugin.package}:{plugin.name}")

    def add_local(self, local_dir: str | Path) -> None:
        path = Path(local_dir).resolve() / LOCAL_PLUGIN_FILE
        if not path.is_file():
            return
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
        module_name = f"principlelab_local_{digest}"
        source = PluginSource(f"local:{path}", "local", module_name)

        def load() -> ModuleType:
            spec = importlib.util.spec_from_file_location(module_name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot import {str(path)!r}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module  # so pickling and dataclasses find it
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(module_name, None)
                raise
            return module

        self.add_module(load, source, module_name)

    # -- registering --------------------------------------------------------------------------

    def call_hooks(self) -> None:
        for plugin_name, source in self.plugins:
            for hook_name in [*SLOT_HOOKS, TASK_HOOK]:
                caller = getattr(self.pm.hook, hook_name)
                for impl in caller.get_hookimpls():
                    if impl.plugin_name == plugin_name:
                        self._call(impl, hook_name, source)

    def _call(self, impl: Any, hook_name: str, source: PluginSource) -> None:
        if impl.hookwrapper or getattr(impl, "wrapper", False):
            self.fail(source, f"{hook_name} is a hook wrapper; register hooks must be plain functions")
            return
        added: list[tuple[str, str]] = []
        if hook_name == TASK_HOOK:
            register: Callable[..., None] = self._task_callback(source)
        else:
            register = self._class_callback(SLOT_HOOKS[hook_name], source, added)
        try:
            impl.function(**{arg: register for arg in impl.argnames if arg == "register"})
        except Exception as exc:
            if self.strict and isinstance(exc, PluginError):
                raise
            for slot, name in added:  # a half-run hook contributes nothing
                self.registry.remove(slot, name)
            self.fail(source, f"{hook_name} raised {_describe(exc)}")

    def _class_callback(self, slot: str, source: PluginSource,
                        added: list[tuple[str, str]]) -> Callable[[type[Any]], None]:
        def register(cls: type[Any]) -> None:
            try:
                self.registry.add(cls, source, slot=slot)
            except PluginError as exc:
                self.fail(source, str(exc), part=f"class {getattr(cls, '__qualname__', repr(cls))}")
                return
            added.append((slot, cls.name))

        return register

    def _task_callback(self, source: PluginSource) -> Callable[..., None]:
        def register(name: str, loader: Any, description: str = "") -> None:
            previous = _TASK_SOURCES.get(name)
            if previous == source:
                self.registry.task_sources[name] = source  # a rebuild registering the same task again
                return
            from principlelab.core.tasks import register_task  # written alongside; imported lazily

            try:
                register_task(name, loader, description=description)
            except Exception as exc:
                if previous is not None:
                    exc_text = f"{_describe(exc)} (task {name!r} already registered from {previous})"
                else:
                    exc_text = _describe(exc)
                self.fail(source, exc_text, part=f"task {name!r}")
                return
            _TASK_SOURCES[name] = source
            self.registry.task_sources[name] = source

        return register


_TASK_SOURCES: dict[str, PluginSource] = {}
"""Tasks this module has handed to ``register_task`` (process-wide, like the task registry itself)."""

_CacheKey = tuple[bool, str | None, tuple[str, ...], bool, frozenset[str] | None]
_CACHE: dict[_CacheKey, tuple[pluggy.PluginManager, Registry]] = {}


def _build(strict: bool | None, local_dir: str | Path | None, default_plugins: Sequence[str] | None,
           reload: bool) -> tuple[pluggy.PluginManager, Registry]:
    strict_ = _env_true(ENV_STRICT) if strict is None else strict
    modules = tuple(DEFAULT_PLUGINS if default_plugins is None else default_plugins)
    autoload = not _env_true(ENV_DISABLE_AUTOLOAD)
    local = str(Path(local_dir).resolve()) if local_dir is not None else None
    key: _CacheKey = (strict_, local, modules, autoload, _allowlist() if autoload else None)
    if not reload and key in _CACHE:
        return _CACHE[key]
    builder = _Builder(strict_)
    builder.add_builtins(modules)
    if autoload:
        builder.add_entry_points()
    if local is not None:
        builder.add_local(local)
    builder.call_hooks()
    try:
        builder.pm.check_pending()
    except pluggy.PluginValidationError as exc:  # cannot happen: unknown hooks were unregistered
        builder.fail("(unknown)", _describe(exc))
    _CACHE[key] = (builder.pm, builder.registry)
    return _CACHE[key]


def get_plugin_manager(*, strict: bool | None = None, local_dir: str | Path | None = None,
                       reload: bool = False,
                       default_plugins: Sequence[str] | None = None) -> pluggy.PluginManager:
    """The (cached) pluggy ``PluginManager`` with every plugin that loaded; see :func:`get_registry`."""
    return _build(strict, local_dir, default_plugins, reload)[0]


def get_registry(*, strict: bool | None = None, local_dir: str | Path | None = None, reload: bool = False,
                 default_plugins: Sequence[str] | None = None) -> Registry:
    """The (cached) registry of every principle from built-in, installed and local plugins.

    ``strict`` (default: env ``PRINCIPLELAB_STRICT_PLUGINS``) raises :class:`PluginError` on a broken
    plugin instead of warning; ``local_dir`` adds its ``principles.py``; ``reload`` rebuilds;
    ``default_plugins`` replaces :data:`DEFAULT_PLUGINS` (tests). The cache is keyed by these and by
    the autoload/allowlist environment variables.
    """
    return _build(strict, local_dir, default_plugins, reload)[1]


def clear_cache() -> None:
    """Forget every cached build (the next :func:`get_registry` rebuilds)."""
    _CACHE.clear()
