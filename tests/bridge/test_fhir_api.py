"""The FHIR API over raw HTTP (Flask's test client): read, vread, history, search, $everything,
errors, ETag, gzip, scopes, consent and audit."""

from __future__ import annotations

import base64
import gzip
import json
from dataclasses import replace

import pytest

from bridge.api import create_app
from bridge.services import open_services
from bridge.validation import problems

from .fhir_support import bearer, consent, fold_audits, put, seed, settle

OPEN = "system/*.rs system/Consent.write"


@pytest.fixture
def services(config, signer):
    services = open_services(config)
    services._signer = signer
    seed(services)
    yield services
    services.close()


@pytest.fixture
def client(services):
    return create_app(services=services).test_client()


@pytest.fixture
def org_a(services):
    """org-a, permitted by p1 and p2 (opt-in is the default regime)."""
    put(services, consent("cons-p1", "p1", "org-a"), consent("cons-p2", "p2", "org-a"))
    settle(services)
    return bearer(services, "org-a", OPEN)


def outcome(response, status: int, words: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json(force=True)
    assert body["resourceType"] == "OperationOutcome" and words in body["issue"][0]["diagnostics"], body
    return body


def audits(services, patient: str) -> list[dict]:
    from bridge.fhir_data import FhirData

    fold_audits(services)
    data = FhirData(services.db, services.log)
    rows = data.rows("SELECT c.res_type, c.res_id, c.version, c.patient FROM resource_current c "
                     "JOIN search_tokens t ON t.serial = c.serial "
                     "WHERE c.res_type = 'AuditEvent' AND t.param = 'patient' AND t.value = ?", [patient])
    return sorted((v.resource for v in data.current_versions(rows)), key=lambda e: e["recorded"])


def test_metadata_is_public_and_describes_search(client):
    response = client.get("/fhir/metadata")
    assert response.status_code == 200 and response.mimetype == "application/fhir+json"
    body = response.get_json(force=True)
    assert body["resourceType"] == "CapabilityStatement" and body["fhirVersion"] == "4.0.1"
    patient = next(r for r in body["rest"][0]["resource"] if r["type"] == "Patient")
    assert {p["name"] for p in patient["searchParam"]} >= {"identifier", "name", "family", "given", "birthdate", "gender"}
    assert patient["operation"][0]["name"] == "everything"
    assert {i["code"] for i in body["rest"][0]["interaction"]} == {"transaction", "batch"}
    assert problems(body) == [], "the CapabilityStatement is itself valid FHIR R4"


def test_read_vread_etag_and_gzip(client, org_a):
    response = client.get("/fhir/Observation/o1", headers=org_a)
    assert response.status_code == 200 and response.headers["ETag"] == 'W/"2"'
    assert response.headers["Content-Location"] == "http://127.0.0.1:8080/fhir/Observation/o1/_history/2"
    assert response.headers.getlist("Content-Location") == [response.headers["Content-Location"]]
    unchanged = client.get("/fhir/Observation/o1", headers={**org_a, "If-None-Match": 'W/"2"'})
    assert unchanged.headers["Content-Location"].endswith("/Observation/o1/_history/2")
    assert response.get_json(force=True)["valueQuantity"]["value"] == 5.6
    assert client.get("/fhir/Observation/o1", headers={**org_a, "If-None-Match": 'W/"2"'}).status_code == 304
    assert client.get("/fhir/Observation/o1", headers={**org_a, "If-None-Match": 'W/"1"'}).status_code == 200
    old = client.get("/fhir/Observation/o1/_history/1", headers=org_a)
    assert old.status_code == 200 and old.get_json(force=True)["valueQuantity"]["value"] == 5.4
    big = client.get("/fhir/Patient/p1/$everything", headers={**org_a, "Accept-Encoding": "gzip"})
    assert big.headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(big.get_data()))["resourceType"] == "Bundle"


def test_errors_are_operation_outcomes(client, org_a):
    outcome(client.get("/fhir/Patient/nobody", headers=org_a), 404, "not known")
    outcome(client.get("/fhir/Observation/o1/_history/9", headers=org_a), 404, "not known")
    outcome(client.get("/fhir/Observation/o1/_history/x", headers=org_a), 400, "version id")
    outcome(client.get("/fhir/Patient/bad$id", headers=org_a), 400, "not a FHIR id")
    body = outcome(client.get("/fhir/Patient?colour=blue", headers=org_a), 400, "'colour' is not supported")
    assert body["issue"][0]["expression"] == ["colour"]
    outcome(client.get("/fhir/Observation?date=yesterday", headers=org_a), 400, "date")
    outcome(client.get("/fhir/Observation?_count=-1", headers=org_a), 400, "_count")
    outcome(client.get("/fhir/Patient?family:missing=true", headers=org_a), 400, ":missing")
    outcome(client.get("/fhir/AuditEvent", headers=org_a), 400, "patient")
    outcome(client.get("/fhir/Patient/p1/$everything?foo=1", headers=org_a), 400, "foo")


