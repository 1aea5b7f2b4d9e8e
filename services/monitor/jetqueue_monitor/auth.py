"""Authentication and roles: API tokens (Bearer) and UI sessions (signed cookie + CSRF).

Roles are ordered: viewer < operator < admin. A viewer reads; an operator also
pauses, resumes, retries and cancels; an admin also drains and cleans.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler


class Role(IntEnum):
    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @classmethod
    def parse(cls, value: str) -> Role:
        try:
            return cls[value.strip().upper()]
        except KeyError as exc:
            raise ValueError(f"unknown role {value!r} (viewer, operator or admin)") from exc


@dataclass(slots=True, frozen=True)
class Principal:
    name: str
    role: Role
    via: str  # "token" or "session"

    @property
    def role_name(self) -> str:
        return self.role.name.lower()


def parse_credentials(spec: str) -> dict[str, tuple[str, Role]]:
    """``"alice:admin:s3cret,bob:viewer:pw"`` → {secret: (name, role)} (the secret may contain ':')."""
    out: dict[str, tuple[str, Role]] = {}
    for item in (x.strip() for x in spec.split(",")):
        if not item:
            continue
        parts = item.split(":", 2)
        if len(parts) != 3 or not parts[0] or not parts[2]:
            raise ValueError(f"credential entry {item.split(':')[0]!r} must be name:role:secret")
        out[parts[2]] = (parts[0], Role.parse(parts[1]))
    return out


class Authenticator:
    """Checks tokens and passwords in constant time."""

    def __init__(self, tokens: str, users: str) -> None:
        self._tokens = {_digest(k): v for k, v in parse_credentials(tokens).items()}
        self._users = {name: (_digest(pw), role) for pw, (name, role) in parse_credentials(users).items()}

    def by_token(self, token: str) -> Principal | None:
        d = _digest(token)
        for known, (name, role) in self._tokens.items():
            if hmac.compare_digest(known, d):
                return Principal(name, role, "token")
        return None

    def by_password(self, name: str, password: str) -> Principal | None:
        entry = self._users.get(name)
        d = _digest(password)
        if entry is None:
            hmac.compare_digest(d, _digest(secrets.token_hex(8)))  # same work for unknown users
            return None
        if hmac.compare_digest(entry[0], d):
            return Principal(name, entry[1], "session")
        return None


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def session_of(connection: ASGIConnection[Any, Any, Any, Any]) -> dict[str, Any]:
    """The cookie session as a dict (empty when there is none)."""
    session = connection.scope.get("session")
    return session if isinstance(session, dict) else {}


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The caller, from ``Authorization: Bearer`` or the session; 401 if neither."""
    cached = connection.scope.get("jq_principal")
    if isinstance(cached, Principal):
        return cached
    auth: Authenticator = connection.app.state.auth
    header = connection.headers.get("authorization", "")
    principal: Principal | None = None
    if header.lower().startswith("bearer "):
        principal = auth.by_token(header[7:].strip())
        if principal is None:
            raise NotAuthorizedException("invalid API token")
    else:
        session = session_of(connection)
        if session.get("user") and session.get("role"):
            principal = Principal(str(session["user"]), Role.parse(str(session["role"])), "session")
    if principal is None:
        raise NotAuthorizedException("authentication required: log in or send Authorization: Bearer <token>")
    connection.scope["jq_principal"] = principal  # type: ignore[typeddict-unknown-key]
    return principal


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def check_csrf(connection: ASGIConnection[Any, Any, Any, Any], p: Principal) -> None:
    """Cookie sessions must echo the session's CSRF token on state-changing requests.

    Bearer tokens need no such check: a browser never attaches them by itself.
    """
    if p.via != "session" or connection.scope.get("method", "GET") in SAFE_METHODS:
        return
    expected = session_of(connection).get("csrf")
    given = connection.headers.get("x-csrf-token", "")
    if not expected or not given or not hmac.compare_digest(str(expected), given):
        raise PermissionDeniedException("CSRF token missing or invalid (send the X-CSRF-Token from login)")


def require(role: Role) -> Any:
    """A Litestar guard: 401 without credentials, 403 below ``role``."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
        p = principal_of(connection)
        if p.role < role:
            raise PermissionDeniedException(f"{role.name.lower()} role required (you are {p.role_name})")
        check_csrf(connection, p)

    guard.__name__ = f"require_{role.name.lower()}"
    return guard


viewer = require(Role.VIEWER)
operator = require(Role.OPERATOR)
admin = require(Role.ADMIN)
