"""What every FHIR blueprint shares: the data layer, FHIR JSON responses, consent gating, auditing, gzip."""

from __future__ import annotations

import gzip
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import TypeVar

from flask import Blueprint, Flask, Response, current_app, g, request

from ..audit import MINOR_FAILURE, SERIOUS_FAILURE, SUCCESS, Access, record
from ..audit_spool import AuditSpool, SpoolFolder, spool_directory
from ..auth.registry import AccessGrant
from ..consent import CompiledConsent, Decision, compile_consent, decide, now_micros
from ..fhir_data import FhirData
from ..fhir_query import ID_PATTERN, TYPE_PATTERN, SearchError
from .access import current_grant, require
from .context import services
from .outcome import ApiError
from .paging import Order, Page, paginate

log = logging.getLogger("fhir_bridge.api.fhir")

T = TypeVar("T")

FHIR_JSON = "application/fhir+json"
GZIP_MIN_SIZE = 1024


def data() -> FhirData:
    found = current_app.extensions.get("fhir_bridge_data")
    if found is None:
        found = FhirData(services().db, services().log)
        found.ensure_schema()
        current_app.extensions["fhir_bridge_data"] = found
    return found


def audit_spool() -> AuditSpool:
    found = current_app.extensions.get("fhir_bridge_audit")
    if found is None:
        found = current_app.extensions.setdefault(
            "fhir_bridge_audit", AuditSpool(spool_directory(services().config.data_dir)))
    return found


def fold_audits() -> None:
    """Store every spooled AuditEvent of this host (every API process's) before they are searched."""
    found = current_app.extensions.get("fhir_bridge_audit_folder")
    if found is None:
        found = current_app.extensions.setdefault("fhir_bridge_audit_folder", SpoolFolder(
            spool_directory(services().config.data_dir), services().db, data().store))
    try:
        found.fold()
    except Exception:
        log.exception("could not store the spooled AuditEvents")
        raise ApiError(503, "transient", "the latest AuditEvents could not be stored; try again") from None


def base_url() -> str:
    return services().config.public_base_url.rstrip("/") + "/fhir"


# characters RFC 3986 allows in a URI as they are (a Content-Location built of these needs no quoting)
_URI = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")


class FhirResponse(Response):
    """A FHIR response whose Content-Location, when already a URI (the public base URL, a type, an
    id and a version), is added to the headers sent as it is: werkzeug's IRI-to-URI conversion of it
    (splitting, quoting and IDNA-encoding again) took about 7% of a read's CPU."""

    content_location: str | None = None

    def locate(self, location: str) -> None:
        if _URI.fullmatch(location):
            self.content_location = location
        else:
            self.headers["Content-Location"] = location  # werkzeug makes it a URI

    def get_wsgi_headers(self, environ):  # type: ignore[no-untyped-def]
        headers = super().get_wsgi_headers(environ)
        if self.content_location is not None:
            headers["Content-Location"] = self.content_location
        return headers


def fhir_response(body: bytes | dict, status: int = 200, headers: dict[str, str] | None = None,
                  location: str | None = None) -> FhirResponse:
    """A FHIR JSON response; ``location``: its Content-Location."""
    if isinstance(body, dict):
        body = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    response = FhirResponse(body, status=status, content_type=f"{FHIR_JSON}; charset=utf-8")
    for key, value in (headers or {}).items():
        response.headers[key] = value
    if location is not None:
        response.locate(location)
    return response


def check_type_and_id(res_type: str, res_id: str | None = None) -> None:
    if not TYPE_PATTERN.match(res_type):
        raise ApiError(404, "not-supported", f"{res_type[:64]!r} is not a FHIR resource type", "resourceType")
    if res_id is not None and not ID_PATTERN.match(res_id):
        raise ApiError(400, "value", f"{res_id[:64]!r} is not a FHIR id ([A-Za-z0-9-.]{{1,64}})", "id")


def page(items: list[T], order: Order[T], path: str, args: list[tuple[str, str]], count: int) -> Page[T]:
    """:func:`bridge.api.paging.paginate` under ``/fhir/<path>``, a bad position answered 400."""
    try:
        return paginate(items, order, f"{base_url()}/{path}", args, count)
    except SearchError as exc:
        raise ApiError(400, "value", str(exc), exc.param) from None


# -- access: scope, consent, audit ----------------------------------------------------------

def begin(interaction: str, res_type: str, permission: str) -> tuple[Access, AccessGrant]:
    """Start auditing this request, then check the token and its scope (a failure is audited too).

    A read or search reads its token, data and consents in one read transaction (one snapshot),
    ended before the AuditEvent is written; of AuditEvents, after the spooled ones are stored."""
    access = Access(interaction, query=request.full_path.rstrip("?"))
    g.fhir_access = access
    if res_type == "AuditEvent":  # for a caller allowed to read them, before the snapshot is taken
        _authorise(access, res_type, permission)
        fold_audits()
    if permission in ("r", "s"):
        services().db.begin_shared_read()
    return access, _authorise(access, res_type, permission)


def _authorise(access: Access, res_type: str, permission: str) -> AccessGrant:
    grant = current_grant()
    access.organization, access.client_id = grant.organization, grant.client_id
    return require(res_type, permission, grant)


