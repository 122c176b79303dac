"""Apply the datatype and vocabulary layers: one HL7 value -> one FHIR value.

A value is handed around as its components, each a list of subcomponents (unescaped text):
``[["EVERYMAN", "", "", "", "Aniston"], ["ADAM"], ...]`` for an XPN.  Composite datatypes are
data (``mappings/datatypes.yaml``); the few conversions that are formats rather than mappings
(dates, numbers, phone numbers, system URIs) are the functions in :func:`formats` below.
Rules using them are compiled once, when the mappings are loaded, by ``values.py``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from . import primitives as p
from .loader import Mappings
from .paths import prune

Components = list[list[str]]
TextFormat = Callable[[str, str], Any]  # stripped, non-empty text of a value's first part
_OID = re.compile(r"[0-2](\.\d+)+\Z")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
_HL7_TABLE = re.compile(r"HL7?(\d{4})\Z", re.IGNORECASE)


def first(comps: Components, component: int = 1, subcomponent: int = 1) -> str:
    if 0 < component <= len(comps):
        subs = comps[component - 1]
        if 0 < subcomponent <= len(subs):
            return subs[subcomponent - 1].strip()
    return ""


def is_empty(comps: Components) -> bool:
    for component in comps:  # loops, not a generator: called for every repetition of every field
        for sub in component:
            if sub.strip():
                return False
    return True


# -- conversions that are formats, written as code ------------------------------------------------

def system_uri(comps: Components, known: dict, prefix: str) -> str:
    """HD (namespace^universal id^type) -> a URI for Identifier.system.

    Universal ids win because they are global (OID, UUID, URI); a bare namespace is looked up in the
    site's ``assigning-authority`` vocabulary (``known``), else made a URN under
    ``settings.namespace_prefix`` so that the same namespace always yields the same system (Patient
    ids depend on it).
    """
    namespace, universal, kind = first(comps, 1), first(comps, 2), first(comps, 3).upper()
    if universal:
        if kind in ("ISO", "OID") or _OID.match(universal):
            return f"urn:oid:{universal}"
        if kind == "UUID" or _UUID.match(universal):
            return f"urn:uuid:{universal.lower()}"
        if kind in ("URI", "URL") or "://" in universal:
            return universal
    if not namespace:
        return ""
    if namespace in known:
        return _code_of(known[namespace])
    if _OID.match(namespace):
        return f"urn:oid:{namespace}"
    return prefix + quote(namespace, safe="")


def coding_system_uri(name: str, table: dict, prefix: str) -> str:
    """Coding system name (table 0396: LN, SCT, I10, HL70001 ...) -> code system URI."""
    name = name.strip()
    if not name:
        return ""
    if name in table:
        return _code_of(table[name])
    upper = name.upper()
    if upper in table:
        return _code_of(table[upper])
    m = _HL7_TABLE.match(name)
    if m:  # HL7 tables have canonical code systems in THO
        return f"http://terminology.hl7.org/CodeSystem/v2-{m.group(1)}"
    if _OID.match(name):
        return f"urn:oid:{name}"
    if "://" in name or name.startswith("urn:"):
        return name
    return prefix + quote(name, safe="")


def phone_text(comps: Components) -> str:
    """XTN -> one telephone string or e-mail; XTN-1 (the unformatted, deprecated form) as fallback."""
    email = first(comps, 4)
    if email and first(comps, 3).upper() in ("INTERNET", "X.400", "NET"):
        return email
    country, area, local, ext = first(comps, 5), first(comps, 6), first(comps, 7), first(comps, 8)
    if local:
        text = " ".join(x for x in (f"+{country}" if country else "", f"({area})" if area else "", local) if x)
        return f"{text} ext. {ext}" if ext else text
    return first(comps, 1) or email or first(comps, 12)


def structured_numeric(comps: Components, where: str) -> dict | None:
    """SN (comparator^num1^separator^num2) -> {valueQuantity|valueRange|valueRatio: ...}."""
    comparator, num1, sep, num2 = first(comps, 1), first(comps, 2), first(comps, 3), first(comps, 4)
    if sep in ("-",) and num1 and num2:
        return {"valueRange": {"low": {"value": p.to_decimal(num1, where)}, "high": {"value": p.to_decimal(num2, where)}}}
    if sep in (":", "/") and num1 and num2:
        return {"valueRatio": {"numerator": {"value": p.to_decimal(num1, where)},
                               "denominator": {"value": p.to_decimal(num2, where)}}}
    if not num1:
        return None
    quantity: dict[str, Any] = {"value": p.to_decimal(num1, where)}
    if comparator in ("<", "<=", ">", ">="):
        quantity["comparator"] = comparator
    return {"valueQuantity": quantity}


# Text formats that never name the value in an error or warning: no location is built for them.
_REMEMBERED = 1024  # distinct coding systems or assigning authorities kept; more, and they are forgotten
_REMEMBERED_TIMES = 4096  # distinct date/time texts kept; more, and they are forgotten
SILENT = frozenset({"ST", "TX", "FT", "ID", "IS", "B64", "CODING_SYSTEM"})


def _remembered(compute: Callable[[Any], str | None], key_of: Callable[[Any], Any] = lambda value: value,
                ) -> Callable[[Any, str], str | None]:
    """``compute`` worked out once per key: coding systems and assigning authorities are few in any
    feed.  Forgotten all at once past :data:`_REMEMBERED` keys."""
    known: dict[Any, str | None] = {}

    def lookup(value: Any, where: str) -> str | None:
        key = key_of(value)
        found = known.get(key, False)
        if found is False:
            if len(known) >= _REMEMBERED:
                known.clear()
            found = known[key] = compute(value) or None
        return found

    return lookup


def _system_key(comps: Components) -> tuple[str, ...]:
    """What :func:`system_uri` reads of an HD: the first subcomponent of its first three components
    (``tuple(subs[0].strip() if subs else "" for subs in comps[:3])``, without the generator)."""
    n = len(comps)
    if not n:
        return ()
    subs = comps[0]
    first_ = subs[0].strip() if subs else ""
    if n == 1:
        return (first_,)
    subs = comps[1]
    second = subs[0].strip() if subs else ""
    if n == 2:
        return (first_, second)
    subs = comps[2]
    return (first_, second, subs[0].strip() if subs else "")


def formats(m: Mappings) -> tuple[dict[str, TextFormat], dict[str, Callable[[Components, str], Any]]]:
    """The primitive datatypes of loader.PRIMITIVES with the settings and tables they read bound.

    Most read only the text of the value's first part (``first``), and are not called when it is
    empty; SYSTEM, PHONE and SN read several components.
    """
    timezone = m.settings.get("timezone", "UTC")
    systems = m.vocabulary.get("0396", {}).get("map", {})
    code_prefix = m.settings.get("code_system_prefix", "urn:hl7v2:codesystem:")
    authorities = m.vocabulary.get("assigning-authority", {}).get("map", {})
    namespace_prefix = m.settings.get("namespace_prefix", "urn:hl7v2:namespace:")

    times: dict[str, str] = {}  # text -> FHIR dateTime: a message repeats its times (MSH-7, EVN-2, ORC-9, OBR-22)

    def datetime(text: str, where: str) -> str:
        value = times.get(text)
        if value is None:  # where names the value only in an error, and a malformed text is not kept
            value = p.to_datetime(text, where, timezone)
            if len(times) >= _REMEMBERED_TIMES:
                times.clear()
            times[text] = value
        return value

    code_system = _remembered(lambda text: coding_system_uri(text, systems, code_prefix))
    system = _remembered(lambda comps: system_uri(comps, authorities, namespace_prefix), key_of=_system_key)

    text: dict[str, TextFormat] = {
        "ST": p.to_string, "TX": p.to_string, "FT": p.to_string,
        "ID": p.to_code, "IS": p.to_code,
        "NM": p.to_decimal, "SI": p.to_positive_int, "DATE": p.to_date, "BOOL": p.to_boolean,
        "DT": datetime, "DTM": datetime, "TS": datetime,
        "B64": lambda text, where: base64.b64encode(text.encode()).decode(),
        "CODING_SYSTEM": code_system,
    }
    composite: dict[str, Callable[[Components, str], Any]] = {
        "SYSTEM": system,
        "PHONE": lambda comps, where: phone_text(comps) or None,
        "SN": structured_numeric,
    }
    return text, composite


# -- vocabulary layer ------------------------------------------------------------------------------

def _code_of(entry: Any) -> Any:
    if isinstance(entry, dict):
        return entry["code"]
    return entry if isinstance(entry, bool) else str(entry)


def translator(table_id: str, as_: str, m: Mappings) -> Callable[[str, list[str], str], Any]:
    """A v2 code through a vocabulary table: as a bare ``code``, a ``Coding`` or a ``CodeableConcept``."""
    table = m.vocabulary[table_id]
    mapping = table.get("map")
    default = table.get("default")
    warn = as_ == "code" and not table.get("partial")
    system, target = table.get("system"), table.get("target", table.get("system"))
    displays = table.get("display") or {}

    def translate(code: str, warnings: list[str], where: str) -> Any:
        entry = None
        if mapping is not None:
            entry = mapping[code] if code in mapping else mapping.get(code.upper())
            if entry is None:
                entry = default
                if entry is None and warn:
                    warnings.append(f"{where}: code {code!r} is not in table {table_id}; not mapped")
                    return None
        if as_ == "code":
            if entry is None:
                return code if mapping is None else None  # a table without a map keeps the v2 code
            return _code_of(entry)
        if entry is not None:
            coding = {"system": target, "code": _code_of(entry)}
            if isinstance(entry, dict):
                coding.update({k: v for k, v in entry.items() if k in ("system", "display")})
        else:
            coding = {"system": system, "code": code}
            display = displays.get(code)
            if display:
                coding["display"] = display
        coding = {k: v for k, v in coding.items() if v}
        return coding if as_ == "Coding" else {"coding": [coding]}

    return translate


def concept_vocabulary(table_id: str, m: Mappings) -> Callable[[dict], dict]:
    """A CWE already converted: codings without a system belong to the table; mapped codes added."""
    table = m.vocabulary[table_id]
    system, mapping, target = table.get("system"), table.get("map"), table.get("target")

    def on_concept(concept: dict) -> dict:
        codings = concept.get("coding", [])
        for coding in codings:
            if "system" not in coding and system:
                coding["system"] = system
        if mapping and codings:
            code = codings[0].get("code", "")
            entry = mapping[code] if code in mapping else mapping.get(code.upper())
            if entry is not None and target:
                mapped = {"system": target, "code": _code_of(entry)}
                if isinstance(entry, dict):
                    mapped.update({k: v for k, v in entry.items() if k in ("system", "display")})
                if mapped not in codings:
                    codings.insert(0, mapped)
        return concept

    return on_concept


# -- finishing touches that need the whole converted value ------------------------------------------

def _finish_concept(out: dict, comps: Components) -> dict:
    """CodeableConcept: a coding needs a code; text alone is kept as text (FHIR's rule for free text)."""
    codings = [c for c in out.get("coding", []) if isinstance(c, dict) and c.get("code")]
    text = out.get("text")
    if not codings:
        displays = [c.get("display") for c in out.get("coding", []) if isinstance(c, dict) and c.get("display")]
        text = text or (displays[0] if displays else None)
    result: dict[str, Any] = {}
    if codings:
        result["coding"] = codings
    if text:
        result["text"] = text
    return result


def _finish_identifier(out: dict, comps: Components) -> dict:
    """An Identifier without a value identifies nothing."""
    return out if out.get("value") else {}


def _finish_practitioner(out: dict, comps: Components) -> dict:
    """An identifier needs a value; a person with neither id nor name is nobody to refer to."""
    ids = [i for i in out.get("identifier", []) if isinstance(i, dict) and i.get("value")]
    out = {k: v for k, v in out.items() if k != "identifier"} | ({"identifier": ids} if ids else {})
    return out if ids or prune(out.get("name")) else {}


def _finish_unit(out: dict, comps: Components) -> dict:
    """Quantity.unit is the human-readable unit: the display, else the code."""
    if out.get("code") and not out.get("unit"):
        out["unit"] = out["code"]
    if out.get("system") and not out.get("code"):
        del out["system"]  # qty-3: a system requires a code
    return out


_LOCATION_TYPES = (  # PL component -> physical type, most specific first
    (3, "bd", "Bed"), (2, "ro", "Room"), (1, "wa", "Ward"), (8, "lvl", "Level"), (7, "bu", "Building"),
    (4, "si", "Site"),
)


def _finish_location(out: dict, comps: Components) -> dict:
    """PL: point of care, room, bed, facility, building, floor joined into a name; the most
    specific part present gives the physical type (location-physical-type code system)."""
    texts = {c: first(comps, c) for c in (4, 7, 8, 1, 2, 3)}  # facility, building, floor, point of care, room, bed
    parts = [text for text in texts.values() if text]
    if not parts:
        return out
    out["name"] = " ".join(parts)
    out["mode"] = "instance"
    for c, code, display in _LOCATION_TYPES:
        if texts[c]:
            out["physicalType"] = {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/location-physical-type",
                "code": code, "display": display}]}
            break
    return out


FINISH: dict[str, Callable[[dict, Components], dict]] = {
    "codeable_concept": _finish_concept,
    "identifier": _finish_identifier,
    "practitioner": _finish_practitioner,
    "unit": _finish_unit,
    "location": _finish_location,
}

# What each finish drops of its own accord: list items (placeholders among them) without a code or
# value.  Each returns only non-empty elements of what it is given.
FINISH_DROPS = {"codeable_concept": frozenset({"coding"}), "identifier": frozenset(),
                "practitioner": frozenset({"identifier"}), "unit": frozenset(), "location": frozenset()}
