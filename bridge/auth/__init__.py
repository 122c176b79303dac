"""SMART Backend Services authorisation: client registry, signed client assertions, access tokens, scopes."""
