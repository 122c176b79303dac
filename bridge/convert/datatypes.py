"""Apply the datatype and vocabulary layers: one HL7 value -> one FHIR value.

A value is handed around as its components, each a list of subcomponents (unescaped text):
``[["EVERYMAN", "", "", "", "Aniston"], ["ADAM"], ...]`` for an XPN.  Composite datatypes are
data (``mappings/datatypes.yaml``); the few conversions that are formats rather than mappings
(dates, numbers, phone numbers, system URIs) are the functions in ``CODED`` below.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from . import primitives as p
from .loader import Mappings
from .paths import copy_json, prune, set_path

Components = list[list[str]]
_OID = re.compile(r"[0-2](\.\d+)+\Z")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
_HL7_TABLE = re.compile(r"HL7?(\d{4})\Z", re.IGNORECASE)


class Context:
    """What value conversion needs besides the value: the mappings, settings and the warnings list."""

    __slots__ = ("mappings", "timezone", "warnings")

    def __init__(self, mappings: Mappings, warnings: list[str]) -> None:
        self.mappings = mappings
        self.timezone = mappings.settings.get("timezone", "UTC")
        self.warnings = warnings


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

def system_uri(comps: Components, ctx: Context) -> str:
    """HD (namespace^universal id^type) -> a URI for Identifier.system.

    Universal ids win because they are global (OID, UUID, URI); a bare namespace is looked up in the
    site's ``assigning-authority`` vocabulary, else made a URN under ``settings.namespace_prefix``
    so that the same namespace always yields the same system (Patient ids depend on it).
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
    known = ctx.mappings.vocabulary.get("assigning-authority", {}).get("map", {})
    if namespace in known:
        return _code_of(known[namespace])
    if _OID.match(namespace):
        return f"urn:oid:{namespace}"
    return ctx.mappings.settings.get("namespace_prefix", "urn:hl7v2:namespace:") + quote(namespace, safe="")


def coding_system_uri(name: str, ctx: Context) -> str:
    """Coding system name (table 0396: LN, SCT, I10, HL70001 ...) -> code system URI."""
    name = name.strip()
    if not name:
        return ""
    table = ctx.mappings.vocabulary.get("0396", {}).get("map", {})
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
    return ctx.mappings.settings.get("code_system_prefix", "urn:hl7v2:codesystem:") + quote(name, safe="")


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


def _scalar(fn: Callable[[str, str], Any]) -> Callable[[Components, Context, str], Any]:
    def convert(comps: Components, ctx: Context, where: str) -> Any:
        text = first(comps)
        return fn(text, where) if text else None

    return convert


CODED: dict[str, Callable[[Components, Context, str], Any]] = {
    "ST": _scalar(p.to_string),
    "TX": _scalar(p.to_string),
    "FT": _scalar(p.to_string),
    "ID": _scalar(p.to_code),
    "IS": _scalar(p.to_code),
    "NM": _scalar(p.to_decimal),
    "SI": _scalar(p.to_positive_int),
    "DATE": _scalar(p.to_date),
    "BOOL": _scalar(p.to_boolean),
    "SYSTEM": lambda comps, ctx, where: system_uri(comps, ctx) or None,
    "CODING_SYSTEM": lambda comps, ctx, where: coding_system_uri(first(comps), ctx) or None,
    "PHONE": lambda comps, ctx, where: phone_text(comps) or None,
    "SN": lambda comps, ctx, where: structured_numeric(comps, where),
    "B64": lambda comps, ctx, where: base64.b64encode(first(comps).encode()).decode() if first(comps) else None,
}
for _name in ("DT", "DTM", "TS"):
    CODED[_name] = lambda comps, ctx, where: (
        p.to_datetime(first(comps), where, ctx.timezone) if first(comps) else None
    )


# -- vocabulary layer ------------------------------------------------------------------------------

def _code_of(entry: Any) -> Any:
    if isinstance(entry, dict):
        return entry["code"]
    return entry if isinstance(entry, bool) else str(entry)


def translate(code: str, table_id: str, as_: str, ctx: Context, where: str) -> Any:
    """A v2 code through a vocabulary table: as a bare ``code``, a ``Coding`` or a ``CodeableConcept``."""
    table = ctx.mappings.vocabulary[table_id]
    mapping = table.get("map")
    entry = None
    if mapping is not None:
        entry = mapping.get(code, mapping.get(code.upper()))
        if entry is None:
            entry = table.get("default")
            if entry is None and as_ == "code" and not table.get("partial"):
                ctx.warnings.append(f"{where}: code {code!r} is not in table {table_id}; not mapped")
                return None
    if as_ == "code":
        if entry is None:
            return code if mapping is None else None  # a table without a map keeps the v2 code
        return _code_of(entry)
    if entry is not None:
        coding = {"system": table.get("target", table.get("system")), "code": _code_of(entry)}
        if isinstance(entry, dict):
            coding.update({k: v for k, v in entry.items() if k in ("system", "display")})
    else:
        coding = {"system": table.get("system"), "code": code}
        display = (table.get("display") or {}).get(code)
        if display:
            coding["display"] = display
    coding = {k: v for k, v in coding.items() if v}
    return coding if as_ == "Coding" else {"coding": [coding]}


