"""The lazy parser: segments, 1-based fields/repetitions/components/subcomponents, delimiters, charsets."""

from __future__ import annotations

import pytest

from bridge.hl7.parser import NULL, parse, parse_header, split_batch
from bridge.hl7.types import HL7Error

ADT = (
    "MSH|^~\\&|APP|FAC^1.2.3^ISO|RAPP|RFAC|20240102030405+0100||ADT^A01^ADT_A01|CTRL1|P|2.5.1|||AL|NE||UNICODE UTF-8\r"
    "EVN|A01|20240102030405\r"
    "PID|1||123^^^HOSP^MR~456^^^SSA^SS||DOE&van&Doe^JOHN^Q||19800101|M|||1 Main St^^Town^ST^12345||\"\"\r"
)


def test_segments_and_one_based_numbering():
    msg = parse(ADT.encode())
    assert [s.name for s in msg.segments] == ["MSH", "EVN", "PID"]
    msh = msg.msh
    assert msh.field(1) == "|" and msh.field(2) == "^~\\&"  # MSH-1 is the separator, MSH-2 the encoding characters
    assert msh.value(9, 1, 1) == "ADT" and msh.value(9, 1, 2) == "A01" and msh.value(9, 1, 3) == "ADT_A01"
    pid = msg.segment("PID")
    assert pid.value(3, 2, 1) == "456"  # second repetition
    assert pid.value(3, 2, 5) == "SS"
    assert pid.value(5, 1, 1, 2) == "van"  # subcomponent
    assert pid.repetitions(3) == ["123^^^HOSP^MR", "456^^^SSA^SS"]
    assert pid.value(99) == "" and pid.value(5, 2) == "" and pid.value(5, 1, 9) == ""
    assert msg.get("PID-5.1.3") == "Doe" and msg.get("PID-3[2].4") == "SSA" and msg.get("MSH-10") == "CTRL1"
    assert pid.parsed(3)[1][4] == ["SS"]


def test_null_field_is_kept_distinct():
    pid = parse(ADT.encode()).segment("PID")
    assert pid.field(13) == NULL  # "" means "delete", not "absent"
    assert pid.field(14) == ""


@pytest.mark.parametrize("terminator", [b"\r", b"\n", b"\r\n"])
def test_segment_terminators(terminator):
    raw = ADT.encode().replace(b"\r", terminator)
    assert [s.name for s in parse(raw).segments] == ["MSH", "EVN", "PID"]


def test_mixed_terminators_blank_lines_and_trailing_whitespace():
    raw = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5  \r\n\nEVN|A01\rPID|1||9^^^H^MR \t\n\n"
    msg = parse(raw)
    assert [s.name for s in msg.segments] == ["MSH", "EVN", "PID"]
    assert msg.msh.value(12) == "2.5" and msg.segment("PID").value(3) == "9"


def test_bom_and_mllp_framing_are_skipped():
    raw = b"\xef\xbb\xbf" + ADT.encode()
    assert parse(raw).msh.value(10) == "CTRL1"
    assert parse(b"\x0b" + ADT.encode() + b"\x1c\r").msh.value(10) == "CTRL1"


def test_custom_delimiters_from_the_corpus(corpus):
    msg = parse((corpus / "hl7v2/python-hl7/nonstd.hl7").read_bytes(), strict=False)
    assert msg.delimiters.field == "$" and msg.delimiters.component == "%"
    assert msg.segment("PID").value(3) == "555-44-4444"
    assert msg.segment("PID").value(5, 1, 2) == "EVE"
    msg = parse((corpus / "hl7v2/hl7apy/test_to_string_L49.hl7").read_bytes())
    assert msg.delimiters.field == "!" and msg.delimiters.repetition == "r"
    # The sender wrote "^" in MSH-9 although "$" is its component separator: "^" is then plain text.
    assert msg.msh.value(9) == "RSP^SLI^RSP_K11" and msg.msh.value(3) == "LIP" and msg.msh.value(12) == "2.5"


def test_truncation_character(corpus):
    msg = parse((corpus / "hl7v2/hl7apy/test_parser_L55.hl7").read_bytes())
    assert msg.delimiters.truncation == "#" and msg.msh.field(2) == "^~\\&#"
    assert msg.msh.value(12) == "2.7"


def test_doubled_escape_in_msh2_is_read_as_one(corpus):
    msg = parse((corpus / "hl7v2/LinuxForHealth-hl7v2-fhir-converter/sample_unix.hl7").read_bytes())
    assert msg.delimiters.encoding_characters == "^~\\&"
    assert any("doubled escape" in w for w in msg.warnings)


@pytest.mark.parametrize("name", ["test_parser_L184", "test_parser_L187", "test_parser_L192", "test_parser_L200",
                                  "test_parser_L203", "test_parser_L215", "test_parser_L218"])
def test_invalid_encoding_characters_are_data_type_errors(corpus, name):
    with pytest.raises(HL7Error) as err:
        parse((corpus / f"hl7v2/hl7apy/{name}.hl7").read_bytes())
    assert err.value.code == "102" and err.value.location == "MSH-2"


