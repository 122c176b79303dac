"""search_index.extract against the obvious walk over PARAMETERS (written out below): the same sorted
rows, or the same exception, for generated resources (random nesting, lists, None, numbers, bad
dates), for generated parameter tables, and for the corpus's FHIR resources.  extract compiles each
type into a plan and caches date tokens; this keeps it to the plain semantics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge import search_index
from bridge.fhir_dates import DateValueError, value_range

# -- the reference: each parameter's values collected path by path, then indexed by kind ------------


def _collect(value: Any, path: list[str], out: list[Any]) -> None:
    if isinstance(value, list):
        for item in value:
            _collect(item, path, out)
    elif not path:
        if value is not None:
            out.append(value)
    elif isinstance(value, dict):
        _collect(value.get(path[0]), path[1:], out)


def _tokens(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        if "coding" in value:
            for coding in value.get("coding") or []:
                yield from _tokens(coding)
            return
        code = value.get("code", value.get("value"))
        if isinstance(code, str):
            yield code
            yield f"{value.get('system', '')}|{code}"


def reference_extract(resource: dict) -> list[tuple[str, str]]:
    rows = set()
    for name, (kind, paths) in search_index.PARAMETERS.get(resource.get("resourceType", ""), {}).items():
        values: list[Any] = []
        for path in paths:
            _collect(resource, path.split("."), values)
        for value in values:
            if kind == "token":
                rows.update((name, t) for t in _tokens(value))
            elif kind == "string" and isinstance(value, str):
                rows.add((name, value.lower()))
            elif kind == "date":
                try:
                    found = value_range(value)
                except DateValueError:
                    continue
                rows.add((name, f"{found.low}/{found.high}"))
            elif kind == "reference" and isinstance(value, dict):
                ref = value.get("reference")
                if isinstance(ref, str) and ref.count("/") == 1:
                    rows.add((name, ref))
    return sorted(rows)


def outcome(extract, resource: Any) -> tuple[str, Any]:
    try:
        return "rows", extract(resource)
    except Exception as e:  # the same kind of failure counts as the same outcome
        return "raises", type(e)


def assert_same(resource: Any) -> None:
    expected = outcome(reference_extract, resource)
    assert outcome(search_index.extract, resource) == expected
    assert outcome(search_index.extract, resource) == expected  # again: date tokens now cached


# -- generated resources ---------------------------------------------------------------------------
# Values are shaped by the parameter paths (so they land where they are indexed), with lists, lists of
# lists, None and stray values of other types at every step, and the elements each kind reads.

DATES = ["2025", "2025-03", "2025-03-04", "2025-03-04T10:00", "2025-03-04T10:00:00Z", "2025-03-04T10:00:00.1234567+01:00",
         "2024-02-29", "2025-02-29", "0000", "2025-13", "2025-03-04T24:00", "2025-03-04T10:00+14:30", "2026", "x"]
TEXTS = ["Smith", "ÉLODIE", "", "http://loinc.org", "8867-4", "final"]
REFERENCES = ["Patient/1", "Patient/1/_history/2", "Practitioner/x", "a/b/", "/", "x"]
# odd values: one branch (mapped, as one_of would flatten them into many), so that most values drawn
# are what the kinds read
odd = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False), st.text(max_size=3),
                st.just([]), st.just({})).map(lambda v: v)
text = st.one_of(st.sampled_from(DATES + TEXTS), odd)
reference = st.fixed_dictionaries({"reference": st.one_of(st.sampled_from(REFERENCES), odd)})
date = st.one_of(st.sampled_from(DATES), odd)
period = st.one_of(st.fixed_dictionaries({"start": date}, optional={"end": date}),
                   st.fixed_dictionaries({"end": date}))
coding = st.one_of(st.fixed_dictionaries({"code": text}, optional={"system": text, "value": text}),
                   st.fixed_dictionaries({"value": text}, optional={"system": text}))
concept = st.fixed_dictionaries({"coding": st.one_of(st.lists(st.one_of(coding, text), max_size=3), text,
                                                     st.lists(coding, max_size=2).map(lambda c: [{"coding": c}]))},
                                optional={"text": text})
indexable = st.one_of(text, text, date, coding, concept, reference, period)


def tree(table: dict[str, tuple[str, list[str]]]) -> dict[str, dict]:
    """The table's paths as nested dicts, segment by segment."""
    root: dict[str, dict] = {}
    for _, paths in table.values():
        for path in paths:
            level = root
            for segment in path.split("."):
                level = level.setdefault(segment, {})
    return root


