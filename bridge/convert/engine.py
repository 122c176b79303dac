"""The conversion engine: walk the segments of a message and apply the message and segment layers."""

from __future__ import annotations

import base64
from typing import Any

from ..hl7.parser import NULL, Message, Segment, header_of, parse
from ..hl7.types import Conversion, HL7Error, MessageHeader
from .datatypes import Components, Context, convert_value, is_empty
from .ids import Ref, assign_ids
from .loader import Mappings
from .paths import copy_json, get_path, prune, set_path

SUPPORTED_VERSIONS = frozenset({"2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1"})
HEADER_FIELDS = frozenset({1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 15, 16, 18})  # read into MessageHeader


class Record:
    """A resource being built, with what made it (for ids, merging and the fidelity report)."""

    __slots__ = ("type", "body", "rule", "segments", "position", "id", "id_keys", "child", "dropped")

    def __init__(self, type_: str, rule: str, position: str, id_keys: list | None) -> None:
        self.type, self.rule, self.position, self.id_keys = type_, rule, position, id_keys
        self.body: dict[str, Any] = {"resourceType": type_}
        self.segments: set[str] = set()
        self.id: str | None = None
        self.child = False  # made from a field value (Practitioner, Location): duplicates merge
        self.dropped = False


class Build:
    """State of one conversion: the resources made so far and the latest of each type."""

    def __init__(self, msg: Message, header: MessageHeader, mappings: Mappings, message_rule: dict) -> None:
        self.msg, self.header, self.mappings, self.message_rule = msg, header, mappings, message_rule
        self.records: list[Record] = []
        self.current: dict[str, Record] = {}
        self.last: Record | None = None  # the resource the latest segment made or added to
        self.warnings: list[str] = list(msg.warnings)
        self.unmapped: list[str] = []
        self.ctx = Context(mappings, self.warnings)
        self._cleaned: dict[tuple[int, int], list[Components]] = {}

    def cleaned(self, seg: Segment, n: int) -> list[Components]:
        """Field n of seg as :func:`_clean` gives it, once per field (several rules read one field)."""
        key = (id(seg), n)  # segments live as long as the build
        found = self._cleaned.get(key)
        if found is None:
            found = self._cleaned[key] = _clean(seg.parsed(n))
        return found

    def new(self, type_: str, rule: str, position: str, id_keys: list | None = None, current: bool = True) -> Record:
        record = Record(type_, rule, position, id_keys)
        self.records.append(record)
        if current:
            self.current[type_] = record
        return record


def _label(segment: Segment, occurrence: int) -> str:
    return segment.name if occurrence == 1 else f"{segment.name}[{occurrence}]"


def _clean(reps: list[list[list[str]]]) -> list[Components]:
    """Explicit nulls ("") carry no value for a new resource; treat them as empty."""
    return [[[("" if s == NULL else s) for s in c] for c in rep] for rep in reps]


def _condition_holds(cond: dict | None, seg: Segment, target: dict) -> bool:
    if not cond:
        return True
    if "field" in cond:
        value = seg.value(int(cond["field"]), 1, int(cond.get("component", 1))).strip().upper()
        if "in" in cond and value not in [str(v).upper() for v in cond["in"]]:
            return False
        if "not_in" in cond and value in [str(v).upper() for v in cond["not_in"]]:
            return False
        if cond.get("present") is True and not value:
            return False
    if "has" in cond and get_path(target, cond["has"]) is None:
        return False
    if "lacks" in cond and get_path(target, cond["lacks"]) is not None:
        return False
    return True


def _rules(value: Any) -> list[dict]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _place(target: dict, path: str, value: Any, rule: dict) -> None:
    if path == ".":  # the value names its own elements (SN -> valueQuantity | valueRange | valueRatio)
        for k, v in value.items():
            set_path(target, k, v)
        return
    join = rule.get("join")
    existing = get_path(target, path) if join is not None else None
    if isinstance(existing, str) and isinstance(value, str):  # lines of one text spread over segments
        if rule.get("datatype") == "B64":
            text = base64.b64decode(existing).decode() + join + base64.b64decode(value).decode()
            value = base64.b64encode(text.encode()).decode()
        else:
            value = existing + join + value
        _overwrite(target, path, value)
        return
    set_path(target, path, value)


def _default(target: dict, path: str, value: Any) -> None:
    """Set a value only where the message gave none (a default never merges into data)."""
    if get_path(target, path) in (None, "", [], {}):
        set_path(target, path, copy_json(value))


