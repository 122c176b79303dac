"""The HTTP API: a Flask application factory, one blueprint per area."""

from __future__ import annotations

import logging

from flask import Flask
from werkzeug.exceptions import HTTPException, MethodNotAllowed

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
    from . import fhir_common, fhir_consent, fhir_metadata, fhir_read, fhir_search, openapi

    for area in (fhir_metadata, fhir_search, fhir_read, fhir_consent, openapi):
        app.register_blueprint(area.blueprint)
    from . import fhir_push  # POST /fhir: transaction and batch Bundles (issue #6)

    app.register_blueprint(fhir_push.blueprint)
    fhir_common.install_gzip(app)

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):  # type: ignore[no-untyped-def]
        return exc.response()

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):  # type: ignore[no-untyped-def]
        code = {404: "not-found", 405: "not-supported"}.get(exc.code or 500, "processing")
        response = operation_outcome(exc.code or 500, code, exc.description or exc.name)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)  # RFC 9110 15.5.6
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):  # type: ignore[no-untyped-def]
        log.exception("unhandled error")  # details stay in the server log, not in the response
        return operation_outcome(500, "exception", "internal error; the server log has the details")

    return app
