"""`fhir-bridge clients ...`: register partner systems for SMART Backend Services."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import Config
from .errors import BridgeError
from .services import open_services


def _add(args: argparse.Namespace, config: Config) -> int:
    try:
        jwks_text = Path(args.jwks).read_text()
    except OSError as exc:
        raise BridgeError(f"cannot read {args.jwks}: {exc.strerror}") from exc
    scopes = [s for chunk in args.scopes for s in chunk.replace(",", " ").split()]
    services = open_services(config)
    try:
        client = services.registry.add_client(args.org, jwks_text, scopes, args.client_id)
    finally:
        services.close()
    print(json.dumps({"client_id": client.client_id, "organization": client.organization, "scopes": client.scopes}))
    print(f"token endpoint for this client's assertions (aud): {config.public_base_url.rstrip('/')}/auth/token", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace, config: Config) -> int:
    services = open_services(config)
    try:
        for client in services.registry.clients():
            kids = [k.get("kid") for k in client.jwks.get("keys", [])]
            print(json.dumps({"client_id": client.client_id, "organization": client.organization,
                              "scopes": client.scopes, "key_ids": kids}))
    finally:
        services.close()
    return 0


def _remove(args: argparse.Namespace, config: Config) -> int:
    services = open_services(config)
    try:
        if not services.registry.remove_client(args.client_id):
            raise BridgeError(f"no client {args.client_id}; `fhir-bridge clients list` shows the registered ones")
    finally:
        services.close()
    print(f"removed {args.client_id}; its access tokens no longer work", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    clients = sub.add_parser("clients", help="partner systems allowed to fetch records (SMART Backend Services)")
    actions = clients.add_subparsers(dest="clients_command", required=True, metavar="ACTION")
    p = actions.add_parser("add", help="register a client by its public JWK Set; prints its client_id")
    p.add_argument("--jwks", required=True, metavar="FILE", help="JWK Set with the client's public keys (RS384/ES384)")
    p.add_argument("--org", required=True, metavar="ID", help="the partner organisation (consent decisions name it)")
    p.add_argument("--scopes", required=True, nargs="+", metavar="SCOPE", help="e.g. system/Patient.read system/Observation.rs")
    p.add_argument("--client-id", help="choose the client id (default: random)")
    p.set_defaults(handler=_add)
    p = actions.add_parser("list", help="one JSON line per registered client")
    p.set_defaults(handler=_list)
    p = actions.add_parser("remove", help="unregister a client and revoke its tokens")
    p.add_argument("client_id", metavar="CLIENT_ID")
    p.set_defaults(handler=_remove)
