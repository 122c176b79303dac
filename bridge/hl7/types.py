"""Types shared by the HL7v2 parser, the conversion engine (bridge.convert) and ingest (inbox, MLLP, files)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import BridgeError


class HL7Error(BridgeError):
    """A message that cannot be parsed, mapped or validated.

    ``code`` is from HL7 table 0357 (e.g. 100 segment sequence error, 101 required field missing,
    102 data type error, 103 table value not found, 200 unsupported message type, 207 application
    internal error); ``location`` names the place (``"MSH-9"``, ``"PID-7.1"``, ``"OBX[2]-5"``);
    the message is human text for the ERR segment and the integration engineer.
    """

    def __init__(self, code: str, location: str, text: str, severity: str = "E") -> None:
        super().__init__(f"{location}: {text}" if location else text)
        self.code, self.location, self.text, self.severity = code, location, text, severity


@dataclass(frozen=True)
class MessageHeader:
    """What the MSH segment says; enough to acknowledge a message even when the rest is unusable."""

    field_separator: str
    encoding_characters: str
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    message_type: str  # MSH-9.1^MSH-9.2, e.g. "ADT^A01"
    message_structure: str  # MSH-9.3 if given, else ""
    control_id: str  # MSH-10
    processing_id: str  # MSH-11
    version: str  # MSH-12
    accept_ack_type: str | None  # MSH-15 (None: original acknowledgement mode)
    application_ack_type: str | None  # MSH-16
    charset: str | None  # MSH-18

    @property
    def sender(self) -> str:
        return f"{self.sending_application}|{self.sending_facility}"


@dataclass
class Conversion:
    """The FHIR R4 resources one message maps to, before validation and storage."""

    header: MessageHeader
    resources: list[dict]  # FHIR R4 JSON, each with resourceType and a deterministic id
    unmapped: list[str] = field(default_factory=list)  # fidelity report: "PID-13", "ZPI", "OBX[2]-8"
    warnings: list[str] = field(default_factory=list)
