"""Escape sequences against the shared vectors (escape_vectors.json), with our deliberate deviations."""

from __future__ import annotations

import json

import pytest

from bridge.hl7.delimiters import DEFAULT, Delimiters
from bridge.hl7.escape import escape, unescape
from bridge.hl7.parser import parse
from bridge.hl7.types import HL7Error

# Where we differ from an upstream library on purpose, and what we produce instead.
DEVIATIONS = {
    # python-hl7 turns highlighting into "_"; highlighting has no plain-text meaning, so we drop it.
    "\\H\\text\\N\\": "text",
    # The FHIR-Converter splices its output into JSON and writes a line break as backslash-n; we
    # return text, so a line break is a real line break.
    "\\.br\\n": "\nn",
}


def _vectors(corpus):
    data = json.loads((corpus / "hl7v2/escape_vectors.json").read_text(encoding="utf-8"))
    return data["vectors"]


def _delimiters(v: dict) -> Delimiters:
    e = v.get("encoding_chars") or {}
    return Delimiters(e.get("field", "|"), e.get("component", "^"), e.get("repetition", "~"),
                      e.get("escape", "\\"), e.get("subcomponent", "&"))


def test_escape_vectors(corpus):
    checked = 0
    for v in _vectors(corpus):
        d = _delimiters(v)
        op, given, want = v["op"], v["input"], v["expected"]
        if op == "unescape":
            assert unescape(given, d) == DEVIATIONS.get(given, want), v
        elif op == "escape":
            # python-hl7 writes non-ASCII as \Xhh\ (our ascii_only mode); nHapi keeps it.
            ascii_only = "python-hl7" in v["source"]
            assert escape(given, d, ascii_only=ascii_only) == want, v
            assert unescape(want, d) == given  # and back
        elif op == "unescape-error":
            with pytest.raises(HL7Error) as err:
                unescape(given, d, "OBX-5")
            assert err.value.code == "102" and err.value.location == "OBX-5"
        elif op == "roundtrip-field":
            # Formatting escapes stay verbatim in the raw field: a message re-encoded from its fields
            # is byte-identical.  (OBX-6 follows: trailing blanks at a segment's end are dropped.)
            raw = f"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|1|P|2.5\rOBX|1|FT|c||{given}|u\r".encode()
            assert parse(raw).segment("OBX").field(5) == want
        elif op == "unescape-file":
            path = corpus / given
            if not path.exists():
                continue
            assert unescape(path.read_text(), d) == (corpus / want).read_text()
        else:
            pytest.fail(f"unknown vector op {op}")
        checked += 1
    assert checked >= 40


def test_escape_uses_the_message_delimiters():
    d = Delimiters("!", "$", "r", "?", "@")
    assert escape("a$b!c?d@erf", d) == "a?S?b?F?c?E?d?T?e?R?f"
    assert unescape("a?S?b?F?c?E?d?T?e?R?f", d) == "a$b!c?d@erf"


def test_truncation_escape_only_when_declared():
    assert escape("a#b", DEFAULT) == "a#b"
    with_truncation = Delimiters(truncation="#")
    assert escape("a#b", with_truncation) == "a\\P\\b"
    assert unescape("a\\P\\b", with_truncation) == "a#b"


def test_unknown_and_unterminated_escapes_are_kept():
    assert unescape("a\\Q\\b", DEFAULT) == "a\\Q\\b"
    assert unescape("50\\% off", DEFAULT) == "50\\% off"
    assert unescape("tail\\", DEFAULT) == "tail\\"


def test_hex_escape_utf8_bytes():
    assert unescape("\\XC3A9\\", DEFAULT) == "é"  # a UTF-8 sequence in one escape
    assert unescape("\\XE9\\", DEFAULT) == "é"  # a single Latin-1 byte
