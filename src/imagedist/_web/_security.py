"""Who may look and who may act: the token, the session cookie, the CSRF defence, read-only mode,
the host check and the security headers every response carries.

The model (docs/web.md): with a token configured, a request is let in with ``Authorization:
Bearer <token>`` or with the session cookie the login form sets; without one (loopback only)
anyone who can reach the port may look. A state-changing request also needs a CSRF defence: a
bearer header is one (a browser never sends it across origins), a cookie or no credential at all
is not, so those need the session's CSRF token in ``X-CSRF-Token`` and an ``Origin`` that is
the dashboard's own.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CSRF_HEADER",
    "SECURITY_HEADERS",
    "SESSION_COOKIE",
    "Refusal",
    "SecurityHeaders",
    "Sessions",
    "is_loopback",
]

SESSION_COOKIE = "imagedist_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class SecurityHeaders:
    """ASGI middleware: the security headers on every response, errors and 404s included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.raw = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k for k, _ in self.raw}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": kept + self.raw}
            await send(message)

        await self.app(scope, receive, with_headers)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 in brackets or not) is this machine only."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: its HTTP status and one sentence."""

    status: int
    message: str


@dataclass
class Sessions:
    """The dashboard's token (if any), the sessions logged in, and their CSRF tokens."""

    token: str | None
    read_only: bool = False
    _secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _logged_in: set[str] = field(default_factory=set)

    def new_session(self) -> str:
        return secrets.token_urlsafe(32)

    def log_in(self, offered: str) -> str | None:
        """A new logged-in session id if ``offered`` is the token, else None."""
        if self.token is None or not _same(offered.strip(), self.token):
            return None
        session = self.new_session()
        self._logged_in.add(session)
        return session

    def log_out(self, session: str) -> None:
        self._logged_in.discard(session)

    def csrf_token(self, session: str) -> str:
        """The CSRF token of a session: bound to it, unguessable without the server's secret."""
        return hmac.new(self._secret, session.encode(), hashlib.sha256).hexdigest()

    def session_of(self, request: Request) -> str | None:
        return request.cookies.get(SESSION_COOKIE) or None

    def bearer_ok(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        return self.token is not None and scheme.lower() == "bearer" and _same(value, self.token)

    def authenticated(self, request: Request) -> bool:
        """Whether the request may look: no token configured, the bearer token, or a session
        logged in with it."""
        if self.token is None or self.bearer_ok(request):
            return True
        session = self.session_of(request)
        return session is not None and session in self._logged_in

    def check_host(self, request: Request) -> Refusal | None:
        """Without a token the dashboard answers only to a loopback Host: a page elsewhere
        cannot rebind its own name to 127.0.0.1 and read it (DNS rebinding)."""
        if self.token is not None:
            return None
        host = request.headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
        if is_loopback(name):
            return None
        return Refusal(
            403,
            f"Host {host!r} is not this machine's loopback name; open the dashboard at"
            " 127.0.0.1 or localhost, or serve it with a token to reach it by another name.",
        )

    def check_change(self, request: Request) -> Refusal | None:
        """Whether a state-changing request may go ahead: read-only mode, then the CSRF
        defence (the request is already authenticated)."""
        if self.read_only:
            return Refusal(
                403,
                "This dashboard is read-only (--read-only); use the CLI, or a dashboard started"
                " without --read-only, to change anything.",
            )
        origin = request.headers.get("origin")
        if origin is not None and origin != _own_origin(request):
            return Refusal(
                403,
                f"Origin {origin!r} is not this dashboard's; send changes from its own pages.",
            )
        if self.bearer_ok(request):
            return None  # a header a browser never sends across origins is its own defence
        if origin is None:
            return Refusal(403, "The request has no Origin header; send changes from the page.")
        session = self.session_of(request)
        offered = request.headers.get(CSRF_HEADER, "")
        if session is None or not _same(offered, self.csrf_token(session)):
            return Refusal(
                403,
                "The request lacks this session's CSRF token; reload the page and try again.",
            )
        return None


def _own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', '')}"


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
