"""``create_app(core)``: the FastAPI application of the admin port (MBG-shaped REST API).

No module-level app or engine: every app is built around the :class:`~limen.core.Core`
it is given. Store errors map to HTTP statuses here, in one place: not found → 404,
conflicts (duplicates, ICP with devices, token state) → 409, invalid values → 422 naming
the field, store unusable → 503.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from limen import __version__
from limen.api.oauth import OAuthServer
from limen.api.routers import (
    admin,
    configuration,
    devices,
    events,
    globaloptions,
    icps,
    metrics,
    pairing,
    security,
    tma,
)
from limen.core import Core
from limen.store.errors import Conflict, Invalid, NotFound, StoreError


def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=404)


def _conflict(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=409)


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


def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": f"store unavailable: {exc}"}, status_code=503)


def create_app(core: Core) -> FastAPI:
    """Build the admin/REST application around ``core``."""
    app = FastAPI(
        title="Limen",
        version=__version__,
        description=(
            "MBG-compatible management API. Consumers sign requests with OAuth 1.0a "
            "(pairing: /mslrest/initiate, admin approval, /mslrest/token); admins use a "
            "bearer token from /mslrest/limen/v1/session/ or `limen admin token add`."
        ),
    )
    app.state.core = core
    app.state.oauth = OAuthServer(core.store, core.settings)
    for module in (
        globaloptions,
        icps,
        devices,
        metrics,
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
    app.add_exception_handler(Invalid, _invalid)
    app.add_exception_handler(ValidationError, _validation)
    app.add_exception_handler(StoreError, _unavailable)
    return app
