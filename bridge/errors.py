"""Errors raised by the bridge package.

    BridgeError              base of everything raised here
    ├── ConfigError          configuration file or environment cannot be used; says which setting
    └── DatabaseError        the database URL cannot be opened; says what to do
"""


class BridgeError(Exception):
    """Base of every error raised by :mod:`bridge`."""


class ConfigError(BridgeError):
    """A setting is missing, malformed or inconsistent."""


class DatabaseError(BridgeError):
    """The configured database cannot be used."""
