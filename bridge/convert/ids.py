"""Deterministic resource ids.

id = UUID-formatted first 16 bytes of HMAC-SHA-256(site key, "fhir-bridge/v1|<resourceType>|<key>")
with the store's resource-id key (:mod:`bridge.id_key`), or of SHA-256 of the same text without one
(stores made before keyed ids).  Keyed, an id cannot be computed from an identifier by anyone
without the key, so a partner cannot learn from an id whether the hospital holds a record.

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
import hmac
import json
from functools import lru_cache
from typing import Any

from ..hl7.types import MessageHeader
from .paths import Getter, getter, merge_missing

NAMESPACE = "fhir-bridge/v1"


class Ref:
    """A reference to a resource whose id is not yet known."""

    __slots__ = ("record",)

    def __init__(self, record: Any) -> None:
        self.record = record

    def __repr__(self) -> str:
        return f"Ref({self.record.type})"


_MADE: dict[tuple[str, str, bytes | None], str] = {}
_REMEMBERED_IDS = 4096  # ids kept (the same practitioners and wards come in every message); more, and they are forgotten


def make_id(resource_type: str, key: str, secret: bytes | None = None) -> str:
    made = _MADE.get((resource_type, key, secret))
    if made is None:
        text = f"{NAMESPACE}|{resource_type}|{key}".encode()
        h = (hmac.new(secret, text, hashlib.sha256) if secret else hashlib.sha256(text)).hexdigest()
        made = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"  # str(uuid.UUID(bytes=digest[:16]))
        if len(_MADE) >= _REMEMBERED_IDS:
            _MADE.clear()
        _MADE[(resource_type, key, secret)] = made
    return made


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


_BUSY: Any = object()  # the id of a record whose key is being worked out
_GONE: Any = object()  # an element left empty by settling: FHIR forbids it
_ALTERNATIVES: dict[int, tuple[list, tuple[tuple[str, ...], ...]]] = {}
_NO_KEYS: list = []  # a type without id key alternatives (never changed)


def _alternatives(keys: list) -> tuple[tuple[str, ...], ...]:
    """Id key alternatives as tuples of paths, read once per list of the mappings."""
    known = _ALTERNATIVES.get(id(keys))
    if known is None or known[0] is not keys:  # the list is kept in the entry: its id stays its own
        if len(_ALTERNATIVES) >= 1024:
            _ALTERNATIVES.clear()
        known = _ALTERNATIVES[id(keys)] = (keys, tuple((a,) if isinstance(a, str) else tuple(a) for a in keys))
    return known[1]


@lru_cache(maxsize=1024)
def _key_path(path: str) -> tuple[str, str, Getter | None, bool]:
    """An id key path read once: element and type code of ``identifier@MR``, or the path's getter and
    whether it ends in an identifier."""
    name, _, code = path.partition("@")
    if code:
        return name, code, None, False
    return name, "", getter(path), path.split(".")[-1] == "identifier"


def assign_ids(records: list, header: MessageHeader, id_settings: dict, secret: bytes | None = None) -> list[dict]:
    """Give every record its id (keyed with ``secret``, if given), turn references into FHIR
    references, leave out empty elements (FHIR forbids them) and merge duplicates."""
    facility = header.sending_facility

    def resolve(value: Any) -> Any:
        if isinstance(value, Ref):
            return reference(value)
        if isinstance(value, dict):  # only containers and references need a call: most leaves are text
            return {k: resolve(v) if isinstance(v, dict | list | Ref) else v for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v) if isinstance(v, dict | list | Ref) else v for v in value]
        return value

    def reference(ref: Ref) -> dict | None:
        return None if ref.record.dropped else {"reference": f"{ref.record.type}/{id_of(ref.record)}"}

    # resolve() and prune() in one walk over each body, in place (bodies are built for this message
    # and shared with nothing): FHIR forbids empty elements.  Values are told apart by their class
    # (most leaves are text); 0 and false are values.
    def settle(value: Any) -> Any:
        if isinstance(value, dict):
            return settle_dict(value)
        if isinstance(value, list):
            return settle_list(value)
        return reference(value)

    def kept(v: Any) -> Any:
        """A value other than text settled (containers in place); ``_GONE`` if it ends up empty."""
        cls = v.__class__
        if cls is dict:
            return v if settle_dict(v) else _GONE
        if cls is list:
            return v if settle_list(v) else _GONE
        if cls is Ref:
            v = reference(v)
        elif isinstance(v, dict | list | Ref):
            v = settle(v)
        return v if v or v == 0 or v is False else _GONE

    def emptied(container: Any, items: Any) -> list | None:
        """Settle the values of a dict or list in place; the keys or indices left empty, if any."""
        empty = None
        for k, v in items:
            cls = v.__class__
            if cls is str:  # most values: no call
                if v:
                    continue
            elif cls is dict:  # what kept() does with a container, without the call
                if settle_dict(v):
                    continue
            elif cls is list:
                if settle_list(v):
                    continue
            else:
                new = kept(v)
                if new is not _GONE:
                    if new is not v:
                        container[k] = new  # the key or index is there already: the size stays
                    continue
            empty = [k] if empty is None else [*empty, k]
        return empty

    def settle_dict(value: dict) -> dict:
        empty = emptied(value, value.items())
        if empty is not None:
            for k in empty:
                del value[k]
        return value

    def settle_list(value: list) -> list:
        empty = emptied(value, enumerate(value))
        if empty is not None:
            gone = set(empty)
            value[:] = [v for i, v in enumerate(value) if i not in gone]
        return value

    def settle_keys(body: dict, keys: set[str]) -> None:
        some = {k: body[k] for k in keys if k in body}
        settle_dict(some)
        for k in keys:
            if k in body:
                if k in some:
                    body[k] = some[k]  # in its place
                else:
                    del body[k]

    def key_part(record: Any, path: str) -> str:
        name, code, get, identifier = _key_path(path)
        if code:
            items = record.body.get(name) or []
            chosen = _typed(items, code)
            return _identifier_key(chosen, facility) if chosen else ""
        value = get(record.body)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is None or value == "":
            return ""
        if isinstance(value, Ref):
            return id_of(value.record)
        if isinstance(value, dict) and "value" in value and identifier:
            return _identifier_key(value, facility)
        if isinstance(value, dict) and value.get("coding"):  # a concept is its first code, not its wording
            coding = value["coding"][0]
            return f"{coding.get('system', '')}|{coding.get('code', '')}"
        if isinstance(value, dict):
            return json.dumps(resolve(value), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return str(value)

    def id_of(record: Any) -> str:
        known = record.id
        if known is not None:
            if known is _BUSY:  # a cycle in key references: fall back to the position
                return make_id(record.type, f"msg|{facility}|{header.control_id}|{record.position}|{record.rule}",
                               secret)
            return known
        record.id = _BUSY
        key = ""
        for paths in _alternatives(record.id_keys or id_settings.get(record.type) or _NO_KEYS):
            if len(paths) == 1:  # most alternatives are one path
                part = key_part(record, paths[0])
                if part:
                    key = f"{paths[0]}={part}"
                    break
                continue
            parts = [key_part(record, p) for p in paths]
            if all(parts):
                key = "|".join([f"{p}={v}" for p, v in zip(paths, parts, strict=True)])
                break
        if not key:
            key = f"msg|{facility}|{header.control_id}|{record.position}|{record.rule}"
        record.id = make_id(record.type, key, secret)
        return record.id

    for record in records:
        id_of(record)
    seen: set[tuple[str, str]] = set()
    for record in records:  # two segments that key alike are still two resources (two OBX, same code)
        if not record.child:
            if (record.type, record.id) in seen:
                record.id = make_id(record.type, f"{record.id}|{record.position}", secret)
            seen.add((record.type, record.id))
    merged: dict[tuple[str, str], dict] = {}
    for record in records:
        body = record.body
        if record.dirty:  # a rule may have left an empty element anywhere
            settle_dict(body)
        elif record.ref_keys:  # only references to resolve, under these elements
            settle_keys(body, record.ref_keys)
        body["id"] = record.id
        known = merged.get((record.type, record.id))
        if known is None:
            merged[(record.type, record.id)] = body
        else:  # the same practitioner named twice, the same location in two fields: one resource
            merge_missing(known, body)
    return [_ordered(body) for body in merged.values()]


def _ordered(body: dict) -> dict:
    """resourceType and id first, for people reading the JSON."""
    ordered = {"resourceType": body["resourceType"], "id": body["id"]}
    ordered.update(body)  # the two keep their places
    return ordered
