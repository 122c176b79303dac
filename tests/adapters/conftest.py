"""Fixtures for the adapters: a real pipeline and an MLLP server listening on 127.0.0.1."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from adapters.mllp.ingestor import Ingestor
from adapters.mllp.server import MllpServer, MllpThread
from tests.components import missing
from tests.ingest_support import open_pipeline


@pytest.fixture
def pipeline(database_url: str):
    with open_pipeline(database_url) as (pipeline, _):
        yield pipeline


@pytest.fixture
def mllp_server(pipeline):
    ingestor = Ingestor(pipeline.ingest_many, max_group=64, workers=2).start()  # two groups in flight
    server = MllpServer(ingestor, "127.0.0.1", 0, max_frame=256 * 1024, idle_timeout=30)
    thread = MllpThread(server).start()
    yield server
    thread.stop()
    ingestor.stop()


@pytest.fixture(scope="session")
def mllp_send() -> str:
    # Beside this interpreter first: pip puts console scripts there, and a version manager's PATH
    # shims may not know a script installed a moment ago.
    sibling = Path(sys.executable).with_name("mllp_send")
    path = str(sibling) if sibling.exists() else shutil.which("mllp_send")
    if path is None:
        missing("mllp_send (python-hl7's console script)", "pip install hl7")
    return path
