"""The campaign file (TOML): tasks, the principles to search, fidelity levels, sampler, pruner,
promotion rule and storage, validated into :class:`CampaignSpec` with one-line errors.

```toml
name = "quickstart"
tasks = ["digits"]
storage = "sqlite:///principlelab.db"   # optional; --storage overrides it
seed = 0

[network]                               # the initial network every recipe starts from
hidden = [64, 64]

[search]                                # per slot: a list of principle names or "all" (the default)
growth = "all"
learning = ["backprop"]

[search.fixed]                          # parameters held fixed instead of searched
"learning.backprop.lr" = 0.003

[[levels]]                              # the first level is sampled; later levels get promotions
name = "coarse"
data_fraction = 0.3
epochs = 4
trials = 40                             # and/or time_budget_s
sampler = "tpe"
pruner = "hyperband"

[[levels]]
name = "fine"
epochs = 20
seeds = 3

[promotion]
rule = "top_k"                          # or "pareto" (accuracy vs parameters or compute)
k = 5
```
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from principlelab.core.recipe import SLOTS, Fidelity, NetworkSpec, read_toml_text
from principlelab.errors import ConfigError, format_validation_error

SAMPLERS = ("tpe", "random", "qmc")
PRUNERS = ("hyperband", "successive_halving", "median", "wilcoxon", "none")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LevelSpec(Fidelity):
    """A fidelity level plus how it is searched (only the first level samples new recipes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    trials: int | None = Field(None, ge=1, le=1_000_000, description="sampled trials (first level only)")
    time_budget_s: float | None = Field(None, gt=0, description="stop sampling after this many seconds")
    sampler: Literal["tpe", "random", "qmc"] = "tpe"
    pruner: Literal["hyperband", "successive_halving", "median", "wilcoxon", "none"] | None = Field(
        None, description="in-trial pruner; default hyperband at the first level, none at promoted levels")

    def pruner_name(self, level_index: int) -> str:
        """The pruner in force: the explicit one, else hyperband when sampling and none for promotions."""
        return self.pruner or ("hyperband" if level_index == 0 else "none")

    def fidelity(self) -> Fidelity:
        """The plain :class:`Fidelity` part of this level."""
        return Fidelity(**self.model_dump(include=set(Fidelity.model_fields)))


class PromotionSpec(_Strict):
    """How recipes move from one level to the next."""

    rule: Literal["top_k", "pareto"] = "top_k"
    k: int = Field(5, ge=1, le=10_000, description="recipes promoted (for pareto: at most k, best first)")
    cost: Literal["params", "macs"] = Field("params", description="the cost axis of the Pareto rule")
    min_spearman: float = Field(0.5, ge=-1, le=1, description="warn when the coarse-vs-fine Spearman rho is lower")


class SearchSpec(_Strict):
    """Per slot, the principles searched (a list or "all"), plus parameters held fixed."""

    connectivity: list[str] | Literal["all"] = "all"
    learning: list[str] | Literal["all"] = "all"
    trigger: list[str] | Literal["all"] = "all"
    growth: list[str] | Literal["all"] = "all"
    composition: list[str] | Literal["all"] = "all"
    fixed: dict[str, Any] = Field(default_factory=dict)

    def principles(self) -> dict[str, list[str] | str]:
        return {slot: getattr(self, slot) for slot in SLOTS}


class CampaignSpec(_Strict):
    """A validated campaign file."""

    name: str = Field(..., min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    tasks: list[str] = Field(..., min_length=1)
    storage: str | None = None
    seed: int = Field(0, ge=0, le=2**31 - 1)
    objective: Literal["val_accuracy"] = "val_accuracy"
    optuna_storage: Literal["journal", "rdb"] = Field(
        "journal", description="journal: Optuna's journal in a table of the database (fast); rdb: Optuna's "
                               "relational schema (slower; the stock optuna-dashboard reads it)")
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)
    levels: list[LevelSpec] = Field(..., min_length=1)
    promotion: PromotionSpec = Field(default_factory=PromotionSpec)

    @field_validator("tasks")
    @classmethod
    def _unique_tasks(cls, tasks: list[str]) -> list[str]:
        twice = sorted({task for task in tasks if tasks.count(task) > 1})
        if twice:
            raise ValueError(f"each task once: {', '.join(map(repr, twice))} is listed more than once")
        return tasks

    @field_validator("levels")
    @classmethod
    def _unique_level_names(cls, levels: list[LevelSpec]) -> list[LevelSpec]:
        names = [level.name for level in levels]
        if len(set(names)) != len(names):
            raise ValueError(f"level names must be unique, got {names}")
        return levels

    @model_validator(mode="after")
    def _first_level_has_a_budget(self) -> CampaignSpec:
        first = self.levels[0]
        if first.trials is None and first.time_budget_s is None:
            raise ValueError(f"the first level {first.name!r} needs trials or time_budget_s")
        for level in self.levels[1:]:
            if level.trials is not None or level.time_budget_s is not None:
                raise ValueError(f"level {level.name!r} sets trials or time_budget_s, which only the first level "
                                 "uses: later levels train the promoted recipes (set [promotion] k and the "
                                 "level's seeds instead)")
        return self


def parse_campaign(text: str, *, source: str = "campaign") -> CampaignSpec:
    """Validate TOML text into a :class:`CampaignSpec`; errors are one line naming ``source``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"campaign file {source!r} is not valid TOML: {exc}") from None
    try:
        return CampaignSpec(**data)
    except ValidationError as exc:
        raise ConfigError(f"campaign file {source!r}: {format_validation_error('', exc, CampaignSpec)}") from None
    except TypeError as exc:
        raise ConfigError(f"campaign file {source!r}: {exc}") from None


def load_campaign(path: str | Path) -> tuple[CampaignSpec, str]:
    """``(spec, file text)`` from a campaign TOML file."""
    path = Path(path)
    return parse_campaign(text := read_toml_text(path, "campaign"), source=str(path)), text


def file_hash(text: str) -> str:
    """The identity of a campaign file's content (whitespace and comments count)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]