def lists_of(one: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(one, st.lists(one, min_size=1, max_size=3),
                     st.lists(st.lists(one, min_size=1, max_size=2), min_size=1, max_size=2))


def shaped(children: dict[str, dict]) -> st.SearchStrategy:
    """A value at a tree node, alone or in lists or lists of lists: something indexable, or, at a node
    with children, mostly an element holding some of them (a node can be one path's end and another's
    step)."""
    if not children:
        return lists_of(indexable)
    element = st.fixed_dictionaries({}, optional={key: shaped(below) for key, below in children.items()})
    return lists_of(st.one_of(element, element, indexable.map(lambda v: v)))


def resources_of(res_type: Any, table: dict) -> st.SearchStrategy:
    return st.fixed_dictionaries({"resourceType": st.just(res_type)},
                                 optional={key: shaped(below) for key, below in tree(table).items()})


TYPES = sorted(search_index.PARAMETERS)
resources = st.one_of(*[resources_of(t, search_index.PARAMETERS[t]) for t in TYPES],
                      st.builds(lambda t, body: {**body, "resourceType": t},
                                st.one_of(st.sampled_from(["Unknown", ""]), st.integers(0, 2), st.just(["Patient"])),
                                st.dictionaries(st.sampled_from(["code", "subject", "name"]), indexable, max_size=3)))


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(resources)
def test_extract_is_the_plain_walk_over_parameters(resource: dict) -> None:
    assert_same(resource)


# a parameter table of its own: paths sharing prefixes, a path that is another's prefix, a path two
# parameters or two kinds share, a kind extract does not index
tables = st.dictionaries(
    st.sampled_from(["p", "q", "r", "s"]),
    st.tuples(st.sampled_from(["token", "string", "date", "reference", "number"]),
              st.lists(st.lists(st.sampled_from(["a", "b", "start"]), min_size=1, max_size=3).map(".".join),
                       max_size=3)),
    min_size=1, max_size=4)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables.flatmap(lambda table: st.tuples(st.just(table), resources_of("ZzGenerated", table))))
def test_extract_follows_any_parameter_table(case: tuple[dict, dict]) -> None:
    table, resource = case
    # as a site or test extending PARAMETERS does: change it and clear the compiled plans
    search_index.PARAMETERS["ZzGenerated"] = table
    search_index._COMPILED.pop("ZzGenerated", None)
    try:
        assert_same(resource)
    finally:
        del search_index.PARAMETERS["ZzGenerated"]
        search_index._COMPILED.pop("ZzGenerated", None)


@pytest.mark.parametrize("resource", [
    {"resourceType": "Observation", "code": {"coding": 5}},  # TypeError in both
    {"resourceType": "Observation", "code": {"coding": "ab"}, "category": {"coding": {"k": 1}}},  # text walked
    {"resourceType": "Observation", "code": {"code": None, "value": "v"}, "status": [[["final"]]]},
    {"resourceType": "Encounter", "period": [{"start": "2025-03-04", "end": "2025-03-01"}, {}, {"end": 5}]},
    {"resourceType": "Patient", "name": [[{"given": [["Ann", ["B"]], None], "family": 3}], "x"], "gender": [[]]},
    {"resourceType": ["Patient"]},
    [],
    None,
])
def test_odd_inputs_fail_or_not_alike(resource: Any) -> None:
    assert_same(resource)


def test_the_date_cache_stays_right_when_cleared_at_its_bound(monkeypatch) -> None:
    monkeypatch.setattr(search_index, "_DATE_TEXTS_MAX", 2)
    for day in ["2025-03-04", "2025-03-05", "x", "2025-03-04", "2025-02-30", "2025-03-05"] * 2:
        assert_same({"resourceType": "Encounter", "period": {"start": day}})
        assert_same({"resourceType": "Observation", "issued": day, "effectivePeriod": {"end": day}})
    assert len(search_index._DATE_TEXTS) <= 2


def corpus_resources(corpus: Path) -> Iterator[dict]:
    for path in sorted((corpus / "fhir").rglob("*.json")):
        try:
            document = json.loads(path.read_bytes())
        except ValueError:
            continue
        found = [document] if isinstance(document, dict) else []
        while found:
            resource = found.pop()
            yield resource
            if resource.get("resourceType") == "Bundle":
                found += [e["resource"] for e in resource.get("entry") or []
                          if isinstance(e, dict) and isinstance(e.get("resource"), dict)]


def test_corpus_resources_index_as_the_plain_walk_does(corpus: Path) -> None:
    checked = rows = 0
    for resource in corpus_resources(corpus):
        expected = reference_extract(resource)
        assert search_index.extract(resource) == expected, resource.get("id")
        checked, rows = checked + 1, rows + len(expected)
    assert checked > 1000 and rows > 1000  # the corpus was read, and has indexed types