def ids(response) -> list[str]:
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json(force=True)
    return [e["resource"]["id"] for e in body.get("entry", [])]


@pytest.mark.parametrize("query, expected", [
    ("Patient?family=mül", ["p1"]),
    ("Patient?name=BEN", ["p2"]),
    ("Patient?given=anna&gender=female", ["p1"]),
    ("Patient?given=anna&gender=male", []),
    ("Patient?birthdate=ge1985-01-01", ["p2"]),
    ("Patient?birthdate=1980", ["p1"]),
    ("Patient?identifier=urn:oid:1.2.36.146.595.217.0.1|MRN-p2", ["p2"]),
    ("Patient?identifier=MRN-p1", ["p1"]),
    ("Patient?family:exact=smith", ["p2"]),
    ("Patient?_id=p1,p2", ["p1", "p2"]),
    ("Observation?patient=p1&code=http://loinc.org|2345-7", ["o1"]),
    ("Observation?code=2345-7", ["o1", "o3"]),
    ("Observation?category=laboratory", ["o3"]),
    ("Observation?date=ge2025-05-15", ["o2"]),
    ("Observation?date=lt2025-01-01", ["o3"]),
    ("Observation?date=2025-06-01", ["o2"]),
    ("Observation?status=final&patient=Patient/p2", ["o3"]),
    ("Observation?_lastUpdated=ge2026-01-03", ["o1"]),
    ("Condition?patient=p1&code=44054006&status=active&category=problem-list-item", ["c1"]),
    ("Condition?date=le2019-03-01", ["c1"]),
])
def test_search(client, org_a, query, expected):
    assert sorted(ids(client.get(f"/fhir/{query}", headers=org_a))) == sorted(expected)


def test_paging_include_and_totals(client, org_a):
    first = client.get("/fhir/Observation?_count=2", headers=org_a).get_json(force=True)
    assert first["total"] == 3 and len(first["entry"]) == 2
    links = {link["relation"]: link["url"] for link in first["link"]}
    assert "_cursor=" in links["next"] and "_offset" not in links["next"] and "previous" not in links
    path = links["next"].split("/fhir/", 1)[1]
    second = client.get("/fhir/" + path, headers=org_a).get_json(force=True)
    assert len(second["entry"]) == 1 and "next" not in {link["relation"] for link in second["link"]}
    seen = {e["resource"]["id"] for e in first["entry"] + second["entry"]}
    assert seen == {"o1", "o2", "o3"}
    included = client.get("/fhir/Observation?patient=p1&_include=Observation:patient", headers=org_a).get_json(force=True)
    modes = {(e["resource"]["resourceType"], e["search"]["mode"]) for e in included["entry"]}
    assert modes == {("Observation", "match"), ("Patient", "include")} and included["total"] == 2


