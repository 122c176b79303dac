"""GET /openapi.yaml: the OpenAPI 3 description of the endpoints that are not FHIR (FHIR has /fhir/metadata)."""

from __future__ import annotations

from importlib.resources import files

from flask import Blueprint, Response

blueprint = Blueprint("openapi", __name__)


def openapi_text() -> str:
    return files("bridge.api").joinpath("openapi.yaml").read_text(encoding="utf-8")


@blueprint.get("/openapi.yaml")
def openapi() -> Response:
    return Response(openapi_text(), content_type="application/yaml; charset=utf-8")