def _overwrite(target: dict, path: str, value: Any) -> None:
    head, _, last = path.rpartition(".")
    node = get_path(target, head) if head else target
    if isinstance(node, dict):
        node[last] = value
    else:
        set_path(target, path, value)


def _apply_field(build: Build, seg: Segment, n: int, rule: dict, record: Record, target: dict, where: str) -> bool:
    """Apply one field rule to target (the resource, or the element a ``base`` rule builds).

    Returns True when the field was consumed by it.
    """
    if rule.get("consumed"):
        return True
    if not _condition_holds(rule.get("when"), seg, target):
        return False
    if "cases" in rule:  # the rule depends on another field, e.g. OBX-5 on the value type in OBX-2
        selector = rule["switch"]
        key = seg.value(int(selector["field"]), 1, int(selector.get("component", 1))).strip().upper()
        chosen = rule["cases"].get(key, rule["cases"].get("default"))
        if chosen is None:
            build.warnings.append(f"{where}: no mapping for {seg.name}-{selector['field']} value {key!r}")
            return False
        return any([_apply_field(build, seg, n, sub, record, target, where) for sub in _rules(chosen)])
    reps = build.cleaned(seg, n)
    if "component" in rule:
        c = int(rule["component"])
        reps = [[[s] for s in rep[c - 1]] if c <= len(rep) else [[""]] for rep in reps]
    path = rule["path"]
    repeat = "[]" in path or rule.get("repeat", False)
    used = False
    for index, comps in enumerate(reps, start=1):
        if is_empty(comps):
            continue
        rep_where = where if len(reps) == 1 else f"{where}[{index}]"
        value = convert_value(comps, rule, build.ctx, rep_where)
        if value is None:
            continue
        if "value" in rule:  # a constant implied by the field being valued (discharge time -> finished)
            value = copy_json(rule["value"])
        if rule.get("resource"):
            value = _child(build, rule, value, rep_where)
        if "fixed" in rule or rule.get("element"):
            base = copy_json(rule.get("fixed", {}))
            if rule.get("element"):
                base[rule["element"]] = value
                value = base
            elif isinstance(value, dict):
                base.update(value)
                value = base
        _place(target, path, value, rule)
        used = True
        if not repeat:
            break
    return used


def _child(build: Build, rule: dict, value: Any, position: str) -> Ref:
    """A resource made from one field value (a Practitioner from an XCN, a Location from a PL)."""
    type_ = rule["resource"]
    record = build.new(type_, f"{position}:{type_}", position, current=False)
    record.child = True
    if isinstance(value, dict):
        record.body.update(value)
    for k, v in (rule.get("set") or {}).items():
        _default(record.body, k, v)
    return Ref(record)


def _link(build: Build, link: dict, this: Record | None) -> None:
    source = this if link.get("from", "this") == "this" else build.current.get(link["from"])
    target = this if link.get("to", "this") == "this" else build.current.get(link["to"])
    if source is None or target is None or source is target:
        return
    if "copy" in link:  # a value of the target, not a reference to it (OBX inherits OBR-7's time)
        value = get_path(target.body, link["copy"])
        if value is not None:
            _default(source.body, link["path"], value)
        return
    value: Any = Ref(target)
    if link.get("element"):
        fixed = copy_json(link.get("fixed", {}))
        fixed[link["element"]] = value
        value = fixed
    set_path(source.body, link["path"], value)


def _apply_segment(build: Build, seg: Segment, occurrence: int, rule_name: str) -> set[int]:
    rule = build.mappings.segments[rule_name]
    label = _label(seg, occurrence)
    if not _condition_holds(rule.get("when"), seg, {}):
        return set()
    for n in rule.get("required", []):
        if seg.field(int(n)).strip() in ("", NULL):
            raise HL7Error("101", f"{label}-{n}", f"required field {seg.name}-{n} is empty")
    for n in rule.get("needs", []):
        if seg.field(int(n)).strip() in ("", NULL):
            build.warnings.append(f"{label}: {seg.name}-{n} is empty, so the segment makes no {rule['resource']}")
            return set()
    type_ = rule["resource"]
    record = None
    merge = rule.get("merge")
    latest = build.current.get(type_)
    if merge == "previous":  # NTE: a note on whatever the segment before it made
        if build.last is None or build.last.type != type_:
            return set()
        record = build.last
    elif latest is not None and (merge == "always" or (merge == "once" and seg.name not in latest.segments)):
        record = latest  # ORC+OBR, ORC+RXE, PID+PD1: several segments describing one resource
    if record is None:
        record = build.new(type_, rule_name, label, rule.get("id"), current=rule.get("current", True))
    record.segments.add(seg.name)
    if merge != "previous":
        build.last = record
    target: dict = {} if rule.get("base") else record.body
    used: set[int] = set()
    for key, field_rules in (rule.get("fields") or {}).items():
        n = int(key)
        for field_rule in _rules(field_rules):
            try:
                if _apply_field(build, seg, n, field_rule, record, target, f"{label}-{n}"):
                    used.add(n)
            except HL7Error as exc:
                if field_rule.get("strict", rule.get("strict", False)):
                    raise
                # A malformed optional value must not cost the whole message: keep going, say so.
                build.warnings.append(f"{exc.location}: {exc.text}; value not mapped")
    for k, v in (rule.get("set") or {}).items():
        _default(target, k, v)
    if rule.get("base") and prune(target):
        set_path(record.body, rule["base"], target)
    for link in rule.get("references", []):
        _link(build, link, record)
    return used


