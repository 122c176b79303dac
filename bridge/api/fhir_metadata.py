"""GET /fhir/metadata: the CapabilityStatement (public, as FHIR requires, so clients can discover auth)."""

from __future__ import annotations

from flask import Blueprint, Response

from .. import __version__
from ..search_index import PARAMETERS
from .context import services
from .fhir_common import fhir_response

blueprint = Blueprint("fhir_metadata", __name__, url_prefix="/fhir")

_TYPES = {"token": "token", "string": "string", "date": "date", "reference": "reference"}
_EXTRA_TYPES = ("Practitioner", "Organization", "Location", "Medication", "Provenance")


def capability_statement(base: str, token_url: str) -> dict:
    resources = []
    for res_type, params in sorted(PARAMETERS.items()):
        interactions = [{"code": "read"}, {"code": "vread"}, {"code": "history-instance"},
                        {"code": "history-type"}, {"code": "search-type"}]
        if res_type == "Consent":
            interactions += [{"code": "create"}, {"code": "update"}]
        entry = {
            "type": res_type,
            "versioning": "versioned",
            "readHistory": True,
            "updateCreate": False,
            "interaction": interactions,
            "searchParam": [{"name": n, "type": _TYPES[kind]} for n, (kind, _) in sorted(params.items())]
            + [{"name": "_id", "type": "token"}, {"name": "_lastUpdated", "type": "date"}],
        }
        if "patient" in params and res_type not in ("Consent", "AuditEvent"):
            entry["searchInclude"] = [f"{res_type}:patient"]
        if res_type == "Patient":
            entry["operation"] = [{"name": "everything",
                                   "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}]
        resources.append(entry)
    resources += [{"type": t, "interaction": [{"code": "read"}, {"code": "vread"}, {"code": "history-instance"}]}
                  for t in _EXTRA_TYPES]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "kind": "instance",
        "software": {"name": "fhir-bridge", "version": __version__},
        "implementation": {"description": "FHIR bridge with a verifiable, anchored log", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "security": {
                "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                         "code": "SMART-on-FHIR"}]}],
                "description": "SMART Backend Services: system/<Type>.read|rs scopes; consent-checked; audited",
                "extension": [{"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                               "extension": [{"url": "token", "valueUri": token_url}]}],
            },
            "resource": resources,
            # POST /fhir (bridge/api/fhir_push.py): validated and versioned like pulled resources.
            "interaction": [{"code": "transaction"}, {"code": "batch"}],
        }],
    }


@blueprint.get("/metadata")
def metadata() -> Response:
    config = services().config
    base = config.public_base_url.rstrip("/")
    return fhir_response(capability_statement(base + "/fhir", base + "/auth/token"))
