"""Errors raised by the anchoring package.

    AnchoringError                 base of everything raised here
    ├── VerificationError          a proof, note, checkpoint or key did not check out, or its
    │                              text is malformed; the message names what was expected and
    │                              what was found
    ├── LogError                   a request the log cannot answer (index past the size, ...)
    ├── KeyFileError               a signing key file is missing, malformed or too readable
    └── AnchorError                an anchor backend cannot do what was asked (node unreachable
        │                          after retries, wrong chain, transaction reverted, journal
        │                          unwritable); the message says what to do next
        └── AnchorVerificationError an anchor did not check out (also a VerificationError): the
                                   message names the check (origin, size, root, contract,
                                   chain, confirmations, journal) and what was found
"""


class AnchoringError(Exception):
    """Base of every error raised by :mod:`anchoring`."""


class VerificationError(AnchoringError):
    """Something presented for verification is not what it claims to be."""


class LogError(AnchoringError):
    """The log cannot answer the request as asked."""


class KeyFileError(AnchoringError):
    """A signing key file cannot be used."""


class AnchorError(AnchoringError):
    """An anchor backend cannot do what was asked."""


class AnchorVerificationError(AnchorError, VerificationError):
    """An anchor is missing or does not match its checkpoint."""
