"""A lazy HL7v2 parser: split into segments once, split fields, repetitions and components on demand.

Numbering follows the standard and is 1-based everywhere: segment occurrence, field, repetition,
component, subcomponent.  In MSH (and FHS/BHS) field 1 is the field separator itself and field 2 the
encoding characters, so ``MSH-9`` is the ninth field as the standard counts it.
"""

from __future__ import annotations

import re

from .charset import decode
from .delimiters import Delimiters, read_delimiters
from .escape import unescape
from .types import HL7Error, MessageHeader

NULL = '""'  # an explicit null: "delete this value" (chapter 2.5.3)
HEADER_SEGMENTS = ("MSH", "FHS", "BHS")
BATCH_SEGMENTS = (b"FHS", b"BHS", b"BTS", b"FTS")
_SEGMENT_END = re.compile(r"\r\n|\r|\n")
_NAME = re.compile(r"[A-Z][A-Z0-9]{2}\Z")
_KNOWN_NAMES: set[str] = set()
_FRAMING = "\ufeff\x0b\x1c\x00 \t"  # BOM, MLLP start/end blocks, stray padding before MSH


class Segment:
    """One segment; fields are split the first time one is asked for."""

    __slots__ = ("name", "line", "delimiters", "_fields", "_parsed")

    def __init__(self, line: str, delimiters: Delimiters) -> None:
        self.name = line[:3]
        self.line = line
        self.delimiters = delimiters
        self._fields: list[str] | None = None
        self._parsed: dict[int, list] | None = None

    @property
    def fields(self) -> list[str]:
        """Raw fields indexed so that ``fields[n]`` is field n (``fields[0]`` is the segment name)."""
        if self._fields is None:
            parts = self.line.split(self.delimiters.field)
            if self.name in HEADER_SEGMENTS:
                parts.insert(1, self.delimiters.field)  # MSH-1 is the separator itself
            self._fields = parts
        return self._fields

    def __len__(self) -> int:
        """Number of the last field present."""
        return len(self.fields) - 1

    def field(self, n: int) -> str:
        """Raw (escaped) field n, '' when absent."""
        f = self.fields
        return f[n] if 0 < n < len(f) else ""

    def repetitions(self, n: int) -> list[str]:
        raw = self.field(n)
        if not raw:
            return []
        if self.name in HEADER_SEGMENTS and n <= 2:
            return [raw]  # MSH-1/MSH-2 contain the delimiters and are never split
        return raw.split(self.delimiters.repetition)

    def components(self, n: int, repetition: int = 1) -> list[str]:
        reps = self.repetitions(n)
        if not 0 < repetition <= len(reps):
            return []
        if self.name in HEADER_SEGMENTS and n <= 2:
            return reps
        return reps[repetition - 1].split(self.delimiters.component)

    def value(self, n: int, repetition: int = 1, component: int = 1, subcomponent: int = 1) -> str:
        """Unescaped text at SEG-n(repetition).component.subcomponent; '' when absent."""
        comps = self.components(n, repetition)
        if not 0 < component <= len(comps):
            return ""
        raw = comps[component - 1]
        if self.name in HEADER_SEGMENTS and n <= 2:
            return raw
        subs = raw.split(self.delimiters.subcomponent)
        if not 0 < subcomponent <= len(subs):
            return ""
        return unescape(subs[subcomponent - 1], self.delimiters, f"{self.name}-{n}")

    def parsed(self, n: int) -> list[list[list[str]]]:
        """Field n fully split and unescaped: repetition -> component -> subcomponent.

        Cached: several mapping rules read the same field.  Treat the result as read-only.
        """
        if self._parsed is None:
            self._parsed = {}
        elif n in self._parsed:
            return self._parsed[n]
        value = self._parse_field(n)
        self._parsed[n] = value
        return value

    def _parse_field(self, n: int) -> list[list[list[str]]]:
        d = self.delimiters
        where = f"{self.name}-{n}"
        if self.name in HEADER_SEGMENTS and n <= 2:
            raw = self.field(n)
            return [[[raw]]] if raw else []
        return [
            [[unescape(s, d, where) for s in c.split(d.subcomponent)] for c in rep.split(d.component)]
            for rep in self.repetitions(n)
        ]

    def __repr__(self) -> str:
        return f"Segment({self.line[:40]!r})"