def _drop_incomplete(build: Build, requires: dict) -> None:
    """Leave out resources FHIR would reject for lack of a required element (a ServiceRequest with
    no patient because the message has no PID); say so instead of emitting invalid resources."""
    for record in build.records:
        missing = [path for path in requires.get(record.type, []) if get_path(record.body, path) in (None, [], {})]
        if missing:
            record.dropped = True
            build.warnings.append(f"{record.position}: no {record.type} made: {', '.join(missing)} missing")
            build.unmapped.append(record.position)


def find_message_rule(header: MessageHeader, mappings: Mappings) -> tuple[str, dict]:
    name = mappings.events.get(header.message_type)
    if name is None and header.message_structure in mappings.messages:
        name = header.message_structure
    if name is None:
        raise HL7Error("200", "MSH-9", f"message type {header.message_type or '(empty)'} is not supported")
    return name, mappings.messages[name]


def convert(raw: bytes, mappings: Mappings) -> Conversion:
    """Convert one HL7v2 message to FHIR R4 resources (JSON dicts with deterministic ids).

    Raises HL7Error when the message cannot be parsed, its type or version is not supported, a
    required segment or field is missing or a required value is malformed.
    """
    msg = parse(raw)
    header = header_of(msg.msh, msg.charset)
    version = header.version.split(msg.delimiters.component)[0].strip()
    if not version:
        raise HL7Error("101", "MSH-12", "required field MSH-12 (version) is empty")
    if version not in SUPPORTED_VERSIONS:
        raise HL7Error("203", "MSH-12", f"version {version} is not supported (2.3 to 2.8.1 are)")
    name, message_rule = find_message_rule(header, mappings)
    build = Build(msg, header, mappings, message_rule)
    seg_rules = message_rule.get("segments") or {}
    for required in message_rule.get("required_segments", []):
        if msg.segment(required) is None:
            raise HL7Error("100", required, f"{header.message_type} requires a {required} segment")
    counts: dict[str, int] = {}
    for position, seg in enumerate(msg.segments):
        counts[seg.name] = occurrence = counts.get(seg.name, 0) + 1
        label = _label(seg, occurrence)
        if position == 0:
            build.unmapped += [f"MSH-{n}" for n in range(3, len(seg) + 1)
                               if n not in HEADER_FIELDS and seg.field(n).strip()]
            continue
        names = _rules(seg_rules.get(seg.name))
        if not names:
            build.unmapped.append(label)
            build.last = None  # a following NTE belongs to this unmapped segment, not to the one before
            continue
        used: set[int] = set()
        for rule_name in names:
            used |= _apply_segment(build, seg, occurrence, rule_name)
        build.unmapped += [f"{label}-{n}" for n in range(1, len(seg) + 1)
                           if n not in used and seg.field(n).strip() and seg.field(n).strip() != NULL]
    for link in message_rule.get("references", []):
        _link(build, link, None)
    for type_, values in (message_rule.get("set") or {}).items():
        for record in build.records:
            if record.type == type_:
                for k, v in values.items():
                    _overwrite(record.body, k, copy_json(v))  # the event outranks field data
    for record in build.records:
        for k, v in (mappings.settings.get("defaults", {}).get(record.type) or {}).items():
            _default(record.body, k, v)
    _drop_incomplete(build, mappings.settings.get("requires", {}))
    # assign_ids prunes as it resolves references: no empty element is left
    resources = assign_ids([r for r in build.records if not r.dropped], header, mappings.settings.get("ids", {}))
    return Conversion(header=header, resources=resources, unmapped=build.unmapped, warnings=build.warnings)