class _CompiledConsents:
    """Consent versions compiled once per process (a stored version never changes; a new version
    has another hash), least recently used dropped first."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._found: OrderedDict[str, CompiledConsent] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, sha256: str) -> CompiledConsent | None:
        with self._lock:
            found = self._found.get(sha256)
            if found is not None:
                self._found.move_to_end(sha256)
            return found

    def put(self, sha256: str, compiled: CompiledConsent) -> None:
        with self._lock:
            self._found[sha256] = compiled
            while len(self._found) > self.size:
                self._found.popitem(last=False)


_COMPILED = _CompiledConsents()


class ConsentGate:
    """Consent decisions for one request's organisation; consents are read once per request (which
    versions are current is read every time; a version's rules are compiled once per process)."""

    def __init__(self, organization: str) -> None:
        self.organization = organization
        self.regime = services().config.consent_regime
        self._rules: dict[str, list] = {}

    def load(self, patients: Iterable[str]) -> None:
        missing = {p for p in patients if p not in self._rules}
        if not missing:
            return
        current = data().consent_versions(missing)
        compiled = {v: _COMPILED.get(v.sha256) for versions in current.values() for v in versions}
        unknown = [v for v, c in compiled.items() if c is None]
        contents = data().consent_contents(unknown) if unknown else {}
        for version in unknown:  # a stored version is never removed: a KeyError here fails closed
            compiled[version] = compile_consent(contents[version])
            _COMPILED.put(version.sha256, compiled[version])
        now = now_micros()
        self._rules.update({patient: [rule for v in versions for rule in compiled[v].rules_at(now)]
                            for patient, versions in current.items()})

    def decide(self, patient: str | None, category: str) -> Decision:
        if patient is None:
            return Decision(True, "not patient data")
        self.load([patient])
        return decide(self._rules[patient], self.organization, category, self.regime)

    def permits(self, patient: str | None, category: str) -> bool:
        return self.decide(patient, category).permitted


def _audit(response: Response) -> Response:
    access: Access | None = g.pop("fhir_access", None)
    if access is None:
        return response
    services().db.end_shared_read()
    status = response.status_code
    if status >= 400 and not access.patients:
        access.patients.update(_requested_patients())
    outcome = SUCCESS if status < 400 else MINOR_FAILURE if status < 500 else SERIOUS_FAILURE
    description = g.pop("fhir_audit_note", "") or f"HTTP {status}"
    if status >= 400 and response.mimetype == FHIR_JSON:
        try:
            issue = json.loads(response.get_data())["issue"][0]
            description = f"HTTP {status}: {issue.get('diagnostics', '')}"
        except (ValueError, KeyError, IndexError, TypeError):
            pass
    try:
        record(audit_spool(), access, outcome, description, services().log.origin)
    except Exception:
        # Never answer with data whose access could not be recorded.
        log.exception("could not record the AuditEvent")
        from .outcome import operation_outcome

        return operation_outcome(503, "transient", "the access could not be audited; nothing was served")
    return response


def _requested_patients() -> set[str]:
    """For a refused request: the patients it asked about, so their AuditEvent search shows the attempt."""
    found: set[str] = set()
    args = request.view_args or {}
    res_type, res_id = args.get("res_type", "Patient" if "everything" in request.path else None), args.get("res_id")
    try:
        if res_type == "Patient" and res_id and ID_PATTERN.match(res_id):
            found.add(f"Patient/{res_id}")
        elif res_type and res_id and TYPE_PATTERN.match(res_type) and ID_PATTERN.match(res_id):
            current = data().current(res_type, res_id)
            if current is not None and current[1]:
                found.add(current[1])
        for value in request.args.getlist("patient") + request.args.getlist("subject"):
            for one in value.split(","):
                ref = one if one.startswith("Patient/") else f"Patient/{one}"
                if ID_PATTERN.match(ref.split("/", 1)[1]):
                    found.add(ref)
    except Exception:  # best effort: the event is recorded even if the lookup fails
        log.exception("could not resolve the patient of a refused request")
    return found


def note(text: str) -> None:
    """Extra words for this request's AuditEvent (e.g. how many results consent withheld)."""
    g.fhir_audit_note = text


def _end_reads(error: BaseException | None) -> None:
    services().db.end_shared_read(error)  # a request that failed before _audit ran


def fhir_blueprint(name: str) -> Blueprint:
    blueprint = Blueprint(name, __name__, url_prefix="/fhir")
    blueprint.after_request(_audit)
    blueprint.teardown_request(_end_reads)
    return blueprint


# -- gzip, app-wide ---------------------------------------------------------------------------

def _gzip(response: Response) -> Response:
    if (
        response.direct_passthrough or response.status_code < 200 or response.status_code in (204, 304)
        or "Content-Encoding" in response.headers
        or "gzip" not in request.headers.get("Accept-Encoding", "").lower()
    ):
        return response
    body = response.get_data()
    if len(body) < GZIP_MIN_SIZE:
        return response
    response.set_data(gzip.compress(body, compresslevel=5))
    response.headers["Content-Encoding"] = "gzip"
    response.headers.add("Vary", "Accept-Encoding")
    return response


def install_gzip(app: Flask) -> None:
    app.after_request(_gzip)
