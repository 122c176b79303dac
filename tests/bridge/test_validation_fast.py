"""The shape fast path of FHIR validation gives exactly the verdict (and problems) of full validation:
on the FHIR R4 examples, on converter output for the HL7v2 corpus, and on mutations of both."""

from __future__ import annotations

import copy
import inspect
import json
import pkgutil
from contextlib import contextmanager
from functools import cache
from importlib import import_module
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge import validation_shapes
from bridge.convert import convert, load_mappings
from bridge.hl7.parser import split_batch
from bridge.hl7.types import HL7Error
from bridge.validation import _model, problems, validate_resource
from tests.conftest import CORPUS
from tests.ingest_support import hl7_files


@contextmanager
def _full_only():
    with mock.patch.object(validation_shapes, "passes", return_value=False), \
            mock.patch.object(validation_shapes, "learn"):
        yield


def full_problems(resource: object) -> list:
    """What validation said before the fast path: the R4B model on every resource."""
    with _full_only():
        return problems(resource)


def _outcome(resource: object) -> object:
    # fhir_core lets a few errors escape as TypeError/AttributeError; problems() turns them into a
    # problem, and were one to escape both ways must still agree
    try:
        return problems(resource)
    except (TypeError, AttributeError) as exc:
        return type(exc)


def _full_outcome(resource: object) -> object:
    with _full_only():
        return _outcome(resource)


def _fhir_examples() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((CORPUS / "fhir" / "r4-examples").glob("*.json"))]


def _converted() -> list[dict]:
    mappings = load_mappings()
    out = []
    for path in hl7_files(CORPUS):
        try:
            messages = split_batch(path.read_bytes())
        except HL7Error:
            continue
        for message in messages:
            try:
                out.extend(convert(message, mappings).resources)
            except HL7Error:
                continue
    return out


@pytest.fixture(scope="module")
def examples() -> list[dict]:
    found = _fhir_examples()
    assert len(found) > 150
    return found


@pytest.fixture(scope="module")
def converted() -> list[dict]:
    found = _converted()
    assert len(found) > 100
    return found


@pytest.fixture(autouse=True)
def _cold():
    validation_shapes.clear()
    yield
    validation_shapes.clear()


def _agree_cold_and_warm(resources: list[dict]) -> int:
    """Each resource: first seen (full validation, learnt) and seen again (fast path) agree with full."""
    fast = 0
    for resource in resources:
        expected = full_problems(resource)
        assert problems(resource) == expected, resource.get("id")
        if not expected:
            fast += validation_shapes.passes(_model(resource["resourceType"]), resource)
        assert problems(resource) == expected, resource.get("id")
    return fast


def test_fhir_examples_agree(examples):
    valid = sum(not full_problems(r) for r in examples)
    fast = _agree_cold_and_warm(examples)
    assert fast >= 0.95 * valid  # the fast path is really taken, not silently off


def test_converter_output_agrees(converted):
    valid = sum(not full_problems(r) for r in converted)
    fast = _agree_cold_and_warm(converted)
    assert valid and fast == valid


def test_a_cached_shape_never_lends_its_verdict():
    patient = {"resourceType": "Patient", "id": "p1", "birthDate": "1970-01-02",
               "name": [{"family": "Doe", "given": ["Jane"]}]}
    assert problems(patient) == []
    assert problems(dict(patient, id="p2")) == []
    assert validation_shapes.passes(_model("Patient"), dict(patient, id="p2"))  # the same shape, cached
    bad = copy.deepcopy(patient)
    bad["birthDate"] = "1970-02-30"
    found = problems(bad)
    assert found and found == full_problems(bad)
    assert [p.path for p in found] == ["Patient.birthDate"]
    with pytest.raises(HL7Error) as raised:
        validate_resource(bad)
    assert raised.value.location == "Patient.birthDate"
    bad["birthDate"] = "1970-01-02"
    bad["name"][0]["given"] = [""]  # an empty string is not a FHIR string
    assert problems(bad) == full_problems(bad) != []
    bad["name"] = [None, {"family": "Doe"}]  # a null in a list of elements
    assert problems(bad) == full_problems(bad) != []


