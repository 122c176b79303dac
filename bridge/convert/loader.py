"""Load the mapping layers (YAML) from ``mappings/`` and merge a site override folder over them.

Every ``*.yaml`` file (any depth) holds one or more of the sections ``settings``, ``messages``,
``segments``, ``datatypes``, ``vocabulary``.  Files are merged in path order, the override folder
last: mappings merge key by key, anything else replaces, and ``null`` deletes a default rule.
A rule carrying ``replace: true`` replaces the default rule instead of merging into it.

The rule language, for mapping authors:

* message (``messages.<name>``): ``events`` (MSH-9 values such as ``ADT^A01``), ``segments``
  (segment name -> segment rule name or list of them), ``required_segments``, ``set`` (values the
  event forces, per resource type), ``references`` (links made after all segments).
* segment (``segments.<rule>``): ``resource``; ``fields`` (field number -> field rule or list);
  ``merge`` (``once``: into the latest resource of the type unless this segment already added to it,
  ``always``, ``previous``: into what the preceding segment made, else skip); ``current: false``
  (does not become the latest of its type); ``base`` (fields build one new element at this path);
  ``set`` (values where none were mapped); ``references`` (``{path, to, from, element, fixed}``
  links between resources, ``to``/``from`` a resource type or ``this``; with ``copy`` a value is
  copied instead of referenced); ``required`` (empty -> HL7Error 101); ``needs`` (empty -> the
  segment is skipped with a warning); ``when``; ``id`` (id key alternatives, see ids.py).
* field (and datatype component) rule: ``path``; ``datatype``; ``vocabulary`` with ``as`` (``code``,
  ``Coding``, ``CodeableConcept``); ``component`` (map one component); ``element`` + ``fixed`` (wrap
  the value: ``{..fixed, element: value}``); ``resource`` (the value becomes its own resource, the
  path gets a reference); ``value`` (a constant when the field is valued); ``when`` (``field`` with
  ``in``/``not_in``/``present``, ``has``/``lacks`` a path); ``switch`` + ``cases`` (choose by
  another field, e.g. OBX-2); ``join`` (append to text already there); ``consumed: true`` (read,
  nothing to map); ``strict: true`` (a malformed value rejects the message instead of a warning).
* paths: ``a.b``, ``a[]`` (append), ``a[0]`` (item 0); datatype keys ``"3"``, ``"1.1"``, ``"2-4"``, ``"*"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

SECTIONS = ("settings", "messages", "segments", "datatypes", "vocabulary")
PRIMITIVES = frozenset(
    {"ST", "TX", "FT", "ID", "IS", "NM", "SI", "DT", "DTM", "TS", "DATE", "BOOL", "SYSTEM", "CODING_SYSTEM",
     "PHONE", "SN", "B64"}
)


class MappingError(ConfigError):
    """A mapping file cannot be read or refers to something that does not exist; says which."""


@dataclass(frozen=True)
class Mappings:
    """The merged mapping layers; build with :func:`load_mappings`."""

    settings: dict[str, Any]
    messages: dict[str, dict]
    segments: dict[str, dict]
    datatypes: dict[str, dict]
    vocabulary: dict[str, dict]
    events: dict[str, str] = field(default_factory=dict)  # "ADT^A01" -> message rule name
    sources: tuple[str, ...] = ()


def default_dir() -> Path:
    import mappings

    return Path(mappings.__file__).resolve().parent


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict) and not value.get("replace"):
            out[key] = _merge(out[key], value)
        else:
            out[key] = {k: v for k, v in value.items() if k != "replace"} if isinstance(value, dict) else value
    return out


def _read(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise MappingError(f"{path}: cannot be read as YAML: {exc}") from exc
    if not isinstance(data, dict) or set(data) - set(SECTIONS):
        raise MappingError(f"{path}: top-level keys must be among {', '.join(SECTIONS)}; found {list(data)}")
    return data


def _normalise_keys(rules: dict) -> dict:
    """YAML reads ``3:`` as an int and ``"3.1":`` as a string; use strings throughout."""
    return {str(k): v for k, v in rules.items()}


def _normalise(data: dict) -> dict:
    """Field numbers, components, table ids and codes as text, before files are merged, so that
    ``19:`` in one file and ``"19":`` in another name the same rule."""
    out = dict(data)
    if isinstance(out.get("segments"), dict):
        out["segments"] = {
            name: ({**rule, "fields": _normalise_keys(rule["fields"])}
                   if isinstance(rule, dict) and isinstance(rule.get("fields"), dict) else rule)
            for name, rule in out["segments"].items()
        }
    if isinstance(out.get("datatypes"), dict):
        out["datatypes"] = {name: _normalise_keys(rules) if isinstance(rules, dict) else rules
                            for name, rules in out["datatypes"].items()}
    if isinstance(out.get("vocabulary"), dict):
        out["vocabulary"] = {str(k): _table(v) for k, v in out["vocabulary"].items()}
    return out


def _table(table: Any) -> Any:
    """Codes are text: YAML would read a code 10 as an int."""
    if isinstance(table, dict) and isinstance(table.get("map"), dict):
        table = {**table, "map": {str(k): v for k, v in table["map"].items()}}
    return table


def load_mappings(override_dir: Path | None = None) -> Mappings:
    """Read the default mapping layers, then the site's override folder if given."""
    merged: dict[str, dict] = {s: {} for s in SECTIONS}
    sources: list[str] = []
    folders = [default_dir()] + ([Path(override_dir)] if override_dir is not None else [])
    for folder in folders:
        if not folder.is_dir():
            raise MappingError(f"mapping folder {folder} does not exist")
        for path in sorted(folder.rglob("*.yaml")):
            data = _normalise(_read(path))
            for section, content in data.items():
                if not isinstance(content, dict):
                    raise MappingError(f"{path}: section {section} must be a mapping")
                merged[section] = _merge(merged[section], content)
            sources.append(str(path))
    events: dict[str, str] = {}
    for name, message in merged["messages"].items():
        for event in message.get("events", []):
            events[event] = name
    mappings = Mappings(merged["settings"], merged["messages"], merged["segments"], merged["datatypes"],
                        merged["vocabulary"], events, tuple(sources))
    check(mappings)
    from .engine import plan_of  # compiled now: a rule that cannot be compiled fails at load time

    plan_of(mappings)
    return mappings


