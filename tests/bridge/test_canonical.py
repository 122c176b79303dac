"""The fast JCS path gives rfc8785's bytes, or rfc8785's error, for any JSON value."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
import rfc8785
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bridge.canonical import canonical, canonical_string
from bridge.store import leaf_data

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "fhir"

# Names and strings drawn from the whole of Unicode (astral characters and lone surrogates included),
# numbers from all doubles and from integers on both sides of 2**53.
_text = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=12)
_numbers = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**60), 2**60)
_json = st.recursive(
    st.none() | st.booleans() | _numbers | _text,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_text, inner, max_size=5),
    max_leaves=30,
)


def _rfc8785(value: object) -> bytes | type[Exception]:
    try:
        return rfc8785.dumps(value)
    except Exception as exc:  # noqa: BLE001 - the error type is what is compared
        return type(exc)


def _ours(value: object) -> bytes | type[Exception]:
    try:
        return canonical(value)
    except Exception as exc:  # noqa: BLE001
        return type(exc)


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(_text, _json, max_size=6) | st.lists(_json, max_size=6))
@example({"value": 1e-07, "b": 1.0, "a": 10.0})           # exponent and trailing ".0" forms
@example({"n": 2**53, "m": -(2**53) - 1, "k": 9007199254740991})
@example({"\U0001f600": 1, "\uffff": 2, "a": [0.1, 1e21, 1e16, 123456789.125]})
@example({"x": "\ud800"})
@example([float("nan")])
@example({"a": [1, {"b": float("-inf")}], "c": None})  # orjson would write null for both
@example({"n": -0.0})
@example({"when": datetime.date(2026, 12, 2)})  # not JSON data: the same error
def test_same_bytes_or_same_error_as_rfc8785(value: object) -> None:
    assert _ours(value) == _rfc8785(value)


@given(_text)
def test_strings(text: str) -> None:
    expected = _rfc8785(text)
    if isinstance(expected, bytes):
        assert canonical_string(text) == expected
    else:
        with pytest.raises(expected):
            canonical_string(text)


# Text built from what number tokens and their neighbours are made of, so that tokens of every
# kind (exponents, ".0" endings, long ones, signs in odd places) sit between every delimiter
_number_text = st.text(st.sampled_from(list("0123456789.eE+-:[,]}\"a0")), max_size=40)


@settings(max_examples=2000, deadline=None)
@given(_number_text)
@example(":1.0]")
@example("[-1e5,")
@example(",1234567890123456}")
@example(",-123456789012345}")
@example(":12.30}")
@example("[1.0e]")
def test_one_search_finds_a_differing_number_token_exactly_when_the_rule_does(text: str) -> None:
    from bridge.canonical import _NUMBER, _NUMBER_DIFFERS, _number_differs

    by_rule = any(_number_differs(token.group(1)) for token in _NUMBER.finditer(text))
    assert (_NUMBER_DIFFERS.search(text) is not None) == by_rule


@settings(max_examples=2000, deadline=None)
@given(_number_text)
@example(":1.0]")
@example("[1e+,")
@example('"12:30",')
def test_the_cheap_filter_passes_whatever_the_search_would_find(text: str) -> None:
    """The translation is only a pre-filter: output it turns away must hold no match of the search."""
    from bridge.canonical import _NUMBER_DIFFERS_UTF8, _NUMBER_EDGES

    data = text.encode("utf-8")
    if _NUMBER_DIFFERS_UTF8.search(data) is not None:
        assert b"01" in data.translate(_NUMBER_EDGES)


def test_a_float_after_a_time_string_still_takes_the_jcs_path() -> None:
    value = {"a": "12:30", "b": [1e-05, 2.0], "c": 1e16}
    assert canonical(value) == rfc8785.dumps(value) == b'{"a":"12:30","b":[0.00001,2],"c":10000000000000000}'
    with pytest.raises(rfc8785.IntegerDomainError):
        canonical({"a": "12:30", "b": 2**53})


def test_every_corpus_fhir_document_agrees() -> None:
    files = sorted(CORPUS.rglob("*.json"))
    assert len(files) > 100, f"the FHIR corpus is missing from {CORPUS}"
    for path in files:
        document = json.loads(path.read_bytes())
        assert canonical(document) == rfc8785.dumps(document), path.name


@given(st.from_regex(r"[A-Za-z]{1,20}", fullmatch=True), st.from_regex(r"[A-Za-z0-9\-.]{1,64}", fullmatch=True),
       st.integers(1, 2**53 - 1), st.from_regex(r"[0-9a-f]{64}", fullmatch=True))
def test_leaf_data_is_the_jcs_of_its_fields(res_type: str, res_id: str, version: int, digest: str) -> None:
    assert leaf_data(res_type, res_id, version, digest) == rfc8785.dumps(
        {"type": res_type, "id": res_id, "version": version, "sha256": digest})
    assert json.loads(leaf_data(res_type, res_id, version, digest))["version"] == version
