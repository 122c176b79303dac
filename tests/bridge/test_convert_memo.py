"""What the conversion engine keeps between messages (a field rule's values per raw field text,
ids per key) never shows: a message converts to the same resources, warnings and errors as with
mappings loaded afresh, whatever was converted before and whatever was done to earlier results.

Each test uses field texts of its own, so that its first conversion fills what is kept and its
second one reads it, in any order of the tests.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid

import pytest

from bridge.convert import convert, load_mappings
from bridge.convert.ids import make_id
from bridge.hl7.types import HL7Error

MAPPINGS = load_mappings()


def _message(tag: str, control: str = "MSG1", msh2: str = "^~\\&", pv1: str = "", pid5: str = "",
             pid7: str = "") -> bytes:
    """An A01 with the fields a test varies; ``msh2``: other encoding characters (MSH-9 is written
    with its component separator, the fields a test gives are read with them)."""
    return (
        f"MSH|{msh2}|ADT|GOOD HEALTH|BRIDGE|PARTNER|20240301101500||ADT{msh2[0]}A01|{control}|P|2.5.1\r"
        f"EVN|A01|20240301101500\r"
        f"PID|1||MRN{tag}||{pid5 or 'Doe' + tag}||{pid7}\r"
        f"PV1|1|I{pv1}\r"
    ).encode()


def _pv1(**fields: str) -> str:
    """PV1 fields after PV1-2, by number (``f7="..."``)."""
    numbers = {int(k[1:]): v for k, v in fields.items()}
    return "".join("|" + numbers.get(n, "") for n in range(3, max(numbers) + 1))


def _dump(conversion) -> str:  # type: ignore[no-untyped-def]
    return json.dumps([conversion.resources, conversion.unmapped, conversion.warnings])


def _fresh(raw: bytes, id_key: bytes | None = None) -> str:
    """The conversion with mappings loaded now: nothing kept from earlier messages."""
    return _dump(convert(raw, load_mappings(), id_key))


def _by_type(conversion, kind):  # type: ignore[no-untyped-def]
    return [r for r in conversion.resources if r["resourceType"] == kind]


def _change(conversion) -> None:  # type: ignore[no-untyped-def]
    """What a caller may do to the resources it was given."""
    for practitioner in _by_type(conversion, "Practitioner"):
        practitioner["name"][0]["given"].append("Changed")
        practitioner["name"][0]["family"] = "Changed"
        practitioner["identifier"][0]["value"] = "Changed"
    for location in _by_type(conversion, "Location"):
        location.setdefault("physicalType", {"coding": [{}]})["coding"][0]["code"] = "changed"
        location["description"] = "changed"
    for encounter in _by_type(conversion, "Encounter"):
        encounter["class"]["code"] = "changed"
        encounter["participant"][0]["type"][0]["coding"].clear()
        encounter["period"]["start"] = "changed"


def test_changing_a_result_does_not_change_the_next_conversion():
    pv1 = _pv1(f3="4E^401^B^MEMO1^^^MAIN^4", f7="1001^Memoone^Ann^B^^Dr^^^NPI&2.16.840.1.113883.4.6&ISO",
               f11="^^^^^^^^Lobby memo1", f44="20240301100000")
    raw = _message("M1", pv1=pv1)
    expected = _fresh(raw)
    for _ in range(3):  # made, then read from what was kept (twice)
        conversion = convert(raw, MAPPINGS)
        assert _dump(conversion) == expected
        assert _by_type(conversion, "Practitioner")[0]["name"][0]["given"] == ["Ann", "B"]
        _change(conversion)


def test_duplicate_children_merge_alike_every_time():
    # the same practitioner (one id) named twice with different parts: the second merges into the first
    pv1 = _pv1(f7="1002^Memotwo^Ann", f17="1002^Memotwo^Ann^Beth^^Dr")
    raw = _message("M2", pv1=pv1)
    expected = _fresh(raw)
    for _ in range(3):
        conversion = convert(raw, MAPPINGS)
        assert _dump(conversion) == expected
        (practitioner,) = _by_type(conversion, "Practitioner")
        assert len(practitioner["name"]) == 2
    # what the merges added is not in what the first field's text gives now
    alone = _message("M2", pv1=_pv1(f7="1002^Memotwo^Ann"))
    assert _dump(convert(alone, MAPPINGS)) == _fresh(alone)
    assert _by_type(convert(alone, MAPPINGS), "Practitioner")[0]["name"] == [{"family": "Memotwo", "given": ["Ann"]}]


def test_a_value_that_warned_warns_again():
    # name type Q is not in table 0200; PID-7 is no date: both are said every time
    raw = _message("M3", pid5="Memothree^Ann^^^^^Q", pid7="2024133")
    first, second = convert(raw, MAPPINGS), convert(raw, MAPPINGS)
    assert any("'Q' is not in table 0200" in w for w in first.warnings)
    assert any(w.startswith("PID-7") and "value not mapped" in w for w in first.warnings)
    assert _dump(first) == _dump(second) == _fresh(raw)


def test_a_value_that_raised_raises_again():
    raw = (
        b"MSH|^~\\&|IIS|GOOD HEALTH|BRIDGE|PARTNER|20240301101500||VXU^V04^VXU_V04|MSGM4|P|2.5.1\r"
        b"PID|1||MRNM4||Memofour^Ann||19800214\r"
        b"RXA|0|1|2024133|20240301|08^HepB^CVX|0.5|mL\r"
    )
    for _ in range(2):
        with pytest.raises(HL7Error) as raised:
            convert(raw, MAPPINGS)
        assert raised.value.location == "RXA-3"


def test_the_same_text_with_other_delimiters():
    text = "1005^Memofive&Smith^Ann"
    standard = _message("M5", pv1=_pv1(f7=text))
    swapped = _message("M5", msh2="&~\\^", pv1=_pv1(f7=text))  # components and subcomponents swapped
    for raw in (standard, swapped, standard):
        assert _dump(convert(raw, MAPPINGS)) == _fresh(raw)
    (one,) = _by_type(convert(standard, MAPPINGS), "Practitioner")
    (other,) = _by_type(convert(swapped, MAPPINGS), "Practitioner")
    assert one["name"][0] == {"family": "Memofive", "given": ["Ann"]}
    assert other["name"][0] == {"family": "Smith"}  # components "1005^Memofive" and "Smith^Ann"


def test_the_same_text_with_another_escape_character():
    text = "1006^O\\T\\Memosix^Ann"
    standard = _message("M6", pv1=_pv1(f7=text))
    other_escape = _message("M6", msh2="^~!&", pv1=_pv1(f7=text))  # a backslash is text here
    for raw in (standard, other_escape, standard):
        assert _dump(convert(raw, MAPPINGS)) == _fresh(raw)
    (one,) = _by_type(convert(standard, MAPPINGS), "Practitioner")
    (other,) = _by_type(convert(other_escape, MAPPINGS), "Practitioner")
    assert one["name"][0]["family"] == "O&Memosix"
    assert other["name"][0]["family"] == "O\\T\\Memosix"


def test_positions_and_keys_are_not_kept():
    # a location with neither identifier nor name is keyed by its place in its message
    pv1 = _pv1(f7="1007^Memoseven^Ann", f11="^^^^^^^^Lobby memo7")
    one, other = _message("M7", control="MSG7A", pv1=pv1), _message("M7", control="MSG7B", pv1=pv1)
    ids = {}
    for raw in (one, other, one):
        conversion = convert(raw, MAPPINGS)
        assert _dump(conversion) == _fresh(raw)
        (location,) = _by_type(conversion, "Location")
        ids.setdefault(raw, location["id"])
        assert ids[raw] == location["id"]
    assert ids[one] != ids[other]
    # the same practitioner keyed with two keys and none
    key_a, key_b = b"a" * 32, b"b" * 32
    found = {key: _by_type(convert(one, MAPPINGS, key), "Practitioner")[0]["id"] for key in (key_a, None, key_b)}
    assert len(set(found.values())) == 3
    for key, practitioner_id in found.items():
        assert _by_type(convert(one, MAPPINGS, key), "Practitioner")[0]["id"] == practitioner_id
        assert json.loads(_fresh(one, key))[0] == convert(one, MAPPINGS, key).resources


def test_repetitions_keep_their_own_locations_in_warnings():
    # two repetitions of a name, the second with an unknown type: the warning names repetition 2
    raw = _message("M8", pid5="Memoeight^Ann~Memoeight^Bo^^^^^Q")
    for _ in range(2):
        conversion = convert(raw, MAPPINGS)
        assert any(w.startswith("PID-5[2]") for w in conversion.warnings)
        assert _dump(conversion) == _fresh(raw)


def test_an_id_is_the_digest_of_its_key_every_time():
    for secret in (None, b"k" * 32, b"j" * 32):
        text = b"fhir-bridge/v1|Practitioner|identifier=memo|1009"
        digest = (hmac.new(secret, text, hashlib.sha256) if secret else hashlib.sha256(text)).digest()
        for _ in range(2):
            assert make_id("Practitioner", "identifier=memo|1009", secret) == str(uuid.UUID(bytes=digest[:16]))