def test_a_second_choice_variant_or_a_dropped_required_element_is_caught():
    observation = {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},
                   "valueString": "a"}
    assert problems(observation) == []
    assert problems(dict(observation, valueBoolean=True)) == full_problems(dict(observation, valueBoolean=True))
    assert problems(dict(observation, valueBoolean=True))
    dropped = {k: v for k, v in observation.items() if k != "status"}
    assert problems(dropped) == full_problems(dropped) != []


def test_what_model_validators_read_is_kept():
    """Presence and nulls of required and choice elements, empty extension lists, nested resourceType."""
    observation = {"resourceType": "Observation", "id": "o1", "code": {"text": "x"}, "valueString": "a",
                   "_status": {"extension": [{"url": "http://x", "valueCode": "unknown"}]}}
    assert problems(observation) == []
    for changed in ({"_status": {"extension": []}}, {"_status": None}, {"_status": {"id": None}}):
        mutated = dict(observation, **changed)
        assert problems(mutated) == full_problems(mutated) != []
    final = {k: v for k, v in observation.items() if k != "_status"} | {"status": "final"}
    assert problems(final) == []
    assert problems(dict(final, status=None)) == full_problems(dict(final, status=None)) != []
    div = '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'
    nested = [  # (valid, the same with an element dropped that a validator requires)
        ({"resourceType": "Task", "status": "draft", "intent": "order",
          "input": [{"type": {"text": "x"}, "valueString": "a"}]},
         {"resourceType": "Task", "status": "draft", "intent": "order", "input": [{"type": {"text": "x"}}]}),
        ({"resourceType": "Encounter", "status": "planned", "class": {"code": "x"},
          "location": [{"status": "active", "location": {"reference": "Location/1"}}]},
         {"resourceType": "Encounter", "status": "planned", "class": {"code": "x"},
          "location": [{"status": "active"}]}),
        ({"resourceType": "Patient", "text": {"_status": {"extension": [{"url": "http://x", "valueCode": "a"}]},
                                              "div": div}},
         {"resourceType": "Patient", "text": {"div": div}}),
    ]
    for learnt, dropped in nested:
        assert problems(learnt) == []
        assert problems(dropped) == full_problems(dropped) != []
    choice = {"resourceType": "Patient", "deceasedBoolean": True}
    assert problems(choice) == []
    assert problems(dict(choice, deceasedBoolean=None)) == []  # deceased[x] is optional
    assert problems(dict(choice, deceasedDateTime="2020")) == full_problems(dict(choice, deceasedDateTime="2020")) != []
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": {"resourceType": "Patient", "birthDate": "1970"}}]}
    assert problems(bundle) == []
    bundle["entry"][0]["resource"]["resourceType"] = "Organization"
    assert problems(bundle) == full_problems(bundle) != []


def test_every_r4b_model_is_understood():
    """A new fhir_core/fhir.resources validator would make its classes fall back to full validation
    for ever; this says so instead of letting the fast path quietly stop working."""
    from fhir.resources import R4B
    from fhir_core.fhirabstractmodel import FHIRAbstractModel

    count = 0
    for info in pkgutil.iter_modules(R4B.__path__):
        module = import_module(f"fhir.resources.R4B.{info.name}")
        for cls in vars(module).values():
            if inspect.isclass(cls) and issubclass(cls, FHIRAbstractModel) and cls.__module__ == module.__name__:
                validation_shapes._fields_of(cls)
                count += 1
    assert count > 500


