"""``create_console(core)``: the administrator's web console (issue 12).

Rendered on the server with Jinja2 (autoescaping on: every value an operator or a phone
typed is text, never markup or template code); htmx (vendored in ``static/``) for the
live parts. Mounted by ``limen serve`` under ``/console/`` on the admin HTTPS port,
beside the API, and built on the same repositories, validation models and services:
nothing here decides what a valid ICP or device is.

Every page needs an admin session (:mod:`limen.web.security`); every POST needs the
session's CSRF token. Store errors become messages on the page: not found → 404,
conflicts and invalid values → the form again with the reason.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

import jinja2
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool as run
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from limen import __version__
from limen.core import Core
from limen.store.errors import Conflict, Invalid, NotFound, StoreError
from limen.web import forms
from limen.web.security import (
    CSRF_FIELD,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    AuthFailureHook,
    LoginThrottle,
    csrf_for,
    csrf_ok,
    new_login_nonce,
)

HERE = Path(__file__).parent
PAGE_SIZES = (25, 50, 100, 200)
MAX_FORM_PART = 16 * 1024 * 1024  # a 10,000-device CSV is ~1 MB; certificates are small
NAV = (
    ("dashboard", "Dashboard", "/"),
    ("icps", "ICPs", "/icps"),
    ("devices", "SIP devices", "/devices"),
    ("settings", "Settings", "/settings"),
    ("overrides", "Overrides", "/overrides"),
    ("services", "Web services", "/services"),
    ("certificates", "Certificates", "/certificates"),
    ("provisioning", "Provisioning", "/provisioning"),
    ("calls", "Calls", "/calls"),
    ("events", "Events", "/events"),
    ("bans", "Bans", "/bans"),
)


class LoginRequired(Exception):
    """No valid session: pages redirect to the login form, htmx gets HX-Redirect."""


@dataclass(frozen=True, slots=True)
class Session:
    username: str
    token: str

    @property
    def csrf(self) -> str:
        return csrf_for(self.token)

    @property
    def actor(self) -> str:
        return f"admin:{self.username}"


class Console:
    """The console's state: the core, the login throttle, one-shot messages."""

    def __init__(self, core: Core, on_auth_failure: AuthFailureHook | None = None) -> None:
        self.core = core
        self.on_auth_failure = on_auth_failure
        self.throttle = LoginThrottle()
        self._flash: OrderedDict[str, list[tuple[str, str]]] = OrderedDict()

    def flash(self, session: Session, message: str, kind: str = "ok") -> None:
        self._flash.setdefault(session.token, []).append((kind, message))
        while len(self._flash) > 1000:
            self._flash.popitem(last=False)

    def take_flash(self, session: Session | None) -> list[tuple[str, str]]:
        if session is None:
            return []
        return self._flash.pop(session.token, [])

    def auth_failed(self, ip: str, user: str) -> None:
        self.throttle.failed(ip)
        # The gateway's guard counts it with the API's and SIP's failures (issue 10).
        try:
            self.core.auth_failure(ip, user or None, "console")
        except Exception:
            import logging

            logging.getLogger("limen.web").exception("reporting a failed login failed")
        if self.on_auth_failure is not None:
            try:
                self.on_auth_failure(ip, user, kind="console")
            except Exception:  # the ban registry's trouble must not break the login page
                import logging

                logging.getLogger("limen.web").exception("on_auth_failure hook failed")


def _client_ip(request: Request) -> str:
    return request.client.host if request.client is not None else "-"


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


async def _form(request: Request) -> FormData:
    return await request.form(max_part_size=MAX_FORM_PART, max_fields=2000)


LOGIN_BODY_LIMIT = 8192  # an unauthenticated body: a username, a password, a token


