"""The HTTP API: a Flask application factory, one blueprint per area."""

from __future__ import annotations

import logging

from flask import Flask
from werkzeug.exceptions import HTTPException

from ..config import Config, load_config
from ..services import Services, open_services
from .outcome import ApiError, operation_outcome

log = logging.getLogger(__name__)


def create_app(config: Config | None = None, services: Services | None = None) -> Flask:
    """Build the app; with no arguments, configuration comes from the environment (gunicorn's entry)."""
    from . import auth_routes, health, log_routes  # blueprints register their routes at import

    if services is None:
        services = open_services(config or load_config())
    app = Flask("fhir_bridge")
    app.extensions["fhir_bridge"] = services
    app.register_blueprint(health.blueprint)
    app.register_blueprint(log_routes.blueprint)
    app.register_blueprint(auth_routes.blueprint)
    from . import anchor_routes

    app.register_blueprint(anchor_routes.blueprint)

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):  # type: ignore[no-untyped-def]
        return exc.response()

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):  # type: ignore[no-untyped-def]
        code = {404: "not-found", 405: "not-supported"}.get(exc.code or 500, "processing")
        return operation_outcome(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):  # type: ignore[no-untyped-def]
        log.exception("unhandled error")  # details stay in the server log, not in the response
        return operation_outcome(500, "exception", "internal error; the server log has the details")

    return app
