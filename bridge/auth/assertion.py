"""Checking a SMART Backend Services client assertion (a JWT signed by the client): pure, given the time.

The checks are those of the SMART Backend Services specification and RFC 7523: the algorithm is
one we accept (RS384, ES384), the key is one of the client's registered keys (by ``kid`` when given),
``iss`` and ``sub`` are the client id, ``aud`` is our token endpoint, ``exp`` is present, not past,
and at most five minutes ahead, and ``jti`` is present (its single use is checked by the caller,
which owns the store of seen ones).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import jwt

from ..errors import AuthError

ALGORITHMS = ("RS384", "ES384")
MAX_LIFETIME = 300  # seconds: the specification's limit on exp - now
LEEWAY = 30  # seconds of clock skew tolerated


@dataclass(frozen=True)
class Assertion:
    client_id: str
    jti: str
    expires_at: int


def load_jwks(text: str) -> dict:
    """Parse and check a JWK Set: it must hold at least one RSA or EC public key usable for our algorithms."""
    try:
        jwks = json.loads(text)
        keys = jwt.PyJWKSet.from_dict(jwks).keys
    except (ValueError, jwt.PyJWTError) as exc:
        raise AuthError("invalid_request", f"not a usable JWK Set: {exc}") from exc
    if any(getattr(k, "key", None) is not None and hasattr(k.key, "private_bytes") for k in keys):
        raise AuthError("invalid_request", "the JWK Set holds a private key; register public keys only")
    return jwks


def unverified_client_id(token: str) -> str:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise AuthError("invalid_client", f"client_assertion is not a JWT: {exc}") from exc
    client_id = claims.get("iss")
    if not isinstance(client_id, str) or not client_id:
        raise AuthError("invalid_client", "client_assertion has no iss claim")
    return client_id


def verify_assertion(token: str, jwks: dict, client_id: str, audience: str, now: float) -> Assertion:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise AuthError("invalid_client", f"client_assertion is not a JWT: {exc}") from exc
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise AuthError("invalid_client", f"client_assertion alg must be one of {', '.join(ALGORITHMS)}, found {alg!r}")
    keys = [k for k in jwt.PyJWKSet.from_dict(jwks).keys if header.get("kid") in (None, k.key_id)]
    if not keys:
        raise AuthError("invalid_client", f"no registered key with kid {header.get('kid')!r}")
    last_error: Exception | None = None
    for key in keys:
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=audience,
                issuer=client_id,
                leeway=LEEWAY,
                options={"require": ["iss", "sub", "aud", "exp", "jti"], "verify_iat": False},
            )
            break
        except jwt.InvalidSignatureError as exc:
            last_error = exc
            continue
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("invalid_client", "client_assertion has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthError("invalid_client", f"client_assertion aud must be {audience}") from exc
        except jwt.PyJWTError as exc:
            raise AuthError("invalid_client", f"client_assertion rejected: {exc}") from exc
    else:
        raise AuthError("invalid_client", "client_assertion signature does not verify with the registered keys") from last_error
    if claims["sub"] != client_id:
        raise AuthError("invalid_client", "client_assertion sub must equal iss (the client id)")
    if claims["exp"] > now + MAX_LIFETIME + LEEWAY:
        raise AuthError("invalid_client", f"client_assertion exp is more than {MAX_LIFETIME} s ahead")
    if not isinstance(claims["jti"], str) or not claims["jti"]:
        raise AuthError("invalid_client", "client_assertion jti must be a non-empty string")
    return Assertion(client_id, claims["jti"], int(claims["exp"]))
