"""Property tests: whatever the bytes, the parser answers with a message or an HL7Error, nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.convert import convert, load_mappings
from bridge.hl7.delimiters import Delimiters
from bridge.hl7.escape import escape, unescape
from bridge.hl7.parser import parse, parse_header, split_batch
from bridge.hl7.types import HL7Error

CORPUS = Path(__file__).resolve().parents[3].parent / "shared" / "corpus" / "hl7v2"
SAMPLES = sorted(CORPUS.rglob("*.hl7")) if CORPUS.is_dir() else []
MAPPINGS = load_mappings()


def _only_hl7_errors(raw: bytes) -> None:
    """Every entry point either works or raises HL7Error with a code, a location and a text."""
    for step in (parse_header, parse, split_batch, lambda r: convert(r, MAPPINGS)):
        try:
            step(raw)
        except HL7Error as exc:
            assert exc.code and exc.code.isdigit() and exc.text
            assert isinstance(exc.location, str)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes(raw):
    _only_hl7_errors(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_after_a_valid_header(tail):
    _only_hl7_errors(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\r" + tail)


@pytest.mark.skipif(not SAMPLES, reason="the shared corpus is not beside the project")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_truncated_and_mangled_corpus_messages(data):
    raw = SAMPLES[data.draw(st.integers(0, len(SAMPLES) - 1))].read_bytes()
    cut = data.draw(st.integers(0, len(raw)))
    truncated = raw[:cut]
    _only_hl7_errors(truncated)
    if raw:
        at = data.draw(st.integers(0, len(raw) - 1))
        byte = data.draw(st.integers(0, 255))
        _only_hl7_errors(raw[:at] + bytes([byte]) + raw[at + 1 :])


@settings(max_examples=20, deadline=None)
@given(st.integers(100_000, 1_000_000), st.sampled_from([b"A", b"\\F\\", b"x^y", b"\xc3\xa9"]))
def test_huge_fields(size, unit):
    body = unit * (size // len(unit))
    raw = b"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|1|P|2.5\rPID|1||1^^^H^MR\rOBX|1|TX|c^d^LN||" + body + b"\r"
    msg = parse(raw)
    assert len(msg.segment("OBX").field(5)) == len(body.decode())
    _only_hl7_errors(raw)


_delimiter_chars = st.sampled_from(list("|^~\\&#!$%*@?+:;/"))


@st.composite
def delimiters(draw) -> Delimiters:
    chars = draw(st.lists(_delimiter_chars, min_size=5, max_size=6, unique=True))
    truncation = chars[5] if len(chars) > 5 and draw(st.booleans()) else ""
    return Delimiters(chars[0], chars[1], chars[2], chars[3], chars[4], truncation)


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=500, deadline=None)
@given(delimiters(), _text, st.booleans())
def test_escape_round_trip(d, text, ascii_only):
    assert unescape(escape(text, d, ascii_only), d) == text


@settings(max_examples=300, deadline=None)
@given(delimiters(), st.lists(st.lists(_text, min_size=1, max_size=3), min_size=1, max_size=3))
def test_values_survive_any_delimiters(d, field_values):
    """Escape values, join them with random delimiters, parse: every value comes back."""
    fields = [d.component.join(escape(v, d) for v in comps) for comps in field_values]
    msh = f"MSH{d.field}{d.encoding_characters}{d.field}A{d.field}B{d.field}{d.field}{d.field}20240101"
    line = "ZZZ" + d.field + d.field.join(fields)
    msg = parse((msh + "\r" + line + "\r").encode())
    seg = msg.segment("ZZZ")
    for n, comps in enumerate(field_values, start=1):
        for c, value in enumerate(comps, start=1):
            expected = value
            if n == len(field_values) and c == len(comps):
                # A segment's trailing blanks are dropped by design; nothing else may change.
                expected = unescape(escape(value, d).rstrip(), d)
            assert seg.value(n, 1, c) == expected
