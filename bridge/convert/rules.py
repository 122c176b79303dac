"""The message and segment layers compiled once per set of mappings (see loader.py for the language).

Compiling decides what a rule's keys say when the mappings are loaded (paths split, datatypes and
vocabularies looked up, conditions made into tests), so converting a message only runs the result.
The mappings stay the data: a site's override folder changes the plans, never this code.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from ..hl7.parser import HEADER_SEGMENTS, NULL, Segment
from .datatypes import Components, is_empty
from .ids import Ref
from .loader import MappingError, Mappings
from .paths import Getter, Setter, compile_path, copier, copy_json, get_path, getter, has_empty, set_path, setter
from .primitives import to_string
from .values import Compiler, Kept, fixer

EMPTY = (None, "", [], {})  # what a default may fill
_REMEMBERED_FIELDS = 512  # distinct texts of a field whose values a rule keeps; more, and they are forgotten
Condition = Callable[[Segment, dict], bool]
# A field rule: (build, segment, its fields, the fields split so far, record, target, label) -> whether
# it used the field.
FieldFn = Callable[[Any, Segment, list[str], dict, Any, dict, str], bool]
Link = Callable[[Any, Any], None]  # (build, the record of this segment or None)
Defaults = tuple[tuple[Getter, Setter, Callable[[], Any]], ...]  # (read, put, copy of the value)


def as_rules(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


# -- field values ------------------------------------------------------------------------------------

def field_values(seg: Segment, fields: list[str], n: int) -> list[Components]:
    """Field n (of ``seg.fields``) split into repetitions of components of subcomponents,
    unescaped, explicit nulls ("") made empty: a null carries no value for a new resource."""
    raw = fields[n] if 0 < n < len(fields) else ""
    if not raw:
        return []
    d = seg.delimiters
    if d.escape in raw or (seg.name in HEADER_SEGMENTS and n <= 2):  # the parser's general path
        return [[[("" if s == NULL else s) for s in c] for c in rep] for rep in seg.parsed(n)]
    # No escape: splitting is all there is (most fields).
    sub = d.subcomponent
    reps = []
    for rep in raw.split(d.repetition):
        comps = rep.split(d.component)
        if sub in rep:
            reps.append([c.split(sub) for c in comps])
        else:
            reps.append([[c] for c in comps] if len(comps) > 1 else [comps])
    if NULL in raw:
        return [[[("" if s == NULL else s) for s in c] for c in rep] for rep in reps]
    return reps


def first_value(seg: Segment, n: int, component: int) -> str:
    """``seg.value(n, 1, component)``: read straight from the field when it has no escape to undo."""
    fields = seg.fields
    raw = fields[n] if 0 < n < len(fields) else ""
    d = seg.delimiters
    if d.escape in raw or (seg.name in HEADER_SEGMENTS and n <= 2):
        return seg.value(n, 1, component)
    value = raw.split(d.repetition, 1)[0]
    if component != 1 or d.component in value:
        comps = value.split(d.component)
        value = comps[component - 1] if 0 < component <= len(comps) else ""
    return value.split(d.subcomponent, 1)[0]


# -- conditions, placing, defaults, links ---------------------------------------------------------------

def condition(cond: dict | None) -> Condition | None:
    """``when``: a test of the segment (``field`` with ``in``/``not_in``/``present``) and of the
    target (``has``/``lacks`` a path); None when there is nothing to test."""
    if not cond:
        return None
    field = int(cond["field"]) if "field" in cond else None
    component = int(cond.get("component", 1))
    among = [str(v).upper() for v in cond["in"]] if "in" in cond else None
    not_among = [str(v).upper() for v in cond["not_in"]] if "not_in" in cond else None
    present = cond.get("present") is True
    has = getter(cond["has"]) if "has" in cond else None
    lacks = getter(cond["lacks"]) if "lacks" in cond else None

    def holds(seg: Segment, target: dict) -> bool:
        if field is not None:
            value = first_value(seg, field, component).strip().upper()
            if among is not None and value not in among:
                return False
            if not_among is not None and value in not_among:
                return False
            if present and not value:
                return False
        if has is not None and has(target) is None:
            return False
        if lacks is not None and lacks(target) is not None:
            return False
        return True

    return holds


def overwrite(target: dict, path: str, value: Any) -> None:
    head, _, last = path.rpartition(".")
    node = get_path(target, head) if head else target
    if isinstance(node, dict):
        node[last] = value
    else:
        set_path(target, path, value)


def placer(path: str, rule: dict) -> Setter:
    """Where a field rule puts its value: a path, the value's own elements (``.``), or ``join``ed
    to text already there."""
    if path == ".":  # the value names its own elements (SN -> valueQuantity | valueRange | valueRatio)
        def spread(target: dict, value: Any) -> None:
            for k, v in value.items():
                set_path(target, k, v)
        return spread
    put = setter(path)
    join = rule.get("join")
    if join is None:
        return put
    get = getter(path)
    b64 = rule.get("datatype") == "B64"

    def joined(target: dict, value: Any) -> None:
        existing = get(target)
        if isinstance(existing, str) and isinstance(value, str):  # lines of one text spread over segments
            if b64:
                text = base64.b64decode(existing).decode() + join + base64.b64decode(value).decode()
                value = base64.b64encode(text.encode()).decode()
            else:
                value = existing + join + value
            overwrite(target, path, value)
            return
        put(target, value)

    return joined


# -- what can leave an empty element or a reference behind ---------------------------------------------
# A record is marked ``dirty`` when a rule may have put an empty element in it (then its whole body is
# pruned at the end), and its ``ref_keys`` name the elements a reference may have been put under
# (only they are walked to resolve references): most resources need neither walk.

def empty_constant(value: Any) -> bool:
    """Whether a constant of the mappings is, or holds, an empty element."""
    if isinstance(value, dict | list):
        return not value or has_empty(value)
    return value is None or value == ""


def placeholders(path: str) -> bool:
    """Whether putting a value at path can leave an empty element (``a[1]`` makes an ``a[0]``)."""
    return path != "." and any(index for _, index, _ in compile_path(path))


def first_step(path: str) -> str:
    return compile_path(path)[0][0]


def defaults_dirty(values: dict) -> bool:
    return any(empty_constant(v) or placeholders(k) for k, v in values.items())


def defaults(values: dict) -> Defaults:
    """``set``: values put only where the message gave none (a default never merges into data)."""
    return tuple((getter(k), setter(k), copier(v)) for k, v in values.items())


def apply_defaults(target: dict, values: Defaults) -> None:
    for get, put, copy in values:
        if get(target) in EMPTY:
            put(target, copy())


def link(spec: dict) -> Link:
    """A reference between resources (``{path, to, from, element, fixed}``), or with ``copy`` a value
    of the target copied where the source has none."""
    source_type = spec.get("from", "this")
    target_type = spec.get("to", "this")
    source_this, target_this = source_type == "this", target_type == "this"
    path = spec["path"]
    read = getter(spec["copy"]) if "copy" in spec else None
    own, put, element, fixed = getter(path), setter(path), spec.get("element"), copier(spec.get("fixed", {}))
    key = first_step(path)
    fixed_value = spec.get("fixed", {})  # the wrapper a reference is put in, filled by it
    dirty = placeholders(path) or bool(element) and isinstance(fixed_value, dict | list) and has_empty(fixed_value)

    def run(build: Any, this: Any) -> None:
        source = this if source_this else build.current.get(source_type)
        target = this if target_this else build.current.get(target_type)
        if source is None or target is None or source is target:
            return
        if read is not None:  # a value of the target, not a reference to it (OBX inherits OBR-7's time)
            value = read(target.body)
            if value is not None and own(source.body) in EMPTY:
                put(source.body, copy_json(value))
                if not (value.__class__ is str and value):  # a copied element may hold anything
                    source.dirty = True
                    source.ref_keys.add(key)
            return
        value: Any = Ref(target)
        if element:
            wrapped = fixed()
            wrapped[element] = value
            value = wrapped
        put(source.body, value)
        source.ref_keys.add(key)
        if dirty:
            source.dirty = True

    return run


# -- field and segment rules ----------------------------------------------------------------------------

def field_rule(rule: dict, n: int, compiler: Compiler) -> FieldFn:
    """One field rule applied to a target (the resource, or the element a ``base`` rule builds);
    the function says whether the field was consumed by it."""
    if rule.get("consumed"):
        return lambda build, seg, fields, values, record, target, label: True
    when = condition(rule.get("when"))
    if "cases" in rule:  # the rule depends on another field, e.g. OBX-5 on the value type in OBX-2
        return _switch(rule, n, when, compiler)
    path = rule["path"]
    repeat = "[]" in path or rule.get("repeat", False)
    component = int(rule["component"]) if "component" in rule else None
    text = compiler.text.get(rule.get("datatype", "ST")) if rule.get("vocabulary") is None else None
    convert = compiler.value(rule, checked=True)
    string = text is to_string  # text already stripped is its own value
    constant, has_constant = copier(rule.get("value")), "value" in rule
    resource = rule.get("resource")
    child_defaults = defaults(rule.get("set") or {})
    wrap = fixer(rule) if "fixed" in rule or rule.get("element") else None
    place = placer(path, rule)
    suffix = f"-{n}"
    # what the rule puts: a reference (to a child) or its value, maybe with a constant around it
    fixed_empty = wrap is not None and isinstance(rule.get("fixed", {}), dict | list) and has_empty(rule.get("fixed", {}))
    value_dirty = not compiler.value_clean(rule) or has_constant and empty_constant(rule.get("value"))
    dirty = placeholders(path) or fixed_empty or (not resource and value_dirty)
    ref_key = first_step(path) if resource and path != "." else None
    child_dirty = value_dirty or defaults_dirty(rule.get("set") or {})
    # The values of the field's repetitions, kept per raw field text: feeds repeat the same doctors,
    # wards, codes and times message after message.  Splitting, unescaping and converting depend on
    # the text, the delimiters and the rule alone (``where`` only names a value in a warning or an
    # error), so what is kept is (delimiters, one repetition?, per repetition None or its value; a
    # text's value is a string, number or boolean, a composite's a :class:`Kept` handing out
    # copies).  A field whose conversion warned or raised is not kept: it warns or raises again.
    known: dict[str, tuple] = {}
    maybe_header = n <= 2  # MSH-1 and MSH-2 are read apart (field_values): never kept

    plain = not has_constant and not resource and wrap is None  # put is place

    def put(build: Any, record: Any, target: dict, value: Any, where: str) -> None:
        if has_constant:  # a constant implied by the field being valued (discharge time -> finished)
            value = constant()
        if resource:
            value = build.child(resource, child_defaults, value, where, child_dirty)
            record.ref_keys.add(ref_key)
        if wrap is not None:
            value = wrap(value)
        place(target, value)
        if dirty:
            record.dirty = True

    def apply(build: Any, seg: Segment, fields: list[str], values: dict, record: Any, target: dict,
              label: str) -> bool:
        if when is not None and not when(seg, target):
            return False
        raw = fields[n] if 0 < n < len(fields) else ""
        d = seg.delimiters
        keep = not (maybe_header and seg.name in HEADER_SEGMENTS)
        kept = known.get(raw)
        if kept is not None and (kept[0] is d or kept[0] == d) and keep:
            single = kept[1]
            if single:  # one repetition (most fields): one value or none
                value = kept[2][0]
                if value is None:
                    return False
                if text is None:
                    value = value()
                if plain:
                    place(target, value)
                    if dirty:
                        record.dirty = True
                else:
                    put(build, record, target, value, label + suffix)
                return True
            used = False
            for index, value in enumerate(kept[2], start=1):  # the list ends at the value a single rule puts
                if value is not None:
                    put(build, record, target, value if text is not None else value(), f"{label}{suffix}[{index}]")
                    used = True
            return used
        reps = values.get(n)
        if reps is None:
            reps = values[n] = field_values(seg, fields, n)
        if component is not None:
            c = component
            reps = [[[s] for s in rep[c - 1]] if c <= len(rep) else [[""]] for rep in reps]
        warned = len(build.warnings)
        outcome: list = []
        used = False
        single = len(reps) == 1
        for index, comps in enumerate(reps, start=1):
            outcome.append(None)
            head = comps[0][0].strip()
            if not head and is_empty(comps):  # the first part mostly says
                continue
            where = label + suffix if single else f"{label}{suffix}[{index}]"
            if text is None:
                value = convert(comps, build.warnings, where)
            elif not head:
                continue
            else:  # a text rule: the value is the text of the first part in its format
                value = head if string else text(head, where)
            if value is None:
                continue
            outcome[-1] = value if text is not None else Kept(value)  # before it is put anywhere
            put(build, record, target, value, where)
            used = True
            if not repeat:
                break
        if len(build.warnings) == warned and keep:
            if len(known) >= _REMEMBERED_FIELDS:
                known.clear()
            known[raw] = (d, single, outcome)
        return used

    return apply


def _switch(rule: dict, n: int, when: Condition | None, compiler: Compiler) -> FieldFn:
    selector = rule["switch"]
    field, component = int(selector["field"]), int(selector.get("component", 1))
    cases = {key: None if case is None else tuple(field_rule(sub, n, compiler) for sub in as_rules(case))
             for key, case in rule["cases"].items()}
    default = cases.get("default")

    def apply(build: Any, seg: Segment, fields: list[str], values: dict, record: Any, target: dict,
              label: str) -> bool:
        if when is not None and not when(seg, target):
            return False
        key = first_value(seg, field, component).strip().upper()
        chosen = cases.get(key, default)
        if chosen is None:
            build.warnings.append(f"{label}-{n}: no mapping for {seg.name}-{selector['field']} value {key!r}")
            return False
        return any([sub(build, seg, fields, values, record, target, label) for sub in chosen])

    return apply


class SegmentPlan:
    """A segment rule compiled: what it makes, when, from which fields."""

    __slots__ = ("name", "resource", "when", "required", "needs", "merge", "after", "current", "id_keys", "base",
                 "base_key", "base_dirty", "fields", "defaults", "defaults_dirty", "links")

    def __init__(self, name: str, rule: dict, compiler: Compiler) -> None:
        self.name = name
        self.resource: str = rule["resource"]
        self.when = condition(rule.get("when"))
        self.required = tuple((int(n), n) for n in rule.get("required", []))
        self.needs = tuple((int(n), n) for n in rule.get("needs", []))
        self.merge = rule.get("merge")
        # a note rule (merge: previous) with nothing to check first applies only after its resource type
        self.after = self.resource if self.merge == "previous" and not (self.when or self.required or self.needs) else None
        self.current = rule.get("current", True)
        self.id_keys = rule.get("id")
        self.base = setter(rule["base"]) if rule.get("base") else None
        self.base_key = first_step(rule["base"]) if rule.get("base") else ""  # references made in the base
        self.base_dirty = bool(rule.get("base")) and placeholders(rule["base"])
        strict = rule.get("strict", False)
        # (n, rule, strict, whether it reads nothing but field n: then an empty field can be skipped)
        self.fields = tuple((int(key), field_rule(fr, int(key), compiler), fr.get("strict", strict),
                             "when" not in fr and "cases" not in fr)
                            for key, frs in (rule.get("fields") or {}).items() for fr in as_rules(frs))
        self.defaults = defaults(rule.get("set") or {})
        self.defaults_dirty = defaults_dirty(rule.get("set") or {})
        self.links = tuple(link(spec) for spec in rule.get("references", []))


class MessagePlan:
    """A message rule compiled: the segment plans of each segment name, in rule order."""

    __slots__ = ("name", "rule", "segments", "required_segments", "links", "set")

    def __init__(self, name: str, rule: dict, segments: dict[str, SegmentPlan]) -> None:
        self.name, self.rule = name, rule
        self.segments = {seg: tuple(segments[r] for r in as_rules(names))
                         for seg, names in (rule.get("segments") or {}).items()}
        self.required_segments = tuple(rule.get("required_segments", []))
        self.links = tuple(link(spec) for spec in rule.get("references", []))
        self.set = tuple((type_, tuple((k, copier(v)) for k, v in values.items()), defaults_dirty(values))
                         for type_, values in (rule.get("set") or {}).items())


class Plan:
    """All the layers of one set of mappings, compiled."""

    def __init__(self, m: Mappings) -> None:
        compiler = Compiler(m)
        self.segments: dict[str, SegmentPlan] = {}
        for name, rule in m.segments.items():
            try:
                self.segments[name] = SegmentPlan(name, rule, compiler)
            except (ValueError, KeyError, TypeError) as exc:  # a bad path, key or number in a rule
                raise MappingError(f"segment rule {name}: cannot be compiled: {exc!r}") from exc
        self.messages: dict[str, MessagePlan] = {}
        for name, rule in m.messages.items():
            try:
                self.messages[name] = MessagePlan(name, rule, self.segments)
            except (ValueError, KeyError, TypeError) as exc:
                raise MappingError(f"message {name}: cannot be compiled: {exc!r}") from exc
        self.defaults = {type_: defaults(values or {}) for type_, values in m.settings.get("defaults", {}).items()}
        self.defaults_dirty = {type_: defaults_dirty(values or {})
                               for type_, values in m.settings.get("defaults", {}).items()}
        self.requires = {type_: tuple((path, getter(path)) for path in paths)
                         for type_, paths in m.settings.get("requires", {}).items()}
        self.ids: dict[str, list] = m.settings.get("ids", {})
