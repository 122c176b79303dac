"""Errors raised by the anchoring package.

    AnchoringError                 base of everything raised here
    ├── VerificationError          a proof, note, checkpoint or key did not check out, or its
    │                              text is malformed; the message names what was expected and
    │                              what was found
    ├── LogError                   a request the log cannot answer (index past the size, ...)
    └── KeyFileError               a signing key file is missing, malformed or too readable
"""


class AnchoringError(Exception):
    """Base of every error raised by :mod:`anchoring`."""


class VerificationError(AnchoringError):
    """Something presented for verification is not what it claims to be."""


class LogError(AnchoringError):
    """The log cannot answer the request as asked."""


class KeyFileError(AnchoringError):
    """A signing key file cannot be used."""
