"""Bulk Data $export against a test server: Retry-After, faults, an interrupted download and its resumption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from adapters.fhir.runner import sync_source
from adapters.fhir.sources import AuthSettings
from adapters.fhir.state import BULK, SyncState
from bridge.cli import main
from bridge.db import open_database
from bridge.fhir_ingest import FhirIngest

from .conftest import source
from .fhir_test_server import FhirTestServer
from .support import corpus_resources, ndjson, versions

TYPES = ("Patient", "Encounter", "Observation", "Condition")


@pytest.fixture
def export_data(corpus):
    resources = corpus_resources(corpus, patients=3)
    observations = list(resources["Observation"])
    bad_unknown = dict(observations[0], id="bad-1", bogusField=1)  # not an R4 element
    bad_date = dict(observations[1], id="bad-2", effectiveDateTime="yesterday")  # not a dateTime
    files = {f"{t}.ndjson": ndjson(resources[t]) for t in TYPES}
    files["Observation.ndjson"] = ndjson(observations[:5] + [bad_unknown] + observations[5:] + [bad_date])
    conditions = ndjson(resources["Condition"])
    truncated = json.dumps(resources["Condition"][0])[:60].encode()  # a line cut short in the file itself
    files["Condition.ndjson"] = conditions + truncated + b"\n"
    valid = {t: len(resources[t]) for t in TYPES}
    return files, valid


@pytest.fixture
def server(export_data):
    files, _ = export_data
    srv = FhirTestServer(files, auth="Bearer s3cret-token", retry_after="1").start()
    yield srv
    srv.stop()


def bulk_source(server, monkeypatch, **settings):
    monkeypatch.setenv("EHR_TOKEN", "s3cret-token")
    return source(server.base_url, TYPES, mode="bulk", auth=AuthSettings(type="bearer", token_env="EHR_TOKEN"),
                  timeout=1.0, backoff_max=5.0, **settings)


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_export_with_faults_interruption_and_resumption(server, export_data, store_db, monkeypatch, caplog):
    files, valid = export_data
    observations = files["Observation.ndjson"]
    assert len(observations) > 40_000
    server.plan("/fhir/$export", "429:2")  # kick-off: too many requests, Retry-After 2 s
    server.plan("/fhir/bulk-status/1", "ok", "500")  # a server error while polling
    server.plan("/files/Observation.ndjson", "cut:40000", "slow:2")  # dropped mid-file, then a timeout
    server.plan("/files/Condition.ndjson", "cut:3000", "ignore-range")  # resumed from a server ignoring Range
    sleeps = Sleeps()
    report = sync_source(store_db, bulk_source(server, monkeypatch), sleep=sleeps)

    assert report.errors == [], report.faults
    faults = "\n".join(report.faults)
    assert "HTTP 429" in faults and "HTTP 500" in faults and "timed out" in faults
    assert faults.count("broke at byte") == 2 and "incomplete line discarded" in faults
    assert 2.0 in sleeps, "Retry-After of the 429 is honoured"
    assert sleeps.count(1.0) >= 2, "Retry-After of the 202 status answers is honoured"
    ranges = [h.get("Range") for m, p, h in server.requests if p.startswith("/files/Observation")]
    assert ranges[0] is None and ranges[-1] is not None and ranges[-1].startswith("bytes=")
    resumed_at = int(ranges[-1][6:-1])
    assert 0 < resumed_at <= 40_000 and observations[resumed_at - 1:resumed_at] == b"\n", "resumed after a whole line"

    stored = versions(store_db)
    assert len(stored) == sum(valid.values()), "every valid resource stored"
    assert set(stored.values()) == {1}, "nothing stored twice"
    assert report.counts.invalid == 3 and report.counts.created == sum(valid.values())
    rejects = FhirIngest(store_db).rejects("fhir:ehr")
    assert len(rejects) == 3
    by_id = {r.source_id: r for r in rejects}
    assert by_id["ehr-bad-1"].outcome["issue"][0]["expression"] == ["Observation.bogusField"]
    assert by_id["ehr-bad-2"].outcome["issue"][0]["expression"] == ["Observation.effectiveDateTime"]
    assert "not JSON" in by_id[""].outcome["issue"][0]["diagnostics"]
    assert SyncState(store_db).watermark("ehr", BULK) == server.transaction_time
    assert server.deleted
    assert "s3cret-token" not in json.dumps(report.as_dict()) + caplog.text, "secrets are never logged"

    # the next export asks only for what changed since; the same content creates no version or reject
    again = sync_source(store_db, bulk_source(server, monkeypatch), sleep=Sleeps())
    kickoff = [p for m, p, h in server.requests if "$export" in p][-1]
    assert "_since=2026-01-02T03%3A04%3A05.678Z" in kickoff
    assert again.errors == [] and again.counts.created == 0 and again.counts.unchanged == sum(valid.values())
    assert len(FhirIngest(store_db).rejects("fhir:ehr")) == 3 and versions(store_db) == stored


def test_interrupted_run_resumes_in_the_next_run(server, export_data, store_db, monkeypatch):
    files, valid = export_data
    server.plan("/files/Observation.ndjson", "cut:30000", "cut:100")
    first = sync_source(store_db, bulk_source(server, monkeypatch, max_attempts=2), sleep=Sleeps())
    assert first.status == "partial" and "next sync resumes" in first.errors[0]
    state = SyncState(store_db)
    progress = {f.res_type: f for f in state.bulk_files("ehr")}
    assert 0 < progress["Observation"].byte_offset < 30_000 and not progress["Observation"].done
    assert progress["Patient"].done, "the files after the broken one are still downloaded"
    assert state.bulk_job("ehr") is not None, "the job is kept for the next run"
    committed = progress["Observation"].byte_offset

    second = sync_source(store_db, bulk_source(server, monkeypatch), sleep=Sleeps())
    assert second.errors == [] and second.types["$export"]["resumed"]
    assert server.kickoffs == 1, "the export in progress is resumed, not started again"
    last = [h.get("Range") for m, p, h in server.requests if p.startswith("/files/Observation")][-1]
    assert last == f"bytes={committed}-"
    stored = versions(store_db)
    assert len(stored) == sum(valid.values()) and set(stored.values()) == {1}
    assert first.counts.created + second.counts.created == sum(valid.values())
    assert state.bulk_job("ehr") is None and state.bulk_files("ehr") == []


def test_export_auth_refused_says_what_to_do(server, store_db, monkeypatch):
    monkeypatch.setenv("EHR_TOKEN", "wrong")
    src = source(server.base_url, TYPES, mode="bulk", auth=AuthSettings(type="bearer", token_env="EHR_TOKEN"))
    report = sync_source(store_db, src, sleep=Sleeps())
    assert report.status == "failed" and "HTTP 401" in report.errors[0] and "auth settings" in report.errors[0]
    assert "wrong" not in json.dumps(report.as_dict())


def test_a_failed_or_expired_export_is_started_again(server, store_db, monkeypatch):
    server.plan("/fhir/bulk-status/1", "404")
    gone = sync_source(store_db, bulk_source(server, monkeypatch), sleep=Sleeps())
    assert "is gone (HTTP 404)" in gone.errors[0] and SyncState(store_db).bulk_job("ehr") is None
    server.plan("/fhir/bulk-status/2", "500", "500", "500", "500", "500", "500")
    busy = sync_source(store_db, bulk_source(server, monkeypatch, max_attempts=2), sleep=Sleeps())
    assert "HTTP 500" in busy.errors[0] and SyncState(store_db).bulk_job("ehr") is not None, "kept after 5xx"
    done = sync_source(store_db, bulk_source(server, monkeypatch), sleep=Sleeps())
    assert done.errors == [] and server.kickoffs == 2


def test_kill_9_during_download_then_resume(server, export_data, database_url, tmp_path, monkeypatch):
    """A real crash: `fhir-bridge sync` is killed mid-file; the next run resumes after the last committed line."""
    files, valid = export_data
    server.plan("/files/Observation.ndjson", "trickle:0.3")
    config = tmp_path / "bridge.toml"
    config.write_text(f"""
