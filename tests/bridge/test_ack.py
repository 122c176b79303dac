"""Acknowledgements: original and enhanced mode, ERR segments, the message's own delimiters."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bridge.ack import _Writer, application_code, best_effort_header, build_ack, error_location, responses
from bridge.hl7.parser import parse_header
from bridge.hl7.types import HL7Error

RAW = b"MSH|^~\\&|LAB|HOSP|BRIDGE|HUB|20240101120000||ORU^R01^ORU_R01|CTRL-42|P|2.5.1\rPID|1||123\r"


def segments(message: bytes) -> list[list[str]]:
    return [s.split("|") for s in message.decode().split("\r") if s]


def test_original_mode_aa_echoes_control_id_and_swaps_applications() -> None:
    [(code, message)] = responses(parse_header(RAW), committed=True, stored=True, error=None)
    assert code == "AA"
    msh, msa = segments(message)
    assert msh[2:6] == ["BRIDGE", "HUB", "LAB", "HOSP"]
    assert msh[8] == "ACK^R01^ACK" and msh[10:12] == ["P", "2.5.1"]
    assert msa == ["MSA", "AA", "CTRL-42"]


@pytest.mark.parametrize(("code", "expected"), [("101", "AE"), ("102", "AE"), ("207", "AE"), ("200", "AR"), ("203", "AR")])
def test_error_codes_choose_ae_or_ar(code: str, expected: str) -> None:
    assert application_code(False, HL7Error(code, "", "x")) == expected


def test_err_segment_fields() -> None:
    error = HL7Error("102", "OBX[2]-5.1", "not a number|really")
    [(code, message)] = responses(parse_header(RAW), True, False, error)
    assert code == "AE"
    _, msa, err = message.decode().split("\r")[:3]
    fields = err.split("|")
    assert fields[2] == "OBX^2^5^1^1"  # ERR-2: segment, sequence, field, repetition, component
    assert fields[3] == "102^Data type error^HL70357"  # ERR-3
    assert fields[4] == "E"  # ERR-4 severity
    assert fields[8] == "OBX[2]-5.1: not a number\\F\\really"  # ERR-8, escaped
    assert msa.split("|")[1:3] == ["AE", "CTRL-42"]


def test_ack_uses_the_messages_own_delimiters() -> None:
    raw = b"MSH#$%\\*#LAB#HOSP#B#H#2024##ADT$A01#C1#P#2.5\r"
    header = parse_header(raw)
    [(_, message)] = responses(header, True, False, HL7Error("101", "PID-3", "a#b$c"))
    text = message.decode()
    assert text.startswith("MSH#$%\\*#B#H#LAB#HOSP#")
    assert "#ACK$A01$ACK#" in text
    assert "MSA#AE#C1#a\\F\\b\\S\\c" in text


@pytest.mark.parametrize(
    ("accept", "app", "stored", "expected"),
    [
        ("AL", "AL", True, ["CA", "AA"]),
        ("AL", "NE", True, ["CA"]),
        ("NE", "AL", True, ["AA"]),
        ("ER", "ER", True, []),
        ("ER", "ER", False, ["AE"]),
        ("SU", "SU", False, ["CA"]),
        ("NE", "NE", False, []),
        ("AL", None, False, ["CA", "AE"]),
    ],
)
def test_enhanced_mode(accept: str, app: str | None, stored: bool, expected: list[str]) -> None:
    header = replace(parse_header(RAW), accept_ack_type=accept, application_ack_type=app)
    error = None if stored else HL7Error("101", "PID-3", "missing")
    assert [c for c, _ in responses(header, True, stored, error)] == expected


def test_not_committed_never_gets_aa_or_ca() -> None:
    header = parse_header(RAW)
    assert [c for c, _ in responses(header, False, False, None)] == ["AR"]
    enhanced = replace(header, accept_ack_type="AL", application_ack_type="AL")
    assert [c for c, _ in responses(enhanced, False, False, None)] == ["CE"]


def test_best_effort_header_for_garbage_never_raises() -> None:
    for raw in (b"", b"\x00\xff" * 10, b"MSH", b"MSH\r", b"MSHabcd", b"MSH|^~\\&|A|B|C|D|||X^Y|77", "MSH|é".encode()):
        header = best_effort_header(raw)
        assert header.field_separator == "|" or raw.startswith(b"MSH")
        build_ack(header, "AR", HL7Error("100", "MSH", "unreadable"))
    assert best_effort_header(b"xxMSH|^~\\&|A|B|C|D|||X^Y|77").control_id == "77"


def test_error_location_formats() -> None:
    w = _Writer(parse_header(RAW))
    assert error_location("PID-7", w) == "PID^1^7^1"
    assert error_location("PID", w) == "PID^1"
    assert error_location("Patient.birthDate", w) == ""
