"""The conversion engine: walk the segments of a message and run the compiled message and segment layers."""

from __future__ import annotations

from itertools import compress
from typing import Any

from ..hl7.parser import NULL, Message, Segment, header_of, parse
from ..hl7.types import Conversion, HL7Error, MessageHeader
from .ids import Ref, assign_ids
from .loader import Mappings
from .paths import prune
from .rules import Defaults, MessagePlan, Plan, SegmentPlan, apply_defaults, overwrite

SUPPORTED_VERSIONS = frozenset({"2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1"})
HEADER_FIELDS = frozenset({1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 15, 16, 18})  # read into MessageHeader
_MISSING = (None, [], {})  # a required element with no value


class Record:
    """A resource being built, with what made it (for ids, merging and the fidelity report)."""

    __slots__ = ("type", "body", "rule", "segments", "position", "id", "id_keys", "child", "dropped", "dirty",
                 "ref_keys")

    def __init__(self, type_: str, rule: str, position: str, id_keys: list | None) -> None:
        self.type, self.rule, self.position, self.id_keys = type_, rule, position, id_keys
        self.body: dict[str, Any] = {"resourceType": type_}
        self.segments: set[str] = set()
        self.id: str | None = None
        self.child = False  # made from a field value (Practitioner, Location): duplicates merge
        self.dropped = False
        self.dirty = not type_  # a rule may have left an empty element in the body (see rules.py)
        self.ref_keys: set[str] = set()  # the elements of the body references may be under


_PLANS: dict[int, tuple[Mappings, Plan]] = {}


def plan_of(mappings: Mappings) -> Plan:
    """The compiled plan of a set of mappings, made once (load_mappings makes it, so that a broken
    rule fails at load time)."""
    known = _PLANS.get(id(mappings))
    if known is None or known[0] is not mappings:  # the mappings are kept in the entry: their id stays theirs
        if len(_PLANS) >= 16:
            _PLANS.clear()
        known = _PLANS[id(mappings)] = (mappings, Plan(mappings))
    return known[1]


class Build:
    """State of one conversion: the resources made so far and the latest of each type."""

    __slots__ = ("records", "current", "last", "warnings", "unmapped")

    def __init__(self, msg: Message) -> None:
        self.records: list[Record] = []
        self.current: dict[str, Record] = {}
        self.last: Record | None = None  # the resource the latest segment made or added to
        self.warnings: list[str] = list(msg.warnings)
        self.unmapped: list[str] = []

    def new(self, type_: str, rule: str, position: str, id_keys: list | None = None, current: bool = True) -> Record:
        record = Record(type_, rule, position, id_keys)
        self.records.append(record)
        if current:
            self.current[type_] = record
        return record

    def child(self, type_: str, defaults: Defaults, value: Any, position: str, dirty: bool) -> Ref:
        """A resource made from one field value (a Practitioner from an XCN, a Location from a PL)."""
        record = self.new(type_, f"{position}:{type_}", position, current=False)
        record.child = True  # duplicates merge
        record.dirty = dirty
        if isinstance(value, dict):
            record.body.update(value)
        apply_defaults(record.body, defaults)
        return Ref(record)


def _apply_segment(build: Build, seg: Segment, fields: list[str], label: str, rule: SegmentPlan, values: dict,
                   used: set[int]) -> None:
    """Apply one segment rule; the numbers of the fields it consumed are added to ``used``."""
    if rule.when is not None and not rule.when(seg, {}):
        return
    for n, name in rule.required:
        if seg.field(n).strip() in ("", NULL):
            raise HL7Error("101", f"{label}-{name}", f"required field {seg.name}-{name} is empty")
    for n, name in rule.needs:
        if seg.field(n).strip() in ("", NULL):
            build.warnings.append(f"{label}: {seg.name}-{name} is empty, so the segment makes no {rule.resource}")
            return
    type_ = rule.resource
    record = None
    merge = rule.merge
    latest = build.current.get(type_)
    if merge == "previous":  # NTE: a note on whatever the segment before it made
        if build.last is None or build.last.type != type_:
            return
        record = build.last
    elif latest is not None and (merge == "always" or (merge == "once" and seg.name not in latest.segments)):
        record = latest  # ORC+OBR, ORC+RXE, PID+PD1: several segments describing one resource
    if record is None:
        record = build.new(type_, rule.name, label, rule.id_keys, current=rule.current)
    record.segments.add(seg.name)
    if merge != "previous":
        build.last = record
    target: dict = {} if rule.base is not None else record.body
    present = len(fields)
    for n, apply, strict, alone in rule.fields:
        if alone and (n >= present or not fields[n]):
            continue  # an absent field maps to nothing
        try:
            if apply(build, seg, fields, values, record, target, label):
                used.add(n)
        except HL7Error as exc:
            if strict:
                raise
            # A malformed optional value must not cost the whole message: keep going, say so.
            build.warnings.append(f"{exc.location}: {exc.text}; value not mapped")
    apply_defaults(target, rule.defaults)
    if rule.defaults_dirty:
        record.dirty = True
    if rule.base is not None and prune(target):
        rule.base(record.body, target)
        record.ref_keys.add(rule.base_key)
        if rule.base_dirty:
            record.dirty = True
    for link in rule.links:
        link(build, record)


