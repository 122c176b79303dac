"""POST /fhir: transaction (all or nothing) and batch Bundles, validated and versioned like pulled resources."""

from __future__ import annotations

import json

import pytest

from bridge.api import create_app
from bridge.fhir_ingest import FhirIngest
from bridge.services import open_services
from bridge.store import ResourceStore

from .fhir_support import bearer, fold_audits

PID = "7f0c3c2e-8a3b-4a4e-9d5c-1b2a3c4d5e6f"
WRITE = "system/*.cruds"


@pytest.fixture
def services(config):
    services = open_services(config)
    yield services
    services.close()


@pytest.fixture
def client(services):
    return create_app(services=services).test_client()


def bundle(kind: str, *entries: dict) -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post_patient(pid: str = PID, family: str = "Okafor") -> dict:
    return {"fullUrl": f"urn:uuid:{pid}", "request": {"method": "POST", "url": "Patient"},
            "resource": {"resourceType": "Patient", "name": [{"family": family}], "gender": "female"}}


def post_observation(when: str = "2026-01-05T10:00:00Z", subject: str = f"urn:uuid:{PID}") -> dict:
    return {"fullUrl": "urn:uuid:0d7c1e8a-2b3c-4d5e-8f90-a1b2c3d4e5f6", "request": {"method": "POST", "url": "Observation"},
            "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "glucose"},
                         "subject": {"reference": subject}, "effectiveDateTime": when}}


def records(services) -> int:
    """Versions of pushed resources (every push also stores its AuditEvent)."""
    with services.db.transaction() as cur:
        cur.execute("SELECT COUNT(*) FROM resource_versions WHERE res_type <> 'AuditEvent'")
        return int(cur.fetchone()[0])


def audit_events(services) -> list[dict]:
    fold_audits(services)
    with services.db.transaction() as cur:
        cur.execute("SELECT content FROM resource_versions WHERE res_type = 'AuditEvent' ORDER BY last_updated")
        return [json.loads(bytes(row[0])) for row in cur.fetchall()]


def send(client, services, body, scopes: str = WRITE):
    return client.post("/fhir", data=json.dumps(body), headers={**bearer(services, "org-push", scopes),
                                                                "Content-Type": "application/fhir+json"})


def test_transaction_is_stored_with_references_resolved_and_is_idempotent(client, services):
    response = send(client, services, bundle("transaction", post_patient(), post_observation()))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["type"] == "transaction-response"
    assert [e["response"]["status"] for e in body["entry"]] == ["201 Created", "201 Created"]
    assert body["entry"][0]["response"]["location"] == f"Patient/{PID}/_history/1"
    store = ResourceStore(services.db)
    obs_id = body["entry"][1]["response"]["location"].split("/")[1]
    assert store.read("Observation", obs_id).resource["subject"]["reference"] == f"Patient/{PID}"
    fold_audits(services)
    with services.db.transaction() as cur:  # every new version is queued for the log, the AuditEvent's too
        cur.execute("SELECT data FROM log_queue")
        assert sorted(json.loads(bytes(row[0]))["type"] for row in cur.fetchall()) == ["AuditEvent", "Observation", "Patient"]
    [event] = audit_events(services)
    assert event["subtype"][0]["code"] == "transaction" and event["outcome"] == "0"
    assert event["agent"][0]["who"] == {"reference": "Organization/org-push"}
    written = [e["what"]["reference"] for e in event["entity"]]
    assert f"Patient/{PID}" in written and f"Patient/{PID}/_history/1" in written
    assert f"Observation/{obs_id}/_history/1" in written

    again = send(client, services, bundle("transaction", post_patient(), post_observation())).get_json()
    assert [e["response"]["status"] for e in again["entry"]] == ["200 OK", "200 OK"], "same content: no new version"
    assert records(services) == 2

    update = {"request": {"method": "PUT", "url": f"Patient/{PID}"},
              "resource": {"resourceType": "Patient", "id": PID, "name": [{"family": "Okafor-Ade"}], "gender": "female"}}
    updated = send(client, services, bundle("transaction", update)).get_json()
    assert updated["entry"][0]["response"]["location"] == f"Patient/{PID}/_history/2"


def test_transaction_with_an_invalid_entry_stores_nothing(client, services):
    response = send(client, services, bundle("transaction", post_patient(), post_observation(when="last tuesday")))
    assert response.status_code == 400
    issues = response.get_json()["issue"]
    assert issues[0]["expression"] == ["Bundle.entry[1].resource.effectiveDateTime"]
    assert records(services) == 0, "all or nothing"
    rejects = FhirIngest(services.db).rejects()
    assert [(r.source, r.res_type) for r in rejects] == [("push:client-org-push", "Observation")]


def test_batch_stores_the_valid_entries_and_answers_each(client, services):
    conditional = post_observation(subject="Patient?identifier=urn:mrn|123")
    response = send(client, services, bundle("batch", post_patient(), post_observation(when="soon"), conditional))
    assert response.status_code == 200
    entries = response.get_json()["entry"]
    assert [e["response"]["status"] for e in entries] == ["201 Created", "400 Bad Request", "400 Bad Request"]
    assert entries[1]["response"]["outcome"]["issue"][0]["expression"] == ["Bundle.entry[1].resource.effectiveDateTime"]
    assert "conditional references" in entries[2]["response"]["outcome"]["issue"][0]["diagnostics"]
    assert records(services) == 1
    assert audit_events(services)[-1]["outcomeDesc"] == "batch: 1 entries stored, 2 refused"


def test_push_needs_a_token_with_write_scopes(client, services):
    body = bundle("transaction", post_patient())
    assert client.post("/fhir", json=body).status_code == 401
    refused = send(client, services, body, scopes="system/*.rs")
    assert refused.status_code == 403 and "do not allow c on Patient" in refused.get_json()["issue"][0]["diagnostics"]
    assert records(services) == 0
    unauthenticated, forbidden = audit_events(services)  # refusals are audited too
    assert unauthenticated["outcome"] == forbidden["outcome"] == "4"
    assert unauthenticated["agent"][0]["who"] == {"display": "unauthenticated client"}
    assert forbidden["agent"][0]["who"] == {"reference": "Organization/org-push"} and "HTTP 403" in forbidden["outcomeDesc"]


@pytest.mark.parametrize("body, words", [
    ({"resourceType": "Patient"}, "Bundle"),
    ({"resourceType": "Bundle", "type": "collection"}, "transaction or batch"),
])
def test_not_a_transaction_or_batch(client, services, body, words):
    response = send(client, services, body)
    assert response.status_code == 400 and words in response.get_json()["issue"][0]["diagnostics"]
