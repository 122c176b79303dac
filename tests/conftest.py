"""Shared fixtures: databases (SQLite and a real PostgreSQL), configurations, signing keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from anchoring.note import Signer
from bridge.config import load_config
from bridge.db import open_database

from .postgres import PostgresServer

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.fail(f"the shared corpus is expected at {CORPUS} (beside the project)")
    return CORPUS


@pytest.fixture(scope="session")
def postgres_server():
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path: Path) -> str:
    """The same test on the embedded SQLite and on a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bridge.db'}"
    return request.getfixturevalue("postgres_server").create_database()


@pytest.fixture
def db(database_url: str):
    database = open_database(database_url)
    yield database
    database.close()


@pytest.fixture
def config(tmp_path: Path, database_url: str):
    return load_config(env={}, data_dir=tmp_path / "data", database_url=database_url, log_origin="test.example/log")


@pytest.fixture
def signer() -> Signer:
    return Signer.generate("test.example/log")
