"""Bearer-token checks for protected endpoints: 401 without a valid token, 403 without the scope."""

from __future__ import annotations

import time

from flask import g, request

from ..auth.registry import AccessGrant
from ..auth.scopes import allows
from .context import services
from .outcome import ApiError


def current_grant() -> AccessGrant:
    """The caller's grant; raises 401 (with a WWW-Authenticate challenge) when there is none."""
    if "grant" in g:
        return g.grant
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "login", "a bearer access token is required: POST a client assertion to /auth/token")
    grant = services().registry.grant_for(token.strip(), int(time.time()))
    if grant is None:
        raise ApiError(401, "login", "the access token is unknown or expired; request a new one")
    g.grant = grant
    return grant


def require(resource_type: str, permission: str = "r", grant: AccessGrant | None = None) -> AccessGrant:
    """The caller's grant (``grant`` if the caller already has it) if its scopes allow ``permission``."""
    grant = grant or current_grant()
    if not allows(grant.scopes, resource_type, permission):
        raise ApiError(403, "forbidden", f"the token's scopes do not allow {permission} on {resource_type}")
    return grant
