"""FHIR search (type level), ``_include`` of the patient, paging, and ``Patient/<id>/$everything``.

Consent in searches: resources of patients whose consent does not permit the caller's organisation
the resource's category are left out silently, before totals and paging are computed, so neither
``total`` nor a page boundary nor an ``_include`` reveals them.  The AuditEvent says how many were
withheld.  ``AuditEvent`` searches need ``patient=`` and follow that patient's consent to the
``AuditEvent`` category.
"""

from __future__ import annotations

from dataclasses import replace

from flask import Response, request

from ..auth.scopes import allows
from ..fhir_data import Row
from ..fhir_query import MAX_COUNT, SearchError, parse_search, reference_value, search_sql, since_value
from ..search_index import PARAMETERS
from .fhir_bundle import Entry, bundle
from .fhir_common import (
    ConsentGate,
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

blueprint = fhir_blueprint("fhir_search")

#: a search's order: newest first, then by id
NEWEST_FIRST: Order[Row] = Order(lambda r: (r.last_updated, r.res_id), (True, False))
#: $everything's order: the Patient, then by type and id
COMPARTMENT_ORDER: Order[Row] = Order(lambda r: (int(r.res_type != "Patient"), r.res_type, r.res_id),
                                      (False, False, False))

EVERYTHING_TYPES = ("Patient", "Consent", *[t for t in PARAMETERS if t not in ("Patient", "Consent", "AuditEvent")])


@blueprint.get("/<res_type>")
def search(res_type: str) -> Response:
    access, grant = begin("search-type", res_type, "s")
    check_type_and_id(res_type)
    if res_type not in PARAMETERS:
        raise ApiError(404, "not-supported", f"search is not supported on {res_type}; see /fhir/metadata",
                       "resourceType")
    args = list(request.args.items(multi=True))
    try:
        query = parse_search(res_type, args)
    except SearchError as exc:
        raise ApiError(400, "not-supported" if "not supported" in str(exc) else "value", str(exc), exc.param) from None
    audit_patient: str | None = None
    if res_type == "AuditEvent":
        values = [v for k, v in args if k == "patient"]
        if len(values) != 1 or "," in values[0]:
            raise ApiError(400, "required", "AuditEvent search needs exactly one patient", "patient")
        audit_patient = reference_value("patient", values[0])
    rows = data().rows(*search_sql(query))
    gate = ConsentGate(grant.organization)
    if audit_patient:
        rows = [replace(r, patient=audit_patient) for r in rows]
    gate.load(r.patient for r in rows if r.patient)
    permitted = [r for r in rows if gate.permits(r.patient, res_type)]
    withheld = len(rows) - len(permitted)
    paged = page(permitted, NEWEST_FIRST, res_type, args, query.count)
    page_rows = paged.items
    versions = data().current_versions(page_rows)
    entries = [Entry(v, "match") for v in versions]
    access.patients.update(r.patient for r in page_rows if r.patient)
    if query.include_patient:
        patients = sorted({r.patient for r in page_rows if r.patient})
        wanted = [p for p in patients if allows(grant.scopes, "Patient", "r") and gate.permits(p, "Patient")]
        current = [data().current("Patient", p.split("/", 1)[1]) for p in wanted]
        entries += [Entry(found[0], "include") for found in current if found is not None]
    access.entities.extend(f"{e.version.res_type}/{e.version.res_id}/_history/{e.version.version}" for e in entries)
    if withheld:
        note(f"{withheld} match(es) withheld by consent")
    return fhir_response(bundle("searchset", entries, total=len(permitted), links=paged.links))


@blueprint.get("/Patient/<res_id>/$everything")
def everything(res_id: str) -> Response:
    access, grant = begin("operation", "Patient", "r")
    check_type_and_id("Patient", res_id)
    patient = f"Patient/{res_id}"
    access.patients.add(patient)
    args = list(request.args.items(multi=True))
    since, types, count = None, None, None
    for name, value in args:
        if name == "_since":
            try:
                since = since_value(name, value)
            except SearchError as exc:
                raise ApiError(400, "value", str(exc), exc.param) from None
        elif name == "_type":
            types = set(value.split(","))
        elif name == "_count":
            if not value.isdigit() or int(value) > MAX_COUNT:
                raise ApiError(400, "value", f"_count must be an integer from 0 to {MAX_COUNT}", name)
            count = int(value)
        elif name not in ("_format", "_cursor", "_offset"):
            raise ApiError(400, "not-supported", f"parameter {name!r} is not supported on $everything", name)
    if data().current("Patient", res_id) is None:
        raise ApiError(404, "not-found", f"{patient} is not known", "id")
    gate = ConsentGate(grant.organization)
    rows = [r for r in data().compartment(patient, since)
            if r.res_type in EVERYTHING_TYPES and (types is None or r.res_type in types)]
    readable = [r for r in rows if allows(grant.scopes, r.res_type, "r")]
    permitted = [r for r in readable if gate.permits(patient, r.res_type)]
    if readable and not permitted:
        raise ApiError(403, "forbidden", f"consent: {gate.decide(patient, 'Patient').reason}")
    withheld = len(readable) - len(permitted)
    paged = page(permitted, COMPARTMENT_ORDER, f"Patient/{res_id}/$everything", args,
                 count if count is not None else len(permitted) or 1)  # no _count: all of it
    versions = data().current_versions(paged.items)
    access.entities.extend(f"{v.res_type}/{v.res_id}/_history/{v.version}" for v in versions)
    if withheld:
        note(f"{withheld} resource(s) withheld by consent or scope")
    return fhir_response(bundle("searchset", [Entry(v, "match") for v in versions], total=len(permitted),
                         links=paged.links))