def _drop_incomplete(build: Build, requires: dict) -> None:
    """Leave out resources FHIR would reject for lack of a required element (a ServiceRequest with
    no patient because the message has no PID); say so instead of emitting invalid resources."""
    for record in build.records:
        missing = [path for path, get in requires.get(record.type, ()) if get(record.body) in _MISSING]
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


def convert(raw: bytes, mappings: Mappings, id_key: bytes | None = None) -> Conversion:
    """Convert one HL7v2 message to FHIR R4 resources (JSON dicts with deterministic ids, keyed with
    the store's ``id_key`` when it has one: :mod:`bridge.convert.ids`).

    Raises HL7Error when the message cannot be parsed, its type or version is not supported, a
    required segment or field is missing or a required value is malformed.
    """
    plan = plan_of(mappings)
    msg = parse(raw)
    header = header_of(msg.msh, msg.charset)
    version = header.version.split(msg.delimiters.component)[0].strip()
    if not version:
        raise HL7Error("101", "MSH-12", "required field MSH-12 (version) is empty")
    if version not in SUPPORTED_VERSIONS:
        raise HL7Error("203", "MSH-12", f"version {version} is not supported (2.3 to 2.8.1 are)")
    name, _ = find_message_rule(header, mappings)
    message: MessagePlan = plan.messages[name]
    build = Build(msg)
    for required in message.required_segments:
        if msg.segment(required) is None:
            raise HL7Error("100", required, f"{header.message_type} requires a {required} segment")
    counts: dict[str, int] = {}
    unmapped = build.unmapped
    segment_rules = message.segments
    for position, seg in enumerate(msg.segments):
        counts[seg.name] = occurrence = counts.get(seg.name, 0) + 1
        label = seg.name if occurrence == 1 else f"{seg.name}[{occurrence}]"
        if position == 0:
            fields = seg.fields
            unmapped += [f"MSH-{n}" for n in range(3, len(fields))
                         if n not in HEADER_FIELDS and fields[n].strip()]
            continue
        rules = segment_rules.get(seg.name)
        if not rules:
            unmapped.append(label)  # its fields are not even split
            build.last = None  # a following NTE belongs to this unmapped segment, not to the one before
            continue
        fields = seg.fields
        used: set[int] = set()
        values: dict[int, list] = {}  # the fields split, shared by the rules of this segment
        for rule in rules:
            if rule.after is not None and (build.last is None or build.last.type != rule.after):
                continue  # what _apply_segment would find first, without the call
            _apply_segment(build, seg, fields, label, rule, values, used)
        for n in compress(range(len(fields)), fields):  # the numbers of the fields present
            if n not in used and n:
                text = fields[n].strip()
                if text and text != NULL:
                    unmapped.append(f"{label}-{n}")
    for link in message.links:
        link(build, None)
    for type_, values_set, dirty in message.set:
        for record in build.records:
            if record.type == type_:
                for k, copy in values_set:
                    overwrite(record.body, k, copy())  # the event outranks field data
                if dirty:
                    record.dirty = True
    for record in build.records:
        apply_defaults(record.body, plan.defaults.get(record.type, ()))
        if plan.defaults_dirty.get(record.type):
            record.dirty = True
    _drop_incomplete(build, plan.requires)
    # assign_ids prunes as it resolves references: no empty element is left
    resources = assign_ids([r for r in build.records if not r.dropped], header, plan.ids, id_key)
    return Conversion(header=header, resources=resources, unmapped=build.unmapped, warnings=build.warnings)
