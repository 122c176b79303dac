"""Push: a ``transaction`` or ``batch`` Bundle POSTed to ``/fhir`` (FHIR R4 RESTful API 3.1.0.11).

Entries may ``POST`` (create) or ``PUT`` (``Type/id``: create or update).  Each resource is validated as
R4 and stored as a new version only if its content changed, exactly as pulled resources are
(:mod:`bridge.fhir_ingest`).  Ids: a ``PUT`` keeps its id; a ``POST`` whose ``fullUrl`` is
``urn:uuid:<uuid>`` gets that uuid as its id (so posting the same Bundle again creates nothing new),
otherwise a new uuid.  References to another entry's ``fullUrl`` are rewritten to ``Type/id``.

* ``transaction``: all or nothing.  Any invalid entry answers 400 with one OperationOutcome whose
  issues name the path (``Bundle.entry[3].resource.status``); nothing is stored.
* ``batch``: each entry on its own; an invalid one gets ``response.status`` 400 and its
  ``response.outcome``, the others are stored.

Invalid resources are also kept in ``fhir_rejects`` (source ``push:<client id>``).  Scopes: ``c`` on
the type for POST, ``u`` for PUT (SMART v2; ``write`` in v1).  Every push, refused or not, leaves an
AuditEvent (subtype ``transaction`` or ``batch``) naming the versions written and their patients.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

from flask import Response, current_app, g, request

from ..audit import Access
from ..auth.scopes import allows
from ..fhir_ingest import FhirIngest, IngestCounts, issue, now_instant, outcome, validation_outcome
from ..search_index import patient_of
from .access import current_grant
from .context import services
from .fhir_common import fhir_blueprint, note
from .outcome import ApiError

blueprint = fhir_blueprint("fhir_push")  # audited like every /fhir request

MAX_BUNDLE_BYTES = 64 * 1024 * 1024
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_STATUS_TEXT = {200: "200 OK", 201: "201 Created", 400: "400 Bad Request", 403: "403 Forbidden",
                405: "405 Method Not Allowed"}


def _ingest() -> FhirIngest:
    found = current_app.extensions.get("fhir_bridge_ingest")
    if found is None:
        found = FhirIngest(services().db)
        found.ensure_schema()
        current_app.extensions["fhir_bridge_ingest"] = found
    return found


@dataclass
class Planned:
    index: int
    method: str
    res_type: str
    res_id: str
    resource: dict | None
    problem: dict | None = None  # an OperationOutcome: the entry cannot be processed
    status: int = 400


def _problem(index: int, code: str, text: str, field: str = "", status: int = 400) -> tuple[dict, int]:
    where = f"Bundle.entry[{index}]" + (f".{field}" if field else "")
    return outcome([issue(code, text, where)]), status


def plan_entries(bundle: dict) -> tuple[list[Planned], dict[str, str]]:
    """Pure: each entry's method, type and id (assigned), and the fullUrl -> ``Type/id`` map."""
    planned: list[Planned] = []
    targets: dict[str, str] = {}
    for index, entry in enumerate(bundle.get("entry") or []):
        if not isinstance(entry, dict):
            problem, status = _problem(index, "structure", "an entry must be an object")
            planned.append(Planned(index, "", "", "", None, problem, status))
            continue
        req = entry.get("request") if isinstance(entry.get("request"), dict) else {}
        method = str(req.get("method", "")).upper()
        url = str(req.get("url", ""))
        resource = entry.get("resource")
        one = Planned(index, method, "", "", resource if isinstance(resource, dict) else None)
        if method not in ("POST", "PUT"):
            one.problem, one.status = _problem(index, "not-supported", f"request.method {method or '(none)'} is not "
                                               "supported here: only POST and PUT", "request.method", 405)
        elif one.resource is None:
            one.problem, one.status = _problem(index, "required", "a POST or PUT entry needs a resource", "resource")
        else:
            one.res_type = str(one.resource.get("resourceType", ""))
            path = url.split("?", 1)[0].strip("/")
            if "?" in url or req.get("ifNoneExist") or req.get("ifMatch"):
                one.problem, one.status = _problem(index, "not-supported", "conditional create/update is not "
                                                   "supported: PUT Type/id instead", "request.url")
            elif method == "PUT":
                parts = path.split("/")
                if len(parts) != 2 or parts[0] != one.res_type or not _ID.match(parts[1]):
                    one.problem, one.status = _problem(index, "value", f"PUT needs request.url {one.res_type}/<id>, "
                                                       f"found {url[:80]!r}", "request.url")
                elif one.resource.get("id") not in (None, parts[1]):
                    one.problem, one.status = _problem(index, "value", "resource.id differs from the id in request.url",
                                                       "resource.id")
                else:
                    one.res_id = parts[1]
            else:
                if path != one.res_type:
                    one.problem, one.status = _problem(index, "value", f"POST needs request.url {one.res_type}, found "
                                                       f"{url[:80]!r}", "request.url")
                full_url = str(entry.get("fullUrl", ""))
                candidate = full_url[len("urn:uuid:"):] if full_url.startswith("urn:uuid:") else ""
                one.res_id = candidate if _ID.match(candidate) else str(uuid.uuid4())
            if not _TYPE.match(one.res_type) and one.problem is None:
                one.problem, one.status = _problem(index, "required", "resource.resourceType is missing or malformed",
                                                   "resource.resourceType")
            full_url = entry.get("fullUrl")
            if isinstance(full_url, str) and full_url and one.res_id:
                targets[full_url] = f"{one.res_type}/{one.res_id}"
        planned.append(one)
    return planned, targets


