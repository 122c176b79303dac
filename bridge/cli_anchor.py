"""`fhir-bridge anchor ...`: deploy the contract, anchor now, list anchors, verify a checkpoint's anchor."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from anchoring.anchors.evm import EvmBackend
from anchoring.anchors.store import OPEN_STATUSES
from anchoring.checkpoint import Checkpoint, open_checkpoint, parse_checkpoint_body
from anchoring.errors import KeyFileError, VerificationError
from anchoring.note import Verifier, parse_verifier_key

from .anchor_service import anchor_store, open_anchorer, open_backend, open_evm_backend
from .config import Config
from .errors import BridgeError, ConfigError
from .services import Services, open_services


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, sort_keys=True) + "\n")


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _overrides(args: argparse.Namespace, config: Config) -> Config:
    """Command-line options for the chain beat the configuration (a regulator checks elsewhere)."""
    changes = {k: v for k, v in {
        "anchor_backend": getattr(args, "backend", None),
        "anchor_rpc_url": getattr(args, "rpc_url", None),
        "anchor_chain_id": getattr(args, "chain_id", None),
        "anchor_contract": getattr(args, "contract", None),
        "anchor_confirmations": getattr(args, "confirmations", None),
    }.items() if v is not None}
    return replace(config, **changes)


def _services(args: argparse.Namespace, config: Config) -> Services:
    return open_services(_overrides(args, config))


def cmd_deploy(args: argparse.Namespace, config: Config) -> int:
    config = _overrides(args, config)
    if config.anchor_backend != "evm":
        raise ConfigError("anchor deploy needs anchor_backend = evm (FHIR_BRIDGE_ANCHOR_BACKEND=evm)")
    backend = open_evm_backend(config, _progress, require_contract=False)
    try:
        address, tx_hash, gas = backend.deploy(timeout=args.timeout)
    finally:
        backend.close()
    _progress(f"deployed CheckpointAnchor at {address} (gas {gas}); now set FHIR_BRIDGE_ANCHOR_CONTRACT={address} "
              "(or anchor_contract in the configuration file)")
    _print_json({"contract": address, "chain_id": config.anchor_chain_id, "transaction_hash": tx_hash,
                 "gas_used": gas, "operator": backend.sender})
    return 0


def cmd_now(args: argparse.Namespace, config: Config) -> int:
    services = _services(args, config)
    try:
        anchorer = open_anchorer(services, _progress, rpc_retries=args.retries)
        report = anchorer.run_once()
        deadline = time.monotonic() + args.wait
        while not report.errors and args.wait > 0 and time.monotonic() < deadline and \
                anchorer.store.list(anchorer.backend.target, OPEN_STATUSES):
            time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))
            report = anchorer.run_once()
        for record in anchorer.store.list(anchorer.backend.target, limit=args.show):
            _print_json(record.to_json())
        anchorer.backend.close()
    finally:
        services.close()
    if report.errors:
        for error in report.errors:
            print(f"fhir-bridge: anchoring incomplete: {error}", file=sys.stderr)
        return 2
    if report.new is None:
        _progress("the log did not grow since the last anchor: nothing new to anchor")
    return 0


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    services = _services(args, config)
    try:
        records = anchor_store(services).list(limit=args.limit)
        size = services.log.size()
    finally:
        services.close()
    for record in records:
        _print_json(record.to_json())
    pending = sum(r.status != "confirmed" for r in records)
    anchored = max((r.size for r in records), default=0)
    _progress(f"log size {size}; latest anchored checkpoint size {anchored}; {pending} anchor(s) not yet confirmed")
    return 0


def _verifiers(args: argparse.Namespace, services: Services) -> list[Verifier]:
    if args.key:
        return [parse_verifier_key(Path(k).read_text().strip() if Path(k).is_file() else k) for k in args.key]
    try:
        return [services.signer.verifier]
    except KeyFileError as exc:
        raise ConfigError(f"{exc}; or pass the log's verifier key with --key") from exc


def _checkpoint_to_verify(args: argparse.Namespace, services: Services) -> tuple[Checkpoint, int]:
    """The checkpoint named on the command line, its signature checked; and a block to search from."""
    verifiers = _verifiers(args, services)
    value = args.checkpoint
    if Path(value).is_file():  # from a partner or regulator: the origin is the key's name unless configured
        origin = None if args.key else services.log.origin
        return open_checkpoint(Path(value).read_text(), verifiers, origin), 0
    if value == "latest":
        stored = services.log.latest_checkpoint()
        if stored is None:
            raise BridgeError("no checkpoint has been signed yet")
    elif value.isdigit():
        stored = services.log.stored_checkpoint(int(value))
        if stored is None:
            raise BridgeError(f"no stored checkpoint of size {value}: `fhir-bridge anchor status` lists anchored sizes")
    else:
        raise BridgeError(f"CHECKPOINT: expected a size, 'latest' or a file with a signed checkpoint, found {value!r}")
    signed = open_checkpoint(stored.note, verifiers, services.log.origin)
    row = stored.checkpoint
    if (signed.size, signed.root) != (row.size, row.root):
        raise VerificationError(
            f"stored checkpoint: the signed note says size {signed.size} root {parse_body_root(stored.note)}, "
            f"but the log_checkpoints row says size {row.size} root {row.root.hex()}: the database was altered"
        )
    return signed, 0


def parse_body_root(note: str) -> str:
    body = note[: note.rfind("\n\n") + 1]
    return parse_checkpoint_body(body).root.hex()


def cmd_verify(args: argparse.Namespace, config: Config) -> int:
    services = _services(args, config)
    try:
        try:
            checkpoint, from_block = _checkpoint_to_verify(args, services)
            backend = open_backend(services, _progress)
            try:
                if isinstance(backend, EvmBackend):
                    if args.from_block is not None:
                        from_block = args.from_block
                    else:  # the block this bridge saw it in, less a margin for reorgs; else from genesis
                        known = anchor_store(services).get(backend.target, checkpoint.size)
                        if known is not None and known.block_number is not None:
                            from_block = max(0, known.block_number - 1_000)
                    evidence = backend.verify(checkpoint, from_block)
                else:
                    evidence = backend.verify(checkpoint)
            finally:
                backend.close()
        except VerificationError as exc:
            print(f"INVALID: {exc}", file=sys.stderr)
            return 1
    finally:
        services.close()
    _print_json({"origin": evidence.origin, "size": evidence.size, "root": evidence.root.hex(),
                 "backend": evidence.backend, "confirmations": evidence.confirmations, **evidence.details})
    trust = "" if evidence.backend == "evm" else " (local journal: no external trust)"
    print(f"OK: checkpoint {checkpoint.origin} size {checkpoint.size} is anchored in {evidence.location}, "
          f"{evidence.confirmations} confirmation(s){trust}", file=sys.stderr)
    return 0


def _chain_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=("local", "evm"), help="override anchor_backend")
    p.add_argument("--rpc-url", help="override anchor_rpc_url")
    p.add_argument("--chain-id", type=int, help="override anchor_chain_id (the chain the node must serve)")
    p.add_argument("--contract", help="override anchor_contract")


def register(sub: argparse._SubParsersAction) -> None:
    anchor = sub.add_parser("anchor", help="anchor signed checkpoints (local journal or an EVM chain)")
    actions = anchor.add_subparsers(dest="anchor_command", required=True, metavar="ACTION")

    p = actions.add_parser("deploy", help="deploy the CheckpointAnchor contract and print its address")
    _chain_options(p)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the deployment to be mined")
    p.set_defaults(handler=cmd_deploy)

    p = actions.add_parser("now", help="run one anchoring round now: follow anchors under way, anchor if the log grew")
    _chain_options(p)
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="keep following until every anchor is confirmed, at most this long")
    p.add_argument("--retries", type=int, default=5, help="retries while the RPC endpoint is unreachable")
    p.add_argument("--show", type=int, default=1, help="how many of the latest anchors to print")
    p.set_defaults(handler=cmd_now)

    p = actions.add_parser("status", help="list anchors (newest first), one JSON line each")
    _chain_options(p)
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(handler=cmd_status)

    p = actions.add_parser("verify", help="find a checkpoint's anchor and check origin, size, root, "
                                          "contract, chain and confirmations; exit 0 only if valid")
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="a stored checkpoint's size, 'latest', or a file holding a signed checkpoint note")
    _chain_options(p)
    p.add_argument("--key", action="append", metavar="VKEY", help="the log's verifier key, or a file holding it "
                                                                   "(default: from the configured signing key)")
    p.add_argument("--confirmations", type=int, help="override anchor_confirmations (the depth required)")
    p.add_argument("--from-block", type=int, help="first block to search for the anchor event (public "
                                                   "providers limit eth_getLogs ranges); default: where this "
                                                   "bridge saw it, or genesis")
    p.set_defaults(handler=cmd_verify)
