"""A real FHIR client library (SMART's `fhirclient`) over real HTTP, with a token from /auth/token,
and a Bundle fetched over HTTP verified by the `fhir-bridge verify` command."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from fhirclient import client as fhir_client
from fhirclient.models.bundle import Bundle
from fhirclient.models.observation import Observation
from fhirclient.models.patient import Patient
from werkzeug.serving import make_server

from bridge.api import create_app
from bridge.services import open_services

from ..components import free_port
from .fhir_support import consent, put, seed, settle


@pytest.fixture
def live(config, signer):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    services = open_services(replace(config, public_url=base))
    services._signer = signer
    seed(services)
    put(services, consent("cons-p1", "p1", "org-charite"))
    settle(services)
    server = make_server("127.0.0.1", port, create_app(services=services), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield base, services
    server.shutdown()
    services.close()


def access_token(base: str, services) -> str:
    """SMART Backend Services for real: register a key, sign an assertion, exchange it."""
    private = ec.generate_private_key(ec.SECP384R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key())) | {"kid": "k1", "alg": "ES384"}
    client = services.registry.add_client("org-charite", json.dumps({"keys": [jwk]}), ["system/*.rs"])
    claims = {"iss": client.client_id, "sub": client.client_id, "aud": base + "/auth/token",
              "exp": int(time.time()) + 240, "jti": uuid.uuid4().hex}
    assertion = jwt.encode(claims, private, algorithm="ES384", headers={"kid": "k1"})
    response = requests.post(base + "/auth/token", data={
        "grant_type": "client_credentials", "scope": "system/Patient.rs system/Observation.rs",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def test_fhirclient_reads_and_searches(live):
    base, services = live
    smart = fhir_client.FHIRClient(settings={"app_id": "partner-charite", "api_base": base + "/fhir"})
    smart.server.session.headers["Authorization"] = "Bearer " + access_token(base, services)
    patient = Patient.read("p1", smart.server)
    assert patient.name[0].family == "Müller" and patient.meta.versionId == "1"
    bundle = next(Observation.where(struct={"patient": "p1", "code": "2345-7"}).perform_iter(smart.server))
    assert isinstance(bundle, Bundle) and bundle.total == 1
    observation = bundle.entry[0].resource
    assert observation.id == "o1" and observation.valueQuantity.value == 5.6
    urls = {e.url for e in bundle.entry[0].extension}
    assert {"https://fhir-bridge.dev/fhir/StructureDefinition/log-salt",
            "https://fhir-bridge.dev/fhir/StructureDefinition/log-proof"} <= urls
    with pytest.raises(Exception, match="403|Forbidden"):  # p2 has no consent for this organisation
        Patient.read("p2", smart.server)


def test_bundle_over_http_verifies_with_the_cli(live, tmp_path, signer):
    base, services = live
    token = access_token(base, services)
    response = requests.get(base + "/fhir/Patient/p1/$everything", headers={
        "Authorization": f"Bearer {token}", "Accept-Encoding": "gzip"}, timeout=10)
    assert response.status_code == 200 and response.headers["Content-Encoding"] == "gzip"
    (tmp_path / "bundle.json").write_bytes(response.content)
    (tmp_path / "log.vkey").write_text(signer.verifier.vkey + "\n")
    run = subprocess.run([sys.executable, "-m", "bridge.cli", "verify", str(tmp_path / "bundle.json"),
                          "--key", str(tmp_path / "log.vkey")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "entries verified" in run.stdout and "checkpoint: OK" in run.stdout
    unauthenticated = requests.get(base + "/fhir/Patient/p1", timeout=10)
    assert unauthenticated.status_code == 401 and unauthenticated.headers["WWW-Authenticate"].startswith("Bearer")
