"""Access to the services the app was built with, from inside a request."""

from __future__ import annotations

from flask import current_app

from ..services import Services


def services() -> Services:
    return current_app.extensions["fhir_bridge"]
