"""Registered clients, seen assertion ids (jti) and issued access tokens, kept in the project database.

Access tokens are opaque random strings; only their SHA-256 is stored, so a database dump does not
hand out working tokens, and every bridge process sharing the database honours them.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass

from anchoring.db import Database

from ..errors import AuthError
from .assertion import load_jwks

_SCHEMA = """
CREATE TABLE IF NOT EXISTS auth_clients (
    client_id TEXT PRIMARY KEY,
    organization TEXT NOT NULL,
    jwks TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at {bigint} NOT NULL
);
CREATE TABLE IF NOT EXISTS auth_seen_jti (
    client_id TEXT NOT NULL,
    jti TEXT NOT NULL,
    expires_at {bigint} NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE TABLE IF NOT EXISTS auth_tokens (
    token_sha256 TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    organization TEXT NOT NULL,
    scopes TEXT NOT NULL,
    expires_at {bigint} NOT NULL
)
"""
_BIGINT = {"sqlite": "INTEGER", "postgresql": "BIGINT"}

TOKEN_LIFETIME = 300  # seconds; SMART recommends five minutes for backend services


@dataclass(frozen=True)
class Client:
    client_id: str
    organization: str
    jwks: dict
    scopes: list[str]


@dataclass(frozen=True)
class AccessGrant:
    client_id: str
    organization: str
    scopes: list[str]
    expires_at: int


def ensure_schema(db: Database) -> None:
    with db.transaction(write=True) as cur:
        for statement in _SCHEMA.format(bigint=_BIGINT[db.dialect]).split(";"):
            cur.execute(statement)


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Registry:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add_client(self, organization: str, jwks_text: str, scopes: list[str], client_id: str | None = None) -> Client:
        jwks = load_jwks(jwks_text)
        # hex: a generated id is typed as a command argument (`clients remove ID`), and one starting
        # with "-", as a URL-safe token may, would read as an option
        client = Client(client_id or secrets.token_hex(16), organization, jwks, scopes)
        with self.db.transaction(write=True) as cur:
            cur.execute("SELECT 1 FROM auth_clients WHERE client_id = ?", (client.client_id,))
            if cur.fetchone():
                raise AuthError("invalid_request", f"client {client.client_id} is registered already")
            cur.execute(
                "INSERT INTO auth_clients (client_id, organization, jwks, scopes, created_at) VALUES (?, ?, ?, ?, ?)",
                (client.client_id, organization, json.dumps(jwks), " ".join(scopes), int(time.time())),
            )
        return client

    def remove_client(self, client_id: str) -> bool:
        """Unregister a client and end its tokens at once; False if it was not registered."""
        with self.db.transaction(write=True) as cur:
            cur.execute("SELECT 1 FROM auth_clients WHERE client_id = ?", (client_id,))
            if cur.fetchone() is None:
                return False
            cur.execute("DELETE FROM auth_tokens WHERE client_id = ?", (client_id,))
            cur.execute("DELETE FROM auth_clients WHERE client_id = ?", (client_id,))
            return True

    def client(self, client_id: str) -> Client | None:
        with self.db.transaction() as cur:
            cur.execute("SELECT client_id, organization, jwks, scopes FROM auth_clients WHERE client_id = ?", (client_id,))
            row = cur.fetchone()
        return None if row is None else Client(row[0], row[1], json.loads(row[2]), row[3].split())

    def clients(self) -> list[Client]:
        with self.db.transaction() as cur:
            cur.execute("SELECT client_id, organization, jwks, scopes FROM auth_clients ORDER BY created_at, client_id")
            return [Client(r[0], r[1], json.loads(r[2]), r[3].split()) for r in cur.fetchall()]

    def use_jti(self, client_id: str, jti: str, expires_at: int, now: int) -> None:
        """Record an assertion id; a second use before it expires is a replay."""
        with self.db.transaction(write=True) as cur:
            cur.execute("DELETE FROM auth_seen_jti WHERE expires_at < ?", (now - 3600,))
            cur.execute("SELECT 1 FROM auth_seen_jti WHERE client_id = ? AND jti = ?", (client_id, jti))
            if cur.fetchone():
                raise AuthError("invalid_client", "client_assertion jti was used before (replay)")
            cur.execute("INSERT INTO auth_seen_jti (client_id, jti, expires_at) VALUES (?, ?, ?)", (client_id, jti, expires_at))

    def issue_token(self, client: Client, scopes: list[str], now: int) -> tuple[str, int]:
        token = secrets.token_urlsafe(32)
        expires_at = now + TOKEN_LIFETIME
        with self.db.transaction(write=True) as cur:
            cur.execute("DELETE FROM auth_tokens WHERE expires_at < ?", (now,))
            cur.execute(
                "INSERT INTO auth_tokens (token_sha256, client_id, organization, scopes, expires_at) VALUES (?, ?, ?, ?, ?)",
                (_sha256(token), client.client_id, client.organization, " ".join(scopes), expires_at),
            )
        return token, TOKEN_LIFETIME

    def grant_for(self, token: str, now: int) -> AccessGrant | None:
        """The grant behind a bearer token, or None if it is unknown or expired."""
        with self.db.transaction() as cur:
            cur.execute(
                "SELECT client_id, organization, scopes, expires_at FROM auth_tokens WHERE token_sha256 = ?",
                (_sha256(token),),
            )
            row = cur.fetchone()
        if row is None or int(row[3]) <= now:
            return None
        return AccessGrant(row[0], row[1], row[2].split(), int(row[3]))
