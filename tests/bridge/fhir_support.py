"""Helpers for the FHIR API tests: seeded records, tokens, consents, sequencing and checkpoints."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from anchoring.db import Database
from anchoring.log import MerkleLog
from bridge.audit_spool import AuditSpool, SpoolFolder, spool_directory
from bridge.auth.registry import Client
from bridge.fhir_data import FhirData
from bridge.services import Services

WHEN = "2026-01-0{}T10:00:00Z"
LOINC = "http://loinc.org"


def patient(pid: str, family: str, given: str, gender: str, birth: str) -> dict:
    return {"resourceType": "Patient", "id": pid, "gender": gender, "birthDate": birth,
            "identifier": [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": f"MRN-{pid}"}],
            "name": [{"family": family, "given": [given]}]}


def observation(oid: str, pid: str, code: str, date: str, category: str = "vital-signs", value: float = 1.5) -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": category}]}],
            "code": {"coding": [{"system": LOINC, "code": code}]}, "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": date, "valueQuantity": {"value": value, "unit": "mmol/L"}}


def condition(cid: str, pid: str, code: str, onset: str) -> dict:
    return {"resourceType": "Condition", "id": cid,
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "category": [{"coding": [{"code": "problem-list-item"}]}],
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": code}]},
            "subject": {"reference": f"Patient/{pid}"}, "onsetDateTime": onset}


def consent(cid: str, pid: str, org: str | None, kind: str = "permit", classes: tuple[str, ...] = (),
            status: str = "active") -> dict:
    provision: dict = {"type": kind}
    if org:
        provision["actor"] = [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                                    "code": "IRCP"}]},
                               "reference": {"reference": f"Organization/{org}"}}]
    if classes:
        provision["class"] = [{"system": "http://hl7.org/fhir/resource-types", "code": c} for c in classes]
    return {"resourceType": "Consent", "id": cid, "status": status,
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": LOINC, "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{pid}"}, "provision": provision}


def put(services: Services, *resources: dict, when: str = WHEN.format(1)) -> None:
    data = FhirData(services.db, services.log)
    data.ensure_schema()
    with services.db.transaction(write=True) as cur:
        for resource in resources:
            data.store.put(cur, resource, when)


def seed(services: Services) -> None:
    """Two patients: p1 (Anna Müller) with observations and a condition, p2 (Ben Smith)."""
    put(services, patient("p1", "Müller", "Anna", "female", "1980-02-03"),
        patient("p2", "Smith", "Ben", "male", "1990-07-14"), when=WHEN.format(1))
    put(services, observation("o1", "p1", "2345-7", "2025-05-01", value=5.4),
        observation("o2", "p1", "8867-4", "2025-06-01T08:30:00Z", value=72),
        observation("o3", "p2", "2345-7", "2024-01-01", category="laboratory", value=1e-7),
        condition("c1", "p1", "44054006", "2019-03-01"), when=WHEN.format(2))
    put(services, observation("o1", "p1", "2345-7", "2025-05-01", value=5.6), when=WHEN.format(3))  # version 2


def settle(services: Services) -> None:
    """Store spooled AuditEvents, sequence everything queued and sign a checkpoint (what `serve`'s
    jobs do every second)."""
    fold_audits(services)
    while services.log.sequence():
        pass
    services.log.checkpoint(services.signer)


def bearer(services: Services, org: str, scopes: str = "system/*.rs", client_id: str | None = None) -> dict:
    client = Client(client_id or f"client-{org}", org, {}, scopes.split())
    token, _ = services.registry.issue_token(client, client.scopes, int(time.time()))
    return {"Authorization": f"Bearer {token}"}


def stored_data(db: Database, resources: list[dict], last_updated: str) -> FhirData:
    """A FHIR store (log and search tables) on ``db`` holding ``resources``, one transaction."""
    log = MerkleLog(db, "test.example/log")
    log.ensure_schema()
    data = FhirData(db, log)
    data.ensure_schema()
    with db.transaction(write=True) as cur:
        for resource in resources:
            data.store.put(cur, resource, last_updated)
    return data


def audit_spool(services: Services) -> tuple[FhirData, AuditSpool]:
    """The FHIR tables and an audit spool in the data folder, as a gunicorn worker has."""
    data = FhirData(services.db, services.log)
    data.ensure_schema()
    return data, AuditSpool(spool_directory(services.config.data_dir))


def fold_audits(services: Services) -> int:
    """Store the spooled AuditEvents (what `serve` does every audit_fold_interval)."""
    data = FhirData(services.db, services.log)
    return SpoolFolder(spool_directory(services.config.data_dir), services.db, data.store).fold()


def in_threads(count: int, work: Callable[[], None]) -> None:
    """Run ``work`` in ``count`` threads at once (concurrent requests of one worker) and wait for all."""
    threads = [threading.Thread(target=work) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
