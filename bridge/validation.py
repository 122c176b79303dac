"""FHIR R4 validation of converted resources with the ``fhir.resources`` R4B models.

``fhir.resources`` 8.x defaults to R5, which rejects real R4 content; its R4B package accepts R4
for every resource type the converter produces.  A failure becomes an :class:`HL7Error` (207,
application internal error: the mapping produced something that is not valid FHIR) whose location
is the FHIR path, so the message is kept, listed with the reason and can be reprocessed.

Validating a model per element costs far more than the rest of ingest; resources of a shape
accepted before are checked value by value in one call (:mod:`bridge.validation_shapes`), with
the same verdict, and anything else is validated in full as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from . import validation_shapes
from .hl7.types import HL7Error

MAX_LISTED = 3  # errors named in one message; the rest are counted


@lru_cache(maxsize=256)
def _model(resource_type: str) -> Any:
    from fhir.resources.R4B import get_fhir_model_class  # heavy import, done once on first use

    return get_fhir_model_class(resource_type)


def fhir_path(resource_type: str, loc: tuple) -> str:
    path = resource_type
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


@dataclass(frozen=True)
class Problem:
    """One reason a resource is not valid FHIR R4."""

    code: str  # FHIR issue type: structure | required | not-supported
    path: str  # FHIR path of the element, e.g. "Patient.birthDate"
    message: str


def problems(resource: Any) -> list[Problem]:
    """What is wrong with ``resource`` as FHIR R4, and where; empty when it is valid.

    The one place validation happens: ingest of HL7v2 turns the problems into an HL7 error,
    FHIR pulls and pushes into an OperationOutcome.
    """
    if not isinstance(resource, dict):
        return [Problem("structure", "", "a resource must be a JSON object")]
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        return [Problem("required", "resourceType", "resourceType is missing")]
    try:
        model = _model(resource_type)
    except (ValueError, KeyError):
        return [Problem("not-supported", "resourceType", f"{resource_type[:64]} is not a FHIR R4 resource type")]
    if validation_shapes.passes(model, resource):
        return []  # the shape of a resource accepted before, and every value passes its schema
    try:
        instance = model.model_validate(resource)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        errors = getattr(exc, "errors", None)
        items = errors() if callable(errors) else []
        if not items:
            return [Problem("structure", resource_type, f"not valid FHIR R4: {exc}")]
        return [
            Problem("required" if e.get("type") == "missing" else "structure",
                    fhir_path(resource_type, tuple(e.get("loc", ()))), str(e.get("msg", "invalid")))
            for e in items
        ]
    except (TypeError, AttributeError) as exc:  # fhir_core fails this way on some wrong-typed values
        return [Problem("structure", resource_type, f"not valid FHIR R4 ({type(exc).__name__}: {exc})")]
    validation_shapes.learn(model, resource, instance)
    return []


def validate_resource(resource: dict) -> None:
    """Raise HL7Error naming the path of the first invalid element(s); return None if valid."""
    found = problems(resource)
    if not found:
        return
    resource_type = resource.get("resourceType") if isinstance(resource, dict) else None
    where = f"{resource_type}/{resource.get('id')}" if isinstance(resource, dict) else "resource"
    if found[0].path == "resourceType":
        if found[0].code == "required":
            raise HL7Error("207", "", f"{where}: the converter produced a resource without resourceType")
        raise HL7Error("207", str(resource_type), found[0].message)
    listed = [f"{p.path}: {p.message}" for p in found[:MAX_LISTED]]
    more = f" (and {len(found) - MAX_LISTED} more)" if len(found) > MAX_LISTED else ""
    raise HL7Error(
        "207", found[0].path,
        f"{where} is not valid FHIR R4: {'; '.join(listed)}{more}; "
        "fix the mapping (or a site override), then run `fhir-bridge messages reprocess ID`",
    )