class Message:
    """A parsed message: its text, delimiters and segments in order."""

    __slots__ = ("text", "delimiters", "segments", "charset", "warnings")

    def __init__(self, text: str, delimiters: Delimiters, segments: list[Segment], charset: str | None,
                 warnings: list[str]) -> None:
        self.text, self.delimiters, self.segments = text, delimiters, segments
        self.charset, self.warnings = charset, warnings

    def all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]

    def segment(self, name: str, occurrence: int = 1) -> Segment | None:
        """The occurrence-th segment called name (1-based), or None."""
        seen = 0
        for s in self.segments:
            if s.name == name:
                seen += 1
                if seen == occurrence:
                    return s
        return None

    def get(self, location: str) -> str:
        """Unescaped value at a location such as ``PID-5.1``, ``PID-3[2].4.2`` or ``OBX[2]-5``."""
        m = _LOCATION.match(location)
        if not m:
            raise ValueError(f"not a location: {location!r}")
        name, occ, fld, rep, comp, sub = m.groups()
        seg = self.segment(name, int(occ or 1))
        if seg is None:
            return ""
        return seg.value(int(fld), int(rep or 1), int(comp or 1), int(sub or 1))

    @property
    def msh(self) -> Segment:
        return self.segments[0]


_LOCATION = re.compile(r"([A-Z][A-Z0-9]{2})(?:\[(\d+)\])?-(\d+)(?:\[(\d+)\])?(?:\.(\d+))?(?:\.(\d+))?\Z")


def _lines(text: str) -> list[str]:
    """Segment lines: CR, LF and CRLF all end a segment (even mixed); blank lines and trailing
    whitespace are dropped because senders and editors add them."""
    if "\n" in text:  # str methods run in C; a regex split costs several times more on long messages
        text = text.replace("\r\n", "\r").replace("\n", "\r")
    return [line for line in (s.rstrip() for s in text.split("\r")) if line]


def _start(text: str) -> str:
    text = text.lstrip(_FRAMING)
    if not text.startswith("MSH"):
        if text.startswith(("FHS", "BHS")):
            raise HL7Error("100", text[:3], "a batch, not a message: split it with split_batch first")
        pos = text.find("MSH")
        if pos < 0:
            raise HL7Error("100", "MSH", "the message has no MSH segment")
        raise HL7Error("100", "MSH", f"the message must begin with MSH; found {text[:pos][:20]!r} first")
    return text


def parse(raw: bytes | str, strict: bool = True) -> Message:
    """Parse one message.  Raises HL7Error for text that is not an HL7v2 message.

    Only segments are split here; fields and their parts are split when read.
    """
    if isinstance(raw, bytes):
        text, charset, warnings = decode(raw)
    else:
        text, charset, warnings = raw, None, []
    text = _start(text)
    lines = _lines(text)
    delimiters, more = read_delimiters(lines[0], strict)
    warnings = warnings + more
    segments = []
    fs = delimiters.field
    known = _KNOWN_NAMES
    for i, line in enumerate(lines):
        name = line[:3]
        if name not in known:
            if not _NAME.match(name):
                name = ""
            elif len(known) < 10_000:  # remember valid names; bounded against hostile input
                known.add(name)
        if not name or (len(line) > 3 and line[3] != fs):
            if strict:
                raise HL7Error("100", f"segment {i + 1}", f"{line[:20]!r} is not a segment")
            warnings.append(f"segment {i + 1}: {line[:20]!r} is not a segment; ignored")
            continue
        segments.append(Segment(line, delimiters))
    return Message(text, delimiters, segments, charset, warnings)


def _optional(value: str) -> str | None:
    return value or None


