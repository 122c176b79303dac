"""Bridge to bridge: bridge B pulls from bridge A's partner API (SMART Backend Services) and ends identical."""

from __future__ import annotations

import json
import threading

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from werkzeug.serving import make_server

from adapters.fhir.runner import sync_source
from adapters.fhir.sources import AuthSettings
from bridge.api import create_app
from bridge.config import load_config
from bridge.services import open_services
from bridge.store import content_key
from tests.components import free_port

from .conftest import source
from .fhir_test_server import FhirTestServer
from .support import corpus_resources

# the types bridge A's API searches (bridge.search_index.PARAMETERS) that the corpus has
TYPES = ("Patient", "Encounter", "Observation", "Condition", "Immunization", "MedicationRequest",
         "AllergyIntolerance", "DiagnosticReport")


def current(db, types) -> dict[str, str]:
    """Type/id -> content hash (meta aside) of the latest version of each resource."""
    found = {}
    with db.transaction() as cur:
        cur.execute("SELECT res_type, res_id, version, content FROM resource_versions ORDER BY version")
        for res_type, res_id, _, content in cur.fetchall():
            if res_type in types:
                found[f"{res_type}/{res_id}"] = content_key(json.loads(bytes(content)))
    return found


@pytest.fixture
def hospital(corpus):
    data = corpus_resources(corpus, patients=9)
    for items in data.values():
        for r in items:
            r["meta"] = {"versionId": "1", "lastUpdated": "2026-02-01T00:00:00.000Z"}
    srv = FhirTestServer({}, data).start()
    yield srv
    srv.stop()


@pytest.fixture
def bridge_a(tmp_path, hospital):
    port = free_port()
    config = load_config(env={}, data_dir=tmp_path / "a", database_url=f"sqlite:///{tmp_path / 'a.db'}",
                         log_origin="bridge-a.example/log", public_url=f"http://127.0.0.1:{port}",
                         consent_regime="opt-out")
    services = open_services(config)
    key = ec.generate_private_key(ec.SECP384R1())
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    public.update(kid="b-key", alg="ES384", use="sig")
    services.registry.add_client("org-bridge-b", json.dumps({"keys": [public]}), ["system/*.rs"], client_id="bridge-b")
    pem = tmp_path / "bridge-b.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    # bridge A is fed by the hospital's FHIR server
    report = sync_source(services.db, source(hospital.base_url, TYPES, name="hosp", page_size=500))
    assert report.errors == [] and report.counts.created > 600
    server = make_server("127.0.0.1", port, create_app(services=services), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield services, f"http://127.0.0.1:{port}/fhir", pem
    server.shutdown()
    services.close()


def test_bridge_pulls_from_bridge_and_ends_with_identical_content(bridge_a, hospital, store_db):
    services_a, base_a, pem = bridge_a
    auth = AuthSettings(type="smart", client_id="bridge-b", private_key_file=str(pem), algorithm="ES384",
                        key_id="b-key", scope="system/*.rs")  # token_url discovered from smart-configuration
    src = source(base_a, TYPES, name="bridge-a", keep_ids=True, page_size=250, auth=auth)
    first = sync_source(store_db, src)
    assert first.errors == [] and first.counts.invalid == 0, first.faults
    in_a, in_b = current(services_a.db, TYPES), current(store_db, TYPES)
    assert len(in_a) > 600 and all(key.split("/")[1].startswith("hosp-") for key in in_a)
    assert in_b == in_a, "same ids, identical content hashes"

    # a change at the hospital reaches A, then B: exactly one new version, still identical
    patient = hospital.resources["Patient"][0]
    patient.update(gender="other", meta={"versionId": "2", "lastUpdated": "2026-02-02T00:00:00.000Z"})
    changed = sync_source(services_a.db, source(hospital.base_url, TYPES, name="hosp", page_size=500))
    assert changed.counts.created == 1
    second = sync_source(store_db, src)
    assert second.errors == [] and second.counts.created == 1
    assert second.counts.versions == [f"Patient/hosp-{patient['id']}/_history/2"]
    assert current(store_db, TYPES) == current(services_a.db, TYPES)