def _rules(value: Any) -> list[dict]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def check(m: Mappings) -> None:
    """Fail at load time, naming the rule, rather than on the first message that needs it."""
    known = PRIMITIVES | set(m.datatypes)

    def check_rule(rule: dict, where: str) -> None:
        if not isinstance(rule, dict):
            raise MappingError(f"{where}: a rule must be a mapping, found {rule!r}")
        dt = rule.get("datatype")
        if dt is not None and dt not in known:
            raise MappingError(f"{where}: datatype {dt} is not defined in the datatype layer")
        vocab = rule.get("vocabulary")
        if vocab is not None and str(vocab) not in m.vocabulary:
            raise MappingError(f"{where}: vocabulary {vocab} is not defined in the vocabulary layer")
        if "path" not in rule and not rule.get("consumed") and "cases" not in rule:
            raise MappingError(f"{where}: a rule needs a path (or consumed: true)")
        for case_name, case in (rule.get("cases") or {}).items():
            for sub in _rules(case):
                check_rule(sub, f"{where} case {case_name}")

    for name, message in m.messages.items():
        for seg, rule_names in (message.get("segments") or {}).items():
            for rn in _rules(rule_names):
                if rn not in m.segments:
                    raise MappingError(f"message {name}: segment {seg} uses rule {rn}, which no segment file defines")
    for name, seg_rule in m.segments.items():
        if not isinstance(seg_rule, dict) or "resource" not in seg_rule:
            raise MappingError(f"segment rule {name}: needs a resource")
        for fld, rules in (seg_rule.get("fields") or {}).items():
            for rule in _rules(rules):
                check_rule(rule, f"segment rule {name} field {fld}")
    for name, comps in m.datatypes.items():
        for comp, rules in comps.items():
            if comp in ("finish", "description"):
                continue
            for rule in _rules(rules):
                check_rule(rule, f"datatype {name} component {comp}")
