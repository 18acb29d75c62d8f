"""The dashboard's ASGI app: pages, the JSON API they use, live updates and the security checks.

Everything goes through the library's front door (:class:`imagedist.Imagedist`), the same calls
the CLI makes, so a page can do nothing the CLI refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote

import anyio.to_thread
import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .._api import Imagedist
from .._domain import FailedPhase, JobState, LogFilter
from .._exceptions import (
    Conflict,
    ImagedistError,
    InvalidInput,
    NotFound,
    PreconditionFailed,
)
from .._redact import redact
from ._chart import Series, done_over_time_svg
from ._security import (
    SAFE_METHODS,
    SESSION_COOKIE,
    Refusal,
    SecurityHeaders,
    Sessions,
)
from ._views import (
    STATE_LABELS,
    fleet_view,
    job_summary,
    job_view,
    log_view,
    plan_view,
)

__all__ = ["Dashboard", "create_app"]

HERE = Path(__file__).parent
GIB = 1024**3
MIB = 1024**2
MAX_PLAN_DISK = 4 * 1024 * GIB  # beyond any disk Azure makes an image from
SSE_RETRY_MS = 1500
KEEPALIVE_TICKS = 30  # a comment line now and then, so a proxy does not close an idle stream
LOG_STEPS = ("submit", "upload", "tier1", "copy", "image", "gallery", "cleanup", "job")
LOG_LEVELS = ("info", "warning", "error")
ImagedistFactory = Callable[[], Imagedist]
T = TypeVar("T")


class HttpError(Exception):
    """A request the dashboard refuses: the status and one sentence (redacted when sent)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Dashboard:
    """The app's state: the open library, the sessions, cached plans."""

    factory: ImagedistFactory
    sessions: Sessions
    poll_interval: float
    worker: bool
    lib: Imagedist | None = None
    plans: dict[tuple[Any, ...], Any] = field(default_factory=dict)

    @property
    def app(self) -> Imagedist:
        assert self.lib is not None, "the dashboard's library opens with the app's lifespan"
        return self.lib


def create_app(
    imagedist_factory: ImagedistFactory,
    *,
    read_only: bool = False,
    token: str | None = None,
    worker: bool = False,
    poll_interval: float = 0.5,
) -> Starlette:
    """The dashboard over the library ``imagedist_factory`` makes (opened for the app's life).

    :param read_only: refuse every state-changing request; render no action.
    :param token: the token a client must show (bearer header or the login form); None lets
        anyone who reaches the port look (serve such a dashboard on loopback only).
    :param worker: also run a worker in this process, for every active job.
    :param poll_interval: how often live updates read the state store, in seconds.
    """
    board = Dashboard(imagedist_factory, Sessions(token, read_only), poll_interval, worker)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with board.factory() as lib:
            board.lib = lib
            work = asyncio.create_task(lib.work(forever=True)) if worker else None
            try:
                yield
            finally:
                if work is not None:
                    work.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ImagedistError):
                        await work
                board.lib = None

    routes = _routes(board, env)
    return Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders)],
        lifespan=lifespan,
        exception_handlers={HttpError: _http_error, 404: _not_found, 405: _not_allowed},
    )


# errors


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HttpError)
    return _error_response(request, exc.status, exc.message)


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error_response(request, 404, "Nothing is here; the jobs page is at /.")


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return _error_response(request, 405, f"{request.method} is not allowed here.")


def _error_response(request: Request, status: int, message: str) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": redact(message)}, status, headers=headers)


def _library_error(exc: ImagedistError) -> HttpError:
    """A library refusal as the HTTP status that says the most: the CLI's sentence, as is."""
    if isinstance(exc, NotFound):
        return HttpError(404, str(exc))
    if isinstance(exc, Conflict | PreconditionFailed):
        return HttpError(409, str(exc))
    if isinstance(exc, InvalidInput):
        return HttpError(400, str(exc))
    return HttpError(502, str(exc))


async def _library(call: Awaitable[T]) -> T:
    try:
        return await call
    except ImagedistError as exc:
        raise _library_error(exc) from None


# the gate every request passes


Handler = Callable[[Request], Awaitable[Response]]


def _gate(board: Dashboard, handler: Handler, *, page: bool = False) -> Handler:
    """Host check, authentication, and for a state-changing method read-only and CSRF checks."""

    async def gated(request: Request) -> Response:
        refusal = board.sessions.check_host(request)
        if refusal is None and not board.sessions.authenticated(request):
            if page and request.method in SAFE_METHODS:
                return RedirectResponse(f"/login?next={_local_path(request)}", 303)
            refusal = Refusal(
                401,
                "This dashboard needs its token: send `Authorization: Bearer <token>`, or log in"
                " at /login.",
            )
        if refusal is None and request.method not in SAFE_METHODS:
            refusal = board.sessions.check_change(request)
        if refusal is not None:
            raise HttpError(refusal.status, refusal.message)
        response = await handler(request)
        _ensure_session(board, request, response)
        return response

    return gated


