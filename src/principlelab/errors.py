"""The one error hierarchy of principlelab.

Every message says what failed, the offending value, what is allowed and what to do, on one line,
so the CLI can print it as-is (``plab: error: ...``) and exit non-zero.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import ValidationError


class PrincipleLabError(Exception):
    """Base class of every error principlelab raises on purpose."""


class UnknownNameError(PrincipleLabError, KeyError):
    """A principle, slot, task or fidelity name that is not registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        self.kind, self.name, self.known = kind, name, sorted(known)
        listed = ", ".join(self.known) or "(none registered)"
        super().__init__(f"unknown {kind} {name!r}; known: {listed}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ConfigError(PrincipleLabError, ValueError):
    """A parameter outside its allowed range, or a malformed recipe/campaign file."""


class TaskDataError(PrincipleLabError, ValueError):
    """A dataset that cannot be loaded (missing file, mismatched X/y, bad format)."""


class PluginError(PrincipleLabError):
    """A third-party plugin that failed to load (raised only in strict mode)."""


class GrowthError(PrincipleLabError, ValueError):
    """A growth operation that cannot be applied to this network as asked."""


class TrainingDiverged(PrincipleLabError, FloatingPointError):
    """The loss became NaN or infinite; the run is recorded as failed with this reason."""


class StorageError(PrincipleLabError):
    """A database that cannot be reached or written."""


def format_validation_error(prefix: str, exc: ValidationError) -> str:
    """One line naming each bad field (``prefix.field``), the bad value and the bound it broke."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        parts.append(f"{loc}: {err['msg']}{shown}")
    return "; ".join(parts)
