"""REST sync faults against a test server: 5xx, 429, timeouts, invalid resources, a pass that gives up and resumes."""

from __future__ import annotations

import base64
import json
import time

import pytest

from adapters.fhir.http import short_url
from adapters.fhir.runner import sync_source
from adapters.fhir.sources import AuthSettings
from adapters.fhir.state import SyncState
from bridge.fhir_ingest import FhirIngest

from .conftest import source
from .fhir_test_server import FhirTestServer
from .support import corpus_resources, versions


def stamped(resources: list[dict], when: str) -> list[dict]:
    return [dict(r, meta={"versionId": "1", "lastUpdated": when}) for r in resources]


@pytest.fixture
def server(corpus):
    data = corpus_resources(corpus, patients=2)
    observations = stamped(data["Observation"], "2026-03-01T10:00:00.000Z")
    observations.insert(3, dict(observations[3], id="broken", status="final", valueQuantity={"value": "lots"}))
    srv = FhirTestServer({}, {"Patient": stamped(data["Patient"], "2026-03-01T09:00:00.000Z"),
                              "Observation": observations}).start()
    yield srv
    srv.stop()


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_faults_are_retried_reported_and_a_failed_type_resumes(server, store_db):
    n_obs = len(server.resources["Observation"])
    server.plan("/fhir/Patient", "500", "429:3", "slow:2")
    server.plan("/fhir/Observation", "ok", "503", "503", "503", "503")  # page 2 fails on every attempt
    src = source(server.base_url, ("Patient", "Observation"), page_size=20, timeout=1.0, max_attempts=4,
                 backoff_max=5.0)
    sleeps = Sleeps()
    first = sync_source(store_db, src, sleep=sleeps)
    assert first.status == "partial"
    assert [e.split(":")[0] for e in first.errors] == ["Observation"]
    assert "gave up after 4 attempts" in first.errors[0] and "resumes" in first.errors[0]
    faults = "\n".join(first.faults)
    assert "HTTP 500" in faults and "HTTP 429" in faults and "timed out" in faults and "HTTP 503" in faults
    assert 3.0 in sleeps, "Retry-After honoured"
    state = SyncState(store_db)
    assert state.watermark("ehr", "Patient") == "2026-03-01T09:00:00.000Z"
    assert state.watermark("ehr", "Observation") is None, "an incomplete pass does not move the watermark"

    second = sync_source(store_db, src, sleep=Sleeps())
    assert second.errors == []
    stored = versions(store_db)
    assert sum(1 for k in stored if k.startswith("Observation/")) == n_obs - 1
    assert set(stored.values()) == {1}, "pages fetched twice create no second version"
    rejects = FhirIngest(store_db).rejects("fhir:ehr")
    assert [(r.res_type, r.source_id) for r in rejects] == [("Observation", "ehr-broken")]
    assert rejects[0].outcome["issue"][0]["expression"] == ["Observation.valueQuantity.value"]
    assert second.open_rejects == 1 and first.counts.invalid + second.counts.invalid == 2, "reported on each run"

    # the server fixes the resource: the reject is resolved by the valid version
    fixed = next(r for r in server.resources["Observation"] if r["id"] == "broken")
    fixed.update(valueQuantity={"value": 3}, meta={"versionId": "2", "lastUpdated": "2026-03-02T00:00:00.000Z"})
    third = sync_source(store_db, src, sleep=Sleeps())
    assert third.counts.received == 1 and third.counts.created == 1 and third.open_rejects == 0
    assert FhirIngest(store_db).rejects("fhir:ehr", include_resolved=True)[0].resolved_at is not None


@pytest.mark.parametrize("kind", ["basic", "client_credentials"])
def test_basic_and_client_credentials_auth(server, store_db, monkeypatch, tmp_path, kind, caplog):
    secret_file = tmp_path / "secret"
    secret_file.write_text("pa55word\n")
    if kind == "basic":
        server.auth = "Basic " + base64.b64encode(b"bridge:pa55word").decode()
        auth = AuthSettings(type="basic", username="bridge", password_file=str(secret_file))
    else:
        server.auth = f"Bearer {server.token}"
        server.client_credentials = ("bridge", "pa55word")
        auth = AuthSettings(type="client_credentials", client_id="bridge", client_secret_file=str(secret_file),
                            token_url=f"http://127.0.0.1:{server.port}/token", scope="system/*.read")
    report = sync_source(store_db, source(server.base_url, ("Patient",), auth=auth), sleep=Sleeps())
    assert report.errors == [] and report.counts.created == len(server.resources["Patient"])
    assert "pa55word" not in json.dumps(report.as_dict()) + caplog.text + repr(auth)
    if kind == "client_credentials":
        assert sum(1 for m, p, h in server.requests if p == "/token") == 1, "the token is cached"


def test_rate_limit_spaces_requests(server, store_db):
    src = source(server.base_url, ("Observation",), page_size=20, rate_limit=20.0)
    began = time.monotonic()
    report = sync_source(store_db, src, sleep=time.sleep)
    pages = report.types["Observation"]["pages"]
    assert pages >= 5 and time.monotonic() - began >= (pages - 1) / 20.0


def test_one_sync_per_source_at_a_time(server, store_db):
    state = SyncState(store_db)
    state.ensure_schema()
    assert state.claim("ehr", "serve:123", time.time(), 60) is None
    refused = sync_source(store_db, source(server.base_url, ("Patient",)), sleep=Sleeps())
    assert refused.status == "failed" and "another sync of ehr is running (serve:123)" in refused.errors[0]
    assert state.claim("ehr", "cli:9", time.time() + 120, 60) is None, "an expired lock is taken over"
    state.release("ehr", "cli:9")
    assert sync_source(store_db, source(server.base_url, ("Patient",)), sleep=Sleeps()).errors == []


def test_urls_with_credentials_are_not_logged():
    assert short_url("https://s3.example/f.ndjson?X-Amz-Signature=abc&X-Amz-Credential=k") == \
        "https://s3.example/f.ndjson?(query withheld)"
    assert short_url("https://ehr.example/fhir/Patient?_count=5") == "https://ehr.example/fhir/Patient?_count=5"
