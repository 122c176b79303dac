"""Writing FHIR Consent resources: POST /fhir/Consent and PUT /fhir/Consent/<id>.

Only Consent is writable through the API (scope ``system/Consent.write`` or ``.c``/``.u``).  A
Consent is stored as a new version (and logged) like any resource; it decides the very next request,
since decisions read the current Consents on every request.  Revoking is a PUT with ``status``
``inactive`` (or ``rejected``).
"""

from __future__ import annotations

import json
import uuid

from flask import Response, request

from ..audit import now_instant
from ..consent import validate_consent
from .context import services
from .fhir_common import base_url, begin, check_type_and_id, data, fhir_blueprint, fhir_response
from .outcome import ApiError

blueprint = fhir_blueprint("fhir_consent")

MAX_BODY = 256 * 1024


def _body() -> dict:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "too-costly", f"a Consent must be at most {MAX_BODY} bytes")
    if request.mimetype not in ("application/fhir+json", "application/json"):
        raise ApiError(415, "not-supported", "send the Consent as application/fhir+json")
    try:
        body = json.loads(request.get_data(cache=False))
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "structure", "the body is not JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "structure", "the body must be a JSON object (a Consent)")
    problem = validate_consent(body)
    if problem:
        raise ApiError(422, "invalid", problem, problem.split(":", 1)[0])
    try:
        from fhir.resources.R4B.consent import Consent  # R4B accepts R4 Consent content

        Consent.model_validate(body)
    except Exception as exc:  # pydantic's ValidationError: say which element
        raise ApiError(422, "invalid", f"not a valid R4 Consent: {str(exc).splitlines()[0][:300]}") from None
    return body


def _store(resource: dict, created: bool) -> Response:
    now = now_instant()
    resource.pop("meta", None)
    with services().db.transaction(write=True) as cur:
        ref = data().store.put(cur, resource, now)
    stored = data().version("Consent", ref.res_id, ref.version)
    assert stored is not None  # just committed
    headers = {"ETag": f'W/"{ref.version}"', "Location": f"{base_url()}/Consent/{ref.res_id}/_history/{ref.version}"}
    return fhir_response(stored.content, status=201 if created else 200, headers=headers)


@blueprint.post("/Consent")
def create() -> Response:
    access, _ = begin("create", "Consent", "c")
    body = _body()
    body["id"] = str(uuid.uuid4())
    access.patients.add(body["patient"]["reference"])
    response = _store(body, created=True)
    access.entities.append(f"Consent/{body['id']}/_history/1")
    return response


@blueprint.put("/Consent/<res_id>")
def update(res_id: str) -> Response:
    access, _ = begin("update", "Consent", "u")
    check_type_and_id("Consent", res_id)
    body = _body()
    if body.get("id") != res_id:
        raise ApiError(400, "invalid", f"Consent.id must equal the id in the URL ({res_id})", "id")
    access.patients.add(body["patient"]["reference"])
    created = data().current("Consent", res_id) is None
    response = _store(body, created=created)
    access.entities.append(f"Consent/{res_id}")
    return response