def _local_path(request: Request) -> str:
    return quote(_on_this_site(request.url.path), safe="/")


def _on_this_site(path: str) -> str:
    """``path`` if it stays on this site, else "/": "//host" and "/\\host" are another site
    to a browser."""
    return path if path.startswith("/") and not path.startswith(("//", "/\\")) else "/"


def _ensure_session(board: Dashboard, request: Request, response: Response) -> None:
    """A session made for this request (a first visit) goes out as the cookie: its CSRF token
    is what the page's changes carry."""
    session = getattr(request.state, "session", None)
    if isinstance(session, str):
        _set_cookie(request, response, session)


def _session_for_page(board: Dashboard, request: Request) -> str:
    """The request's session, or a new one (set as a cookie with the response)."""
    session = board.sessions.session_of(request)
    if session is None:
        session = board.sessions.new_session()
        request.state.session = session
    return session


def _set_cookie(request: Request, response: Response, session: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


# request parsing


def _query(request: Request, name: str, allowed: tuple[str, ...] | None = None) -> str | None:
    value = request.query_params.get(name) or None
    if value is not None and allowed is not None and value not in allowed:
        raise HttpError(400, f"{name} {value!r} is unknown; use one of {', '.join(allowed)}.")
    return value


def _int_query(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise HttpError(400, f"{name} {text!r} is not a whole number of bytes.") from None
    if not low <= value <= high:
        raise HttpError(400, f"{name} {value} is out of range: give {low} to {high} bytes.")
    return value


async def _json_body(request: Request) -> dict[str, Any]:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise HttpError(
            415, "Send the action's parameters as JSON (Content-Type: application/json)."
        )
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise HttpError(400, "The request body is not JSON; send a JSON object.") from None
    if not isinstance(body, dict):
        raise HttpError(400, "The request body must be a JSON object.")
    return body


def _names(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise HttpError(400, f"{key} must be a list of strings.")
    return value


def _flag(body: dict[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise HttpError(400, f"{key} must be true or false.")
    return value


async def _job_id(board: Dashboard, request: Request) -> str:
    job_id: str = request.path_params["job_id"]
    if not await _library(board.app.has_job(job_id)):
        raise HttpError(404, f"No job {job_id!r}; the jobs page lists them.")
    return job_id


def _log_filter(request: Request) -> LogFilter:
    return LogFilter(
        step=_query(request, "step", LOG_STEPS),
        level=_query(request, "level", LOG_LEVELS),
        target=_query(request, "target"),
    )


# data the API and the pages share


async def _jobs(board: Dashboard, request: Request) -> list[dict[str, Any]]:
    """Every job, newest first, filtered by ``state`` and ``image`` (a part of its name)."""
    state = _query(request, "state", tuple(s.value for s in JobState))
    image = (request.query_params.get("image") or "").strip().lower()
    statuses = await _library(board.app.jobs())
    statuses.sort(key=lambda s: s.job.created_at, reverse=True)
    return [
        job_summary(s)
        for s in statuses
        if (state is None or s.state.value == state) and image in s.job.image_name.lower()
    ]


async def _job(board: Dashboard, job_id: str, *, full: bool) -> dict[str, Any]:
    """A job's status with the percent of each running copy; ``full`` adds the error log and
    the timeline (they read the whole log, so live updates leave them out)."""
    app = board.app
    status = await _library(app.status(job_id))
    percents = await _library(app.copy_progress(job_id)) if status.counts.get("copying") else {}
    if not full:
        return job_view(status, percents)
    errors = await _library(app.logs(job_id, LogFilter(level="error")))
    timeline = await _library(app.timeline(job_id))
    return job_view(status, percents, errors=errors, timeline=timeline)


async def _plan(board: Dashboard, request: Request, job_id: str | None) -> dict[str, Any]:
    """The prediction for the config's fleet, broadcast and original, and for a job what
    happened (its targets' done times)."""
    app = board.app
    job = (await _job(board, job_id, full=False)) if job_id else None
    default_size = job["size_bytes"] if job else 30 * GIB
    disk = _int_query(request, "disk_bytes", default_size, MIB, MAX_PLAN_DISK)
    occupied = _int_query(request, "occupied_bytes", max(disk // 2, 1), 1, disk)
    plans = {s: await _predict(board, disk, occupied, s) for s in ("broadcast", "original")}
    data: dict[str, Any] = {
        "disk_bytes": disk,
        "occupied_bytes": occupied,
        "strategy": app.config.fanout.strategy,
        "predictions": plans,
        "job": None,
    }
    if job_id and job:
        data["job"] = {
            "job": job_id,
            "state": job["state"],
            "done_at": await _library(app.done_times(job_id)),
        }
    return data


async def _predict(board: Dashboard, disk: int, occupied: int, strategy: str) -> dict[str, Any]:
    """One plan, simulated in a thread (it runs its own event loop), remembered."""
    key = (disk, occupied, strategy)
    if key not in board.plans:
        lib = board.app

        def simulate() -> Any:
            return lib.plan(disk_bytes=disk, occupied_bytes=occupied, strategy=strategy)

        try:
            board.plans[key] = plan_view(await anyio.to_thread.run_sync(simulate))
        except ImagedistError as exc:
            raise _library_error(exc) from None
    result: dict[str, Any] = board.plans[key]
    return result


def _chart(plan: dict[str, Any]) -> str:
    series = [
        Series(f"{name} (predicted)", f"series-{name}", p["done_at"])
        for name, p in plan["predictions"].items()
    ]
    if plan["job"]:
        series.append(
            Series(f"job {plan['job']['job']} (actual)", "series-actual", plan["job"]["done_at"])
        )
    return done_over_time_svg(series, "Targets done over time")


# routes


def _routes(board: Dashboard, env: jinja2.Environment) -> list[BaseRoute]:
    def render(request: Request, name: str, **context: Any) -> Response:
        session = _session_for_page(board, request)
        html = env.get_template(name).render(
            read_only=board.sessions.read_only,
            csrf_token=board.sessions.csrf_token(session),
            labels=STATE_LABELS,
            path=request.url.path,
            **context,
        )
        return Response(html, media_type="text/html; charset=utf-8")

    async def api_jobs(request: Request) -> Response:
        return JSONResponse(await _jobs(board, request))

    async def api_job(request: Request) -> Response:
        return JSONResponse(await _job(board, await _job_id(board, request), full=True))

    async def api_logs(request: Request) -> Response:
        job_id = await _job_id(board, request)
        records = await _library(board.app.logs(job_id, _log_filter(request)))
        return JSONResponse([log_view(r) for r in records])

    async def api_targets(request: Request) -> Response:
        return JSONResponse(fleet_view(await _library(board.app.targets())))

    async def api_plan(request: Request) -> Response:
        job_id = await _job_id(board, request) if "job_id" in request.path_params else None
        return JSONResponse(await _plan(board, request, job_id))

    async def api_retry(request: Request) -> Response:
        job_id = await _job_id(board, request)
        body = await _json_body(request)
        phase = body.get("phase")
        if phase is not None and phase not in tuple(p.value for p in FailedPhase):
            raise HttpError(400, f"phase {phase!r} is unknown; use copy or image.")
        retried = await _library(
            board.app.retry(
                job_id,
                failed_only=_flag(body, "failed_only"),
                targets=_names(body, "targets"),
                phase=FailedPhase(phase) if phase else None,
            )
        )
        return JSONResponse({"job": job_id, "retried": retried})

    async def api_cleanup(request: Request) -> Response:
        job_id = await _job_id(board, request)
        body = await _json_body(request)
        deleted = await _library(board.app.cleanup(job_id, force=_flag(body, "force")))
        return JSONResponse({"job": job_id, "deleted_blobs": deleted})

    def switch(enabled: bool) -> Handler:
        async def api_switch(request: Request) -> Response:
            body = await _json_body(request)
            names = await _library(
                board.app.set_enabled(
                    enabled,
                    regions=_names(body, "regions"),
                    subscriptions=_names(body, "subscriptions"),
                    names=_names(body, "names"),
                )
            )
            return JSONResponse({"enabled": enabled, "targets": names})

        return api_switch

    async def api_events(request: Request) -> Response:
        async def snapshot() -> tuple[str, Any]:
            return "jobs", await _jobs(board, request)

        return _event_stream(board, snapshot)

    async def api_job_events(request: Request) -> Response:
        job_id = await _job_id(board, request)

        async def snapshot() -> tuple[str, Any]:
            return "status", await _job(board, job_id, full=False)

        return _event_stream(board, snapshot)

    async def api_session(request: Request) -> Response:
        session = _session_for_page(board, request)
        return JSONResponse(
            {
                "read_only": board.sessions.read_only,
                "csrf_token": board.sessions.csrf_token(session),
            }
        )

    async def jobs_page(request: Request) -> Response:
        return render(
            request,
            "jobs.html",
            jobs=await _jobs(board, request),
            states=[s.value for s in JobState],
            state=request.query_params.get("state", ""),
            image=request.query_params.get("image", ""),
        )

    async def job_page(request: Request) -> Response:
        job_id = await _job_id(board, request)
        where = _log_filter(request)
        records = await _library(board.app.logs(job_id, where))
        return render(
            request,
            "job.html",
            job=await _job(board, job_id, full=True),
            logs=[log_view(r) for r in records],
            where=where,
            steps=LOG_STEPS,
            levels=LOG_LEVELS,
        )

    async def targets_page(request: Request) -> Response:
        return render(
            request, "targets.html", fleet=fleet_view(await _library(board.app.targets()))
        )

    async def plan_page(request: Request) -> Response:
        job_id = request.query_params.get("job") or None
        if job_id and not await _library(board.app.has_job(job_id)):
            raise HttpError(404, f"No job {job_id!r}; the jobs page lists them.")
        plan = await _plan(board, request, job_id)
        return render(request, "plan.html", plan=plan, chart=_chart(plan))

    async def login_page(request: Request) -> Response:
        if request.method == "GET":
            return render(request, "login.html", error="", next=_next(request))
        return await _log_in(board, request, render)

    def api(path: str, handler: Handler, methods: tuple[str, ...] = ("GET",)) -> Route:
        return Route(path, _gate(board, handler), methods=list(methods))

    def page(path: str, handler: Handler) -> Route:
        return Route(path, _gate(board, handler, page=True), methods=["GET"])

    async def host_checked_login(request: Request) -> Response:
        refusal = board.sessions.check_host(request)
        if refusal is not None:
            raise HttpError(refusal.status, refusal.message)
        return await login_page(request)

    return [
        page("/", jobs_page),
        page("/jobs/{job_id}", job_page),
        page("/targets", targets_page),
        page("/plan", plan_page),
        Route("/login", host_checked_login, methods=["GET", "POST"]),
        api("/api/session", api_session),
        api("/api/jobs", api_jobs),
        api("/api/jobs/{job_id}", api_job),
        api("/api/jobs/{job_id}/logs", api_logs),
        api("/api/jobs/{job_id}/events", api_job_events),
        api("/api/jobs/{job_id}/plan", api_plan),
        api("/api/jobs/{job_id}/retry", api_retry, ("POST",)),
        api("/api/jobs/{job_id}/cleanup", api_cleanup, ("POST",)),
        api("/api/targets", api_targets),
        api("/api/targets/enable", switch(True), ("POST",)),
        api("/api/targets/disable", switch(False), ("POST",)),
        api("/api/plan", api_plan),
        api("/api/events", api_events),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]


def _next(request: Request) -> str:
    """Where to go after logging in: a path on this site only (never another host)."""
    return _on_this_site(request.query_params.get("next", "/"))


async def _log_in(board: Dashboard, request: Request, render: Callable[..., Response]) -> Response:
    """Check the token from the form; on success set the session cookie and go on."""
    origin = request.headers.get("origin")
    # Under Referrer-Policy: no-referrer a browser posts this very form with "Origin: null";
    # accepted, as the form carries the token itself (a forged post cannot log anyone in).
    own = f"{request.url.scheme}://{request.headers.get('host')}"
    if origin is not None and origin not in (own, "null"):
        raise HttpError(403, f"Origin {origin!r} is not this dashboard's; log in from its page.")
    # The form is one field, urlencoded: parsed here rather than with another dependency.
    form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=10)
    session = board.sessions.log_in(form.get("token", [""])[0])
    if session is None:
        response = render(
            request, "login.html", error="That is not the token.", next=_next(request)
        )
        response.status_code = 401
        return response
    response = RedirectResponse(_next(request), 303)
    _set_cookie(request, response, session)
    return response


# live updates


def _event_stream(board: Dashboard, snapshot: Callable[[], Awaitable[tuple[str, Any]]]) -> Response:
    """Server-sent events: the snapshot each time it differs from the last one sent.

    The state store is read every ``poll_interval``, so a change any worker makes, on any
    machine, shows within that; a comment line now and then keeps the stream open.
    """

    async def stream() -> AsyncIterator[str]:
        yield f"retry: {SSE_RETRY_MS}\n\n"
        last = ""
        quiet = 0
        while True:
            try:
                event, data = await snapshot()
                text = json.dumps(data, sort_keys=True)
            except HttpError as exc:
                event, text = "problem", json.dumps({"error": redact(exc.message)})
            if text != last:
                yield f"event: {event}\ndata: {text}\n\n"
                last, quiet = text, 0
            else:
                quiet += 1
                if quiet >= KEEPALIVE_TICKS:
                    yield ": still here\n\n"
                    quiet = 0
            await asyncio.sleep(board.poll_interval)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"X-Accel-Buffering": "no"},
    )
