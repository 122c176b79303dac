"""SMART Backend Services: discovery document and the token endpoint (client_credentials + private_key_jwt)."""

from __future__ import annotations

import time

from flask import Blueprint, Response, jsonify, request

from ..auth.assertion import ALGORITHMS, unverified_client_id, verify_assertion
from ..auth.scopes import grant, parse_scopes
from ..errors import AuthError
from .context import services

blueprint = Blueprint("auth", __name__)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def token_endpoint_url() -> str:
    """The audience client assertions must name: our public token endpoint URL."""
    return services().config.public_base_url.rstrip("/") + "/auth/token"


def _oauth_error(exc: AuthError) -> Response:
    response = jsonify({"error": exc.error, "error_description": exc.description})
    response.status_code = 400  # RFC 6749 5.2: the client did not authenticate with HTTP auth
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.get("/.well-known/smart-configuration")
def smart_configuration() -> Response:
    return jsonify(
        {
            "token_endpoint": token_endpoint_url(),
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
            "grant_types_supported": ["client_credentials"],
            "scopes_supported": ["system/*.read", "system/*.rs"],
            "capabilities": ["client-confidential-asymmetric"],
        }
    )


@blueprint.post("/auth/token")
def token() -> Response:
    form = request.form
    try:
        if form.get("grant_type") != "client_credentials":
            raise AuthError("unsupported_grant_type", "grant_type must be client_credentials")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise AuthError("invalid_request", f"client_assertion_type must be {ASSERTION_TYPE}")
        assertion = form.get("client_assertion", "")
        if not assertion:
            raise AuthError("invalid_request", "client_assertion is required")
        registry = services().registry
        client = registry.client(unverified_client_id(assertion))
        if client is None:
            raise AuthError("invalid_client", "unknown client")
        now = time.time()
        checked = verify_assertion(assertion, client.jwks, client.client_id, token_endpoint_url(), now)
        registry.use_jti(client.client_id, checked.jti, checked.expires_at, int(now))
        granted = grant(parse_scopes(form.get("scope", "")), client.scopes)
        if not granted:
            raise AuthError("invalid_scope", f"none of the requested scopes is granted; registered: {' '.join(client.scopes)}")
        access_token, lifetime = registry.issue_token(client, granted, int(now))
    except AuthError as exc:
        return _oauth_error(exc)
    response = jsonify({"access_token": access_token, "token_type": "bearer", "expires_in": lifetime, "scope": " ".join(granted)})
    response.headers["Cache-Control"] = "no-store"
    return response
