"""SMART on FHIR system scopes: parsing and matching, pure functions.

Both scope syntaxes are accepted: SMART v1 ``system/Observation.read`` and SMART v2
``system/Observation.rs`` (r = read, s = search, c/u/d = create/update/delete). A wildcard resource
type ``*`` matches every type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_SCOPE = re.compile(r"^system/(?P<type>\*|[A-Z][A-Za-z]+)\.(?P<perm>read|write|\*|[cruds]+)$")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}


@dataclass(frozen=True)
class Scope:
    resource_type: str  # "*" for all
    permissions: frozenset[str]  # subset of "cruds"

    def allows(self, resource_type: str, permission: str) -> bool:
        return self.resource_type in ("*", resource_type) and permission in self.permissions


@lru_cache(maxsize=1024)  # a client's few scope strings are checked on every request; Scope is frozen
def parse_scope(text: str) -> Scope | None:
    """A system scope, or None for anything else (launch, openid, patient/..., user/...)."""
    match = _SCOPE.match(text)
    if not match:
        return None
    perm = match["perm"]
    letters = _V1.get(perm, perm)
    if perm not in _V1 and "".join(sorted(set(perm), key="cruds".index)) != perm:
        return None  # v2 permissions must be in c-r-u-d-s order, each once
    return Scope(match["type"], frozenset(letters))


def parse_scopes(text: str) -> list[str]:
    return [s for s in text.split() if s]


def grant(requested: list[str], registered: list[str]) -> list[str]:
    """The requested scopes that the client's registration covers (SMART grants a subset)."""
    allowed = [parse_scope(s) for s in registered]
    granted = []
    for scope_text in requested:
        scope = parse_scope(scope_text)
        if scope is None:
            continue
        covered = all(
            any(a is not None and a.resource_type in ("*", scope.resource_type) and p in a.permissions for a in allowed)
            for p in scope.permissions
        )
        if covered:
            granted.append(scope_text)
    return granted


def allows(scopes: list[str], resource_type: str, permission: str) -> bool:
    return any(s is not None and s.allows(resource_type, permission) for s in map(parse_scope, scopes))
