"""API tokens with scopes (Bearer): who may enqueue, read, cancel, or change recurring jobs."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler


class Scope(StrEnum):
    """What a token may do; ``admin`` implies every other scope."""

    ENQUEUE = "enqueue"
    READ = "read"
    CANCEL = "cancel"
    ADMIN = "admin"


class AuthConfigError(ValueError):
    """The token configuration is unusable; the producer must not start with it."""


class AuthRefused(Exception):
    """A request refused for want of credentials (401) or of a scope (403)."""

    status_code = 401
    reason = "unauthenticated"


class Unauthenticated(AuthRefused):
    """No token, or a token that matches none configured."""

    def __init__(self, message: str, *, invalid_token: bool) -> None:
        super().__init__(message)
        self.invalid_token = invalid_token


class Forbidden(AuthRefused):
    """A valid token without the scope the route needs."""

    status_code = 403
    reason = "forbidden"


@dataclass(slots=True, frozen=True)
class Principal:
    name: str
    scopes: frozenset[Scope]

    def allows(self, scope: Scope) -> bool:
        return Scope.ADMIN in self.scopes or scope in self.scopes


def parse_tokens(spec: str) -> list[tuple[Principal, str]]:
    """``"billing:enqueue+read:s3cret,ops:admin:xyz"`` → [(principal, secret)] (a secret may contain ':').

    Raises:
        AuthConfigError: an entry is malformed, names an unknown scope, or reuses a secret.
            The message names the entry, never its secret.
    """
    out: list[tuple[Principal, str]] = []
    seen: set[str] = set()
    for item in (x.strip() for x in spec.split(",")):
        if not item:
            continue
        name, _, rest = item.partition(":")
        scopes_text, _, secret = rest.partition(":")
        if not name or not scopes_text or not secret:
            raise AuthConfigError(f"token entry {name!r} must be name:scopes:secret (scopes joined with '+')")
        try:
            scopes = frozenset(Scope(s.strip().lower()) for s in scopes_text.split("+"))
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise AuthConfigError(f"token {name!r} has an unknown scope in {scopes_text!r} (known: {known})") from None
        if secret in seen:
            raise AuthConfigError(f"token {name!r} reuses another token's secret")
        seen.add(secret)
        out.append((Principal(name, scopes), secret))
    return out


class Authenticator:
    """Finds the principal of a Bearer token, comparing sha256 digests in constant time."""

    def __init__(self, tokens: str) -> None:
        self._tokens = [(_digest(secret), principal) for principal, secret in parse_tokens(tokens)]
        if not self._tokens:
            raise AuthConfigError(
                "no API tokens: set JETQUEUE_PRODUCER_TOKENS=name:scopes:secret[,...] "
                "(scopes enqueue, read, cancel, admin joined with '+'), or JETQUEUE_PRODUCER_AUTH_DISABLED=true "
                "for local development only"
            )

    def by_token(self, token: str) -> Principal | None:
        d = _digest(token)
        found: Principal | None = None
        for known, principal in self._tokens:
            # no early exit: the time taken does not tell how many tokens precede the match
            if hmac.compare_digest(known, d):
                found = principal
        return found

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization`` header value.

        Raises:
            Unauthenticated: no Bearer token, or an unknown one.
        """
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("authentication required: send Authorization: Bearer <token>", invalid_token=False)
        principal = self.by_token(token.strip())
        if principal is None:
            raise Unauthenticated("invalid API token", invalid_token=True)
        return principal


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def require(scope: Scope) -> Any:
    """A Litestar guard: 401 without a valid token, 403 without ``scope``; open when auth is disabled.

    It raises :class:`AuthRefused`, which the app turns into a JSON 401/403 (never a 500).
    """

    # async: Litestar runs a sync guard on a worker thread, which costs every request a thread hop
    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
        auth: Authenticator | None = connection.app.state.auth
        if auth is None:
            return
        principal = auth.authenticate(connection.headers.get("authorization"))
        if not principal.allows(scope):
            have = ", ".join(sorted(principal.scopes))
            raise Forbidden(f"the {scope.value!r} scope is required (token {principal.name!r} has: {have})")

    guard.__name__ = f"require_{scope.value}"
    return guard
