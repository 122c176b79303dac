"""The Provenance resource recorded for each message: raw bytes' hash -> the versions it produced."""

from __future__ import annotations

from . import search_index
from .canonical import canonical_string
from .hl7.types import MessageHeader
from .store import TIME_MARK, VERSION_MARK, CanonicalResource, canonical_resource, content_key_of

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
    return {
        "resourceType": "Provenance",
        "id": provenance_id(content_sha256),
        "target": [{"reference": ref} for ref in references],
        "recorded": received_at,
        "activity": {"coding": [{"system": ACTIVITY_SYSTEM, "code": "CREATE", "display": "create"}]},
        "agent": [{"who": {"display": _agent(header)}}],
        "entity": [
            {
                "role": "source",
                "what": {
                    "identifier": {"system": RAW_HASH_SYSTEM, "value": content_sha256},
                    "display": _entity(header),
                },
            }
        ],
    }


def _agent(header: MessageHeader) -> str:
    return header.sender or "unknown sender"


def _entity(header: MessageHeader) -> str:
    label = f"HL7v2 {header.message_type or 'message'} {header.control_id or '(no MSH-10)'}"
    return f"{label} from {header.sender}"


# The JCS of build_provenance's output around its five variable strings, names in JCS order
# (activity, agent, entity, id, meta, recorded, resourceType, target), with meta as
# store.canonical_template puts it.  Every other value is a constant string.
_ACTIVITY = b'{"activity":{"coding":[{"code":"CREATE","display":"create","system":' + canonical_string(
    ACTIVITY_SYSTEM) + b'}]},"agent":[{"who":{"display":'
_ENTITY = b'}}],"entity":[{"role":"source","what":{"display":'
_IDENTIFIER = b',"identifier":{"system":' + canonical_string(RAW_HASH_SYSTEM) + b',"value":'
_ID = b'}}}],"id":'
_META = (b',"meta":{"lastUpdated":' + canonical_string(TIME_MARK) + b',"versionId":'
         + canonical_string(VERSION_MARK) + b'},"recorded":')
_TYPE = b',"resourceType":"Provenance","target":['
_TARGET, _TARGET_END = b'{"reference":', b"}"
_VERSION_JCS, _TIME_JCS = canonical_string(VERSION_MARK), canonical_string(TIME_MARK)


def canonical_provenance(
    content_sha256: str, header: MessageHeader, received_at: str, references: list[str]
) -> CanonicalResource:
    """``canonical_resource(build_provenance(...))``, its template written directly.

    Every value is a string, so JCS is the constant frame above with each string in its JCS form
    (:func:`canonical_string`, which refuses a lone surrogate as ``canonical`` does): no dict to
    build, sort and encode for each message.  Provenance has no search parameters and no
    compartment (were some added, the general way would read them).  Text that holds a placeholder
    for the version meta takes the general way too.
    """
    if "Provenance" in search_index.PARAMETERS or "Provenance" in search_index.COMPARTMENT:
        return canonical_resource(build_provenance(content_sha256, header, received_at, references))
    targets = b",".join([_TARGET + canonical_string(ref) + _TARGET_END for ref in references])
    template = b"".join((
        _ACTIVITY, canonical_string(_agent(header)), _ENTITY, canonical_string(_entity(header)), _IDENTIFIER,
        canonical_string(content_sha256), _ID, canonical_string(provenance_id(content_sha256)), _META,
        canonical_string(received_at), _TYPE, targets, b"]}",
    ))
    if template.count(_VERSION_JCS) != 1 or template.count(_TIME_JCS) != 1:
        return canonical_resource(build_provenance(content_sha256, header, received_at, references))
    return CanonicalResource("Provenance", provenance_id(content_sha256), content_key_of(template), template,
                             None, None, ())
