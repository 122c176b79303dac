"""FHIR OperationOutcome error responses, used by every API area (FHIR or not) for one error shape."""

from __future__ import annotations

from flask import Response, jsonify


def operation_outcome(status: int, code: str, diagnostics: str, expression: str | None = None) -> Response:
    """An OperationOutcome with one issue; ``code`` is from the FHIR issue-type value set."""
    issue = {"severity": "error" if status < 500 else "fatal", "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    response = jsonify({"resourceType": "OperationOutcome", "issue": [issue]})
    response.status_code = status
    response.mimetype = "application/fhir+json"
    return response


class ApiError(Exception):
    """Raised inside a view; turned into an OperationOutcome by the app's error handler."""

    def __init__(self, status: int, code: str, diagnostics: str, expression: str | None = None) -> None:
        super().__init__(diagnostics)
        self.status, self.code, self.diagnostics, self.expression = status, code, diagnostics, expression

    def response(self) -> Response:
        response = operation_outcome(self.status, self.code, self.diagnostics, self.expression)
        if self.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="fhir-bridge"'
        return response
