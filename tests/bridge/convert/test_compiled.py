"""The mappings compiled at load time: the compiled pieces do what the plain ones do, and rules that
can leave empty elements behind still have them dropped."""

from __future__ import annotations

import json
import uuid
from hashlib import sha256
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.convert import MappingError, convert, load_mappings
from bridge.convert.ids import Ref, make_id
from bridge.convert.paths import copier, copy_json, has_empty, prune, set_path, setter
from bridge.convert.rules import field_values, first_value
from bridge.convert.values import Compiler
from bridge.hl7.delimiters import Delimiters
from bridge.hl7.parser import NULL, Segment
from bridge.hl7.types import HL7Error

MAPPINGS = load_mappings()

# A site whose rules can leave empty elements: placeholders (``identifier[2]`` makes [0] and [1]),
# empty constants, vocabulary entries without a code, a finish-less datatype with placeholders.
ODD_SITE = """
segments:
  PID:
    fields:
      2: {path: "identifier[2].value", datatype: ST}
      9: {path: "alias[]", datatype: ODDNAME}
      10: {path: "extension[]", datatype: CWE, vocabulary: ODD, element: valueCodeableConcept,
           fixed: {url: "http://x/race", extra: ""}}
      17: {path: religion, datatype: ST, value: ""}
      22: {path: ethnic, datatype: ID, vocabulary: ODD, as: CodeableConcept}
    set:
      note: ""
  PV1:
    fields:
      5: {path: "preadmit[]", datatype: CX, resource: Organization, element: who, fixed: {role: {}}}
      21: {path: ".", datatype: SN}
datatypes:
  ODDNAME:
    "1": {path: "coding[1].code"}
    "3": {path: text}
vocabulary:
  ODD:
    system: "http://x/odd"
    target: "http://x/odd-target"
    map: {W: "", B: {code: black, display: ""}}
messages:
  adt-admit:
    set:
      Patient: {active: ""}
    references:
      - {from: Patient, path: "link[2]", to: Encounter, element: other, fixed: {type: seealso, empty: []}}
      - {from: Encounter, path: copied, to: Patient, copy: name}
"""

ODD_MESSAGE = (
    "MSH|^~\\&|A|F|B|G|20240101||ADT^A01|C1|P|2.5\r"
    "PID|1|X9|M1^^^H^MR||Doe^J||19800101|M|A^B^C|W^White^L|||||||C|||||||B\r"
    "PV1|1|I|||V1^^^H" + "|" * 15 + "|^1^-^9\r"  # PV1-5 and PV1-21
)


def _walk(value):
    yield value
    if isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


def _settled(resources: list[dict]) -> None:
    """No empty element (FHIR forbids them) and no reference left unresolved."""
    for resource in resources:
        assert not has_empty(resource), resource
        assert not any(isinstance(v, Ref) for v in _walk(resource)), resource


@pytest.fixture(scope="module")
def odd(tmp_path_factory) -> object:
    folder = tmp_path_factory.mktemp("odd")
    (folder / "odd.yaml").write_text(ODD_SITE)
    return load_mappings(folder)


def test_rules_that_can_leave_empty_elements_have_them_dropped(odd):
    c = convert(ODD_MESSAGE.encode(), odd)
    _settled(c.resources)
    patient = next(r for r in c.resources if r["resourceType"] == "Patient")
    assert patient["identifier"][0] == {"value": "X9"}  # the placeholders before it are gone
    assert patient["alias"] == [{"coding": [{"code": "A"}], "text": "C"}]
    assert patient["extension"][0]["url"] == "http://x/race"
    assert "extra" not in patient["extension"][0]
    assert "religion" not in patient and "note" not in patient and "active" not in patient
    assert patient["link"] == [{"type": "seealso", "other": {"reference": patient["link"][0]["other"]["reference"]}}]
    encounter = next(r for r in c.resources if r["resourceType"] == "Encounter")
    assert encounter["valueRange"] == {"low": {"value": 1}, "high": {"value": 9}}
    assert encounter["preadmit"][0]["who"]["reference"].startswith("Organization/")


