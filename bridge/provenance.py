"""The Provenance resource recorded for each message: raw bytes' hash -> the versions it produced."""

from __future__ import annotations

from .hl7.types import MessageHeader

RAW_HASH_SYSTEM = "urn:fhir-bridge:hl7v2:sha256"
ACTIVITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"


def provenance_id(content_sha256: str) -> str:
    """Deterministic per raw message (FHIR ids are at most 64 characters)."""
    return "hl7v2-" + content_sha256[:58]


def build_provenance(
    content_sha256: str, header: MessageHeader, received_at: str, references: list[str]
) -> dict:
    """A FHIR R4 Provenance whose entity is the raw HL7v2 message (by the SHA-256 of its bytes) and
    whose targets are the exact resource versions (``Type/id/_history/n``) converted from it."""
    label = f"HL7v2 {header.message_type or 'message'} {header.control_id or '(no MSH-10)'}"
    return {
        "resourceType": "Provenance",
        "id": provenance_id(content_sha256),
        "target": [{"reference": ref} for ref in references],
        "recorded": received_at,
        "activity": {"coding": [{"system": ACTIVITY_SYSTEM, "code": "CREATE", "display": "create"}]},
        "agent": [{"who": {"display": header.sender or "unknown sender"}}],
        "entity": [
            {
                "role": "source",
                "what": {
                    "identifier": {"system": RAW_HASH_SYSTEM, "value": content_sha256},
                    "display": f"{label} from {header.sender}",
                },
            }
        ],
    }
