"""Log endpoints of the API (Flask test client): checkpoint, proofs, health, errors as OperationOutcome."""

from __future__ import annotations

import base64

import pytest

from anchoring import merkle
from anchoring.checkpoint import open_checkpoint, verify_tlog_proof_for_entry
from anchoring.note import write_key_file
from bridge.api import create_app
from bridge.services import open_services


@pytest.fixture
def services(config, signer):
    write_key_file(config.resolved_key_file, signer)
    services = open_services(config)
    yield services
    services.close()


@pytest.fixture
def client(services):
    return create_app(services=services).test_client()


ENTRIES = [f"entry {i}".encode() for i in range(13)]


def outcome(response, status: int, expression: str | None = None) -> str:
    assert response.status_code == status
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    if expression:
        assert body["issue"][0]["expression"] == [expression]
    return body["issue"][0]["diagnostics"]


def test_no_checkpoint_yet_is_404(client):
    assert "no checkpoint" in outcome(client.get("/log/checkpoint"), 404)


def test_checkpoint_and_inclusion_proofs(client, services, signer):
    services.log.append(ENTRIES)
    services.log.checkpoint(signer)
    response = client.get("/log/checkpoint")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    checkpoint = open_checkpoint(response.get_data(as_text=True), [signer.verifier])
    assert checkpoint.size == 13

    body = client.get("/log/proof/inclusion?index=4").get_json()
    assert (body["index"], body["size"]) == (4, 13)
    proof = [base64.b64decode(h) for h in body["hashes"]]
    merkle.verify_inclusion(4, 13, merkle.leaf_hash(ENTRIES[4]), proof, checkpoint.root)

    text = client.get("/log/proof/inclusion?index=12&size=13&format=tlog-proof").get_data(as_text=True)
    verify_tlog_proof_for_entry(text, ENTRIES[12], [signer.verifier])

    # A size without a stored checkpoint still gets a proof (against the root at that size) ...
    body = client.get("/log/proof/inclusion?index=1&size=5").get_json()
    merkle.verify_inclusion(1, 5, merkle.leaf_hash(ENTRIES[1]), [base64.b64decode(h) for h in body["hashes"]],
                            services.log.root_at(5))
    assert "checkpoint" not in body
    # ... but not as a tlog-proof, which must carry a signed checkpoint of that size.
    outcome(client.get("/log/proof/inclusion?index=1&size=5&format=tlog-proof"), 404, "size")

    assert client.get("/log/vkey").get_data(as_text=True).strip() == signer.verifier.vkey


def test_consistency_proof(client, services):
    services.log.append(ENTRIES)
    body = client.get("/log/proof/consistency?from=6&to=13").get_json()
    merkle.verify_consistency(6, 13, services.log.root_at(6), services.log.root_at(13),
                              [base64.b64decode(h) for h in body["hashes"]])


@pytest.mark.parametrize(
    "url, status, expression",
    [
        ("/log/proof/inclusion?size=3", 400, "index"),
        ("/log/proof/inclusion?index=-1&size=3", 400, "index"),
        ("/log/proof/inclusion?index=abc&size=3", 400, "index"),
        ("/log/proof/inclusion?index=3&size=3", 400, None),
        ("/log/proof/inclusion?index=0&size=3&format=", 400, "format"),
        ("/log/proof/inclusion?index=0&size=3&format=xml", 400, "format"),
        ("/log/proof/inclusion?index=0&size=99", 404, None),
        ("/log/proof/consistency?from=0&to=3", 400, None),
        ("/log/proof/consistency?from=2&to=99", 404, None),
        ("/log/proof/consistency?to=3", 400, "from"),
        ("/no/such/thing", 404, None),
    ],
)
def test_bad_requests_get_operation_outcomes(client, services, url, status, expression):
    services.log.append(ENTRIES[:3])
    outcome(client.get(url), status, expression)


def test_wrong_method_is_405(client):
    outcome(client.post("/log/checkpoint"), 405)


def test_health_reports_the_log(client, services, signer):
    services.log.append(ENTRIES[:2])
    services.log.checkpoint(signer)
    body = client.get("/health").get_json()
    assert body["status"] == "ok"
    assert body["log"] == {"origin": "test.example/log", "size": 2, "queued": 0, "checkpoint_size": 2}
    assert body["audit_spool"] == {"files": 0, "bytes": 0, "damaged": 0}
    client.get("/fhir/Patient/p1")  # refused (no token), and audited: one record in this process's spool
    spool = client.get("/health").get_json()["audit_spool"]
    assert spool["files"] == 1 and spool["bytes"] > 100 and spool["damaged"] == 0