def test_cleanliness_is_known_from_the_rules(odd):
    default, site = Compiler(MAPPINGS), Compiler(odd)
    assert all(default.clean(name) for name in ("CWE", "CX", "XCN", "XPN", "PL", "UNIT"))
    assert not site.clean("ODDNAME")  # coding[1] without a finish that drops codings without code
    assert not site.value_clean({"path": "x", "datatype": "ID", "vocabulary": "ODD"})  # W maps to ""


@pytest.mark.parametrize("site", [False, True])
def test_corpus_conversions_are_settled(corpus: Path, odd, site):
    mappings = odd if site else MAPPINGS
    converted = 0
    for path in sorted((corpus / "hl7v2").rglob("*.hl7")):
        try:
            c = convert(path.read_bytes(), mappings)
        except HL7Error:
            continue
        _settled(c.resources)
        converted += 1
    assert converted >= 90


PATHS = ["a", "a.b", "a[]", "a[].b", "a[0]", "a[0].b", "a[1].b.c", "a.b[]", "a[2]"]
VALUES = st.one_of(st.sampled_from(["x", "", 0, False]), st.dictionaries(st.sampled_from("bcd"), st.just("v"),
                                                                       max_size=2))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PATHS), VALUES), max_size=6))
def test_setter_puts_as_set_path_does(puts):
    plain: dict = {}
    compiled: dict = {}
    for path, value in puts:
        try:
            set_path(plain, path, copy_json(value))
        except (AttributeError, TypeError, KeyError):
            with pytest.raises((AttributeError, TypeError, KeyError)):
                setter(path)(compiled, copy_json(value))
            return
        setter(path)(compiled, copy_json(value))
    assert json.dumps(compiled) == json.dumps(plain)  # the same elements in the same order


def test_copier_copies_deeply():
    constant = {"type": [{"coding": [{"code": "ATND"}]}], "status": "active"}
    copy = copier(constant)
    first, second = copy(), copy()
    assert first == second == constant
    first["type"][0]["coding"][0]["code"] = "changed"
    assert constant["type"][0]["coding"][0]["code"] == "ATND" and second == constant


def test_prune_copies_only_what_has_empty_elements():
    clean = {"a": [{"b": "x"}], "c": 0, "d": False}
    assert prune(clean) is clean
    assert prune({"a": [{"b": ""}, {}], "c": "x", "d": None}) == {"c": "x"}


def test_make_id_is_the_uuid_of_the_digest():
    digest = sha256(b"fhir-bridge/v1|Patient|key").digest()
    assert make_id("Patient", "key") == str(uuid.UUID(bytes=digest[:16]))


_DELIMITERS = Delimiters()
FIELD_TEXT = st.text(st.sampled_from(["a", "B", " ", "^", "~", "&", "\\", '"', "E", "T", "X", "4", "1"]), max_size=14)


@settings(max_examples=400, deadline=None)
@given(st.lists(FIELD_TEXT, min_size=1, max_size=4), st.integers(-1, 6), st.integers(0, 3))
def test_fields_are_read_as_the_parser_reads_them(fields, n, component):
    seg = Segment("ZZZ|" + "|".join(fields), _DELIMITERS)

    def parsed():
        return [[[("" if s == NULL else s) for s in c] for c in rep] for rep in seg.parsed(n)] if 0 < n else []

    for read, plain in ((lambda: field_values(seg, seg.fields, n), parsed),
                        (lambda: first_value(seg, n, component), lambda: seg.value(n, 1, component))):
        try:
            expected = plain()
        except HL7Error as exc:
            with pytest.raises(HL7Error) as raised:
                read()
            assert (raised.value.code, raised.value.location, raised.value.text) == (exc.code, exc.location, exc.text)
            continue
        assert read() == expected


def test_a_rule_that_cannot_be_compiled_fails_at_load_time(tmp_path: Path):
    (tmp_path / "site.yaml").write_text("segments:\n  PID:\n    fields:\n      5: {path: 'name[x]', datatype: XPN}\n")
    with pytest.raises(MappingError, match="segment rule PID"):
        load_mappings(tmp_path)
