"""FHIR read, vread and _history (instance and type), consent-checked and audited.

A read of a resource in a patient's compartment that the patient's consent does not permit to the
caller's organisation is refused with 403 (and audited); an unknown id is 404.
"""

from __future__ import annotations

import json
from datetime import datetime
from email.utils import format_datetime

from flask import Response, request

from ..fhir_query import MAX_COUNT, SearchError, non_negative_int, since_value
from ..search_index import patient_of
from ..store import StoredVersion
from .fhir_bundle import Entry, bundle
from .fhir_common import (
    ConsentGate,
    FhirResponse,
    base_url,
    begin,
    check_type_and_id,
    data,
    fhir_blueprint,
    fhir_response,
    note,
    page,
)
from .outcome import ApiError
from .paging import Order

blueprint = fhir_blueprint("fhir_read")

HISTORY_DEFAULT = 100
#: type-level history looks at the newest versions only; older ones are reached with _since windows
TYPE_HISTORY_LIMIT = 10_000
#: history's order: newest first (a type's: then by id, then newest version first)
INSTANCE_HISTORY_ORDER: Order[StoredVersion] = Order(lambda v: (v.version,), (True,))
TYPE_HISTORY_ORDER: Order[StoredVersion] = Order(lambda v: (v.last_updated, v.res_id, v.version), (True, False, True))


def _http_date(instant: str) -> str:
    return format_datetime(datetime.fromisoformat(instant.replace("Z", "+00:00")), usegmt=True)


def audit_patients(resource: dict) -> list[str]:
    """Patients a resource is about, for consent: its compartment, or an AuditEvent's patient entities."""
    if resource.get("resourceType") == "AuditEvent":
        return sorted({e["what"]["reference"] for e in resource.get("entity") or []
                       if str((e.get("what") or {}).get("reference", "")).startswith("Patient/")})
    patient = patient_of(resource)
    return [patient] if patient else []


def _gate(gate: ConsentGate, patients: list[str], category: str) -> None:
    for patient in patients:
        decision = gate.decide(patient, category)
        if not decision.permitted:
            raise ApiError(403, "forbidden", f"consent: {decision.reason}")


def _resource_response(version: StoredVersion) -> Response:
    etag = f'W/"{version.version}"'
    headers = {"ETag": etag, "Last-Modified": _http_date(version.last_updated)}
    location = f"{base_url()}/{version.res_type}/{version.res_id}/_history/{version.version}"
    matches = [t.strip() for t in request.headers.get("If-None-Match", "").split(",")]
    if etag in matches or f'"{version.version}"' in matches or "*" in matches:
        response = FhirResponse(status=304, headers=headers)
        response.locate(location)
        return response
    return fhir_response(version.content, headers=headers, location=location)


@blueprint.get("/<res_type>/<res_id>")
def read(res_type: str, res_id: str) -> Response:
    access, grant = begin("read", res_type, "r")
    check_type_and_id(res_type, res_id)
    found = data().current(res_type, res_id)
    if found is None:
        raise ApiError(404, "not-found", f"{res_type}/{res_id} is not known", "id")
    version, patient = found
    # the compartment indexed with the version; an AuditEvent's patients are its entities
    patients = audit_patients(json.loads(version.content)) if res_type == "AuditEvent" else \
        [patient] if patient else []
    access.patients.update(patients)
    _gate(ConsentGate(grant.organization), patients, res_type)
    access.entities.append(f"{res_type}/{res_id}/_history/{version.version}")
    return _resource_response(version)


@blueprint.get("/<res_type>/<res_id>/_history/<vid>")
def vread(res_type: str, res_id: str, vid: str) -> Response:
    access, grant = begin("vread", res_type, "r")
    check_type_and_id(res_type, res_id)
    if not vid.isdigit() or int(vid) < 1:
        raise ApiError(400, "value", f"version id must be a positive integer, found {vid[:20]!r}", "vid")
    version = data().version(res_type, res_id, int(vid))
    if version is None:
        raise ApiError(404, "not-found", f"{res_type}/{res_id}/_history/{vid} is not known", "vid")
    patients = audit_patients(json.loads(version.content))
    access.patients.update(patients)
    _gate(ConsentGate(grant.organization), patients, res_type)
    access.entities.append(f"{res_type}/{res_id}/_history/{version.version}")
    return _resource_response(version)


def _count(default: int) -> int:
    try:
        return non_negative_int("_count", request.args.get("_count", str(default)), MAX_COUNT)
    except SearchError as exc:
        raise ApiError(400, "value", str(exc), exc.param) from None


def _since() -> str | None:
    since = request.args.get("_since")
    try:
        return None if since is None else since_value("_since", since)
    except SearchError as exc:
        raise ApiError(400, "value", str(exc), exc.param) from None


def _check_history_params() -> None:
    for name in request.args:
        if name not in ("_count", "_since", "_format", "_offset", "_cursor"):
            raise ApiError(400, "not-supported", f"parameter {name!r} is not supported on _history", name)


@blueprint.get("/<res_type>/<res_id>/_history")
def instance_history(res_type: str, res_id: str) -> Response:
    access, grant = begin("history-instance", res_type, "r")
    check_type_and_id(res_type, res_id)
    _check_history_params()
    since, count = _since(), _count(HISTORY_DEFAULT)
    found = data().current(res_type, res_id)
    if found is None:
        raise ApiError(404, "not-found", f"{res_type}/{res_id} is not known", "id")
    patients = audit_patients(json.loads(found[0].content))
    access.patients.update(patients)
    _gate(ConsentGate(grant.organization), patients, res_type)
    versions = [v for v in data().history(res_type, res_id) if since is None or v.last_updated >= since]
    paged = page(versions, INSTANCE_HISTORY_ORDER, f"{res_type}/{res_id}/_history",
                 list(request.args.items(multi=True)), count)
    access.entities.extend(f"{v.res_type}/{v.res_id}/_history/{v.version}" for v in paged.items)
    return fhir_response(bundle("history", [Entry(v) for v in paged.items], total=len(versions), links=paged.links))


@blueprint.get("/<res_type>/_history")
def type_history(res_type: str) -> Response:
    access, grant = begin("history-type", res_type, "r")
    check_type_and_id(res_type)
    _check_history_params()
    since, count = _since(), _count(HISTORY_DEFAULT)
    gate = ConsentGate(grant.organization)
    versions = data().type_history(res_type, since, TYPE_HISTORY_LIMIT)
    about = [(v, audit_patients(json.loads(v.content))) for v in versions]
    gate.load(p for _, ps in about for p in ps)
    permitted = [(v, ps) for v, ps in about if all(gate.permits(p, res_type) for p in ps)]
    withheld = len(versions) - len(permitted)
    patients_of = {(v.res_type, v.res_id, v.version): ps for v, ps in permitted}
    paged = page([v for v, _ in permitted], TYPE_HISTORY_ORDER, f"{res_type}/_history",
                 list(request.args.items(multi=True)), count)
    for v in paged.items:
        access.patients.update(patients_of[(v.res_type, v.res_id, v.version)])
    access.entities.extend(f"{v.res_type}/{v.res_id}/_history/{v.version}" for v in paged.items)
    if withheld:
        note(f"{withheld} version(s) withheld by consent")
    return fhir_response(bundle("history", [Entry(v) for v in paged.items], total=len(permitted), links=paged.links))
