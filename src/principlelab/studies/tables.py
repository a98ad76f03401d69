"""principlelab's leaderboard tables (SQLAlchemy 2.0, typed), their schema version and migrations.

The tables live in the same database as Optuna's but never inside Optuna's schema: every table
name starts with ``plab_``. :class:`~principlelab.studies.db.LeaderboardDB` creates and upgrades them:

* ``plab_meta``: key/value pairs; ``schema_version`` says which :data:`MIGRATIONS` have run.
* ``plab_campaigns``: one row per campaign name, with the hash and text of its campaign file.
* ``plab_study_versions``: one row per (campaign, task, level, search-space fingerprint), i.e. per
  Optuna study; ``parent_id`` links a new space version to the previous one (lineage).
* ``plab_runs``: one row per Optuna trial (``optuna_study_name``, ``trial_number``): the recipe as one
  ``<slot>``/``<slot>_config`` column pair per slot, metrics, size, compute and provenance.
* ``plab_growth_events``: the growth events of a run (deleted with it).
* ``plab_promotions``: which recipe was promoted to which study version, once (the unique constraint
  on ``(to_study_version_id, recipe_key)`` is the lock between workers).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Connection,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from principlelab.core.events import count_growth
from principlelab.core.recipe import SLOTS
from principlelab.errors import ConfigError, StorageError

SCHEMA_VERSION = 3
"""The schema this code writes. Bump it and add ``MIGRATIONS[new_version]`` to change the tables."""


def _add_run_curve_and_structure(conn: Connection) -> None:
    """Version 2: per-epoch curves and the final network structure of every run (for reports)."""
    for column in ("curve", "structure"):
        conn.execute(text(f"ALTER TABLE plab_runs ADD COLUMN {column} JSON"))


def _add_campaign_data_hashes(conn: Connection) -> None:
    """Version 3: the SHA-256 of each ``file:`` task's data, so a rerun notices changed data."""
    conn.execute(text("ALTER TABLE plab_campaigns ADD COLUMN data_hashes JSON"))


MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    1: lambda conn: None,  # version 0 (tables without a schema_version row) has the version-1 tables
    2: _add_run_curve_and_structure,
    3: _add_campaign_data_hashes,
}
"""``MIGRATIONS[v](connection)`` upgrades a version ``v - 1`` schema to version ``v`` (in one transaction,
before tables new in this code are created). Version 0 is a database with principlelab tables but no
``schema_version`` row."""

RUN_STATUSES = ("complete", "pruned", "failed", "rejected")
RETRIED = "the trial was retried"
"""How the failure reason of a ``failed`` run ends when its trial was retried (the worker was interrupted,
stopped before training it, or was lost): the trial counts once, by its retry."""
TABLE_PREFIX = "plab_"