async def _login_form(request: Request) -> dict[str, str]:
    """The login form, read with a hard size limit before any parsing (the one body the
    console accepts from someone not logged in)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > LOGIN_BODY_LIMIT:
            raise HTTPException(413, "login form too large")
    fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=16)
    return {k: v[0] for k, v in fields.items()}


async def current_session(request: Request) -> Session:
    """The admin behind the session cookie; for a POST, also the CSRF check."""
    console = _console(request)
    token = request.cookies.get(SESSION_COOKIE, "")
    if not token or len(token) > 200:
        raise LoginRequired()
    username = await run(console.core.store.admins.resolve_token, token)
    if username is None:
        raise LoginRequired()
    session = Session(username, token)
    if request.method == "POST":
        form = await _form(request)
        given = form.get(CSRF_FIELD)
        if not csrf_ok(session.csrf, given if isinstance(given, str) else None):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and retry")
    return session


Admin = Annotated[Session, Depends(current_session)]


def _fmt_time(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, int | float):
        value = dt.datetime.fromtimestamp(value, dt.UTC)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


def _fmt_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02}:{s:02}" if h else f"{m}:{s:02}"


def create_console(core: Core, on_auth_failure: AuthFailureHook | None = None) -> FastAPI:
    """Build the console application (mount it with :func:`mount_console`)."""
    app = FastAPI(
        title="Limen console",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    console = Console(core, on_auth_failure)
    app.state.console = console
    # Autoescaping everywhere (not only *.html): operator and phone text is never markup.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=True,
    )
    templates = Jinja2Templates(env=env)
    env.filters["when"] = _fmt_time
    env.filters["duration"] = _fmt_duration
    env.globals["nav"] = NAV
    env.globals["version"] = __version__
    from limen.store.schemas import normalise_permission_path

    env.globals["normalise"] = normalise_permission_path
    env.globals["mbg_known"] = [normalise_permission_path(p) for p in forms.MBG_PATHS]
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def page(
        request: Request,
        name: str,
        session: Session | None,
        status_code: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        context.update(
            request=request,
            base=request.scope.get("root_path", "").rstrip("/"),
            session=session,
            csrf=session.csrf if session is not None else "",
            flashes=console.take_flash(session) if not context.get("partial") else [],
        )
        response = templates.TemplateResponse(request, name, context, status_code=status_code)
        response.headers["Cache-Control"] = "no-store"
        return response

    def go(request: Request, path: str) -> RedirectResponse:
        base = request.scope.get("root_path", "").rstrip("/")
        return RedirectResponse(base + path, status_code=303)

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, exc: Exception) -> Response:
        base = request.scope.get("root_path", "").rstrip("/")
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": f"{base}/login"})
        return RedirectResponse(f"{base}/login", status_code=303)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: Exception) -> Response:
        # A page for a person (the API answers JSON; the console answers HTML).
        assert isinstance(exc, StarletteHTTPException)
        base = request.scope.get("root_path", "").rstrip("/")
        return HTMLResponse(
            f"<!doctype html><title>{exc.status_code}</title>"
            f'<link rel="stylesheet" href="{base}/static/console.css"><main>'
            f"<h1>{exc.status_code}</h1><p>{_escape(str(exc.detail))}</p>"
            f'<p><a href="{base}/">Back to the console</a></p></main>',
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: Exception) -> Response:
        return HTMLResponse(
            f"<!doctype html><title>Not found</title><p>{_escape(str(exc))}</p>"
            f'<p><a href="{request.scope.get("root_path", "")}/">Back</a></p>',
            status_code=404,
        )

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: Exception) -> Response:
        return HTMLResponse(
            f"<!doctype html><title>Store unavailable</title><p>{_escape(str(exc))}</p>",
            status_code=503,
        )

    @app.middleware("http")
    async def _headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        # Nothing is loaded from elsewhere: no CDN, no inline event handlers.
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; "
            "script-src 'self'; frame-ancestors 'none'; form-action 'self'",
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    # -- login, logout, password ---------------------------------------------------------

    @app.get("/login")
    async def login_form(request: Request) -> HTMLResponse:
        nonce = request.cookies.get(LOGIN_COOKIE) or new_login_nonce()
        response = page(request, "login.html", None, login_csrf=csrf_for(nonce), error="")
        _set_cookie(response, LOGIN_COOKIE, nonce, max_age=3600)
        return response

    @app.post("/login")
    async def login(request: Request) -> Response:
        try:
            form = await _login_form(request)
        except ValueError as exc:  # more fields than a login form has
            raise HTTPException(400, "not a login form") from exc
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        if not nonce or not csrf_ok(csrf_for(nonce), form.get(CSRF_FIELD)):
            raise HTTPException(403, "missing or wrong CSRF token: reload the login page")
        ip = _client_ip(request)
        username = form.get("username", "").strip()[:64]
        password = form.get("password", "")[:256]

        def again(error: str, status: int) -> HTMLResponse:
            return page(
                request, "login.html", None, status, login_csrf=csrf_for(nonce), error=error
            )

        guard = core.security
        if guard is not None and guard.banned(ip):
            # No argon2 work for a banned source (as the API's session endpoint).
            return again("This address is banned after too many failed logins.", 403)
        if console.throttle.blocked(ip):
            console.auth_failed(ip, username)
            return again("Too many failed logins from your address; wait a few minutes.", 429)
        admin = None
        if username and password:
            admin = await run(core.store.admins.authenticate, username, password)
        if admin is None:
            console.auth_failed(ip, username)
            return again("Wrong username or password.", 401)
        console.throttle.succeeded(ip)
        ttl = dt.timedelta(seconds=core.settings.api.session_ttl)
        token, _record = await run(
            lambda: core.store.admins.issue_token(username, kind="session", ttl=ttl)
        )
        response = go(request, "/")
        _set_cookie(response, SESSION_COOKIE, token, max_age=int(ttl.total_seconds()))
        response.delete_cookie(LOGIN_COOKIE, path="/", secure=True, httponly=True)
        return response

    @app.post("/logout")
    async def logout(request: Request, session: Admin) -> Response:
        with contextlib.suppress(NotFound):
            await run(lambda: core.store.admins.revoke_token(token=session.token))
        response = go(request, "/login")
        response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True)
        return response

    @app.get("/password")
    async def password_form(request: Request, session: Admin) -> HTMLResponse:
        return page(request, "password.html", session, errors={})

    @app.post("/password")
    async def change_password(request: Request, session: Admin) -> Response:
        form = await _form(request)
        current = str(form.get("current") or "")[:256]
        new = str(form.get("new") or "")[:256]
        confirm = str(form.get("confirm") or "")[:256]
        errors: dict[str, str] = {}
        if new != confirm:
            errors["confirm"] = "The two new passwords differ."
        elif await run(core.store.admins.authenticate, session.username, current) is None:
            console.auth_failed(_client_ip(request), session.username)
            errors["current"] = "Wrong current password."
        else:
            try:
                await run(
                    lambda: core.store.admins.set_password(session.username, new, session.actor)
                )
            except Invalid as exc:
                errors["new"] = exc.reason
        if errors:
            return page(request, "password.html", session, 422, errors=errors)
        # set_password ended every session of this admin: open a new one for this browser.
        ttl = dt.timedelta(seconds=core.settings.api.session_ttl)
        token, _record = await run(
            lambda: core.store.admins.issue_token(session.username, kind="session", ttl=ttl)
        )
        fresh = Session(session.username, token)
        console.flash(fresh, "Password changed; other sessions were closed.")
        response = go(request, "/")
        _set_cookie(response, SESSION_COOKIE, token, max_age=int(ttl.total_seconds()))
        return response

    # -- dashboard ---------------------------------------------------------------------------

    @app.get("/")
    async def dashboard(request: Request, session: Admin) -> HTMLResponse:
        from limen.certs import certificate_report
        from limen.web.render import calls_plot

        sample = core.metrics.current()
        now = time.time()
        history = core.metrics.history(now - 86400, now)
        plot = calls_plot([(s.timestamp, s.calls_per_hour) for s in history])
        alarms = await run(lambda: core.store.events.list(kind="alarm", cleared=False, limit=10))
        alarm_count = await run(lambda: core.store.events.count(kind="alarm", cleared=False))
        certs, cert_problems = await run(certificate_report, core.settings)
        icps = await run(core.store.icps.list)
        links = core.gateway.icp_links()
        devices = await run(core.store.devices.count)
        return page(
            request,
            "dashboard.html",
            session,
            sample=sample,
            plot=plot,
            alarms=alarms,
            alarm_count=alarm_count,
            certs=certs,
            cert_problems=cert_problems,
            icps=icps,
            links=links,
            devices=devices,
            warn_days=core.settings.certs.warn_days,
        )

    # -- ICPs --------------------------------------------------------------------------------

    @app.get("/icps")
    async def icp_list(request: Request, session: Admin) -> HTMLResponse:
        icps = await run(core.store.icps.list)
        return page(request, "icps.html", session, icps=icps, links=core.gateway.icp_links())

    @app.get("/icps/new")
    async def icp_new(request: Request, session: Admin) -> HTMLResponse:
        return page(request, "icp_form.html", session, icp=None, values=_icp_defaults(), errors={})

    @app.post("/icps/new")
    async def icp_create(request: Request, session: Admin) -> Response:
        from limen.store.schemas import IcpCreate

        values = forms.icp_values(await _form(request))
        try:
            body = IcpCreate.model_validate(values)
            record = await run(core.store.icps.create, body, session.actor)
        except ValidationError as exc:
            return page(
                request, "icp_form.html", session, 422, icp=None, values=values,
                errors=forms.field_errors(exc),
            )  # fmt: skip
        except (Conflict, Invalid) as exc:
            return page(
                request, "icp_form.html", session, 409, icp=None, values=values,
                errors={"form": _reason(exc)},
            )  # fmt: skip
        console.flash(session, f"ICP {record.name} added.")
        return go(request, "/icps")

    @app.get("/icps/{guid}")
    async def icp_edit(request: Request, guid: str, session: Admin) -> HTMLResponse:
        icp = await run(core.store.icps.get, guid)
        values = icp.model_dump()
        values["hashes"] = icp.hashes
        return page(request, "icp_form.html", session, icp=icp, values=values, errors={})

    @app.post("/icps/{guid}")
    async def icp_update(request: Request, guid: str, session: Admin) -> Response:
        from limen.store.schemas import IcpUpdate

        icp = await run(core.store.icps.get, guid)
        values = forms.icp_values(await _form(request))
        try:
            body = IcpUpdate.model_validate(values)
            record = await run(core.store.icps.update, icp.guid, body, session.actor)
        except ValidationError as exc:
            return page(
                request, "icp_form.html", session, 422, icp=icp, values=values,
                errors=forms.field_errors(exc),
            )  # fmt: skip
        except (Conflict, Invalid) as exc:
            return page(
                request, "icp_form.html", session, 409, icp=icp, values=values,
                errors={"form": _reason(exc)},
            )  # fmt: skip
        console.flash(session, f"ICP {record.name} saved.")
        return go(request, "/icps")

    @app.post("/icps/{guid}/delete")
    async def icp_delete(request: Request, guid: str, session: Admin) -> Response:
        form = await _form(request)
        icp = await run(core.store.icps.get, guid)
        confirm = forms.checked(form, "confirm")
        try:
            removed = await run(
                lambda: core.store.icps.delete(icp.guid, session.actor, with_devices=confirm)
            )
        except Conflict as exc:
            # The API's rule: an ICP with devices goes only when its devices go too.
            return page(request, "icp_delete.html", session, 409, icp=icp, reason=str(exc))
        console.flash(session, f"ICP {icp.name} deleted with {removed} device(s).")
        return go(request, "/icps")

    # -- SIP devices -------------------------------------------------------------------------

    @app.get("/devices")
    async def device_list(
        request: Request,
        session: Admin,
        q: str = "",
        sort: str = "setside_username",
        order: str = "asc",
        page_no: Annotated[int, _query_alias("page")] = 1,
        size: int = 50,
    ) -> HTMLResponse:
        from limen.store.repository import DeviceRepository

        q = q[:128]
        if sort not in DeviceRepository.SORTS:
            sort = "setside_username"
        size = size if size in PAGE_SIZES else 50
        page_no = max(1, min(page_no, 10**6))
        devices, total = await run(
            lambda: core.store.devices.search(
                q, sort=sort, descending=order == "desc", offset=(page_no - 1) * size, limit=size
            )
        )
        pages = max(1, math.ceil(total / size))
        registrations = core.gateway.registrations()
        context: dict[str, Any] = dict(
            devices=devices,
            total=total,
            q=q,
            sort=sort,
            order=order,
            page_no=page_no,
            pages=pages,
            size=size,
            sizes=PAGE_SIZES,
            registrations=registrations,
        )
        if request.headers.get("hx-request") and request.headers.get("hx-target") == "device-table":
            return page(request, "device_table.html", session, partial=True, **context)
        return page(request, "devices.html", session, **context)

    @app.get("/devices/new")
    async def device_new(request: Request, session: Admin) -> HTMLResponse:
        icps = await run(core.store.icps.list)
        return page(
            request, "device_form.html", session, device=None, values={}, errors={}, icps=icps,
            options=forms.device_option_rows({}),
        )  # fmt: skip

    def _device_values(form: FormData, creating: bool) -> dict[str, Any]:
        values: dict[str, Any] = {
            "setside_username": forms.text(form, "setside_username"),
            "icp": forms.text(form, "icp"),
            "icpside_username": forms.optional(form, "icpside_username"),
            "clientid": forms.optional(form, "clientid"),
            "description": forms.text(form, "description"),
        }
        for name in ("setside_password", "icpside_password"):
            secret = str(form.get(name) or "")
            if secret:
                values[name] = secret
            elif creating and name == "setside_password":
                values[name] = ""
        if not creating:
            values = {k: v for k, v in values.items() if v is not None or k == "clientid"}
        # Per-device overrides of the global options: empty means "use the global value"
        # (null in the API: omitted on create, reset on edit).
        for name in forms.DEVICE_OPTIONS:
            raw = forms.text(form, f"opt_{name}")
            if raw:
                values[name] = raw
            elif not creating:
                values[name] = None
        return values

    @app.post("/devices/new")
    async def device_create(request: Request, session: Admin) -> Response:
        from limen.store.schemas import DeviceCreate

        values = _device_values(await _form(request), creating=True)
        icps = await run(core.store.icps.list)
        shown = {k: v for k, v in values.items() if "password" not in k}
        try:
            body = DeviceCreate.model_validate({k: v for k, v in values.items() if v is not None})
            record = await run(core.store.devices.create, body, session.actor)
        except ValidationError as exc:
            return page(
                request, "device_form.html", session, 422, device=None, values=shown,
                errors=forms.field_errors(exc), icps=icps, options=forms.device_option_rows(shown),
            )  # fmt: skip
        except (Conflict, Invalid) as exc:
            return page(
                request, "device_form.html", session, 409, device=None, values=shown,
                errors={"form": _reason(exc)}, icps=icps, options=forms.device_option_rows(shown),
            )  # fmt: skip
        console.flash(session, f"Device {record.setside_username} added.")
        return go(request, "/devices")

    @app.get("/devices/import")
    async def device_import_form(request: Request, session: Admin) -> HTMLResponse:
        return page(request, "device_import.html", session, result=None, lines=[])

    @app.post("/devices/import")
    async def device_import(request: Request, session: Admin) -> Response:
        from limen.store.devices_csv import check_devices_csv

        form = await _form(request)
        upload = form.get("file")
        content = ""
        if isinstance(upload, UploadFile) and upload.filename:
            raw = await upload.read(MAX_FORM_PART + 1)
            content = raw.decode("utf-8", "replace")
        if not content.strip():
            content = forms.text(form, "text")
        skip_bad = forms.checked(form, "skip_bad")
        check = await run(check_devices_csv, content, core.store)
        lines = content.removeprefix("\ufeff").splitlines()
        errors_by_line: dict[int, list[str]] = {}
        for error in check.errors:
            errors_by_line.setdefault(error.line, []).append(error.message)
        imported = 0
        if check.rows and (check.ok or skip_bad):
            try:
                imported = await run(
                    lambda: core.store.devices.create_many(
                        (d for _line, d in check.rows), session.actor
                    )
                )
            except (Conflict, Invalid) as exc:
                errors_by_line.setdefault(0, []).append(_reason(exc))
        shown = [
            (number, text[:300], errors_by_line.get(number, []))
            for number, text in enumerate(lines, start=1)
            if number in errors_by_line or len(lines) <= 200
        ]
        status = 200 if not errors_by_line else 422
        return page(
            request,
            "device_import.html",
            session,
            status,
            result={
                "imported": imported,
                "errors": len(check.errors),
                "good": len(check.rows),
                "file_errors": errors_by_line.get(0, []),
            },
            lines=shown,
        )

    @app.get("/devices/export.csv")
    async def device_export(request: Request, session: Admin) -> Response:
        from limen.store.devices_csv import export_devices_csv

        def build() -> str:
            return export_devices_csv(
                core.store.devices.all_credentials(), core.store.devices.list()
            )

        body = await run(build)
        return Response(
            body,
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": 'attachment; filename="devices_mbg.csv"',
                "Cache-Control": "no-store",
            },
        )

    @app.get("/devices/{key}")
    async def device_edit(request: Request, key: str, session: Admin) -> HTMLResponse:
        device = await run(core.store.devices.get, key)
        icps = await run(core.store.icps.list)
        registration = core.gateway.registrations().get(device.guid)
        return page(
            request, "device_form.html", session, device=device, values=device.model_dump(),
            errors={}, icps=icps, registration=registration,
            options=forms.device_option_rows(device.model_dump()),
        )  # fmt: skip

    @app.post("/devices/{key}")
    async def device_update(request: Request, key: str, session: Admin) -> Response:
        from limen.store.schemas import DeviceUpdate

        device = await run(core.store.devices.get, key)
        values = _device_values(await _form(request), creating=False)
        icps = await run(core.store.icps.list)
        shown = {**device.model_dump(), **{k: v for k, v in values.items() if "password" not in k}}
        try:
            body = DeviceUpdate.model_validate(values)
            record = await run(core.store.devices.update, device.guid, body, session.actor)
        except ValidationError as exc:
            return page(
                request, "device_form.html", session, 422, device=device, values=shown,
                errors=forms.field_errors(exc), icps=icps, options=forms.device_option_rows(shown),
            )  # fmt: skip
        except (Conflict, Invalid) as exc:
            return page(
                request, "device_form.html", session, 409, device=device, values=shown,
                errors={"form": _reason(exc)}, icps=icps, options=forms.device_option_rows(shown),
            )  # fmt: skip
        console.flash(session, f"Device {record.setside_username} saved.")
        return go(request, "/devices")

    @app.post("/devices/{key}/delete")
    async def device_delete(request: Request, key: str, session: Admin) -> Response:
        device = await run(core.store.devices.get, key)
        await run(core.store.devices.delete, device.guid, session.actor)
        console.flash(session, f"Device {device.setside_username} deleted.")
        return go(request, "/devices")

    # -- settings and overrides -------------------------------------------------------------

    def settings_context(options: Any) -> dict[str, Any]:
        from limen.store.options import GlobalOptions

        groups = []
        values = options.model_dump(mode="json")
        for title, names in forms.option_groups():
            rows = []
            for name in names:
                value = values[name]
                rows.append(
                    {
                        "name": name,
                        "label": forms.OPTION_LABELS.get(name, name),
                        "help": forms.option_help(name),
                        "kind": forms.option_kind(name),
                        "choices": GlobalOptions.choices(name),
                        "value": ", ".join(value) if isinstance(value, list) else value,
                    }
                )
            groups.append((title, rows))
        return {"groups": groups}

    @app.get("/settings")
    async def settings_form(request: Request, session: Admin) -> HTMLResponse:
        options = await run(core.store.options.get)
        return page(request, "settings.html", session, errors={}, **settings_context(options))

    @app.post("/settings")
    async def settings_save(request: Request, session: Admin) -> Response:
        from limen.store.options import GlobalOptions

        form = await _form(request)
        current = (await run(core.store.options.get)).model_dump(mode="json")
        changed: dict[str, Any] = {}
        for name in GlobalOptions.model_fields:
            if forms.option_kind(name) != "bool" and name not in form:
                continue  # not on the submitted form: unchanged (an unticked box is absent)
            value = forms.option_value_from_form(name, form)
            if forms.option_kind(name) == "int":
                try:
                    value = int(value)
                except ValueError:
                    changed[name] = value  # let the model name the error
                    continue
            if value != current[name]:
                changed[name] = value
        if not changed:
            console.flash(session, "Nothing changed.")
            return go(request, "/settings")
        try:
            await run(core.store.options.set, changed, session.actor)
        except ValidationError as exc:
            options = GlobalOptions.model_construct(**{**current, **changed})
            return page(
                request, "settings.html", session, 422, errors=forms.field_errors(exc),
                **settings_context(options),
            )  # fmt: skip
        except Invalid as exc:
            options = GlobalOptions.model_construct(**{**current, **changed})
            return page(
                request, "settings.html", session, 422, errors={exc.field: exc.reason},
                **settings_context(options),
            )  # fmt: skip
        console.flash(session, "Settings saved: " + ", ".join(sorted(changed)) + ".")
        return go(request, "/settings")

    @app.get("/overrides")
    async def override_list(request: Request, session: Admin) -> HTMLResponse:
        rows = await run(core.store.overrides.list)
        return page(request, "overrides.html", session, rows=rows, values={}, errors={})

    @app.post("/overrides")
    async def override_add(request: Request, session: Admin) -> Response:
        from limen.store.schemas import OverrideCreate

        form = await _form(request)
        values = {
            "file": forms.text(form, "file") or "tug.ini",
            "sort_order": forms.text(form, "sort_order") or "50",
            "section": forms.text(form, "section"),
            "parameter": forms.text(form, "parameter"),
            "content": forms.text(form, "content"),
        }
        try:
            body = OverrideCreate.model_validate(values)
            await run(core.store.overrides.add, body, session.actor)
        except ValidationError as exc:
            rows = await run(core.store.overrides.list)
            return page(
                request, "overrides.html", session, 422, rows=rows, values=values,
                errors=forms.field_errors(exc),
            )  # fmt: skip
        console.flash(session, "Override added.")
        return go(request, "/overrides")

    @app.post("/overrides/{guid}/delete")
    async def override_delete(request: Request, guid: str, session: Admin) -> Response:
        await run(core.store.overrides.remove, guid, session.actor)
        console.flash(session, "Override removed.")
        return go(request, "/overrides")

    # -- web services: consumers and tokens -------------------------------------------------

    async def services_page(
        request: Request, session: Admin, status: int = 200, **extra: Any
    ) -> HTMLResponse:
        consumers = await run(core.store.consumers.list)
        temporary = await run(lambda: core.store.tokens.list(kind="temporary"))
        final = await run(lambda: core.store.tokens.list(kind="access"))
        verifiers: dict[str, str] = {}
        for token in temporary:
            if token.status == "approved":
                state = await run(core.store.tokens.state, token.token)
                if state is not None and state.verifier:
                    verifiers[token.token] = state.verifier
        extra.setdefault("values", {"active": True})
        extra.setdefault("errors", {})
        extra.setdefault("granted", {})
        return page(
            request,
            "services.html",
            session,
            status,
            consumers=consumers,
            temporary=[t for t in temporary if t.status in ("pending", "approved")],
            final=final,
            verifiers=verifiers,
            paths=forms.MBG_PATHS,
            **extra,
        )

    @app.get("/services")
    async def services(request: Request, session: Admin) -> HTMLResponse:
        return await services_page(request, session)

    @app.post("/services/consumers")
    async def consumer_create(request: Request, session: Admin) -> Response:
        from limen.store.schemas import ConsumerCreate

        form = await _form(request)
        values: dict[str, Any] = {
            "name": forms.text(form, "name"),
            "consumer_key": forms.optional(form, "consumer_key"),
            "shared_secret": forms.optional(form, "shared_secret"),
            "active": forms.checked(form, "active"),
            "permissions": forms.permissions_from_form(form),
        }
        rsa = form.get("rsa_certificate")
        if isinstance(rsa, UploadFile) and rsa.filename:
            values["rsa_public_key"] = (await rsa.read(65536)).decode("utf-8", "replace")
        granted = {p["path"]: p for p in values["permissions"]}
        shown = {k: v for k, v in values.items() if k != "shared_secret"}
        try:
            body = ConsumerCreate.model_validate(values)
            record, secret = await run(core.store.consumers.create, body, session.actor)
        except ValidationError as exc:
            return await services_page(
                request, session, 422, values=shown, errors=forms.field_errors(exc),
                granted=granted,
            )  # fmt: skip
        except (Conflict, Invalid) as exc:
            return await services_page(
                request, session, 409, values=shown, errors={"form": _reason(exc)},
                granted=granted,
            )  # fmt: skip
        return await services_page(request, session, 201, created=(record, secret))

    @app.get("/services/consumers/{key}")
    async def consumer_edit(request: Request, key: str, session: Admin) -> HTMLResponse:
        consumer = await run(core.store.consumers.get, key)
        return page(
            request, "consumer_form.html", session, consumer=consumer, paths=forms.MBG_PATHS,
            granted=_granted(consumer.permissions), errors={},
        )  # fmt: skip

    @app.post("/services/consumers/{key}")
    async def consumer_update(request: Request, key: str, session: Admin) -> Response:
        from limen.store.schemas import Permission

        consumer = await run(core.store.consumers.get, key)
        form = await _form(request)
        try:
            permissions = [Permission.model_validate(p) for p in forms.permissions_from_form(form)]
            secret = forms.optional(form, "shared_secret")
            await run(
                lambda: core.store.consumers.update(
                    consumer.guid,
                    active=forms.checked(form, "active"),
                    permissions=permissions,
                    shared_secret=secret,
                    actor=session.actor,
                )
            )
        except ValidationError as exc:
            return page(
                request, "consumer_form.html", session, 422, consumer=consumer,
                paths=forms.MBG_PATHS, granted=_granted(consumer.permissions),
                errors=forms.field_errors(exc),
            )  # fmt: skip
        except (Conflict, Invalid) as exc:
            return page(
                request, "consumer_form.html", session, 422, consumer=consumer,
                paths=forms.MBG_PATHS, granted=_granted(consumer.permissions),
                errors={"form": _reason(exc)},
            )  # fmt: skip
        console.flash(session, f"Consumer {consumer.name} saved.")
        return go(request, "/services")

    @app.post("/services/consumers/{key}/delete")
    async def consumer_delete(request: Request, key: str, session: Admin) -> Response:
        consumer = await run(core.store.consumers.get, key)
        await run(core.store.consumers.delete, consumer.guid, session.actor)
        console.flash(session, f"Consumer {consumer.name} deleted with its tokens.")
        return go(request, "/services")

    @app.post("/services/tokens/{token}/{action}")
    async def token_action(request: Request, token: str, action: str, session: Admin) -> Response:
        tokens = core.store.tokens
        try:
            if action == "approve":
                verifier = await run(tokens.approve, token, session.actor)
                console.flash(session, f"Token approved. Verifier: {verifier}")
            elif action == "reject":
                await run(tokens.reject, token, session.actor)
                console.flash(session, "Token rejected.")
            elif action == "renew":
                lifetime = dt.timedelta(days=core.settings.api.access_token_days)
                record = await run(lambda: tokens.renew(token, lifetime, session.actor))
                console.flash(session, f"Token renewed until {_fmt_time(record.expires_at)}.")
            elif action == "revoke":
                await run(tokens.revoke, token, session.actor)
                console.flash(session, "Token revoked.")
            else:
                raise HTTPException(404, "unknown action")
        except (Conflict, Invalid) as exc:
            console.flash(session, _reason(exc), "error")
        return go(request, "/services")

    # -- certificates -------------------------------------------------------------------------

    @app.get("/certificates")
    async def certificates(request: Request, session: Admin) -> HTMLResponse:
        from limen.certs import certificate_report, certificate_slots

        infos, problems = await run(certificate_report, core.settings)
        return page(
            request, "certificates.html", session, infos=infos, problems=problems,
            slots=certificate_slots(core.settings), warn_days=core.settings.certs.warn_days,
            error="",
        )  # fmt: skip

    @app.get("/certificates/ca.pem")
    async def ca_download(request: Request, session: Admin) -> Response:
        from limen.certs import ca_paths

        cert, _key = ca_paths(core.settings)
        if not cert.exists():
            raise HTTPException(404, "Limen's CA does not exist yet (run `limen init`)")
        return Response(
            cert.read_bytes(),
            media_type="application/x-pem-file",
            headers={"Content-Disposition": 'attachment; filename="limen-ca.pem"'},
        )

    @app.post("/certificates/renew")
    async def certificates_renew(request: Request, session: Admin) -> Response:
        from limen.certs import SLOT_NAMES, renew_certificates

        form = await _form(request)
        only = [n for n in SLOT_NAMES if forms.checked(form, n)] or None
        try:
            lines = await run(lambda: renew_certificates(core.settings, core, only=only))
        except ValueError as exc:
            console.flash(session, str(exc), "error")
            return go(request, "/certificates")
        for line in lines:
            console.flash(session, line)
        return go(request, "/certificates")

    @app.post("/certificates/upload")
    async def certificates_upload(request: Request, session: Admin) -> Response:
        from limen.web.certupload import install_operator_certificate

        form = await _form(request)
        cert = form.get("cert")
        key = form.get("key")
        name = forms.text(form, "slot")
        cert_pem = await cert.read(262144) if isinstance(cert, UploadFile) else b""
        key_pem = await key.read(262144) if isinstance(key, UploadFile) else b""
        try:
            message = await run(
                install_operator_certificate, core.settings, name, cert_pem, key_pem
            )
        except ValueError as exc:
            console.flash(session, f"Certificate refused: {exc}", "error")
            return go(request, "/certificates")
        console.flash(session, message)
        await run(
            lambda: core.store.events.add(
                message, kind="audit", severity="info", source="certs", actor=session.actor
            )
        )
        return go(request, "/certificates")

    # -- provisioning ------------------------------------------------------------------------

    @app.get("/provisioning")
    async def provisioning(request: Request, session: Admin) -> HTMLResponse:
        from limen.provisioning.phoneconfig import public_address

        icps = await run(core.store.icps.list)
        try:
            address = public_address(core.settings)
        except ValueError:
            address = ""
        port = core.settings.provisioning.port
        access = list(core.provisioning_log)
        return page(
            request, "provisioning.html", session, icps=icps, address=address, port=port,
            enabled=core.settings.provisioning.enabled, access=access[-100:][::-1],
        )  # fmt: skip

    @app.get("/provisioning/{icp}/tma.{fmt}")
    async def tma_export(request: Request, icp: str, fmt: str, session: Admin) -> Response:
        from limen.provisioning import tma

        if fmt not in ("csv", "xlsx"):
            raise HTTPException(404, "csv or xlsx")
        try:
            export = await run(tma.build_export, core.store, core.settings, icp, "")
        except Invalid as exc:
            console.flash(session, exc.reason, "error")
            return go(request, "/provisioning")
        body = await run(tma.render, export, fmt)
        return Response(
            body,
            media_type=tma.CSV_MEDIA_TYPE if fmt == "csv" else tma.XLSX_MEDIA_TYPE,
            headers={
                "Content-Disposition": f'attachment; filename="tma_{export.icp}.{fmt}"',
                "Cache-Control": "no-store",
            },
        )

    # -- calls and their ladders ----------------------------------------------------------------

    def live_calls() -> list[dict[str, Any]]:
        now = time.time()
        out = []
        for call in core.metrics.calls():
            call = dict(call)
            call["duration"] = now - float(call.get("started") or now)
            call["streams"] = _streams(call.get("media") or {})
            out.append(call)
        return out

    @app.get("/calls")
    async def calls(request: Request, session: Admin) -> HTMLResponse:
        recent = [
            dict(c, streams=_streams(c.get("media") or {})) for c in core.gateway.recent_calls()
        ]
        return page(
            request, "calls.html", session, calls=live_calls(), recent=recent[:100], now=time.time()
        )

    @app.get("/calls/live")
    async def calls_live(request: Request, session: Admin) -> HTMLResponse:
        return page(
            request, "calls_live.html", session, partial=True, calls=live_calls(), now=time.time()
        )

    def find_call(key: str) -> dict[str, Any]:
        for call in core.metrics.calls():
            if call.get("key") == key:
                return dict(call, live=True)
        for call in core.gateway.recent_calls():
            if call.get("key") == key:
                return dict(call, live=False)
        raise HTTPException(404, "no such call in progress or recently ended")

    def call_records(call: dict[str, Any]) -> tuple[list[Any], set[str]]:
        legs = call.get("legs") or {}
        set_ids = {leg["call_id"] for side, leg in legs.items() if side == "set"}
        all_ids = [leg["call_id"] for leg in legs.values()]
        return core.gateway.messages(all_ids), set_ids

    @app.get("/calls/{key}/ladder")
    async def ladder(request: Request, key: str, session: Admin) -> HTMLResponse:
        from limen.web.render import ladder_rows, ladder_svg

        call = find_call(key)
        records, set_ids = call_records(call)
        rows = ladder_rows(records, set_ids)
        base = request.scope.get("root_path", "").rstrip("/")
        svg = ladder_svg(rows, base + f"/calls/{_url(key)}/messages/{{n}}")
        return page(request, "ladder.html", session, call=call, rows=rows, svg=svg)

    @app.get("/calls/{key}/messages/{index}")
    async def ladder_message(request: Request, key: str, index: int, session: Admin) -> Response:
        call = find_call(key)
        records, set_ids = call_records(call)
        if not 0 <= index < len(records):
            raise HTTPException(404, "no such message")
        record = records[index]
        return page(
            request, "message.html", session, partial=bool(request.headers.get("hx-request")),
            record=record, index=index, call=call,
            side="phone" if record.call_id in set_ids else "PBX",
            text=record.data.decode("utf-8", "replace"),
        )  # fmt: skip

    @app.get("/calls/{key}/pcap")
    async def call_pcap(request: Request, key: str, session: Admin) -> Response:
        from limen.web.pcap import write_pcap

        call = find_call(key)
        records, _set_ids = call_records(call)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)[:64]
        return Response(
            write_pcap(records),
            media_type="application/vnd.tcpdump.pcap",
            headers={"Content-Disposition": f'attachment; filename="limen-{safe}.pcap"'},
        )

    # -- bans (the gateway's guard, issue 10) ---------------------------------------------------

    @app.get("/bans")
    async def bans(request: Request, session: Admin) -> HTMLResponse:
        guard = core.security
        rows = guard.list_bans() if guard is not None else []
        return page(
            request, "bans.html", session, rows=rows, available=guard is not None,
            now=time.time(), errors={},
        )  # fmt: skip

    @app.post("/bans")
    async def ban_add(request: Request, session: Admin) -> Response:
        import ipaddress

        guard = core.security
        form = await _form(request)
        if guard is None:
            raise HTTPException(409, "no SIP side in this process: bans cannot be changed here")
        try:
            address = str(ipaddress.ip_address(forms.text(form, "address").strip("[]")))
            minutes = float(forms.text(form, "minutes") or "0") or None
            if minutes is not None and not 0 < minutes <= 525600:
                raise ValueError("minutes")
        except ValueError:
            console.flash(
                session, "A ban needs an IPv4 or IPv6 address and 1-525600 minutes.", "error"
            )
            return go(request, "/bans")
        detail = forms.text(form, "detail")[:200] or f"manual ({session.actor})"
        guard.ban(address, minutes * 60 if minutes else None, detail)
        console.flash(session, f"{address} banned.")
        return go(request, "/bans")

    @app.post("/bans/{address}/lift")
    async def ban_lift(request: Request, address: str, session: Admin) -> Response:
        guard = core.security
        if guard is None or not guard.unban(address):
            console.flash(session, f"No ban of {address} in force.", "error")
        else:
            console.flash(session, f"Ban of {address} lifted.")
        return go(request, "/bans")

    # -- events and alarms ------------------------------------------------------------------------

    @app.get("/events")
    async def events(
        request: Request,
        session: Admin,
        kind: str = "alarm",
        state: str = "active",
        page_no: Annotated[int, _query_alias("page")] = 1,
    ) -> HTMLResponse:
        kind_filter = kind if kind in ("alarm", "audit") else None
        cleared = {"active": False, "cleared": True}.get(state)
        size = 50
        page_no = max(1, min(page_no, 10**6))
        rows = await run(
            lambda: core.store.events.list(
                kind=kind_filter, cleared=cleared, offset=(page_no - 1) * size, limit=size
            )
        )
        total = await run(lambda: core.store.events.count(kind=kind_filter, cleared=cleared))
        return page(
            request, "events.html", session, rows=rows, kind=kind, state=state,
            page_no=page_no, pages=max(1, math.ceil(total / size)), total=total,
        )  # fmt: skip

    @app.post("/events/acknowledge")
    async def events_ack(request: Request, session: Admin) -> Response:
        form = await _form(request)
        guid = forms.optional(form, "guid")
        count = await run(lambda: core.store.events.clear(guid, session.actor))
        console.flash(session, f"{count} alarm(s) acknowledged.")
        return go(request, "/events")

    return app


def _query_alias(name: str) -> Any:
    from fastapi import Query

    return Query(alias=name)


def _url(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def _escape(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))


def _reason(exc: Exception) -> str:
    if isinstance(exc, Invalid):
        return f"{exc.field}: {exc.reason}"
    return str(exc)


def _granted(permissions: Any) -> dict[str, dict[str, Any]]:
    from limen.store.schemas import normalise_permission_path

    out = {}
    for p in permissions:
        out[p.path] = {"read": p.read, "write": p.write}
    # Keyed by the normalised path; the grid looks rows up the same way.
    return {normalise_permission_path(k): v for k, v in out.items()}


def _icp_defaults() -> dict[str, Any]:
    from limen.store.schemas import IcpCreate

    fields = IcpCreate.model_fields
    values: dict[str, Any] = {}
    for name, field in fields.items():
        if field.default_factory is not None:
            values[name] = field.default_factory()  # type: ignore[call-arg]
        elif field.default is not None:
            values[name] = field.default
    return values


def _streams(media: dict[str, Any]) -> list[dict[str, Any]]:
    """The relay's per-leg streams flattened for a table: side, codec, packets, loss..."""
    out = []
    for side, leg in (media.get("legs") or {}).items():
        for stream in leg.get("streams") or []:
            out.append({"side": side, **stream})
    return out


def _set_cookie(response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path="/", secure=True, httponly=True, samesite="strict"
    )


def mount_console(
    app: FastAPI, core: Core, on_auth_failure: AuthFailureHook | None = None
) -> Console:
    """Mount the console under ``/console`` of the admin app (and ``/`` → there)."""
    console_app = create_console(core, on_auth_failure)
    app.mount("/console", console_app, name="console")

    @app.get("/", include_in_schema=False)
    async def _root() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=307)

    console: Console = console_app.state.console
    return console