def _vocabulary_on_concept(concept: dict, table_id: str, ctx: Context) -> dict:
    """A CWE already converted: codings without a system belong to the table; mapped codes added."""
    table = ctx.mappings.vocabulary[table_id]
    codings = concept.get("coding", [])
    for coding in codings:
        if "system" not in coding and table.get("system"):
            coding["system"] = table["system"]
    mapping = table.get("map")
    if mapping and codings:
        code = codings[0].get("code", "")
        entry = mapping.get(code, mapping.get(code.upper()))
        if entry is not None and table.get("target"):
            mapped = {"system": table["target"], "code": _code_of(entry)}
            if isinstance(entry, dict):
                mapped.update({k: v for k, v in entry.items() if k in ("system", "display")})
            if mapped not in codings:
                codings.insert(0, mapped)
    return concept


# -- composite datatypes ---------------------------------------------------------------------------

def _as_list(rules: Any) -> list[dict]:
    return rules if isinstance(rules, list) else [rules]


def convert_value(comps: Components, rule: dict, ctx: Context, where: str) -> Any:
    """One repetition (or component) converted by a rule's datatype, vocabulary and ``as``."""
    datatype = rule.get("datatype", "ST")
    if datatype not in CODED and is_empty(comps):
        return None
    vocabulary = rule.get("vocabulary")
    as_ = rule.get("as")
    if datatype in CODED:
        value = CODED[datatype](comps, ctx, where)
        if value is not None and vocabulary is not None:
            value = translate(str(value), str(vocabulary), as_ or "code", ctx, where)
        return value
    value = convert_composite(comps, datatype, ctx, where)
    if value and vocabulary is not None and isinstance(value, dict) and "coding" in value:
        value = _vocabulary_on_concept(value, str(vocabulary), ctx)
    return value or None


def _parts(spec: dict) -> list[tuple[str, list[dict]]]:
    """A datatype's (key, rules) pairs, read once per datatype table."""
    known = _PARTS.get(id(spec))
    if known is None or known[0] is not spec:  # the spec is kept in the entry, so its id stays unique
        known = _PARTS[id(spec)] = (spec, [(k, _as_list(r)) for k, r in spec.items() if k not in ("finish", "description")])
    return known[1]


_PARTS: dict[int, tuple[dict, list[tuple[str, list[dict]]]]] = {}


def convert_composite(comps: Components, datatype: str, ctx: Context, where: str) -> dict | None:
    spec = ctx.mappings.datatypes[datatype]
    out: dict[str, Any] = {}
    for key, rules in _parts(spec):
        part = _select(comps, key)
        if part is None:
            continue
        for rule in rules:
            value = convert_value(part, rule, ctx, f"{where}.{key}")
            if value is not None:
                if "fixed" in rule:
                    value = _with_fixed(value, rule)
                set_path(out, rule["path"], value)
    finish = spec.get("finish")
    if finish:
        out = prune(FINISH[finish](out, comps, ctx))  # a finish may leave empty parts behind
    return out or None  # parts are non-empty already: the resource is pruned once, at the end


def _select(comps: Components, key: str) -> Components | None:
    """The part of a value a datatype key names: "3", "1.1", "2-4" or "*"."""
    if key == "*":
        return comps
    if "-" in key:
        low, high = (int(x) for x in key.split("-"))
        return comps[low - 1 : high] or None
    component, _, subcomponent = key.partition(".")
    c = int(component)
    if c > len(comps):
        return None
    subs = comps[c - 1]
    if subcomponent:
        s = int(subcomponent)
        return [[subs[s - 1]]] if s <= len(subs) else None
    return [[x] for x in subs]  # a component's subcomponents are the components of its datatype


def _with_fixed(value: Any, rule: dict) -> Any:
    element = rule.get("element")
    base = copy_json(rule["fixed"])
    if element:
        base[element] = value
        return base
    if isinstance(value, dict):
        base.update(value)
        return base
    return value


# -- finishing touches that need the whole converted value ------------------------------------------

def _finish_concept(out: dict, comps: Components, ctx: Context) -> dict:
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


def _finish_identifier(out: dict, comps: Components, ctx: Context) -> dict:
    """An Identifier without a value identifies nothing."""
    return out if out.get("value") else {}


def _finish_practitioner(out: dict, comps: Components, ctx: Context) -> dict:
    """An identifier needs a value; a person with neither id nor name is nobody to refer to."""
    ids = [i for i in out.get("identifier", []) if isinstance(i, dict) and i.get("value")]
    out = {k: v for k, v in out.items() if k != "identifier"} | ({"identifier": ids} if ids else {})
    return out if ids or prune(out.get("name")) else {}


def _finish_unit(out: dict, comps: Components, ctx: Context) -> dict:
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


def _finish_location(out: dict, comps: Components, ctx: Context) -> dict:
    """PL: point of care, room, bed, facility, building, floor joined into a name; the most
    specific part present gives the physical type (location-physical-type code system)."""
    order = (4, 7, 8, 1, 2, 3)  # facility, building, floor, point of care, room, bed
    parts = [first(comps, c) for c in order if first(comps, c)]
    if not parts:
        return out
    out["name"] = " ".join(parts)
    out["mode"] = "instance"
    for c, code, display in _LOCATION_TYPES:
        if first(comps, c):
            out["physicalType"] = {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/location-physical-type",
                "code": code, "display": display}]}
            break
    return out


FINISH: dict[str, Callable[[dict, Components, Context], dict]] = {
    "codeable_concept": _finish_concept,
    "identifier": _finish_identifier,
    "practitioner": _finish_practitioner,
    "unit": _finish_unit,
    "location": _finish_location,
}
