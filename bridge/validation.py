"""FHIR R4 validation of converted resources with the ``fhir.resources`` R4B models.

``fhir.resources`` 8.x defaults to R5, which rejects real R4 content; its R4B package accepts R4
for every resource type the converter produces.  A failure becomes an :class:`HL7Error` (207,
application internal error: the mapping produced something that is not valid FHIR) whose location
is the FHIR path, so the message is kept, listed with the reason and can be reprocessed.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

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


def validate_resource(resource: dict) -> None:
    """Raise HL7Error naming the path of the first invalid element(s); return None if valid."""
    resource_type = resource.get("resourceType") if isinstance(resource, dict) else None
    where = f"{resource_type}/{resource.get('id')}" if isinstance(resource, dict) else "resource"
    if not isinstance(resource_type, str):
        raise HL7Error("207", "", f"{where}: the converter produced a resource without resourceType")
    try:
        model = _model(resource_type)
    except (ValueError, KeyError) as exc:
        raise HL7Error("207", resource_type, f"{resource_type} is not a FHIR R4 resource type") from exc
    try:
        model.model_validate(resource)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        errors = getattr(exc, "errors", None)
        items = errors() if callable(errors) else []
        if not items:
            raise HL7Error("207", resource_type, f"{where} is not valid FHIR R4: {exc}") from exc
        listed = [f"{fhir_path(resource_type, tuple(e.get('loc', ())))}: {e.get('msg', '')}" for e in items[:MAX_LISTED]]
        more = f" (and {len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
        raise HL7Error(
            "207", fhir_path(resource_type, tuple(items[0].get("loc", ()))),
            f"{where} is not valid FHIR R4: {'; '.join(listed)}{more}; "
            "fix the mapping (or a site override), then run `fhir-bridge messages reprocess ID`",
        ) from exc