def utc_now() -> datetime:
    """The current time, timezone-aware (UTC): the default of every ``created_at``."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """The declarative base of every ``plab_`` table (its own metadata, separate from Optuna's)."""


class MetaRow(Base):
    __tablename__ = "plab_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class CampaignRow(Base):
    __tablename__ = "plab_campaigns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    file_hash: Mapped[str] = mapped_column(String(64))
    spec_json: Mapped[str] = mapped_column(Text)
    data_hashes: Mapped[Any] = mapped_column(JSON, nullable=True)  # {file: task: sha256}; None before v3
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class StudyVersionRow(Base):
    __tablename__ = "plab_study_versions"
    __table_args__ = (
        UniqueConstraint("campaign_id", "task", "level", "version", name="uq_plab_sv_version"),
        UniqueConstraint("campaign_id", "task", "level", "fingerprint", name="uq_plab_sv_fingerprint"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("plab_campaigns.id", ondelete="CASCADE"), index=True)
    task: Mapped[str] = mapped_column(String(255))
    level: Mapped[str] = mapped_column(String(255))
    level_index: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)
    fingerprint: Mapped[str] = mapped_column(String(64))
    space_json: Mapped[str] = mapped_column(Text)
    optuna_study_name: Mapped[str] = mapped_column(String(255), unique=True)
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("plab_study_versions.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class RunRow(Base):
    """One Optuna trial. Slot columns are spelled out (typed); the check below keeps them = SLOTS."""

    __tablename__ = "plab_runs"
    __table_args__ = (
        UniqueConstraint("optuna_study_name", "trial_number", name="uq_plab_runs_trial"),
        # the leaderboard: filter by campaign/status, group by recipe (task, level)
        Index("ix_plab_runs_board", "campaign_id", "status", "recipe_key", "task", "level"),
        Index("ix_plab_runs_status_recipe", "status", "recipe_key", "task", "level"),
        Index("ix_plab_runs_task_level", "task", "level"),
        Index("ix_plab_runs_study_version", "study_version_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("plab_campaigns.id", ondelete="CASCADE"))
    study_version_id: Mapped[int] = mapped_column(ForeignKey("plab_study_versions.id", ondelete="CASCADE"))
    optuna_study_name: Mapped[str] = mapped_column(String(255))
    trial_number: Mapped[int] = mapped_column(Integer)
    task: Mapped[str] = mapped_column(String(255))
    level: Mapped[str] = mapped_column(String(255))
    seed: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    connectivity: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    connectivity_config: Mapped[Any] = mapped_column(JSON, nullable=True)
    learning: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    learning_config: Mapped[Any] = mapped_column(JSON, nullable=True)
    trigger: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    trigger_config: Mapped[Any] = mapped_column(JSON, nullable=True)
    growth: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    growth_config: Mapped[Any] = mapped_column(JSON, nullable=True)
    composition: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    composition_config: Mapped[Any] = mapped_column(JSON, nullable=True)
    recipe_key: Mapped[str] = mapped_column(String(64), index=True)
    recipe_json: Mapped[Any] = mapped_column(JSON, nullable=True)
    test_accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    val_accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    test_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    val_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    params: Mapped[int | None] = mapped_column(Integer, nullable=True)
    macs: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    samples_seen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    wall_s: Mapped[float] = mapped_column(Float, default=0.0)
    growth_event_count: Mapped[int] = mapped_column(Integer, default=0)
    versions: Mapped[Any] = mapped_column(JSON, nullable=True)
    curve: Mapped[Any] = mapped_column(JSON, nullable=True)  # per epoch: losses, accuracy, params, widths, MACs
    structure: Mapped[Any] = mapped_column(JSON, nullable=True)  # final widths, skip edges, activation
    space_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    promoted_from_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("plab_runs.id", ondelete="SET NULL"), nullable=True)
    objective: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class GrowthEventRow(Base):
    __tablename__ = "plab_growth_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("plab_runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer)
    slot: Mapped[str] = mapped_column(String(64))
    principle: Mapped[str] = mapped_column(String(255))
    layer: Mapped[int] = mapped_column(Integer)
    units: Mapped[int] = mapped_column(Integer)
    source_units: Mapped[Any] = mapped_column(JSON, nullable=True)
    operation: Mapped[str] = mapped_column(String(64))
    params_delta: Mapped[int] = mapped_column(BigInteger)
    macs_delta: Mapped[int] = mapped_column(BigInteger)
    function_preserving: Mapped[bool] = mapped_column(Boolean)
    loss_before: Mapped[float | None] = mapped_column(Float, nullable=True)
    loss_after: Mapped[float | None] = mapped_column(Float, nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[Any] = mapped_column(JSON, nullable=True)


class PromotionRow(Base):
    __tablename__ = "plab_promotions"
    __table_args__ = (
        UniqueConstraint("to_study_version_id", "recipe_key", name="uq_plab_promotions_once"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    from_study_version_id: Mapped[int] = mapped_column(
        ForeignKey("plab_study_versions.id", ondelete="CASCADE"), index=True)
    to_study_version_id: Mapped[int] = mapped_column(ForeignKey("plab_study_versions.id", ondelete="CASCADE"))
    recipe_key: Mapped[str] = mapped_column(String(64))
    source_run_id: Mapped[int | None] = mapped_column(ForeignKey("plab_runs.id", ondelete="SET NULL"),
                                                      nullable=True)
    source_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


PLAB_TABLES: frozenset[str] = frozenset(Base.metadata.tables)
RUN_FIELDS: frozenset[str] = frozenset(c.key for c in RunRow.__table__.columns) - {"id", "created_at"}
EVENT_FIELDS: frozenset[str] = frozenset(c.key for c in GrowthEventRow.__table__.columns) - {"id", "run_id"}
EVENT_DEFAULTS: dict[str, Any] = {"step": -1, "epoch": -1, "slot": "", "principle": "", "units": 0,
                                  "params_delta": 0, "macs_delta": 0, "function_preserving": True,
                                  "reason": "", "source_units": [], "details": {}}
"""The value of each growth-event column that an event dict may leave out."""

_missing_slots = [c for slot in SLOTS for c in (slot, f"{slot}_config") if c not in RUN_FIELDS]
if _missing_slots or not all(name.startswith(TABLE_PREFIX) for name in PLAB_TABLES):  # pragma: no cover
    raise ImportError(f"plab_runs lacks the slot columns {_missing_slots}; add them to RunRow")


def read_schema_version(conn: Connection) -> int | None:
    """The stored ``schema_version`` (None without the row; 0 if it is not a number)."""
    raw = conn.execute(select(MetaRow.value).where(MetaRow.key == "schema_version")).scalar()
    try:
        return None if raw is None else int(raw)
    except ValueError:
        return 0


def write_schema_version(conn: Connection, version: int) -> None:
    """Store ``version`` as the ``schema_version`` (in ``conn``'s transaction)."""
    updated = conn.execute(update(MetaRow).where(MetaRow.key == "schema_version").values(value=str(version)))
    if not updated.rowcount:
        conn.execute(insert(MetaRow).values(key="schema_version", value=str(version)))


def run_fields(result: dict[str, Any]) -> dict[str, Any]:
    """Run-row fields from :meth:`RunResult.to_dict`: metrics, size, the slot columns and the recipe.

    The caller adds the keys (campaign/study version ids, trial number, status, recipe_key, ...).
    """
    recipe = result.get("recipe") or {}
    fields: dict[str, Any] = {key: result.get(key) for key in (
        "test_accuracy", "val_accuracy", "test_loss", "val_loss", "params", "macs", "samples_seen",
        "wall_s", "versions")}
    fields["growth_event_count"] = count_growth(result.get("growth_events") or ())
    fields["recipe_json"] = recipe or None
    fields.update(slot_fields(recipe))
    return {key: value for key, value in fields.items() if value is not None}


def slot_fields(recipe: dict[str, Any]) -> dict[str, Any]:
    """``{slot: name, slot_config: config}`` for every slot present in a recipe dict."""
    fields: dict[str, Any] = {}
    for slot in SLOTS:
        choice = recipe.get(slot)
        if isinstance(choice, str):
            choice = {"name": choice, "config": {}}
        if isinstance(choice, dict):
            fields[slot] = choice.get("name")
            fields[f"{slot}_config"] = choice.get("config") or {}
    return fields


def finite_or_none(value: Any) -> Any:
    """``value``, or None for a float NaN (stored as NULL)."""
    return None if isinstance(value, float) and math.isnan(value) else value


def event_values(event_dict: dict[str, Any], index: int) -> dict[str, Any]:
    """``plab_growth_events`` column values of growth event number ``index`` of a run (defaults filled in);
    :class:`ConfigError` naming any unknown field."""
    unknown = sorted(set(event_dict) - EVENT_FIELDS)
    if unknown:
        raise ConfigError(f"record_run: growth event {index} has unknown fields {unknown}; "
                          f"known: {', '.join(sorted(EVENT_FIELDS))}")
    values = {**EVENT_DEFAULTS, **event_dict}
    values["source_units"] = list(values.get("source_units") or ())
    for key in ("loss_before", "loss_after"):
        values[key] = finite_or_none(values.get(key))
    return values


def create_or_upgrade(conn: Connection, where: str) -> None:
    """Create the tables, or run the :data:`MIGRATIONS` from the stored schema version up to
    :data:`SCHEMA_VERSION`, in ``conn``'s transaction; ``where`` (the masked URL) names the database in errors."""
    names = set(inspect(conn).get_table_names())
    target = SCHEMA_VERSION
    if not names & PLAB_TABLES:
        Base.metadata.create_all(conn)
    else:
        current = (read_schema_version(conn) if "plab_meta" in names else None) or 0
        if current > target:
            raise StorageError(
                f"database {where} has principlelab schema version {current}, newer than this "
                f"principlelab supports ({target}); upgrade principlelab")
        for version in range(current + 1, target + 1):
            migration = MIGRATIONS.get(version)
            if migration is None:
                raise StorageError(f"no migration to principlelab schema version {version} (database "
                                   f"{where} is at {current}); this is a principlelab bug")
            migration(conn)
        Base.metadata.create_all(conn)  # tables new since the stored version
    write_schema_version(conn, target)
