"""Hermetic tests: no third-party plugin autoload, one torch thread; a fresh PostgreSQL database per test."""

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

os.environ["PRINCIPLELAB_DISABLE_PLUGIN_AUTOLOAD"] = "1"

import pytest
import torch
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

torch.set_num_threads(1)

URL_ENV = "PRINCIPLELAB_TEST_POSTGRES_URL"
REQUIRE_ENV = "PRINCIPLELAB_REQUIRE_POSTGRES"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a fresh, uniquely named database on the test server (dropped afterwards)."""
    server = os.environ.get(URL_ENV)
    if not server:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {URL_ENV} is not set: start PostgreSQL with "
                        f'eval "$(bash scripts/postgres.sh start)"', pytrace=False)
        pytest.skip(f"{URL_ENV} is not set (eval \"$(bash scripts/postgres.sh start)\" to run these)")
    base = make_url(server)
    name = f"plab_{uuid.uuid4().hex}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except SQLAlchemyError as exc:
        admin.dispose()
        pytest.fail(f"cannot create a test database on {base.render_as_string(hide_password=True)} "
                    f"({URL_ENV}): {str(exc).splitlines()[0]}", pytrace=False)
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL: a SQLite file, or a fresh PostgreSQL database (see :func:`pg_url`)."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'test.db'}"


FROZE_GC: list[object] = []
"""The campaign runners that asked to freeze the garbage collector's objects (see the fixture below)."""


@pytest.fixture(autouse=True)
def _no_gc_freeze_in_the_test_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """``plab`` commands run in-process here (click's runner) would freeze every object alive in the
    pytest process (studies/gc_freeze.py), test objects included; record the request instead. Commands
    run as subprocesses freeze for real."""
    from principlelab.studies import campaign

    monkeypatch.setattr(campaign, "freeze_long_lived_objects", lambda: FROZE_GC.append(True) or True)
