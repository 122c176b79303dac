"""SMART Backend Services: client registration, the token endpoint, and bearer-token checks."""

from __future__ import annotations

import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import jsonify

from bridge.api import create_app
from bridge.api.access import require
from bridge.auth.scopes import allows, grant, parse_scope
from bridge.cli import main
from bridge.errors import AuthError
from bridge.services import open_services

AUD = "http://127.0.0.1:8080/auth/token"


def keypair(kind: str):
    if kind == "RS384":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    else:
        private = ec.generate_private_key(ec.SECP384R1())
        public_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    public_jwk.update(kid=f"{kind}-key", alg=kind, use="sig")
    return private, {"keys": [public_jwk]}


@pytest.fixture
def services(config):
    services = open_services(config)
    yield services
    services.close()


@pytest.fixture
def app(services):
    app = create_app(services=services)

    @app.get("/protected/<resource_type>")
    def protected(resource_type):  # a real route guarded the way the FHIR API guards its reads
        grant_ = require(resource_type, "r")
        return jsonify({"organization": grant_.organization})

    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(params=["RS384", "ES384"])
def partner(request, services):
    private, jwks = keypair(request.param)
    registered = services.registry.add_client(
        "org-charite", json.dumps(jwks), ["system/Patient.read", "system/Observation.rs"], client_id=f"partner-{request.param}"
    )
    return registered.client_id, private, request.param


def assertion(client_id, private, alg, **overrides):
    claims = {"iss": client_id, "sub": client_id, "aud": AUD, "exp": int(time.time()) + 240, "jti": uuid.uuid4().hex}
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, private, algorithm=alg, headers={"kid": f"{alg}-key"})


def ask(client, token, scope="system/Patient.read system/Observation.read", **form):
    data = {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": token,
    }
    data.update(form)
    return client.post("/auth/token", data=data)


def test_token_is_issued_with_granted_scopes_and_guards_reads(client, partner):
    client_id, private, alg = partner
    response = ask(client, assertion(client_id, private, alg), scope="system/Patient.read system/Condition.read")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 300
    assert body["scope"] == "system/Patient.read", "only registered scopes are granted"
    assert response.headers["Cache-Control"] == "no-store"
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    assert client.get("/protected/Patient", headers=headers).get_json() == {"organization": "org-charite"}
    denied = client.get("/protected/Condition", headers=headers)
    assert denied.status_code == 403 and denied.get_json()["resourceType"] == "OperationOutcome"


def test_missing_or_unknown_tokens_are_401(client):
    response = client.get("/protected/Patient")
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/protected/Patient", headers={"Authorization": "Bearer nonsense"}).status_code == 401
    assert client.get("/protected/Patient", headers={"Authorization": "Basic dXNlcjpwYXNz"}).status_code == 401