data_dir = "{tmp_path / 'data'}"
database_url = "{database_url}"
log_origin = "test.example/log"

[[fhir_sources]]
name = "ehr"
base_url = "{server.base_url}"
resource_types = {list(TYPES)!r}
mode = "bulk"
page_size = 10
bulk_poll_interval = 0.1
backoff_max = 0.2

[fhir_sources.auth]
type = "bearer"
token_env = "EHR_TOKEN"
""".replace("'", '"'))
    env = {**os.environ, "EHR_TOKEN": "s3cret-token"}
    child = subprocess.Popen([sys.executable, "-m", "bridge.cli", "--config", str(config), "sync", "ehr", "--quiet"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = open_database(database_url)
    try:
        deadline = time.monotonic() + 60
        offset = 0
        while time.monotonic() < deadline and offset == 0:
            time.sleep(0.1)
            try:
                offset = next((f.byte_offset for f in SyncState(db).bulk_files("ehr") if f.res_type == "Observation"), 0)
            except Exception:  # tables not created yet
                offset = 0
        assert offset > 0, child.stderr.read().decode() if child.poll() is not None else "no progress"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        partial = next(f for f in SyncState(db).bulk_files("ehr") if f.res_type == "Observation")
        assert not partial.done and 0 < partial.byte_offset < len(files["Observation.ndjson"])

        monkeypatch.setenv("EHR_TOKEN", "s3cret-token")
        assert main(["--config", str(config), "sync", "ehr", "--quiet"]) == 0
        last = [h.get("Range") for m, p, h in server.requests if p.startswith("/files/Observation")][-1]
        assert last == f"bytes={partial.byte_offset}-" and server.kickoffs == 1
        stored = versions(db)
        assert len(stored) == sum(valid.values()) and set(stored.values()) == {1}, "nothing lost or duplicated"
    finally:
        if child.poll() is None:
            child.kill()
        db.close()