def test_history_and_everything(client, org_a):
    history = client.get("/fhir/Observation/o1/_history", headers=org_a).get_json(force=True)
    assert history["type"] == "history" and [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
    assert history["entry"][0]["request"]["method"] == "PUT"
    typed = client.get("/fhir/Observation/_history", headers=org_a).get_json(force=True)
    assert typed["total"] == 4  # o1 twice, o2, o3
    since = client.get("/fhir/Observation/_history?_since=2026-01-03", headers=org_a).get_json(force=True)
    assert since["total"] == 1
    paged = client.get("/fhir/Observation/_history?_count=3", headers=org_a).get_json(force=True)
    following = next(link["url"] for link in paged["link"] if link["relation"] == "next")
    rest = client.get("/fhir/" + following.split("/fhir/", 1)[1], headers=org_a).get_json(force=True)
    assert len(paged["entry"]) == 3 and len(rest["entry"]) == 1
    everything = client.get("/fhir/Patient/p1/$everything", headers=org_a).get_json(force=True)
    kinds = [e["resource"]["resourceType"] for e in everything["entry"]]
    assert kinds[0] == "Patient" and sorted(kinds) == ["Condition", "Consent", "Observation", "Observation", "Patient"]
    since = client.get("/fhir/Patient/p1/$everything?_since=2026-01-03", headers=org_a).get_json(force=True)
    assert [e["resource"]["id"] for e in since["entry"]] == ["o1"]


@pytest.mark.parametrize("since, observations", [
    ("2026-01-03T05:00:00-05:00", 1),  # 10:00 UTC, when o1's second version was made: included
    ("2026-01-03T05:00:01-05:00", 0),  # a second later (as text it sorts before "2026-01-03T10...")
    ("2026-01-03T11:00:00%2B01:00", 1),  # the same instant written east of UTC
    ("2026-01-03T11:00:01+01:00", 0),  # the + left unencoded arrives as a space: read as the + it was
    ("2026-01-03T10:00:00.001Z", 0),  # stored as 10:00:00.000Z whatever form it was given in
])
def test_since_compares_instants_not_text(client, org_a, since, observations):
    history = client.get(f"/fhir/Observation/_history?_since={since}", headers=org_a).get_json(force=True)
    assert history["total"] == observations
    everything = client.get(f"/fhir/Patient/p1/$everything?_since={since}", headers=org_a).get_json(force=True)
    assert [e["resource"]["id"] for e in everything.get("entry", [])] == ["o1"] * observations
    instance = client.get(f"/fhir/Observation/o1/_history?_since={since}", headers=org_a).get_json(force=True)
    assert instance["total"] == observations


def test_a_since_that_is_not_an_instant_is_a_400(client, org_a):
    for path in ("/fhir/Observation/_history", "/fhir/Patient/p1/$everything", "/fhir/Observation/o1/_history"):
        outcome(client.get(f"{path}?_since=2026-13-01", headers=org_a), 400, "_since")


def test_every_auth_failure_is_rejected(client, services, org_a):
    outcome(client.get("/fhir/Patient/p1"), 401, "bearer access token is required")
    outcome(client.get("/fhir/Patient/p1", headers={"Authorization": "Bearer forged"}), 401, "unknown or expired")
    outcome(client.get("/fhir/Patient/p1", headers={"Authorization": "Basic dTpw"}), 401, "bearer")
    from bridge.auth.registry import Client

    expired, _ = services.registry.issue_token(Client("old", "org-a", {}, ["system/*.rs"]), ["system/*.rs"], 1000)
    outcome(client.get("/fhir/Patient/p1", headers={"Authorization": f"Bearer {expired}"}), 401, "expired")
    patient_only = bearer(services, "org-a", "system/Patient.read")
    outcome(client.get("/fhir/Observation/o1", headers=patient_only), 403, "scopes do not allow r on Observation")
    outcome(client.get("/fhir/Observation?patient=p1", headers=patient_only), 403, "Observation")
    outcome(client.get("/fhir/Observation/_history", headers=patient_only), 403, "Observation")
    read_only = bearer(services, "org-a", "system/Observation.r")
    outcome(client.get("/fhir/Observation?code=2345-7", headers=read_only), 403, "s on Observation")
    outcome(client.post("/fhir/Consent", json=consent("x", "p1", "org-a"), headers=org_a | bearer(services, "org-a")),
            403, "c on Consent")
    everything = client.get("/fhir/Patient/p1/$everything", headers=patient_only).get_json(force=True)
    assert [e["resource"]["resourceType"] for e in everything["entry"]] == ["Patient"], "other types need scopes"
    denied = [e for e in audits(services, "Patient/p1") if e["outcome"] == "4"]
    assert denied, "scope refusals are audited"


def test_consent_denial_is_403_and_audited_and_revocation_is_immediate(client, services):
    org_b = bearer(services, "org-b", OPEN)
    response = client.get("/fhir/Patient/p1", headers=org_b)  # opt-in: no consent for org-b yet
    outcome(response, 403, "no active consent")
    event = audits(services, "Patient/p1")[-1]
    assert event["outcome"] == "4" and event["agent"][0]["who"]["reference"] == "Organization/org-b"
    assert "consent" in event["outcomeDesc"] and event["subtype"][0]["code"] == "read"

    created = client.post("/fhir/Consent", json=consent("ignored", "p1", "org-b"), headers=org_b)
    assert created.status_code == 201, created.get_data(as_text=True)
    consent_id = created.get_json(force=True)["id"]
    assert created.headers["Location"].endswith(f"/Consent/{consent_id}/_history/1")
    assert client.get("/fhir/Patient/p1", headers=org_b).status_code == 200

    revoked = consent(consent_id, "p1", "org-b", status="inactive")
    assert client.put(f"/fhir/Consent/{consent_id}", json=revoked, headers=org_b).status_code == 200
    outcome(client.get("/fhir/Patient/p1", headers=org_b), 403, "no active consent")  # the very next request
    outcome(client.put("/fhir/Consent/other", json=revoked, headers=org_b), 400, "must equal")
    outcome(client.post("/fhir/Consent", json={"resourceType": "Consent", "status": "active"}, headers=org_b),
            422, "Consent.patient")


def test_search_leaks_nothing_about_denied_patients(client, services):
    put(services, consent("cons-p2", "p2", "org-c"))  # p2 permits org-c; p1 does not
    org_c = bearer(services, "org-c")
    body = client.get("/fhir/Observation?code=2345-7&_include=Observation:patient", headers=org_c).get_json(force=True)
    assert body["total"] == 1 and [e["resource"]["id"] for e in body["entry"]] == ["o3", "p2"]
    assert client.get("/fhir/Patient?gender=female", headers=org_c).get_json(force=True)["total"] == 0
    outcome(client.get("/fhir/Patient/p1/$everything", headers=org_c), 403, "consent")
    assert client.get("/fhir/Observation/_history", headers=org_c).get_json(force=True)["total"] == 1
    withheld = audits(services, "Patient/p2")[-1]
    assert withheld["outcome"] == "0"


def test_categories_deny_wins_and_opt_out(client, services, config, signer):
    put(services, consent("cons-p1", "p1", "org-d", classes=("Patient", "Observation")),
        consent("cons-p1-deny", "p1", "org-d", kind="deny", classes=("Observation",)))
    org_d = bearer(services, "org-d")
    assert client.get("/fhir/Patient/p1", headers=org_d).status_code == 200
    outcome(client.get("/fhir/Observation/o1", headers=org_d), 403, "denies")
    outcome(client.get("/fhir/Condition/c1", headers=org_d), 403, "no active consent")
    kinds = {e["resource"]["resourceType"] for e in
             client.get("/fhir/Patient/p1/$everything", headers=org_d).get_json(force=True)["entry"]}
    assert kinds == {"Patient"}

    opt_out = open_services(replace(config, consent_regime="opt-out"))
    opt_out._signer = signer
    try:
        other = create_app(services=opt_out).test_client()
        assert other.get("/fhir/Condition/c1", headers=org_d).status_code == 200  # nothing denies it
        outcome(other.get("/fhir/Observation/o1", headers=org_d), 403, "denies")
        assert other.get("/fhir/Observation/o2", headers=bearer(opt_out, "org-e")).status_code == 200
    finally:
        opt_out.close()


def test_audit_events_show_who_read_what(client, services, org_a):
    client.get("/fhir/Observation/o2", headers=org_a)
    put(services, consent("cons-audit", "p1", "org-patient-app", classes=("AuditEvent",)))
    patient_app = bearer(services, "org-patient-app")
    body = client.get("/fhir/AuditEvent?patient=p1", headers=patient_app).get_json(force=True)
    events = [e["resource"] for e in body["entry"]]
    reads = [e for e in events if any(x["what"].get("reference") == "Observation/o2/_history/1"
                                      for x in e.get("entity", []) if "what" in x)]
    assert reads and reads[0]["agent"][0]["who"]["reference"] == "Organization/org-a"
    assert reads[0]["agent"][0]["altId"] == "client-org-a"
    query = next(x for x in reads[0]["entity"] if x["role"]["code"] == "24")
    assert base64.b64decode(query["query"]).decode() == "/fhir/Observation/o2"
    assert client.get("/fhir/AuditEvent?patient=p2", headers=patient_app).get_json(force=True)["total"] == 0


def test_a_content_location_that_is_not_yet_a_uri_is_still_converted():
    """The fast path of FhirResponse is for URIs only: a public URL with an IDN host or a space still
    goes through werkzeug's IRI-to-URI conversion."""
    from bridge.api.fhir_common import FhirResponse

    def sent(location: str) -> str:
        response = FhirResponse(b"{}")
        response.locate(location)
        return dict(response.get_wsgi_headers({"SERVER_NAME": "x", "SERVER_PORT": "80", "wsgi.url_scheme": "http"}))[
            "Content-Location"]

    assert sent("http://h.example/fhir/Patient/p1/_history/1") == "http://h.example/fhir/Patient/p1/_history/1"
    assert sent("http://bücher.example/fhir/a b") == "http://xn--bcher-kva.example/fhir/a%20b"
