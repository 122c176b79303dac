"""Value rules compiled: what a rule of the segment or datatype layer says about one HL7 value
(its datatype, vocabulary, ``as``, ``fixed``) is decided once, when the mappings are loaded, into a
function of the value.  The composites of the datatype layer become loops over precomputed parts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import primitives as p
from .datatypes import (
    FINISH,
    FINISH_DROPS,
    SILENT,
    Components,
    TextFormat,
    concept_vocabulary,
    formats,
    is_empty,
    translator,
)
from .loader import MappingError, Mappings
from .paths import Setter, compile_path, copier, copy_json, has_empty, prune, setter

# A compiled rule: one value (a repetition, component or part) -> its FHIR value or None.  The
# warnings list is the message's; ``where`` names the value for errors and warnings.
ValueFn = Callable[[Components, list[str], str], Any]
PartFn = Callable[[Components, dict, list[str], str], None]
# A datatype part: (first component it reads, subcomponent index, text format or None for a string,
# setter, location suffix or None, the part's function when it is not a text read straight away,
# the element a text goes to when its path is one plain element, the vocabulary's translation).
Part = tuple[int, int, TextFormat | None, Setter, str | None, PartFn | None, str | None, Callable | None]


def _as_list(rules: Any) -> list[dict]:
    return rules if isinstance(rules, list) else [rules]


class Compiler:
    """Compiles the value rules of one set of mappings; a datatype is compiled once and shared."""

    def __init__(self, m: Mappings) -> None:
        self.mappings = m
        self.text, self.composite = formats(m)
        self.datatypes: dict[str, ValueFn] = {}

    def value(self, rule: dict, checked: bool = False) -> ValueFn:
        """One repetition (or component) converted by a rule's datatype, vocabulary and ``as``;
        ``checked``: the caller has made sure the value is not empty."""
        datatype = rule.get("datatype", "ST")
        vocabulary = rule.get("vocabulary")
        if datatype in self.text or datatype in self.composite:
            translate = None
            if vocabulary is not None:
                translate = translator(str(vocabulary), rule.get("as") or "code", self.mappings)
            if datatype in self.text:
                return _text_value(self.text[datatype], translate)
            return _composite_format_value(self.composite[datatype], translate)
        composite = self.datatype(datatype)
        if vocabulary is None and checked:
            return composite  # None already when nothing was mapped
        if vocabulary is None:
            def value(comps: Components, warnings: list[str], where: str) -> Any:
                if is_empty(comps):
                    return None
                return composite(comps, warnings, where)  # None already when nothing was mapped
            return value
        on_concept = concept_vocabulary(str(vocabulary), self.mappings)

        def coded_value(comps: Components, warnings: list[str], where: str) -> Any:
            if not checked and is_empty(comps):
                return None
            value = composite(comps, warnings, where)
            if value and isinstance(value, dict) and "coding" in value:
                value = on_concept(value)
            return value or None
        return coded_value

    def datatype(self, name: str) -> ValueFn:
        """A composite datatype of the datatype layer: its parts, then its finishing touch."""
        known = self.datatypes.get(name)
        if known is not None:
            return known
        # A datatype may (indirectly) contain itself: parts look it up when called, not now.
        self.datatypes[name] = lambda comps, warnings, where: self.datatypes[name](comps, warnings, where)
        spec = self.mappings.datatypes[name]
        parts = tuple(self._part(name, key, rule) for key, rules in spec.items()
                      if key not in ("finish", "description") for rule in _as_list(rules))
        finish = None
        if spec.get("finish"):
            if spec["finish"] not in FINISH:
                raise MappingError(f"datatype {name}: finish {spec['finish']} is not one of {', '.join(FINISH)}")
            finish = FINISH[spec["finish"]]

        clean = self.clean(name)
        # The parts a value of n components can have, in rule order (a value ends before most parts).
        last = max((part[0] for part in parts), default=0)
        upto = [tuple(part for part in parts if part[0] <= n) for n in range(last + 1)]

        def composite(comps: Components, warnings: list[str], where: str) -> dict | None:
            out: dict[str, Any] = {}
            present = len(comps)
            for c, index, text, put, suffix, other, element, translate in upto[present if present < last else last]:
                if other is not None:
                    other(comps, out, warnings, where)
                    continue
                subs = comps[c - 1]
                if index < len(subs):  # a text part, read here: most parts are
                    value = subs[index].strip()
                    if value:
                        if text is not None:
                            value = text(value, where if suffix is None else where + suffix)
                            if value is None:
                                continue
                        if translate is not None:
                            value = translate(str(value), warnings, where + suffix)
                            if value is None:
                                continue
                        if element is None:
                            put(out, value)
                        elif element not in out:  # a text is never merged: the first one stays
                            out[element] = value
            if finish is not None:
                out = finish(out, comps)
                if not clean:
                    out = prune(out)  # a finish may leave empty parts behind
            return out or None  # parts are non-empty already: the resource is pruned once, at the end

        self.datatypes[name] = composite
        return composite

    # -- which values need no pruning --------------------------------------------------------------
    # A finished datatype is pruned in case its parts left an empty element behind.  Most cannot: a
    # text part puts only non-empty text, so emptiness comes from placeholders (``coding[1]`` makes a
    # ``coding[0]``), constants, vocabulary entries or parts that are not clean themselves.

    def clean(self, name: str, seen: frozenset[str] = frozenset()) -> bool:
        """Whether datatype ``name`` (finished) never holds an empty element."""
        spec = self.mappings.datatypes[name]
        finish = spec.get("finish")
        dropped = FINISH_DROPS.get(finish) if finish else frozenset()
        if dropped is None or name in seen:
            return False
        seen = seen | {name}
        for key, rules in spec.items():
            if key in ("finish", "description"):
                continue
            for rule in _as_list(rules):
                steps = compile_path(rule["path"])
                if any(index and (i or step not in dropped) for i, (step, index, _) in enumerate(steps)):
                    return False  # a placeholder the finish does not drop
                if not self._clean_value(rule, seen):
                    return False
        return True

    def value_clean(self, rule: dict) -> bool:
        """Whether the values a rule converts never hold an empty element."""
        return self._clean_value(rule, frozenset())

    def _clean_value(self, rule: dict, seen: frozenset[str]) -> bool:
        fixed = rule.get("fixed", {})
        if not isinstance(fixed, dict | list) or has_empty(fixed):
            return False
        vocabulary = rule.get("vocabulary")
        if vocabulary is not None and not _clean_table(self.mappings.vocabulary[str(vocabulary)]):
            return False
        datatype = rule.get("datatype", "ST")
        return datatype in self.text or datatype in self.composite or self.clean(datatype, seen)

    def _part(self, datatype: str, key: str, rule: dict) -> Part:
        """One key of a datatype: select the part ("3", "1.1", "2-4" or "*"), convert it, put it."""
        put = setter(rule["path"])
        suffix = f".{key}"
        fixed = fixer(rule) if "fixed" in rule else None
        component, subcomponent = _numbers(datatype, key)
        name = rule.get("datatype", "ST")
        text = self.text.get(name)
        vocabulary = rule.get("vocabulary")
        if component is not None and text is not None and fixed is None:
            # the common part: a text read straight from its place, converted by its format (a
            # string needs none: it is the stripped text itself), maybe through a vocabulary
            translate = None if vocabulary is None else translator(str(vocabulary), rule.get("as") or "code",
                                                                   self.mappings)
            steps = compile_path(rule["path"])
            element = steps[0][0] if len(steps) == 1 and not steps[0][2] and translate is None else None
            return (component, 0 if subcomponent is None else subcomponent - 1,
                    None if text is p.to_string else text, put,
                    None if name in SILENT and translate is None else suffix, None, element, translate)
        select = _selector(key, component, subcomponent)
        convert = self.value(rule)

        def part(comps: Components, out: dict, warnings: list[str], where: str) -> None:
            selected = select(comps)
            if selected is None:
                return
            value = convert(selected, warnings, where + suffix)
            if value is not None:
                put(out, value if fixed is None else fixed(value))

        start = component if component is not None else int(key.split("-")[0]) if "-" in key else 0
        return (start, 0, None, put, suffix, part, None, None)


class Kept:
    """A value converted once and kept for the next time the same text comes (see
    ``rules.field_rule``), handed out as copies: each caller fills, merges and prunes containers of
    its own.  Called, a copy; the copy is planned (:func:`paths.copier`: the compiled builder of the
    value's shape, given its leaves) when it is first asked for, so that a value seen only once costs
    no more than a snapshot."""

    __slots__ = ("value", "copy")

    def __init__(self, value: Any) -> None:
        self.value = copy_json(value)  # a snapshot: the value itself is handed out and changed
        self.copy: Callable[[], Any] | None = None

    def __call__(self) -> Any:
        if self.copy is None:
            self.copy = copier(self.value)
        return self.copy()


def _text_value(text: TextFormat, translate: Callable | None) -> ValueFn:
    def value(comps: Components, warnings: list[str], where: str) -> Any:
        if not comps or not comps[0]:
            return None
        first_text = comps[0][0].strip()
        if not first_text:
            return None
        value = text(first_text, where)
        if value is not None and translate is not None:
            value = translate(str(value), warnings, where)
        return value
    return value


def _composite_format_value(fmt: Callable[[Components, str], Any], translate: Callable | None) -> ValueFn:
    def value(comps: Components, warnings: list[str], where: str) -> Any:
        value = fmt(comps, where)
        if value is not None and translate is not None:
            value = translate(str(value), warnings, where)
        return value
    return value


def _numbers(datatype: str, key: str) -> tuple[int | None, int | None]:
    """(component, subcomponent) of a key "3" or "1.1"; (None, None) for "2-4" and "*"."""
    try:
        if key == "*":
            return None, None
        if "-" in key:
            low, high = (int(x) for x in key.split("-"))  # two numbers, or the key is refused
            return None, None
        component, _, subcomponent = key.partition(".")
        return int(component), (int(subcomponent) if subcomponent else None)
    except ValueError:
        raise MappingError(f"datatype {datatype}: key {key!r} is not \"3\", \"1.1\", \"2-4\" or \"*\"") from None


def _selector(key: str, component: int | None, subcomponent: int | None) -> Callable[[Components], Components | None]:
    """The part of a value a datatype key names."""
    if key == "*":
        return lambda comps: comps
    if component is None:
        low, high = (int(x) for x in key.split("-"))
        return lambda comps: comps[low - 1 : high] or None
    c = component
    if subcomponent is not None:
        s = subcomponent

        def select_subcomponent(comps: Components) -> Components | None:
            if c > len(comps):
                return None
            subs = comps[c - 1]
            return [[subs[s - 1]]] if s <= len(subs) else None
        return select_subcomponent

    def select_component(comps: Components) -> Components | None:
        if c > len(comps):
            return None
        return [[x] for x in comps[c - 1]]  # a component's subcomponents are the components of its datatype
    return select_component


def fixer(rule: dict) -> Callable[[Any], Any]:
    """``fixed`` (and ``element``) around a value: the value as the ``element`` of a copy of
    ``fixed``, or a dict value merged into one; another value stays as it is."""
    element, fixed = rule.get("element"), copier(rule.get("fixed", {}))

    def with_fixed(value: Any) -> Any:
        base = fixed()
        if element:
            base[element] = value
            return base
        if isinstance(value, dict):
            base.update(value)
            return base
        return value

    return with_fixed


def _clean_table(table: dict) -> bool:
    """Whether a vocabulary table only ever gives non-empty codes, systems and displays."""
    entries = list((table.get("map") or {}).values())
    if table.get("default") is not None:
        entries.append(table["default"])
    for entry in entries:
        if isinstance(entry, dict):
            code = entry.get("code")
            if not (isinstance(code, str) and code or isinstance(code, int | float) and not isinstance(code, bool)):
                return False
            if any(not (isinstance(entry[k], str) and entry[k]) for k in ("system", "display") if k in entry):
                return False
        elif not isinstance(entry, bool) and str(entry) == "":
            return False
    texts = [table[k] for k in ("system", "target") if table.get(k)] + list((table.get("display") or {}).values())
    return all(isinstance(t, str) for t in texts)


