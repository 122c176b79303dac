"""`fhir-bridge consent ...`: record, revoke and list patients' Consent resources from the command line."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path

from .audit import now_instant
from .config import Config
from .consent import validate_consent
from .errors import BridgeError
from .fhir_data import FhirData
from .services import open_services


def _data(config: Config) -> tuple[FhirData, object]:
    services = open_services(config)
    data = FhirData(services.db, services.log)
    data.ensure_schema()
    return data, services


def _put(data: FhirData, resource: dict) -> str:
    resource.pop("meta", None)
    with data.db.transaction(write=True) as cur:
        return data.store.put(cur, resource, now_instant()).reference


def _add(args: argparse.Namespace, config: Config) -> int:
    try:
        resource = json.loads(Path(args.file).read_text())
    except (OSError, ValueError) as exc:
        raise BridgeError(f"cannot read a Consent from {args.file}: {exc}") from exc
    problem = validate_consent(resource) if isinstance(resource, dict) else "expected a JSON object"
    if problem:
        raise BridgeError(f"{args.file}: {problem}")
    resource.setdefault("id", str(uuid.uuid4()))
    data, services = _data(config)
    try:
        print(_put(data, resource))
    finally:
        services.close()  # type: ignore[attr-defined]
    return 0


def _revoke(args: argparse.Namespace, config: Config) -> int:
    data, services = _data(config)
    try:
        found = data.current("Consent", args.consent_id)
        if found is None:
            raise BridgeError(f"no Consent/{args.consent_id}; `fhir-bridge consent list --patient ID` shows them")
        resource = found[0].resource
        resource["status"] = "inactive"
        print(_put(data, resource))
    finally:
        services.close()  # type: ignore[attr-defined]
    print("revoked: the next request is decided without it", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace, config: Config) -> int:
    data, services = _data(config)
    try:
        patient = args.patient if args.patient.startswith("Patient/") else f"Patient/{args.patient}"
        for consent in data.consents([patient])[patient]:
            print(json.dumps({"id": consent["id"], "version": consent["meta"]["versionId"],
                              "status": consent.get("status"), "provision": consent.get("provision")}))
    finally:
        services.close()  # type: ignore[attr-defined]
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    consent = sub.add_parser("consent", help="patients' consent to partner reads (FHIR Consent)")
    actions = consent.add_subparsers(dest="consent_command", required=True, metavar="ACTION")
    p = actions.add_parser("add", help="store a Consent from a JSON file; prints Consent/<id>/_history/<v>")
    p.add_argument("file", metavar="CONSENT.json")
    p.set_defaults(handler=_add)
    p = actions.add_parser("revoke", help="set a Consent inactive (a new version); effective on the next request")
    p.add_argument("consent_id", metavar="ID")
    p.set_defaults(handler=_revoke)
    p = actions.add_parser("list", help="one JSON line per Consent of a patient")
    p.add_argument("--patient", required=True, metavar="ID")
    p.set_defaults(handler=_list)
