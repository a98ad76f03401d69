"""Principle registry and plugin loading (pluggy hooks, entry points, local ``principles.py``)."""

from principlelab.registry.describe import plugin_infos
from principlelab.registry.hookspecs import hookimpl, hookspec
from principlelab.registry.manager import (
    DEFAULT_PLUGINS,
    PluginWarning,
    get_plugin_manager,
    get_registry,
)
from principlelab.registry.registry import PluginSource, Registry

__all__ = [
    "DEFAULT_PLUGINS",
    "PluginSource",
    "PluginWarning",
    "Registry",
    "get_plugin_manager",
    "get_registry",
    "hookimpl",
    "hookspec",
    "plugin_infos",
]
