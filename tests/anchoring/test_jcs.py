"""Our RFC 8785 serialiser against the `rfc8785` package, on FHIR-like JSON and on every double."""

from __future__ import annotations

import json
import math
import struct

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from anchoring.errors import VerificationError
from anchoring.jcs import canonicalize

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53 - 1), 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_matches_rfc8785_package(value):
    assert canonicalize(value) == rfc8785.dumps(value)


@settings(max_examples=2000, deadline=None)
@given(st.integers(0, 2**64 - 1))
def test_every_double_prints_as_ecmascript_does(bits):
    value = struct.unpack("<d", bits.to_bytes(8, "little"))[0]
    if math.isfinite(value):
        assert canonicalize(value) == rfc8785.dumps(value)


@pytest.mark.parametrize("value, expected", [
    (1e21, b"1e+21"), (1e20, b"100000000000000000000"), (1e-7, b"1e-7"), (1e-6, b"0.000001"),
    (-0.0, b"0"), (5e-324, b"5e-324"), (0.1 + 0.2, b"0.30000000000000004"),
    ({"\u20ac": 1, "\r": 2, "\ufb33": 3, "1": 4, "\U0001f600": 5}, '{"\\r":2,"1":4,"\u20ac":1,"\U0001f600":5,"\ufb33":3}'.encode()),
    ("\u0000\u001f\"\\\u007f", b'"\\u0000\\u001f\\"\\\\\x7f"'),
])
def test_rfc8785_examples(value, expected):
    assert canonicalize(value) == expected


def test_fhir_resources_from_the_corpus_match(corpus):
    checked = 0
    for path in sorted(corpus.rglob("*.json"))[:60]:
        try:
            value = json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError):
            continue
        assert canonicalize(value) == rfc8785.dumps(value), path
        checked += 1
    assert checked


def test_refuses_what_json_cannot_hold():
    for bad in (float("nan"), float("inf"), 2**60, {1: 2}, object()):
        with pytest.raises(VerificationError):
            canonicalize(bad)


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-(2**53 - 1), 2**53 - 1) | st.text(),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(), c, max_size=4), max_leaves=25))
def test_fast_path_without_numbers_in_floating_point_equals_the_full_serialiser(value):
    from anchoring.jcs import _plain, _serialise

    out: list[str] = []
    _serialise(value, out)
    assert _plain(value) == all(ord(ch) <= 0xFFFF for key in _keys(value) for ch in key)
    assert canonicalize(value) == "".join(out).encode() == rfc8785.dumps(value)


def _keys(value):
    if isinstance(value, dict):
        for key, member in value.items():
            yield key
            yield from _keys(member)
    elif isinstance(value, list):
        for member in value:
            yield from _keys(member)