def resolve_references(resource: dict, targets: dict[str, str]) -> tuple[dict, list[str]]:
    """Pure: references to another entry's fullUrl become ``Type/id``; returns conditional ones left."""
    conditional: list[str] = []

    def walk(value):  # type: ignore[no-untyped-def]
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if key == "reference" and isinstance(item, str):
                    item = targets.get(item, item)
                    if "?" in item and not item.startswith(("http://", "https://")):
                        conditional.append(item)
                    out[key] = item
                else:
                    out[key] = walk(item)
            return out
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(resource), conditional


def _prefixed(found: dict, index: int) -> dict:
    """An OperationOutcome about a resource, its paths prefixed with the entry's place in the Bundle."""
    issues = []
    for one in found.get("issue", []):
        one = dict(one)
        if one.get("expression"):
            one["expression"] = [f"Bundle.entry[{index}].resource." + e.split(".", 1)[1] if "." in e
                                 else f"Bundle.entry[{index}].resource" for e in one["expression"]]
        issues.append(one)
    return outcome(issues)


def _response_entry(status: int, location: str | None = None, version: int | None = None, when: str | None = None,
                    problem: dict | None = None) -> dict:
    response: dict = {"status": _STATUS_TEXT.get(status, str(status))}
    if location:
        response["location"] = location
    if version is not None:
        response["etag"] = f'W/"{version}"'
    if when:
        response["lastModified"] = when
    if problem is not None:
        response["outcome"] = problem
    return {"response": response}


@blueprint.post("")
@blueprint.post("/")
def push() -> Response:
    access = g.fhir_access = Access("transaction")  # before the token check, so a refusal is audited too
    grant = current_grant()
    access.organization, access.client_id = grant.organization, grant.client_id
    if (request.content_length or 0) > MAX_BUNDLE_BYTES:
        raise ApiError(413, "too-costly", f"a Bundle may be at most {MAX_BUNDLE_BYTES // (1024 * 1024)} MiB; split it")
    try:
        bundle = json.loads(request.get_data())
    except ValueError as exc:
        raise ApiError(400, "structure", f"the body is not JSON: {exc}") from None
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise ApiError(400, "structure", "POST /fhir takes a Bundle of type transaction or batch", "Bundle")
    kind = bundle.get("type")
    if kind not in ("transaction", "batch"):
        raise ApiError(400, "value", f"Bundle.type must be transaction or batch, found {kind!r}", "Bundle.type")
    access.interaction = kind
    planned, targets = plan_entries(bundle)
    label = f"push:{grant.client_id}"
    ingest = _ingest()
    for one in planned:  # scopes: c to create, u to update
        if one.problem is None:
            permission = "c" if one.method == "POST" else "u"
            if not allows(grant.scopes, one.res_type, permission):
                one.problem, one.status = _problem(one.index, "forbidden", f"the token's scopes do not allow "
                                                   f"{permission} on {one.res_type}", status=403)
    resources: dict[int, dict] = {}
    for one in planned:
        if one.problem is not None or one.resource is None:
            continue
        resolved, conditional = resolve_references({**one.resource, "id": one.res_id}, targets)
        if conditional:
            one.problem, one.status = _problem(one.index, "not-supported", f"conditional references are not supported "
                                               f"({conditional[0][:80]}): refer to Type/id or an entry's fullUrl",
                                               "resource")
            continue
        invalid = validation_outcome(resolved)
        if invalid is not None:
            one.problem, one.status = _prefixed(invalid, one.index), 400
            continue
        resources[one.index] = resolved
    problems = [one for one in planned if one.problem is not None]
    counts = IngestCounts()
    if problems:
        with ingest.db.transaction(write=True) as cur:
            for one in problems:
                if one.resource is not None and one.status == 400:
                    ingest.reject(cur, label, one.res_type, one.res_id,
                                  json.dumps(one.resource, ensure_ascii=False, separators=(",", ":")), one.problem or {},
                                  counts)
    if kind == "transaction" and problems:
        status = 403 if all(p.status == 403 for p in problems) else 400
        issues = [i for p in problems for i in (p.problem or {}).get("issue", [])]
        body = outcome(issues)
        return Response(json.dumps(body), status=status, content_type="application/fhir+json")
    when = now_instant()
    entries: list[dict] = []
    stored: dict[int, tuple[str, int, bool]] = {}
    if resources:
        with ingest.db.transaction(write=True) as cur:  # a transaction's entries commit together
            for index, resource in resources.items():
                ref = ingest.store.put(cur, resource, when)
                ingest.put_done(cur, label, ref)
                stored[index] = (f"{ref.res_type}/{ref.res_id}/_history/{ref.version}", ref.version, ref.created)
                access.entities.append(stored[index][0])
                patient = patient_of(resource)
                if patient:
                    access.patients.add(patient)
    note(f"{kind}: {len(stored)} entries stored, {len(planned) - len(stored)} refused")
    for one in planned:
        if one.index in stored:
            location, version, created = stored[one.index]
            entries.append(_response_entry(201 if created else 200, location, version, when))
        else:
            entries.append(_response_entry(one.status, problem=one.problem))
    body = {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": f"{kind}-response", "entry": entries}
    return Response(json.dumps(body), status=200, content_type="application/fhir+json")
