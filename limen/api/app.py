"""``create_app(core)``: the FastAPI application of the admin port (MBG-shaped REST API).

No module-level app or engine: every app is built around the :class:`~limen.core.Core`
it is given. Store errors map to HTTP statuses here, in one place: not found → 404,
conflicts (duplicates, ICP with devices, token state) → 409, invalid values → 422 naming
the field, store unusable → 503.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import DataError

from limen import __version__
from limen.api.guard import RequestGuard
from limen.api.oauth import OAuthServer
from limen.api.routers import (
    admin,
    configuration,
    devices,
    events,
    globaloptions,
    icps,
    metrics,
    msl,
    pairing,
    security,
    tma,
)
from limen.core import Core
from limen.store.errors import Conflict, Invalid, NotFound, PreconditionFailed, StoreError

# Largest backup file accepted by /mslrest/msl/v1/netrestore/.
MAX_BACKUP_UPLOAD = 256 << 20


def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=404)


def _conflict(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=409)


def _precondition(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=412)


def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Invalid)
    detail = [{"loc": ["body", exc.field], "msg": exc.reason, "type": "value_error"}]
    return JSONResponse({"detail": detail}, status_code=422)


def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationError)
    detail = [
        {"loc": ["body", *error["loc"]], "msg": error["msg"], "type": error["type"]}
        for error in exc.errors(include_url=False, include_input=False)
    ]
    return JSONResponse({"detail": detail}, status_code=422)


def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's own handler echoes the input back, and an input it cannot serialise
    # (a float NaN) turned a 422 into a 500. Location, message and type say enough.
    assert isinstance(exc, RequestValidationError)
    detail = [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type")}
        for error in exc.errors()
    ]
    return JSONResponse({"detail": detail}, status_code=422)


def _data_error(request: Request, exc: Exception) -> JSONResponse:
    # The database refused a value (PostgreSQL: NUL in text, an integer out of range).
    # RequestGuard and the models refuse these first; this keeps any that slip by a 4xx.
    return JSONResponse(
        {"detail": "a value was refused by the database (out of range or invalid text)"},
        status_code=422,
    )


def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": f"store unavailable: {exc}"}, status_code=503)


def _offline_docs(app: FastAPI) -> None:
    """``/docs`` with swagger-ui served from the installed ``swagger-ui-bundle`` package:
    an admin network often has no Internet access, and a CDN would see every visit."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

    app.mount("/docs/static", StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")

    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url="/docs/static/swagger-ui-bundle.js",
            swagger_css_url="/docs/static/swagger-ui.css",
            swagger_favicon_url="/docs/static/favicon-32x32.png",
        )

    app.add_api_route("/docs", docs, include_in_schema=False)


def create_app(core: Core) -> FastAPI:
    """Build the admin/REST application around ``core``."""
    app = FastAPI(
        docs_url=None,
        redoc_url=None,
        title="Limen",
        version=__version__,
        description=(
            "MBG-compatible management API. Consumers sign requests with OAuth 1.0a "
            "(pairing: /mslrest/initiate, admin approval, /mslrest/token); admins use a "
            "bearer token from /mslrest/limen/v1/session/ or `limen admin token add`."
        ),
    )
    _offline_docs(app)
    app.state.core = core
    app.state.oauth = OAuthServer(core.store, core.settings)
    for module in (
        globaloptions,
        icps,
        devices,
        metrics,
        msl,
        events,
        configuration,
        pairing,
        admin,
        security,
        tma,
    ):
        app.include_router(module.router)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(Conflict, _conflict)
    app.add_exception_handler(PreconditionFailed, _precondition)
    app.add_exception_handler(Invalid, _invalid)
    app.add_exception_handler(ValidationError, _validation)
    app.add_exception_handler(StoreError, _unavailable)
    app.add_exception_handler(DataError, _data_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    # Paths are served with or without their trailing slash (RequestGuard), never
    # redirected: a redirected signed request cannot keep a valid signature.
    app.router.redirect_slashes = False
    app.add_middleware(
        RequestGuard,
        routes=app.router.routes,
        large_bodies={"/mslrest/msl/v1/netrestore/": MAX_BACKUP_UPLOAD},
    )
    return app
