"""HL7v2 acknowledgements: which codes a message asks for (MSH-15/MSH-16), and the ACK text.

Pure functions; the MLLP adapter frames and sends what :func:`responses` returns.

* Original mode (MSH-15 and MSH-16 both empty): one application acknowledgement, ``AA`` when the
  message's versions are stored, ``AE`` when it was kept but cannot be mapped or validated, ``AR``
  when it is rejected (unsupported type, event, processing id or version; no usable header; or the
  bridge could not keep it, which asks the sender to resend later).
* Enhanced mode: an accept acknowledgement ``CA`` (kept durably), ``CE`` (could not be kept) or ``CR``
  (rejected) as MSH-15 asks (AL always, NE never, ER on error only, SU on success only), then an
  application acknowledgement as MSH-16 asks, on the same connection.

``AA`` and ``CA`` are only ever produced for a message whose raw bytes are committed.  Every ACK
uses the message's own delimiters, and MSA-2 is the message's MSH-10.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from .hl7.types import HL7Error, MessageHeader

#: HL7 table 0357 codes for which the answer is a reject (AR / CR), not an error (AE / CE).
REJECT_CODES = frozenset({"200", "201", "202", "203"})
DEFAULT_FIELD, DEFAULT_ENCODING = "|", "^~\\&"
_CHARSETS = {
    "ASCII": "ascii", "8859/1": "latin-1", "8859/15": "iso8859-15", "UNICODE UTF-8": "utf-8",
    "UNICODE": "utf-8", "UTF-8": "utf-8", "ISO IR6": "ascii", "ISO IR100": "latin-1",
}
_LOCATION = re.compile(r"([A-Z][A-Z0-9]{2})(?:\[(\d+)\])?(?:-(\d+)(?:\((\d+)\))?(?:\.(\d+)(?:\.(\d+))?)?)?\Z")
_MSH_FIELD = re.compile(rb"MSH(.)")


def application_code(stored: bool, error: HL7Error | None, header_readable: bool = True) -> str:
    """AA, AE or AR for a message that was kept (``stored`` False: kept with an error)."""
    if stored:
        return "AA"
    if not header_readable or (error is not None and error.code in REJECT_CODES):
        return "AR"
    return "AE"


def _wanted(condition: str | None, success: bool) -> bool:
    condition = (condition or "AL").upper()
    return condition == "AL" or (condition == "ER" and not success) or (condition == "SU" and success)


def enhanced_mode(header: MessageHeader) -> bool:
    return header.accept_ack_type is not None or header.application_ack_type is not None


def best_effort_header(raw: bytes) -> MessageHeader:
    """Enough of MSH to address an ACK when the real parser cannot read it; never raises."""
    at = raw.find(b"MSH")
    field_sep, enc, fields = DEFAULT_FIELD, DEFAULT_ENCODING, [""] * 20
    if at >= 0:
        line = re.split(rb"[\r\n]", raw[at:], maxsplit=1)[0].decode("latin-1")
        match = _MSH_FIELD.match(line.encode("latin-1"))
        if match and match.group(1) not in (b"\r", b"\n") and match.group(1).isascii():
            field_sep = line[3]
            parts = line.split(field_sep)
            fields = ["MSH", field_sep] + parts[1:] + [""] * 20
            enc = fields[2]
    if not _usable_delimiters(field_sep, enc):
        field_sep, enc = DEFAULT_FIELD, DEFAULT_ENCODING
        fields = ["MSH", "|"] + [""] * 20

    def first(n: int) -> str:
        return fields[n].split(enc[0])[0].strip()[:199] if n < len(fields) else ""

    nine = fields[9].split(enc[0]) if len(fields) > 9 else [""]
    message_type = "^".join(p.strip() for p in nine[:2] if p.strip())
    return MessageHeader(
        field_separator=field_sep, encoding_characters=enc,
        sending_application=first(3), sending_facility=first(4),
        receiving_application=first(5), receiving_facility=first(6),
        message_type=message_type, message_structure=nine[2].strip() if len(nine) > 2 else "",
        control_id=first(10), processing_id=first(11), version=first(12),
        accept_ack_type=first(15) or None, application_ack_type=first(16) or None, charset=first(18) or None,
    )


def _usable_delimiters(field_sep: str, enc: str) -> bool:
    chars = field_sep + enc
    return (
        4 <= len(enc) <= 5 and len(set(chars)) == len(chars)
        and all(c.isascii() and c.isprintable() and not c.isalnum() and c != " " for c in chars)
    )


class _Writer:
    """Escapes text into the message's own delimiters (HL7 chapter 2.7)."""

    def __init__(self, header: MessageHeader) -> None:
        field_sep, enc = header.field_separator, header.encoding_characters
        if not _usable_delimiters(field_sep, enc):
            field_sep, enc = DEFAULT_FIELD, DEFAULT_ENCODING
        self.field, self.enc = field_sep, enc
        self.component, self.repetition, self.escape_char, self.subcomponent = enc[0], enc[1], enc[2], enc[3]
        self._table = {
            ord(self.escape_char): f"{self.escape_char}E{self.escape_char}",
            ord(self.field): f"{self.escape_char}F{self.escape_char}",
            ord(self.component): f"{self.escape_char}S{self.escape_char}",
            ord(self.repetition): f"{self.escape_char}R{self.escape_char}",
            ord(self.subcomponent): f"{self.escape_char}T{self.escape_char}",
            ord("\r"): " ", ord("\n"): " ", ord("\x0b"): " ", ord("\x1c"): " ",
        }
        if len(enc) > 4:  # the v2.7 truncation character
            self._table[ord(enc[4])] = f"{self.escape_char}P{self.escape_char}"

    def text(self, value: str, limit: int = 1000) -> str:
        return value[:limit].translate(self._table)

    def components(self, *parts: str) -> str:
        return self.component.join(self.text(p) for p in parts).rstrip(self.component)

    def segment(self, name: str, fields: list[str]) -> str:
        return self.field.join([name, *fields]).rstrip(self.field)


