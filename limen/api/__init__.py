"""The management REST API: ``create_app(core)`` and ``serve_api(core)``."""

from limen.api.app import create_app
from limen.api.server import ApiServer, serve_api

__all__ = ["ApiServer", "create_app", "serve_api"]
