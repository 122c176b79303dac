"""Errors raised by the adapters.

    AdapterError            base of everything raised here
    ├── FramingError        an MLLP stream broke its framing (oversize frame); the connection is closed
    └── ListenerError       a listener cannot start (address in use, TLS files unreadable); says what to do
"""

from __future__ import annotations


class AdapterError(Exception):
    """Base of every error raised by :mod:`adapters`."""


class FramingError(AdapterError):
    """The peer broke MLLP framing in a way that cannot be recovered on this connection."""


class ListenerError(AdapterError):
    """A listener cannot start."""