def error_location(location: str, writer: _Writer) -> str:
    """ERR-2 (ERL: segment^sequence^field^repetition^component^subcomponent) from ``OBX[2]-5.1``."""
    match = _LOCATION.match(location or "")
    if not match:
        return ""
    segment, sequence, field_no, repetition, component, sub = match.groups()
    parts = [segment, sequence or "1", field_no or "", repetition or ("1" if field_no else ""), component or "", sub or ""]
    return writer.component.join(parts).rstrip(writer.component)


def build_ack(
    header: MessageHeader, code: str, error: HL7Error | None = None, now: datetime | None = None,
    control_id: str | None = None,
) -> bytes:
    """One ACK message (segments ending in CR, no MLLP framing), encoded as MSH-18 says."""
    w = _Writer(header)
    now = now or datetime.now(UTC)
    trigger = header.message_type.split("^")[1] if "^" in header.message_type else ""
    msh = [
        w.enc,
        w.text(header.receiving_application, 227), w.text(header.receiving_facility, 227),
        w.text(header.sending_application, 227), w.text(header.sending_facility, 227),
        now.strftime("%Y%m%d%H%M%S") + "+0000", "",
        w.components("ACK", w.text(trigger, 3), "ACK") if trigger else w.components("ACK"),
        control_id or secrets.token_hex(10),
        w.text(header.processing_id or "P", 3), w.text(header.version or "2.5.1", 60),
        "", "", "", "", "", w.text(header.charset or "", 16),
    ]
    segments = [w.field.join(["MSH", *msh]).rstrip(w.field)]
    msa = [code, w.text(header.control_id, 199)]
    if error is not None:
        msa.append(w.text(error.text, 80))
    segments.append(w.segment("MSA", msa))
    if error is not None:
        err = [
            "",  # ERR-1 (deprecated since v2.5)
            error_location(error.location, w),
            w.components(error.code, _CODE_TEXT.get(error.code, ""), "HL70357"),
            error.severity or "E",
            "", "", "",
            w.text(error.text if not error.location else f"{error.location}: {error.text}", 1000),
        ]
        segments.append(w.segment("ERR", err))
    text = "\r".join(segments) + "\r"
    codec = _CHARSETS.get((header.charset or "").upper(), "utf-8")
    return text.encode(codec, errors="replace")


def responses(
    header: MessageHeader, committed: bool, stored: bool, error: HL7Error | None, header_readable: bool = True,
    now: datetime | None = None,
) -> list[tuple[str, bytes]]:
    """The acknowledgements to send for one message, in order: [(code, ACK bytes)]."""
    out: list[tuple[str, bytes]] = []
    if not committed:
        failure = error or HL7Error("207", "", "the bridge could not keep the message; resend it later")
        if header_readable and enhanced_mode(header):
            if _wanted(header.accept_ack_type, success=False):
                out.append(("CE", build_ack(header, "CE", failure, now)))
            return out
        return [("AR", build_ack(header, "AR", failure, now))]
    app = application_code(stored, error, header_readable)
    if header_readable and enhanced_mode(header):
        if _wanted(header.accept_ack_type, success=True):
            out.append(("CA", build_ack(header, "CA", None, now)))
        if _wanted(header.application_ack_type, success=app == "AA"):
            out.append((app, build_ack(header, app, error, now)))
        return out
    return [(app, build_ack(header, app, error, now))]


_CODE_TEXT = {
    "0": "Message accepted", "100": "Segment sequence error", "101": "Required field missing",
    "102": "Data type error", "103": "Table value not found", "104": "Value too long",
    "200": "Unsupported message type", "201": "Unsupported event code", "202": "Unsupported processing id",
    "203": "Unsupported version id", "204": "Unknown key identifier", "205": "Duplicate key identifier",
    "206": "Application record locked", "207": "Application internal error",
}
