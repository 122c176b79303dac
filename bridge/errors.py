"""Errors raised by the bridge package.

    BridgeError              base of everything raised here
    ├── ConfigError          configuration file or environment cannot be used; says which setting
    ├── DatabaseError        the database URL cannot be opened; says what to do
    ├── IngestError          the inbox or the store cannot do what was asked (unknown message, bad resource)
    └── HL7Error             (bridge.hl7.types) a message cannot be parsed, mapped or validated
"""


class BridgeError(Exception):
    """Base of every error raised by :mod:`bridge`."""


class ConfigError(BridgeError):
    """A setting is missing, malformed or inconsistent."""


class DatabaseError(BridgeError):
    """The configured database cannot be used."""


class IngestError(BridgeError):
    """The inbox, the store or the pipeline cannot do what was asked; says what to do next."""


class AuthError(BridgeError):
    """Authentication or authorisation refused; ``error`` is the OAuth 2.0 code (RFC 6749 5.2)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error, self.description = error, description
