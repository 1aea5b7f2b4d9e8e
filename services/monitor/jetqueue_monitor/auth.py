"""Authentication and roles: API tokens (Bearer) and UI sessions (signed cookie + CSRF).

Roles are ordered: viewer < operator < admin. A viewer reads; an operator also
pauses, resumes, retries and cancels; an admin also drains and cleans.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from jetqueue_monitor import audit


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


class LoginLimiter:
    """Failed logins per username and per client address in a sliding window, in memory.

    Each replica counts its own: behind N replicas an attacker gets up to N
    times the limits. A blocked attempt is not counted (the lockout ends when
    the window frees, whatever the caller does meanwhile), and a successful
    login clears its username's failures but not its address's, so one valid
    account cannot reset an address that guesses at others.
    """

    def __init__(
        self,
        *,
        per_user: int,
        per_address: int,
        window_s: float,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = {"user": per_user, "address": per_address}
        self._window = window_s
        # Bounded: a flood of made-up usernames evicts the oldest counters, never grows memory.
        self._max_keys = max_keys
        self._clock = clock
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()

    def retry_after(self, username: str, address: str) -> int:
        """Seconds until ``username`` from ``address`` may try again (0: now)."""
        now = self._clock()
        wait = 0.0
        for key in (("user", username), ("address", address)):
            times = self._failures.get(key)
            while times and times[0] <= now - self._window:
                times.popleft()
            if times is not None and len(times) >= self._limits[key[0]]:
                wait = max(wait, times[0] + self._window - now)
        return math.ceil(wait)

    def failed(self, username: str, address: str) -> None:
        now = self._clock()
        for key in (("user", username), ("address", address)):
            times = self._failures.get(key)
            if times is None:
                times = self._failures[key] = deque(maxlen=self._limits[key[0]])
            times.append(now)
            self._failures.move_to_end(key)
        while len(self._failures) > self._max_keys:
            self._failures.popitem(last=False)

    def succeeded(self, username: str) -> None:
        self._failures.pop(("user", username), None)


def _digest(value: str) -> str:
    # surrogatepass: a secret is caller input, and JSON can carry lone surrogates
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


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
    # bytes: compare_digest refuses str with non-ASCII characters, and the header is caller input
    if not expected or not given or not hmac.compare_digest(str(expected).encode(), given.encode()):
        raise PermissionDeniedException("CSRF token missing or invalid (send the X-CSRF-Token from login)")


def require(role: Role) -> Any:
    """A Litestar guard: 401 without credentials, 403 below ``role``.

    A route whose ``opt`` names an audit ``action`` gets an audit record for each 403.
    """

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        p = principal_of(connection)
        try:
            if p.role < role:
                raise PermissionDeniedException(f"{role.name.lower()} role required (you are {p.role_name})")
            check_csrf(connection, p)
        except PermissionDeniedException as exc:
            if handler.opt.get("action"):
                await audit_refused(connection, p, handler.opt["action"], str(exc.detail), handler.opt.get("entity"))
            raise

    guard.__name__ = f"require_{role.name.lower()}"
    return guard


async def audit_refused(
    connection: ASGIConnection[Any, Any, Any, Any], p: Principal, action: str, why: str, entity: str | None = None
) -> None:
    """Audit a 403 on a control route, on its entity: a queue (path ``name``), a job (path ``job_id``),
    a schedule (``entity`` SCHEDULE: ``<queue>/<name>``), or a kind without an id in the path (bulk
    actions, incidents: ``*``)."""
    params = connection.path_params
    if entity == "SCHEDULE" and "queue" in params:
        target = ("SCHEDULE", f"{params['queue']}/{params.get('name', '')}")
    elif entity:
        target = (entity, "*")
    elif "name" in params:
        target = ("QUEUE", params["name"])
    else:
        target = ("JOB", str(params.get("job_id", "")))
    await audit.refusal(
        connection.app.state,
        actor=p.name,
        role=p.role_name,
        action=action,
        entity_type=target[0],
        entity_id=target[1],
        error=why,
        params={"method": connection.scope.get("method", ""), "path": connection.url.path},
    )


viewer = require(Role.VIEWER)
operator = require(Role.OPERATOR)
admin = require(Role.ADMIN)
