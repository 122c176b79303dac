"""AuditEvents (IHE Basic Audit Log Patterns style) for every partner access, granted or denied.

:func:`audit_event` builds the resource (pure); :func:`record` makes what it is built from durable
in the process's spool (:mod:`bridge.audit_spool`), which stores the event as a versioned resource,
its leaf queued in the same transaction, soon after (so a read waits for one shared ``fdatasync``,
never for the tree).  Query strings are kept base64 in ``entity.query`` as BALP asks; tokens and
salts never appear.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .fhir_dates import now_instant
from .store import TIME_MARK, VERSION_MARK, CanonicalResource, content_key_of, with_version_meta

if TYPE_CHECKING:
    from .audit_spool import AuditSpool

EVENT_TYPE = {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
              "display": "RESTful Operation"}
INTERACTION = "http://hl7.org/fhir/restful-interaction"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
# AuditEvent.outcome: 0 success, 4 minor failure (denied, not found), 8 serious failure
SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE = "0", "4", "8"
# interaction -> AuditEvent.action (R read, E execute: searches and operations, as BALP does)
ACTIONS = {"read": "R", "vread": "R", "history-instance": "R", "history-type": "R", "search-type": "E",
           "operation": "E", "create": "C", "update": "U"}


@dataclass
class Access:
    """What one request did, collected while it runs and recorded once at its end."""

    interaction: str
    organization: str | None = None
    client_id: str | None = None
    patients: set[str] = field(default_factory=set)  # Patient/<id> whose data was touched or asked for
    entities: list[str] = field(default_factory=list)  # Type/id/_history/version of what was returned
    query: str | None = None


def audit_event(access: Access, outcome: str, description: str, recorded: str, source: str,
                event_id: str | None = None) -> dict:
    who = {"reference": f"Organization/{access.organization}"} if access.organization else \
        {"display": "unauthenticated client"}
    agent = {
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                             "code": "IRCP", "display": "information recipient"}]},
        "who": who,
        "requestor": True,
    }
    if access.client_id:
        agent["altId"] = access.client_id
    entities: list[dict] = [
        {"what": {"reference": p}, "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
         "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"}}
        for p in sorted(access.patients)
    ]
    entities += [
        {"what": {"reference": e}, "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
         "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"}}
        for e in access.entities
    ]
    if access.query:
        entities.append({"type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                         "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
                         "query": base64.b64encode(access.query.encode()).decode()})
    event = {
        "resourceType": "AuditEvent",
        "id": event_id or str(uuid.uuid4()),
        "type": EVENT_TYPE,
        "subtype": [{"system": INTERACTION, "code": access.interaction}],
        "action": ACTIONS.get(access.interaction, "E"),
        "recorded": recorded,
        "outcome": outcome,
        "outcomeDesc": description[:500],
        "agent": [agent],
        "source": {"observer": {"display": source},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4",
                             "display": "Application Server"}]},
    }
    if entities:
        event["entity"] = entities
    return event


def record(spool: AuditSpool, access: Access, outcome: str, description: str, source: str) -> str:
    """Append the AuditEvent to this process's spool; returns its id once it is durable.  It is
    stored as a version (its leaf queued in the same transaction) when the spool is folded.

    The spool holds what the event is built from (:func:`spool_record`), not the event: a fifth of
    its size, and neither the request nor the store job serialises or parses the whole resource
    one time more than storing it needs."""
    event_id = str(uuid.uuid4())
    spool.append(spool_record(access, outcome, description, now_instant(), source, event_id))
    return event_id


def spool_record(access: Access, outcome: str, description: str, recorded: str, source: str, event_id: str) -> bytes:
    """The arguments of :func:`audit_event` as JSON (see :func:`event_from_record`)."""
    return json.dumps({
        "id": event_id, "recorded": recorded, "interaction": access.interaction,
        "organization": access.organization, "client": access.client_id, "patients": sorted(access.patients),
        "entities": access.entities, "query": access.query, "outcome": outcome, "description": description,
        "source": source,
    }, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def event_from_record(payload: bytes) -> dict:
    """The AuditEvent a spool record stands for (a whole AuditEvent, as spools before this format
    held, is taken as it is).  Raises ValueError for anything else."""
    found = json.loads(payload)
    if not isinstance(found, dict):
        raise ValueError("an audit spool record is a JSON object")
    if found.get("resourceType") == "AuditEvent":
        return found
    try:
        access = Access(found["interaction"], found["organization"], found["client"], set(found["patients"]),
                        list(found["entities"]), found["query"])
        return audit_event(access, found["outcome"], found["description"], found["recorded"], found["source"],
                           found["id"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"an audit spool record lacks {exc}") from None


def prepare(event: dict) -> CanonicalResource:
    """:func:`bridge.store.canonical_resource` for an AuditEvent, with the fast JCS path (an AuditEvent
    holds no numbers, so the C JSON encoder's sorted output is its JCS; tested against ``rfc8785``)."""
    # audit_event() builds only strings and one bool under fixed ASCII names, so the C encoder's
    # sorted output is JCS without canonicalize()'s walk over the value (about 0.15 ms a request).
    text = json.dumps(with_version_meta(event, VERSION_MARK, TIME_MARK), ensure_ascii=False, sort_keys=True,
                      separators=(",", ":"), allow_nan=False)
    template = text.encode("utf-8")
    return CanonicalResource("AuditEvent", event["id"], content_key_of(template), template)