def test_the_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(validation_shapes, "MAX_SHAPES", 3)
    fields = [("id", "p"), ("gender", "male"), ("active", True), ("birthDate", "1970")]
    for n in range(8):  # top-level keys in another order: another shape each time
        problems(dict([("resourceType", "Patient"), *fields[n % 4:], *fields[: n % 4]], language=f"x{n}"))
        assert 1 <= validation_shapes._learnt <= 3


# --- mutations -------------------------------------------------------------------------------------

BAD_VALUES = ["", " ", " x", "x  y", "1970-13-01", "2020-02-30", "2020-01-01T10:00", "not an id!",
              "x" * 300, 0, -1, 1.5, True, None, [], {}, ["x"], [None], {"x": 1}, "\x00", "Organization"]
CHOICES = [("valueBoolean", True), ("valueString", "x"), ("effectiveDateTime", "2020-01-01"),
           ("deceasedBoolean", False), ("multipleBirthInteger", 2), ("onsetString", "x")]


def _spots(node: object, out: list) -> list:
    """Every (container, key or index) in a JSON tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((node, key))
            _spots(value, out)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.append((node, index))
            _spots(value, out)
    return out


def _mutate(resource: dict, data: st.DataObject) -> dict:
    mutated = copy.deepcopy(resource)
    spots = _spots(mutated, [])
    container, key = data.draw(st.sampled_from(spots))
    value = container[key]
    how = data.draw(st.sampled_from(["value", "drop", "unknown", "choice", "wrap", "unwrap", "null_in_list"]))
    if how == "value":
        container[key] = data.draw(st.sampled_from(BAD_VALUES))
    elif how == "drop":
        del container[key]
    elif how == "unknown":
        target = value if isinstance(value, dict) else mutated
        target["zzUnknown"] = "x"
    elif how == "choice":
        target = value if isinstance(value, dict) else mutated
        name, choice = data.draw(st.sampled_from(CHOICES))
        target[name] = choice
    elif how == "wrap":
        container[key] = [value]
    elif how == "unwrap":
        container[key] = value[0] if isinstance(value, list) and value else value
    elif isinstance(value, list):
        value.insert(data.draw(st.integers(0, len(value))), None)
    return mutated


@cache
def _pool() -> list[dict]:
    """Valid resources to mutate: a few converter outputs of each type, every 8th FHIR example."""
    converted = _converted()
    kinds = {}
    for resource in converted:
        kinds.setdefault(resource["resourceType"], []).append(resource)
    pool = [r for group in kinds.values() for r in group[:3]]
    examples = [r for r in _fhir_examples() if not full_problems(r)]
    return pool + examples[::8]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutations_agree_warm_and_cold(data):
    original = data.draw(st.sampled_from(_pool()))
    mutated = _mutate(original, data)
    expected = _full_outcome(mutated)

    validation_shapes.clear()
    assert problems(original) == []  # learnt: the mutation now meets a cached shape
    assert _outcome(mutated) == expected

    validation_shapes.clear()
    assert _outcome(mutated) == expected  # cold: full validation, learnt if valid
    assert _outcome(mutated) == expected  # then from its own cached shape
    assert problems(original) == []


_any_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["Patient", "Observation", "Encounter", "Immunization"]), st.data())
def test_any_value_in_any_element_gives_problems_not_an_exception(res_type, data):
    """Ingest and the API must get problems back, never fhir_core's occasional TypeError/AttributeError."""
    fields = sorted(_model(res_type).model_fields)
    resource = {"resourceType": res_type, "id": "x",
                **data.draw(st.dictionaries(st.sampled_from(fields), _any_json, max_size=4))}
    found = problems(resource)
    assert isinstance(found, list) and all(p.path.startswith(res_type) or p.path == "resourceType" for p in found)


def test_a_contained_resource_without_a_string_type_is_a_problem():
    found = problems({"resourceType": "Patient", "id": "p", "contained": [{"resourceType": 5}]})
    assert found and found[0].path == "Patient" and "TypeError" in found[0].message
