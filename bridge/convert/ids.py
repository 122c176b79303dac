"""Deterministic resource ids.

id = UUID-formatted first 16 bytes of SHA-256("fhir-bridge/v1|<resourceType>|<key>").

The key is the first alternative in ``settings.ids[<resourceType>]`` (or the segment rule's ``id``)
whose paths all have values in the converted resource:

* an Identifier contributes ``system|value``; one without a system is scoped to the sending
  facility (MSH-4), because a bare MRN means something only at the facility that issued it;
* ``identifier@MR`` picks the first identifier whose type code is MR;
* a reference contributes the referenced resource's id (Encounter keyed by Patient and start);
* a CodeableConcept contributes its first coding's ``system|code`` (displays may change);
* anything else contributes its canonical JSON.

So the same person (same identifier system and value) gets the same Patient id from any message or
feed, and re-converting a message gives the same ids.  When no alternative applies, the key is the
message's position: sending facility, control id (MSH-10), segment and rule.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from ..hl7.types import MessageHeader
from .paths import get_path, merge_missing

NAMESPACE = "fhir-bridge/v1"


class Ref:
    """A reference to a resource whose id is not yet known."""

    __slots__ = ("record",)

    def __init__(self, record: Any) -> None:
        self.record = record

    def __repr__(self) -> str:
        return f"Ref({self.record.type})"


def make_id(resource_type: str, key: str) -> str:
    digest = hashlib.sha256(f"{NAMESPACE}|{resource_type}|{key}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16]))


def _identifier_key(identifier: dict, facility: str) -> str:
    system = identifier.get("system")
    value = str(identifier.get("value", "")).strip()
    if not value:
        return ""
    return f"{system}|{value}" if system else f"facility:{facility}|{value}"


def _typed(items: list, code: str) -> dict | None:
    for item in items:
        if isinstance(item, dict):
            for coding in (item.get("type") or {}).get("coding", []):
                if coding.get("code") == code:
                    return item
    return None


def assign_ids(records: list, header: MessageHeader, id_settings: dict) -> list[dict]:
    """Give every record its id, turn references into FHIR references, leave out empty elements
    (FHIR forbids them) and merge duplicates."""
    facility = header.sending_facility
    busy: set[int] = set()

    def resolve(value: Any) -> Any:
        if isinstance(value, Ref):
            if value.record.dropped:
                return None
            return {"reference": f"{value.record.type}/{id_of(value.record)}"}
        if isinstance(value, dict):  # only containers and references need a call: most leaves are text
            return {k: resolve(v) if isinstance(v, dict | list | Ref) else v for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v) if isinstance(v, dict | list | Ref) else v for v in value]
        return value

    def reference(ref: Ref) -> dict | None:
        return None if ref.record.dropped else {"reference": f"{ref.record.type}/{id_of(ref.record)}"}

    # resolve() and prune() in one walk, bodies being walked once; only containers and references
    # cost a call (most leaves are text), and FHIR forbids empty elements.
    def resolved_pruned(value: Any) -> Any:
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if isinstance(v, dict | list | Ref):
                    v = resolved_pruned(v)
                if v or v == 0 or v is False:  # FHIR forbids empty elements; 0 and false are values
                    out[k] = v
            return out
        if isinstance(value, list):
            kept = []
            for v in value:
                if isinstance(v, dict | list | Ref):
                    v = resolved_pruned(v)
                if v or v == 0 or v is False:  # FHIR forbids empty elements; 0 and false are values
                    kept.append(v)
            return kept
        return reference(value)

    def key_part(record: Any, path: str) -> str:
        name, _, code = path.partition("@")
        if code:
            items = record.body.get(name) or []
            chosen = _typed(items, code)
            return _identifier_key(chosen, facility) if chosen else ""
        value = get_path(record.body, path)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is None or value == "":
            return ""
        if isinstance(value, Ref):
            return id_of(value.record)
        if isinstance(value, dict) and "value" in value and path.split(".")[-1] == "identifier":
            return _identifier_key(value, facility)
        if isinstance(value, dict) and value.get("coding"):  # a concept is its first code, not its wording
            coding = value["coding"][0]
            return f"{coding.get('system', '')}|{coding.get('code', '')}"
        if isinstance(value, dict):
            return json.dumps(resolve(value), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return str(value)

    def id_of(record: Any) -> str:
        if record.id is not None:
            return record.id
        if id(record) in busy:  # a cycle in key references: fall back to the position
            return make_id(record.type, f"msg|{facility}|{header.control_id}|{record.position}|{record.rule}")
        busy.add(id(record))
        key = ""
        for alternative in record.id_keys or id_settings.get(record.type, []):
            paths = [alternative] if isinstance(alternative, str) else alternative
            parts = [key_part(record, p) for p in paths]
            if all(parts):
                key = "|".join(f"{p}={v}" for p, v in zip(paths, parts, strict=True))
                break
        if not key:
            key = f"msg|{facility}|{header.control_id}|{record.position}|{record.rule}"
        busy.discard(id(record))
        record.id = make_id(record.type, key)
        return record.id

    for record in records:
        id_of(record)
    seen: set[tuple[str, str]] = set()
    for record in records:  # two segments that key alike are still two resources (two OBX, same code)
        if not record.child:
            if (record.type, record.id) in seen:
                record.id = make_id(record.type, f"{record.id}|{record.position}")
            seen.add((record.type, record.id))
    merged: dict[tuple[str, str], dict] = {}
    for record in records:
        body = resolved_pruned(record.body)
        body["id"] = record.id
        known = merged.get((record.type, record.id))
        if known is None:
            merged[(record.type, record.id)] = body
        else:  # the same practitioner named twice, the same location in two fields: one resource
            merge_missing(known, body)
    return [_ordered(body) for body in merged.values()]


def _ordered(body: dict) -> dict:
    """resourceType and id first, for people reading the JSON."""
    return {"resourceType": body["resourceType"], "id": body["id"],
            **{k: v for k, v in body.items() if k not in ("resourceType", "id")}}
