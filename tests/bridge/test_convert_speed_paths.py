"""The shortcuts that make converting a feed cheaper never show: delimiters read once per
declaration, values copied by compiled builders, date/times converted once per text, the one-value
path of a kept field, references settled without a call per container.  Each would fail here if it
gave anything but what the plain way gives.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.convert import convert, load_mappings
from bridge.convert.datatypes import _system_key, formats
from bridge.convert.paths import builder, copier, copy_json, flatten
from bridge.convert.values import Kept
from bridge.hl7.delimiters import Delimiters, read_delimiters
from bridge.hl7.parser import parse
from bridge.hl7.types import HL7Error

MAPPINGS = load_mappings()


# -- delimiters read once per declaration ------------------------------------------------------------

def test_the_same_declaration_gives_the_same_delimiters_object():
    first = parse(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|1\r")
    second = parse(b"MSH|^~\\&|X|Y|Z|W|20240102||ADT^A01|2|P|2.5\rPID|2\r")
    assert first.delimiters is second.delimiters
    assert all(seg.delimiters is first.delimiters for seg in first.segments + second.segments)
    other = parse(b"MSH|^~\\&#|A|B|C|D|20240101||ADT^A01|1|P|2.7\r")
    assert other.delimiters is not first.delimiters
    assert other.delimiters == Delimiters(truncation="#")


def test_warnings_of_a_declaration_are_a_new_list_each_time():
    line = "MSH|^~\\\\&|A"  # a doubled escape character: read as one, with a warning
    delimiters, warnings = read_delimiters(line)
    assert delimiters == Delimiters()
    assert len(warnings) == 1 and "doubled escape" in warnings[0]
    warnings.append("changed by a caller")
    again, warnings_again = read_delimiters(line)
    assert again is delimiters
    assert warnings_again == warnings[:1]


def test_a_refused_declaration_is_refused_every_time_and_lenient_reading_is_apart():
    line = "MSH|^~|A"
    for _ in range(2):
        with pytest.raises(HL7Error, match="2 encoding characters"):
            read_delimiters(line)
    lenient, warnings = read_delimiters(line, strict=False)
    assert lenient.component == "^" and lenient.repetition == "~"
    assert warnings and "defaults used" in warnings[0]
    with pytest.raises(HL7Error):
        read_delimiters(line)
    for _ in range(2):
        with pytest.raises(HL7Error, match="not usable"):
            read_delimiters("MSHA^~\\&A")


def test_the_segment_name_of_a_declaration_is_in_its_warnings():
    _, msh = read_delimiters("MSH|^~|A", strict=False)
    _, bhs = read_delimiters("BHS|^~|A", strict=False)
    assert msh[0].startswith("MSH-2") and bhs[0].startswith("BHS-2")


# -- copies by compiled builders ----------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=30,
)


def _same(a, b) -> bool:  # type: ignore[no-untyped-def]
    """Equal, with the same key order and the same types (True is not 1, 1.0 is not 1)."""
    return json.dumps(a) == json.dumps(b) and _types(a) == _types(b)


def _types(value):  # type: ignore[no-untyped-def]
    if isinstance(value, dict):
        return [(k, _types(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [_types(v) for v in value]
    return type(value).__name__


def _containers(value) -> list:  # type: ignore[no-untyped-def]
    if isinstance(value, dict):
        return [value] + [c for v in value.values() for c in _containers(v)]
    if isinstance(value, list):
        return [value] + [c for v in value for c in _containers(v)]
    return []


@settings(max_examples=200, deadline=None)
@given(JSON)
def test_a_builder_makes_what_copy_json_makes_with_containers_of_its_own(value):
    flat = flatten(value)
    assert flat is not None
    shape, leaves = flat
    made = builder(shape)(*leaves)
    assert _same(made, copy_json(value))
    again = builder(shape)(*leaves)
    assert _same(again, made)
    ours = {id(c) for c in _containers(value)}
    assert not ours & {id(c) for c in _containers(made)}
    assert not {id(c) for c in _containers(again)} & {id(c) for c in _containers(made)}


@settings(max_examples=200, deadline=None)
@given(JSON)
def test_copier_and_kept_copy_deeply_whatever_the_value(value):
    expected = json.dumps(value)
    copy = copier(value)
    kept = Kept(value)
    first, second = copy(), kept()
    assert _same(first, value) and _same(second, value)
    for made in (first, second):  # what a caller does to its copy is its own
        if isinstance(made, dict):
            made["changed"] = 1
        elif isinstance(made, list):
            made.append(1)
        for container in _containers(made)[1:]:
            container.clear()
    assert json.dumps(copy()) == expected == json.dumps(kept()) == json.dumps(value)


def test_kept_is_a_snapshot_of_the_value_when_it_was_kept():
    value = {"coding": [{"system": "s", "code": "c"}], "text": "t"}
    kept = Kept(value)
    value["coding"][0]["code"] = "changed"
    value["text"] = "changed"
    value["extra"] = []
    assert kept() == {"coding": [{"system": "s", "code": "c"}], "text": "t"}
    kept()["coding"].append({"code": "more"})
    assert kept() == {"coding": [{"system": "s", "code": "c"}], "text": "t"}


def test_values_builders_do_not_take_are_copied_the_general_way():
    odd = {1: ["a"], "b": {"c": [1, 2]}}  # a key that is not text cannot be written as code
    assert flatten(odd) is None
    assert copier(odd)() == odd and copier(odd)()[1] is not odd[1]
    large = {"items": list(range(1000))}
    assert flatten(large) is None
    copy = Kept(large)()
    assert copy == large and copy["items"] is not large["items"]
    deep: dict = {"leaf": "x"}
    for _ in range(120):  # 240 brackets deep: more than Python's parser takes in one expression
        deep = {"a": [deep]}
    assert flatten(deep) is None
    assert copier(deep)() == deep and Kept(deep)() == deep


def test_keys_that_look_like_code_stay_keys():
    value = {"a'b": 1, 'c"d': [2], "\\": {"})": None}, "__import__('os')": "x"}
    shape, leaves = flatten(value)
    assert builder(shape)(*leaves) == value
    assert list(builder(shape)(*leaves)) == list(value)


# -- date/times converted once per text ------------------------------------------------------------

def test_a_date_time_converted_again_is_the_same_and_a_malformed_one_raises_every_time():
    text, _ = formats(MAPPINGS)
    dtm = text["DTM"]
    assert dtm("20240301101500", "PID-7") == dtm("20240301101500", "EVN-2") == "2024-03-01T10:15:00Z"
    assert dtm("202403011015+0200", "X") == "2024-03-01T10:15:00+02:00"
    for where in ("PID-7", "OBX-14"):  # a malformed text is not kept: each error names its own place
        with pytest.raises(HL7Error) as caught:
            dtm("20241301", where)
        assert caught.value.location == where


def test_a_time_kept_by_one_set_of_mappings_is_converted_by_the_time_zone_of_another(tmp_path):
    (tmp_path / "zone.yaml").write_text("settings:\n  timezone: America/New_York\n")
    local = load_mappings(tmp_path)
    utc_text, _ = formats(MAPPINGS)
    local_text, _ = formats(local)
    assert utc_text["DTM"]("20240301101500", "X") == "2024-03-01T10:15:00Z"
    assert local_text["DTM"]("20240301101500", "X") == "2024-03-01T10:15:00-05:00"
    assert utc_text["DTM"]("20240301101500", "X") == "2024-03-01T10:15:00Z"


# -- an HD's key for the systems kept ---------------------------------------------------------------

@given(st.lists(st.lists(st.sampled_from(["", " a ", "HOSP", "1.2.3", "ISO"]), max_size=3), max_size=5))
def test_the_system_key_is_the_first_subcomponents_of_three_components(comps):
    assert _system_key(comps) == tuple(subs[0].strip() if subs else "" for subs in comps[:3])


# -- whole conversions ---------------------------------------------------------------------------------

def _message(control: str, pv1_7: str, obx5: str = "5.5") -> bytes:
    return (
        f"MSH|^~\\&|LAB|GOOD HEALTH|BRIDGE|PARTNER|20240301101500||ORU^R01|{control}|P|2.5.1\r"
        f"PID|1||SPEED{control}^^^HOSP^MR||Doe^Jane||19800101|F\r"
        f"PV1|1|I|WARD^101^A||||{pv1_7}\r"
        f"OBR|1|PL{control}|FI{control}|718-7^Hemoglobin^LN|||20240301101500\r"
        f"OBX|1|NM|718-7^Hemoglobin^LN||{obx5}|g/dL^^UCUM|||||F|||20240301101500\r"
        f"OBX|2|NM|4544-3^Hematocrit^LN||{obx5}|%^^UCUM|||||F|||20240301101500\r"
        f"OBX|3|CWE|5778-6^Color^LN||YEL^Yellow^L~RED^Red^L||||||F\r"
    ).encode()


def _dump(conversion) -> str:  # type: ignore[no-untyped-def]
    return json.dumps([conversion.resources, conversion.unmapped, conversion.warnings])


@pytest.mark.parametrize("id_key", [None, b"k" * 32])
def test_a_feed_converts_as_each_message_would_alone(id_key):
    doctors = ["D1^Alaz^Mohammed^^^Dr.^MD", "D2^Woolfson^Kathleen", "D1^Alaz^Mohammed^^^Dr.^MD~D3^Condoc^leen"]
    feed = [_message(f"SP{i}", doctors[i % 3], f"{i % 2}.5") for i in range(9)]
    kept = load_mappings()  # what this one keeps fills up over the feed
    for raw in feed + feed[::-1]:
        conversion = convert(raw, kept, id_key)
        for resource in conversion.resources:  # what a caller may do to its results
            resource["changed"] = True
            for value in resource.values():
                if isinstance(value, list):
                    value.append("changed")
        assert _dump(convert(raw, kept, id_key)) == _dump(convert(raw, load_mappings(), id_key))


def _header():  # type: ignore[no-untyped-def]
    return parse(b"MSH|^~\\&|LAB|GOOD HEALTH|BRIDGE|PARTNER|20240301101500||ORU^R01|DROP1|P|2.5.1\r").msh


@pytest.mark.parametrize("dirty", [False, True])
def test_a_dropped_reference_leaves_no_empty_wrapper(dirty):
    # References settled in place: one to a dropped resource goes, and so does every container it
    # leaves empty; containers and text around it stay as they were, in their places.
    from bridge.convert.engine import Record
    from bridge.convert.ids import Ref, assign_ids
    from bridge.hl7.parser import header_of

    gone = Record("Practitioner", "PV1-7:Practitioner", "PV1-7", None)
    gone.dropped = True
    kept_one = Record("Practitioner", "PV1-8:Practitioner", "PV1-8", None)
    kept_one.body["name"] = [{"family": "Woolfson"}]
    encounter = Record("Encounter", "PV1", "PV1", None)
    encounter.dirty = dirty
    encounter.body.update({
        "status": "unknown",
        "participant": [
            {"individual": Ref(gone)},
            {"type": [{"coding": [{"code": "ATND"}]}], "individual": Ref(gone)},
            {"individual": Ref(kept_one), "period": {"start": "2024"}},
        ],
        "location": [{"location": {"reference": Ref(gone)}}],
        "note": [[], {"text": [Ref(gone)]}, "kept"],
    })
    encounter.ref_keys.update({"participant", "location", "note"})
    resources = assign_ids([encounter, kept_one], header_of(_header()), MAPPINGS.settings["ids"])
    body = resources[0]
    practitioner = f"Practitioner/{kept_one.id}"
    assert list(body) == ["resourceType", "id", "status", "participant", "note"]
    assert body["participant"] == [
        {"type": [{"coding": [{"code": "ATND"}]}]},
        {"individual": {"reference": practitioner}, "period": {"start": "2024"}},
    ]
    assert body["note"] == ["kept"]