def parse_header(raw: bytes) -> MessageHeader:
    """What MSH says, read leniently so that a message with a broken body can still be acknowledged.

    Raises HL7Error when there is no MSH segment or its delimiters cannot be read at all.
    """
    start = raw.find(b"MSH")
    if start >= 0 and not raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        # Only the MSH line is decoded: the header of a large message costs what a small one does.
        ends = [p for p in (raw.find(b"\r", start), raw.find(b"\n", start)) if p >= 0]
        head = raw[start : min(ends)] if ends else raw[start:]
        line, charset, _ = decode(head)
    else:  # UTF-16/32 (or no MSH at all): decode everything
        text, charset, _ = decode(raw)
        pos = text.find("MSH")
        if pos < 0:
            raise HL7Error("100", "MSH", "the message has no MSH segment")
        line = _SEGMENT_END.split(text[pos:], maxsplit=1)[0]
    line = line.rstrip()
    delimiters, _ = read_delimiters(line, strict=False)
    return header_of(Segment(line, delimiters), charset)


def header_of(msh: Segment, charset: str | None = None) -> MessageHeader:
    """The MessageHeader of an MSH segment already parsed (no second decoding of the message)."""
    d = msh.delimiters
    fields = msh.fields

    def part(n: int, component: int = 1) -> str:
        # First repetition, given component, first subcomponent: what Segment.value reads, without
        # its per-call overhead (the header is read for every message, before anything else).
        raw = fields[n] if n < len(fields) else ""
        if not raw:
            return ""
        comps = raw.split(d.repetition, 1)[0].split(d.component)
        value = comps[component - 1].split(d.subcomponent, 1)[0] if component <= len(comps) else ""
        return unescape(value, d, f"MSH-{n}").strip() if d.escape in value else value.strip()

    event, trigger = part(9), part(9, 2)
    return MessageHeader(
        field_separator=d.field,
        encoding_characters=d.encoding_characters,
        sending_application=part(3),
        sending_facility=part(4),
        receiving_application=part(5),
        receiving_facility=part(6),
        message_type=f"{event}^{trigger}" if trigger else event,
        message_structure=part(9, 3),
        control_id=part(10),
        processing_id=part(11),
        version=part(12),
        accept_ack_type=_optional(part(15)),
        application_ack_type=_optional(part(16)),
        charset=_optional(part(18)) or charset,
    )


def split_batch(raw: bytes) -> list[bytes]:
    """The messages of an HL7 batch file (FHS/BHS ... BTS/FTS), each as bytes ending in CR.

    A single message without batch segments comes back unchanged as ``[raw]``.  Raises HL7Error
    (100, segment sequence error) for a batch whose envelope is broken: message segments outside
    any MSH, a nested BHS or a second FHS.
    """
    body = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw
    lines = [line for line in re.split(rb"\r\n|\r|\n", body) if line.strip()]
    names = [line.lstrip(b"\x0b\x1c\x00 \t")[:3] for line in lines]
    if not any(n in BATCH_SEGMENTS for n in names) and names.count(b"MSH") <= 1:
        return [raw]
    messages: list[list[bytes]] = []
    current: list[bytes] | None = None
    batch_open = False
    for i, (name, line) in enumerate(zip(names, lines, strict=True)):
        where = f"segment {i + 1} ({name.decode('latin-1')})"
        if name == b"FHS":
            if i != 0:
                raise HL7Error("100", where, "FHS must be the first segment of a batch file")
            current = None
        elif name == b"BHS":
            if batch_open:
                raise HL7Error("100", where, "BHS inside a batch that has not ended with BTS")
            batch_open = True
            current = None
        elif name == b"BTS":  # likewise tolerated without BHS
            batch_open = False
            current = None
        elif name == b"FTS":  # a trailer without its header is tolerated: nothing is lost
            current = None
        elif name == b"MSH":
            current = [line]
            messages.append(current)
        elif current is None:
            raise HL7Error("100", where, "segment outside a message: expected MSH first")
        else:
            current.append(line)
    return [b"\r".join(m) + b"\r" for m in messages]
