"""Who may use the server: with an API token set, every request but the public ones must carry
it, or gets 401 and changes nothing.

The token is accepted as Dapr's ``dapr-api-token`` header, as ``Authorization: Bearer TOKEN``,
or as the console's session cookie, which ``POST /console/api/login`` sets once the token is
typed in. The cookie holds a value derived from the token (never the token), is HttpOnly and
SameSite=Strict; a request authenticated only by it that changes something must also come from
the console's own origin (no cross-site form can act with it).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

SESSION_COOKIE = "jetloom_session"
"""The console's session cookie, set by ``POST /console/api/login``."""
TOKEN_HEADER = "dapr-api-token"
"""Dapr's header for the API token (what Dapr SDKs send when DAPR_API_TOKEN is set)."""
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _is_public(request: web.Request) -> bool:
    """Paths anyone may read: the console's page and files, its configuration and login (so the
    page can ask for the token), the health checks Dapr SDKs wait on, the OpenAPI document."""
    path = request.path
    if request.method not in _SAFE_METHODS and path != "/console/api/login":
        return False
    return (
        path in ("/", "/favicon.ico", "/openapi.json", "/console/api/config",
                 "/console/api/login")
        or path.startswith("/console/static/")
        or (path.startswith("/v1.0") and "/healthz" in path and "/workflows/" not in path)
    )


class TokenGuard:
    """The token check, as an aiohttp middleware; ``token`` None lets everything through."""

    def __init__(self, token: str | None) -> None:
        self.token = token or None
        self.session = (
            None if self.token is None
            else hmac.new(self.token.encode(), b"jetloom console session", hashlib.sha256)
            .hexdigest()
        )

    @property
    def required(self) -> bool:
        """True if requests must carry the token."""
        return self.token is not None

    def token_matches(self, given: str) -> bool:
        """True if ``given`` is the token (compared in constant time)."""
        return self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def _session_matches(self, request: web.Request) -> bool:
        cookie = request.cookies.get(SESSION_COOKIE, "")
        return self.session is not None and hmac.compare_digest(
            cookie.encode(), self.session.encode()
        )

    def authenticated(self, request: web.Request) -> bool:
        """True if the request carries the token, or the session cookie (for a request that
        changes something, only from the server's own origin)."""
        if self.token is None:
            return True
        header = request.headers.get(TOKEN_HEADER)
        if header is not None:
            return self.token_matches(header)
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credentials:
            return self.token_matches(credentials.strip())
        if not self._session_matches(request):
            return False
        return request.method in _SAFE_METHODS or _same_origin(request)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Answer 401 (Dapr's error body) unless the request is public or authenticated."""
        if self.token is None or _is_public(request) or self.authenticated(request):
            return await handler(request)
        return unauthorized()

    def set_session(self, response: web.StreamResponse, request: web.Request) -> None:
        """Give the browser the session cookie."""
        assert self.session is not None
        response.set_cookie(
            SESSION_COOKIE, self.session, httponly=True, samesite="Strict", path="/",
            secure=request.secure,
        )


def _same_origin(request: web.Request) -> bool:
    """True if the request's Origin (or, without one, Referer) is this server."""
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if not source:
        return False
    return urlsplit(source).netloc == request.host


def unauthorized() -> web.Response:
    """401 with Dapr's error body, saying how to pass the token."""
    body = {
        "errorCode": "ERR_UNAUTHORIZED",
        "message": "missing or wrong API token; send it in the 'dapr-api-token' header or as "
        "'Authorization: Bearer TOKEN' (the console asks for it), as set by --api-token or "
        "JETLOOM_API_TOKEN",
    }
    return web.Response(
        status=401,
        text=json.dumps(body),
        content_type="application/json",
        headers={"WWW-Authenticate": 'Bearer realm="jetloom"'},
    )