def test_not_a_message():
    for raw in (b"", b"hello", b"PID|1||123\r", b"\x00\xff\xfe"):
        with pytest.raises(HL7Error) as err:
            parse(raw)
        assert err.value.code == "100" and err.value.location == "MSH"


def test_charset_latin1_declared():
    raw = "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5||||||8859/1\rPID|1||1||Müller^Zoë\r".encode("latin-1")
    msg = parse(raw)
    assert msg.charset == "8859/1" and msg.segment("PID").value(5, 1, 2) == "Zoë"


def test_charset_utf8_and_undeclared_fallback():
    utf8 = "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5||||||UNICODE UTF-8\rPID|1||1||Øre^Åsa\r".encode()
    assert parse(utf8).segment("PID").value(5) == "Øre"
    # Declared ASCII but Latin-1 bytes: read as Latin-1 with a warning instead of losing the message.
    lying = "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5||||||ASCII\rPID|1||1||Gärtner\r".encode("latin-1")
    msg = parse(lying)
    assert msg.segment("PID").value(5) == "Gärtner" and any("Latin-1" in w for w in msg.warnings)


def test_charset_8859_2_and_utf16_bom():
    raw = "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5||||||8859/2\rPID|1||1||Łukasz\r".encode("iso8859-2")
    assert parse(raw).segment("PID").value(5) == "Łukasz"
    raw16 = "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|1||1||Ünal\r".encode("utf-16")
    assert parse(raw16).segment("PID").value(5) == "Ünal"


def test_escapes_are_unescaped_on_read():
    raw = b"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|1|P|2.5\rOBX|1|TX|c||Parker \\T\\ Sons\\.br\\line 2 \\F\\ \\S\\\r"
    assert parse(raw).segment("OBX").value(5) == "Parker & Sons\nline 2 | ^"
    assert parse(raw).segment("OBX").field(5) == "Parker \\T\\ Sons\\.br\\line 2 \\F\\ \\S\\"


def test_parse_header():
    header = parse_header(ADT.encode())
    assert header.message_type == "ADT^A01" and header.message_structure == "ADT_A01"
    assert header.control_id == "CTRL1" and header.version == "2.5.1" and header.processing_id == "P"
    assert header.sending_application == "APP" and header.sending_facility == "FAC"
    assert header.accept_ack_type == "AL" and header.application_ack_type == "NE"
    assert header.charset == "UNICODE UTF-8" and header.field_separator == "|"
    assert header.encoding_characters == "^~\\&" and header.sender == "APP|FAC"


def test_parse_header_survives_a_broken_body_and_bad_delimiters(corpus):
    header = parse_header(b"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|42|P|2.4\r\x00garbage\xff\rOBX|||")
    assert header.control_id == "42" and header.message_type == "ORU^R01"
    # Duplicate encoding characters: strict parsing refuses, the header is still readable for the ACK.
    header = parse_header((corpus / "hl7v2/hl7apy/test_parser_L215.hl7").read_bytes())
    assert header.control_id == "0123456789" and header.message_type == "ADT^A01"


def test_parse_header_without_msh():
    with pytest.raises(HL7Error) as err:
        parse_header(b"EVN|A01\rPID|1\r")
    assert (err.value.code, err.value.location) == ("100", "MSH")


def test_split_batch_single_message_is_unchanged():
    raw = ADT.encode()
    assert split_batch(raw) == [raw]


def test_split_batch_file(corpus):
    messages = split_batch((corpus / "hl7v2/python-hl7/sample_file1.hl7").read_bytes())
    assert len(messages) == 3
    assert all(m.startswith(b"MSH|") for m in messages)
    assert [s.name for s in parse(messages[0]).segments] == ["MSH", "EVN", "PID", "PD1", "NK1", "PV1"]


@pytest.mark.parametrize("name,count", [("sample_batch", 1), ("sample_batch1", 2), ("sample_batch2", 2),
                                        ("sample_file", 1), ("sample_file2", 2), ("sample_batch4", 1)])
def test_split_batch_counts(corpus, name, count):
    assert len(split_batch((corpus / f"hl7v2/python-hl7/{name}.hl7").read_bytes())) == count


@pytest.mark.parametrize("name", ["sample_bad_batch", "sample_bad_batch1", "sample_bad_file", "sample_bad_file1",
                                  "sample_bad_file2", "sample_bad_file3"])
def test_split_batch_rejects_broken_envelopes(corpus, name):
    with pytest.raises(HL7Error) as err:
        split_batch((corpus / f"hl7v2/python-hl7/{name}.hl7").read_bytes())
    assert err.value.code == "100" and err.value.location.startswith("segment ")


def test_split_batch_messages_without_envelope():
    raw = ADT.encode() + ADT.replace("CTRL1", "CTRL2").encode()
    parts = split_batch(raw)
    assert [parse_header(p).control_id for p in parts] == ["CTRL1", "CTRL2"]


def test_a_batch_is_not_a_message(corpus):
    raw = (corpus / "hl7v2/python-hl7/sample_file1.hl7").read_bytes()
    with pytest.raises(HL7Error) as err:
        parse(raw)
    assert (err.value.code, err.value.location) == ("100", "FHS")