def test_expired_access_token_is_401(client, services, partner):
    registered = services.registry.client(partner[0])
    token, _ = services.registry.issue_token(registered, ["system/Patient.read"], now=int(time.time()) - 1000)
    assert client.get("/protected/Patient", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def rejected(response, error: str, words: str) -> None:
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == error, body
    assert words in body["error_description"], body


def test_replayed_assertion_is_rejected(client, partner):
    client_id, private, alg = partner
    token = assertion(client_id, private, alg)
    assert ask(client, token).status_code == 200
    rejected(ask(client, token), "invalid_client", "replay")


@pytest.mark.parametrize(
    "change, words",
    [
        ({"exp": int(time.time()) - 120}, "expired"),
        ({"aud": "http://elsewhere/auth/token"}, "aud"),
        ({"exp": int(time.time()) + 3600}, "ahead"),
        ({"jti": None}, "jti"),
        ({"sub": "someone-else"}, "sub"),
    ],
)
def test_bad_claims_are_rejected(client, partner, change, words):
    client_id, private, alg = partner
    rejected(ask(client, assertion(client_id, private, alg, **change)), "invalid_client", words)


def test_wrongly_signed_assertion_is_rejected(client, partner):
    client_id, _, alg = partner
    impostor, _ = keypair(alg)
    rejected(ask(client, assertion(client_id, impostor, alg)), "invalid_client", "signature")


def test_weak_or_symmetric_algorithms_are_rejected(client, partner):
    client_id, private, alg = partner
    hs256 = jwt.encode({"iss": client_id, "sub": client_id, "aud": AUD, "exp": int(time.time()) + 60, "jti": "x"},
                       "a-shared-secret-of-at-least-32-bytes!", algorithm="HS256")
    rejected(ask(client, hs256), "invalid_client", "alg")
    if alg == "RS384":  # the client's own RSA key, but an algorithm the specification does not allow
        rs256 = jwt.encode({"iss": client_id, "sub": client_id, "aud": AUD, "exp": int(time.time()) + 60, "jti": "y"},
                           private, algorithm="RS256", headers={"kid": "RS384-key"})
        rejected(ask(client, rs256), "invalid_client", "alg")


def test_request_errors(client, partner):
    client_id, private, alg = partner
    rejected(ask(client, assertion(client_id, private, alg), grant_type="password"), "unsupported_grant_type", "client_credentials")
    rejected(ask(client, "not-a-jwt"), "invalid_client", "JWT")
    rejected(ask(client, assertion("nobody", private, alg)), "invalid_client", "unknown client")
    rejected(ask(client, assertion(client_id, private, alg), scope="system/Encounter.read"), "invalid_scope", "registered")


def test_discovery_document(client):
    body = client.get("/.well-known/smart-configuration").get_json()
    assert body["token_endpoint"] == AUD
    assert body["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]


def test_scope_rules():
    assert parse_scope("system/Observation.rs").permissions == {"r", "s"}
    assert parse_scope("system/*.read").allows("Patient", "r")
    assert parse_scope("patient/Observation.read") is None
    assert parse_scope("system/Observation.sr") is None, "v2 permissions are ordered"
    assert grant(["system/Observation.read", "system/Patient.write"], ["system/*.rs"]) == ["system/Observation.read"]
    assert not allows(["system/Observation.read"], "Patient", "r")


def test_clients_cli_add_list_remove(tmp_path, monkeypatch, capsys, database_url, services, client):
    monkeypatch.setenv("FHIR_BRIDGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FHIR_BRIDGE_DATABASE_URL", database_url)
    monkeypatch.setenv("FHIR_BRIDGE_LOG_ORIGIN", "test.example/log")
    private, jwks = keypair("ES384")
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    assert main(["clients", "add", "--jwks", str(tmp_path / "jwks.json"), "--org", "org-x", "--scopes", "system/Patient.read"]) == 0
    client_id = json.loads(capsys.readouterr().out)["client_id"]
    # generated ids are hex, so `clients remove ID` never reads one as an option (a URL-safe token
    # starts with "-" once in 64)
    assert len(client_id) == 32 and int(client_id, 16) >= 0
    main(["clients", "list"])
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [c["client_id"] for c in listed] == [client_id] and listed[0]["key_ids"] == ["ES384-key"]

    token = ask(client, assertion(client_id, private, "ES384"), scope="system/Patient.read").get_json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/protected/Patient", headers=headers).status_code == 200
    assert main(["clients", "remove", client_id]) == 0
    assert client.get("/protected/Patient", headers=headers).status_code == 401, "removal revokes tokens at once"
    assert main(["clients", "remove", client_id]) == 2

    # A JWK Set with a private key is refused: only public keys are registered.
    private_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private))
    (tmp_path / "private.json").write_text(json.dumps({"keys": [private_jwk]}))
    with pytest.raises(AuthError, match="private key"):
        services.registry.add_client("org-y", (tmp_path / "private.json").read_text(), ["system/Patient.read"])
