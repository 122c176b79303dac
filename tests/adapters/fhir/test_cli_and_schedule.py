"""`fhir-bridge sync` (progress, status, rejects) and the apscheduler job `serve` adds per source."""

from __future__ import annotations

import json
import time

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from adapters.fhir.runner import ProgressBar, schedule_sources
from bridge.cli import main
from bridge.store import ResourceStore

from .fhir_test_server import FhirTestServer
from .support import corpus_resources, versions


@pytest.fixture
def server(corpus):
    data = corpus_resources(corpus, patients=2)
    for items in data.values():
        for r in items:
            r["meta"] = {"lastUpdated": "2026-02-01T00:00:00.000Z"}
    data["Condition"][0]["onsetDateTime"] = "in spring"  # invalid
    srv = FhirTestServer({}, data).start()
    yield srv
    srv.stop()


def write_config(tmp_path, server, database_url, interval=0.0):
    path = tmp_path / "bridge.toml"
    path.write_text(f"""
data_dir = "{tmp_path / 'data'}"
database_url = "{database_url}"
log_origin = "test.example/log"

[[fhir_sources]]
name = "ehr"
base_url = "{server.base_url}"
resource_types = ["Patient", "Condition"]
interval = {interval}
page_size = 5
""")
    return path


def test_sync_command_with_progress_status_and_rejects(tmp_path, server, database_url, capsys):
    cfg = write_config(tmp_path, server, database_url)
    assert main(["--config", str(cfg), "sync", "--list"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "ehr"
    assert main(["--config", str(cfg), "sync", "ehr", "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    n = len(server.resources["Patient"]) + len(server.resources["Condition"])
    assert report["received"] == n and report["invalid"] == 1 and report["created"] == n - 1
    assert "ehr Condition: [" in captured.err and "invalid (kept" in captured.err
    assert main(["--config", str(cfg), "sync", "ehr", "--rejects"]) == 0
    reject = json.loads(capsys.readouterr().out)
    assert reject["resourceType"] == "Condition" and reject["outcome"]["issue"][0]["expression"] == \
        ["Condition.onsetDateTime"]
    assert main(["--config", str(cfg), "sync", "ehr", "--status"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert set(status["watermarks"]) == {"Patient", "Condition"} and status["runs"][0]["status"] == "ok"
    assert main(["--config", str(cfg), "sync", "nope"]) == 2
    assert "no FHIR source named 'nope'; configured: ehr" in capsys.readouterr().err


def test_progress_bar_draws_per_type(capsys):
    bar = ProgressBar("ehr")
    bar("Patient", 5, 10)
    bar("Patient", 10, 10)
    bar("Observation", 3, None)
    bar.finish()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("ehr Patient: [" + "#" * 30 + "] 10/10") and lines[1].startswith("ehr Observation: 3")


def test_serve_schedules_one_job_per_source(tmp_path, server, store_db, database_url):
    cfg = write_config(tmp_path, server, database_url, interval=0.5)
    ResourceStore(store_db).ensure_schema()
    scheduler = BackgroundScheduler(job_defaults={"coalesce": True, "max_instances": 1})
    assert schedule_sources(scheduler, store_db, str(cfg)) == ["fhir-sync:ehr"]
    scheduler.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(versions(store_db)) < len(server.resources["Patient"]) + 1:
            time.sleep(0.1)
    finally:
        scheduler.shutdown(wait=True)
    assert len(versions(store_db)) == len(server.resources["Patient"]) + len(server.resources["Condition"]) - 1
    assert schedule_sources(scheduler, store_db, str(write_config(tmp_path, server, database_url, 0))) == []
