"""Errors raised by the FHIR source adapter (subclasses of :class:`adapters.errors.AdapterError`).

    AdapterError
    └── FhirSourceError       a FHIR source cannot be synced; says what to do next
        ├── SourceConfigError a [[fhir_sources]] table is malformed; names the source and the setting
        ├── SourceAuthError   the source refused our credentials or the token endpoint failed
        └── SourceHTTPError   retries exhausted, or a response that retrying cannot fix
"""

from __future__ import annotations

from ..errors import AdapterError


class FhirSourceError(AdapterError):
    """A FHIR source cannot be synced."""


class SourceConfigError(FhirSourceError):
    """A source's configuration cannot be used."""


class SourceAuthError(FhirSourceError):
    """Authentication with the source failed."""


class SourceHTTPError(FhirSourceError):
    """A request to the source failed for good."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
