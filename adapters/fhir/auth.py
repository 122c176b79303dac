"""Authentication with a FHIR source: none, basic, bearer, OAuth 2.0 client credentials, SMART Backend Services.

Each strategy gives the ``Authorization`` header value for the next request and can be told that the
server answered 401 (a token is then fetched again once).  Secrets are read when first needed, held
in memory only, and never logged or put into an error message.
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

import requests

from .errors import SourceAuthError, SourceConfigError
from .sources import AuthSettings

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
EARLY_REFRESH = 30.0  # seconds before expiry a token is renewed


class Auth:
    """No authentication."""

    def header(self) -> str | None:
        return None

    def invalidate(self) -> None:
        """The server answered 401: forget any cached token."""


class StaticAuth(Auth):
    def __init__(self, value: Callable[[], str]) -> None:
        self._value = value
        self._cached: str | None = None

    def header(self) -> str | None:
        if self._cached is None:
            self._cached = self._value()
        return self._cached


class TokenAuth(Auth):
    """A bearer token from a token endpoint, cached until shortly before it expires."""

    def __init__(self, session: requests.Session, form: Callable[[str], dict[str, str]], token_url: Callable[[], str],
                 basic: Callable[[], tuple[str, str]] | None = None, timeout: float = 30.0) -> None:
        self._session, self._form, self._token_url, self._basic, self._timeout = session, form, token_url, basic, timeout
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def header(self) -> str | None:
        with self._lock:
            if self._token is None or time.monotonic() >= self._expires:
                self._fetch()
            return f"Bearer {self._token}"

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def _fetch(self) -> None:
        url = self._token_url()
        try:
            response = self._session.post(url, data=self._form(url), auth=self._basic() if self._basic else None,
                                          headers={"Accept": "application/json"}, timeout=self._timeout)
        except requests.RequestException as exc:
            raise SourceAuthError(f"token endpoint {url} unreachable: {type(exc).__name__}; check token_url") from exc
        if response.status_code != 200:
            reason = ""
            try:
                body = response.json()
                reason = f": {body.get('error', '')} {body.get('error_description', '')}".rstrip()
            except ValueError:
                pass
            raise SourceAuthError(f"token endpoint {url} answered {response.status_code}{reason}; "
                                  "check client_id, the key or secret, and the scope registered for this client")
        try:
            body = response.json()
            token = str(body["access_token"])
            lifetime = float(body.get("expires_in", 300))
        except (ValueError, KeyError, TypeError) as exc:
            raise SourceAuthError(f"token endpoint {url} answered without access_token") from exc
        self._token = token
        self._expires = time.monotonic() + max(lifetime - EARLY_REFRESH, lifetime / 2)


def discover_token_url(session: requests.Session, base_url: str, timeout: float) -> str:
    """``token_endpoint`` from ``[base]/.well-known/smart-configuration`` (or at the server's root)."""
    parts = urlsplit(base_url)
    candidates = [base_url.rstrip("/") + "/.well-known/smart-configuration",
                  f"{parts.scheme}://{parts.netloc}/.well-known/smart-configuration"]
    for url in candidates:
        try:
            response = session.get(url, headers={"Accept": "application/json"}, timeout=timeout)
            if response.status_code == 200:
                endpoint = response.json().get("token_endpoint")
                if isinstance(endpoint, str) and endpoint:
                    return endpoint
        except (requests.RequestException, ValueError):
            continue
    raise SourceAuthError(f"no token_endpoint found at {' or '.join(candidates)}; set token_url in the source's auth")


def smart_assertion(client_id: str, token_url: str, key_pem: bytes, algorithm: str, key_id: str) -> str:
    """A SMART Backend Services client assertion (a signed JWT, five minutes valid)."""
    import jwt  # PyJWT

    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": token_url, "exp": now + 300, "iat": now,
              "jti": uuid.uuid4().hex}
    headers = {"kid": key_id} if key_id else None
    try:
        return jwt.encode(claims, key_pem, algorithm=algorithm, headers=headers)
    except (ValueError, TypeError) as exc:
        raise SourceConfigError(f"the private key cannot sign {algorithm}: {type(exc).__name__}; "
                                "RS384 needs an RSA key, ES384 a P-384 key") from exc


def make_auth(settings: AuthSettings, session: requests.Session, base_url: str, timeout: float = 30.0) -> Auth:
    kind = settings.type
    if kind == "none":
        return Auth()
    if kind == "basic":
        def basic() -> str:
            raw = f"{settings.username}:{settings.secret('password')}".encode()
            return "Basic " + base64.b64encode(raw).decode()

        return StaticAuth(basic)
    if kind == "bearer":
        return StaticAuth(lambda: "Bearer " + settings.secret("token"))
    found: dict[str, str] = {}

    def token_url() -> str:
        if "url" not in found:
            found["url"] = settings.token_url or discover_token_url(session, base_url, timeout)
        return found["url"]

    def scope(form: dict[str, str]) -> dict[str, str]:
        if settings.scope:
            form["scope"] = settings.scope
        return form

    if kind == "client_credentials":
        return TokenAuth(session, lambda url: scope({"grant_type": "client_credentials"}), token_url,
                         lambda: (settings.client_id, settings.secret("client_secret")), timeout)
    if kind == "smart":
        try:
            with open(settings.private_key_file, "rb") as fh:
                key_pem = fh.read()
        except OSError as exc:
            raise SourceConfigError(f"cannot read private_key_file {settings.private_key_file}: {exc.strerror}") from exc

        def form(url: str) -> dict[str, str]:
            assertion = smart_assertion(settings.client_id, url, key_pem, settings.algorithm, settings.key_id)
            return scope({"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
                          "client_assertion": assertion})

        return TokenAuth(session, form, token_url, None, timeout)
    raise SourceConfigError(f"unknown auth type {kind!r}")
