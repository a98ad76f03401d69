"""Recipes, fidelities and network specs as validated pydantic models.

A :class:`Recipe` names one principle per slot (with its config), a task, a fidelity and a seed; it
is everything needed to reproduce a run on CPU. A :class:`Fidelity` says how much a run costs:
data fraction, epochs, input resolution, width cap, batch size and (for campaigns) seeds.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from principlelab.errors import ConfigError, UnknownNameError, format_validation_error, undecodable_byte

SLOTS: tuple[str, ...] = ("connectivity", "learning", "trigger", "growth", "composition")
"""The five principle slots, in the order a recipe lists them."""

DEFAULT_PRINCIPLES: dict[str, str] = {
    "connectivity": "dense",
    "learning": "backprop",
    "trigger": "never",
    "growth": "none",
    "composition": "sequential",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Fidelity(_Strict):
    """How much a run costs. Coarse levels use less data, fewer epochs, smaller inputs and widths."""

    name: str = "default"
    data_fraction: float = Field(1.0, gt=0.0, le=1.0, description="fraction of the training split used")
    epochs: int = Field(30, ge=1, le=100_000, description="passes over the (fractional) training split")
    input_resolution: float = Field(
        1.0, gt=0.0, le=1.0, description="fraction of each spatial input axis kept (average pooling)"
    )
    width_cap: int | None = Field(None, ge=1, description="cap on every hidden layer's width, growth included")
    batch_size: int = Field(64, ge=1, le=65_536)
    seeds: int = Field(1, ge=1, le=1000, description="seeds per recipe when a campaign runs this level")


FIDELITIES: dict[str, Fidelity] = {
    "coarse": Fidelity(name="coarse", data_fraction=0.3, epochs=5, input_resolution=1.0, width_cap=64),
    "medium": Fidelity(name="medium", data_fraction=0.6, epochs=15),
    "default": Fidelity(name="default", epochs=30),
    "fine": Fidelity(name="fine", epochs=60, seeds=3),
}
"""Named fidelity levels; campaigns may define their own."""


def resolve_fidelity(fidelity: str | Fidelity | dict[str, Any]) -> Fidelity:
    """A :class:`Fidelity` from a name in :data:`FIDELITIES`, a dict, or a Fidelity.

    A dict whose ``name`` is one of :data:`FIDELITIES` starts from that level and changes only the
    keys it gives (``{"name": "coarse", "epochs": 2}`` is coarse with 2 epochs), as ``plab run
    --fidelity coarse --epochs 2`` does; any other name starts from the defaults.
    """
    if isinstance(fidelity, Fidelity):
        return fidelity
    if isinstance(fidelity, str):
        if fidelity not in FIDELITIES:
            raise UnknownNameError("fidelity", fidelity, FIDELITIES)
        return FIDELITIES[fidelity]
    try:
        return Fidelity(**_over_named_level(fidelity))
    except ValidationError as exc:
        raise ConfigError(format_validation_error("fidelity", exc, Fidelity)) from None


def _over_named_level(table: dict[str, Any]) -> dict[str, Any]:
    """``table`` over the keys of the named level it names, if it names one (else unchanged)."""
    named = FIDELITIES.get(str(table.get("name")))
    return table if named is None else {**named.model_dump(), **table}


class NetworkSpec(_Strict):
    """The initial architecture: hidden widths and the hidden activation (the output is linear)."""

    hidden: tuple[int, ...] = Field((256, 256), description="initial hidden layer widths")
    activation: Literal["relu", "tanh", "sigmoid"] = "relu"

    @field_validator("hidden")
    @classmethod
    def _positive_widths(cls, widths: tuple[int, ...]) -> tuple[int, ...]:
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"hidden widths must be >= 1 and at least one layer, got {list(widths)}")
        return widths


class PrincipleChoice(_Strict):
    """One principle by registry name plus its (partial) config; defaults fill the rest."""

    name: str
    config: dict[str, Any] = Field(default_factory=dict)


class Recipe(_Strict):
    """One principle per slot, a task, a fidelity and a seed: a fully reproducible run."""

    task: str = "digits"
    fidelity: Fidelity = Field(default_factory=lambda: FIDELITIES["default"])
    seed: int = Field(0, ge=0, le=2**31 - 1)
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    connectivity: PrincipleChoice = PrincipleChoice(name=DEFAULT_PRINCIPLES["connectivity"])
    learning: PrincipleChoice = PrincipleChoice(name=DEFAULT_PRINCIPLES["learning"])
    trigger: PrincipleChoice = PrincipleChoice(name=DEFAULT_PRINCIPLES["trigger"])
    growth: PrincipleChoice = PrincipleChoice(name=DEFAULT_PRINCIPLES["growth"])
    composition: PrincipleChoice = PrincipleChoice(name=DEFAULT_PRINCIPLES["composition"])

    @field_validator("fidelity", mode="before")
    @classmethod
    def _named_fidelity(cls, value: Any) -> Any:
        """A name, or a table that changes some keys of a named level (see :func:`resolve_fidelity`)."""
        if isinstance(value, str):
            return resolve_fidelity(value)
        return _over_named_level(value) if isinstance(value, dict) else value

    @field_validator(*SLOTS, mode="before")
    @classmethod
    def _bare_name(cls, value: Any) -> Any:
        """Accept ``"random"``, ``{name, config}`` or ``{name, **config}`` (TOML tables read well)."""
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, dict) and set(value) - {"name", "config"}:
            extra = {k: v for k, v in value.items() if k not in ("name", "config")}
            return {"name": value.get("name"), "config": {**value.get("config", {}), **extra}}
        return value

    def choice(self, slot: str) -> PrincipleChoice:
        """The principle chosen for ``slot``."""
        if slot not in SLOTS:
            raise UnknownNameError("slot", slot, SLOTS)
        choice: PrincipleChoice = getattr(self, slot)
        return choice

    def principle_names(self) -> dict[str, str]:
        """``{slot: principle name}`` for the five slots."""
        return {slot: self.choice(slot).name for slot in SLOTS}


def load_recipe(path: str | Path, **overrides: Any) -> Recipe:
    """Read a recipe TOML file; top-level keys are Recipe fields, each slot a table or a name.

    Raises :class:`ConfigError` with the file name for missing files, bad TOML or bad fields.
    """
    path = Path(path)
    try:
        data = tomllib.loads(read_toml_text(path, "recipe"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"recipe file {str(path)!r} is not valid TOML: {exc}") from None
    data.update({k: v for k, v in overrides.items() if v is not None})
    return make_recipe(data, source=str(path))


def recipe_warnings(recipe: Recipe) -> list[str]:
    """What in ``recipe`` is legal but probably not meant: a growth rule on a network that starts at
    the fidelity's width cap, where a rule that adds units can add none."""
    cap = recipe.fidelity.width_cap
    growing = recipe.growth.name != "none" and recipe.trigger.name != "never"
    if growing and cap is not None and all(width >= cap for width in recipe.network.hidden):
        return [f"every hidden layer starts at the width cap ({list(recipe.network.hidden)} hidden, "
                f"width_cap {cap} at fidelity {recipe.fidelity.name!r}): growth {recipe.growth.name!r} can add no "
                "units (only layers); start narrower (--hidden) or pick a fidelity with a larger cap"]
    return []


def make_recipe(data: dict[str, Any], *, source: str = "recipe") -> Recipe:
    """Validate a plain dict into a :class:`Recipe`, with a one-line error naming the bad field."""
    try:
        return Recipe(**data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {format_validation_error('', exc, Recipe)}") from None
    except UnknownNameError:
        raise


def read_toml_text(path: Path, kind: str) -> str:
    """The text of a TOML file, or a one-line :class:`ConfigError` (missing, unreadable, not UTF-8)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{kind} file {str(path)!r} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{kind} file {str(path)!r} is not UTF-8 text (TOML files are UTF-8): "
                          f"{undecodable_byte(exc)}; save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{kind} file {str(path)!r} cannot be read: {exc.strerror or exc}") from None
