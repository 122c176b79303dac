"""The `fhir-bridge` command line.

Exit status: 0 success, 1 verification failed, 2 bad usage or configuration (the message says
what to do next).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from anchoring.checkpoint import format_tlog_proof, verify_tlog_proof_for_entry
from anchoring.errors import AnchoringError, VerificationError
from anchoring.merkle import leaf_hash
from anchoring.note import Signer, parse_verifier_key, read_key_file, write_key_file

from . import __version__
from .config import Config, load_config
from .errors import BridgeError
from .services import Services, open_services

Handler = Callable[[argparse.Namespace, Config], int]


def _print(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def cmd_keygen(args: argparse.Namespace, config: Config) -> int:
    signer = Signer.generate(args.name or config.log_origin)
    path = config.resolved_key_file
    write_key_file(path, signer, overwrite=args.force)
    print(f"wrote signing key {path} (mode 600); publish this verifier key:", file=sys.stderr)
    _print(signer.verifier.vkey)
    return 0


def _with_services(fn: Callable[[argparse.Namespace, Services], int]) -> Handler:
    def run(args: argparse.Namespace, config: Config) -> int:
        services = open_services(config)
        try:
            return fn(args, services)
        finally:
            services.close()

    return run


@_with_services
def cmd_log_append(args: argparse.Namespace, services: Services) -> int:
    entries = []
    for name in args.files:
        try:
            entries.append((name, Path(name).read_bytes()))
        except OSError as exc:
            raise BridgeError(f"cannot read {name}: {exc.strerror}") from exc
    first, size = services.log.append(data for _, data in entries)
    for i, (name, data) in enumerate(entries):
        _print(json.dumps({"file": name, "index": first + i, "leaf_hash": leaf_hash(data).hex()}))
    print(f"log size is now {size}", file=sys.stderr)
    return 0


@_with_services
def cmd_log_checkpoint(args: argparse.Namespace, services: Services) -> int:
    _print(services.log.checkpoint(services.signer).note)
    return 0


@_with_services
def cmd_log_prove(args: argparse.Namespace, services: Services) -> int:
    log = services.log
    if args.size is None:
        stored = log.latest_checkpoint()
        if stored is None or stored.checkpoint.size <= args.index:
            stored = log.checkpoint(services.signer)
    else:
        stored = log.sign_at(args.size, services.signer)
    _, hashes = log.inclusion_proof(args.index, stored.checkpoint.size)
    sys.stdout.write(format_tlog_proof(args.index, hashes, stored.note))
    return 0


@_with_services
def cmd_log_consistency(args: argparse.Namespace, services: Services) -> int:
    _, hashes = services.log.consistency_proof(args.old, args.new)
    for h in hashes:
        _print(base64.b64encode(h).decode())
    return 0


def cmd_log_vkey(args: argparse.Namespace, config: Config) -> int:
    _print(read_key_file(config.resolved_key_file).verifier.vkey)
    return 0


def _read_arg_or_file(value: str) -> str:
    path = Path(value)
    return path.read_text() if path.is_file() else value


def cmd_verify_proof(args: argparse.Namespace, config: Config) -> int:
    try:
        proof_text = Path(args.proof).read_bytes()
        entry = Path(args.entry).read_bytes()
    except OSError as exc:
        raise BridgeError(f"cannot read {exc.filename}: {exc.strerror}") from exc
    verifiers = [parse_verifier_key(_read_arg_or_file(k).strip()) for k in args.key]
    try:
        proof, checkpoint = verify_tlog_proof_for_entry(proof_text, entry, verifiers, args.origin)
    except VerificationError as exc:
        print(f"INVALID: {exc}", file=sys.stderr)
        return 1
    _print(f"OK: entry {args.entry} is at index {proof.index} of {checkpoint.origin} (size {checkpoint.size})")
    return 0


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from .serve import serve

    return serve(config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fhir-bridge", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"fhir-bridge {__version__}")
    parser.add_argument("--config", help="TOML configuration file (or FHIR_BRIDGE_CONFIG)")
    parser.add_argument("--data-dir", help="data directory (or FHIR_BRIDGE_DATA_DIR)")
    parser.add_argument("--database-url", help="sqlite:///PATH or postgresql://... (or FHIR_BRIDGE_DATABASE_URL)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("keygen", help="create the log's Ed25519 signing key and print its verifier key")
    p.add_argument("--name", help="key name (default: the log origin)")
    p.add_argument("--force", action="store_true", help="replace an existing key file")
    p.set_defaults(handler=cmd_keygen)

    log = sub.add_parser("log", help="the verifiable log").add_subparsers(dest="log_command", required=True, metavar="ACTION")
    p = log.add_parser("append", help="append each FILE's bytes as one entry; one JSON line per entry")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(handler=cmd_log_append)
    p = log.add_parser("checkpoint", help="sign (if the log grew) and print the latest checkpoint")
    p.set_defaults(handler=cmd_log_checkpoint)
    p = log.add_parser("prove", help="print a c2sp.org/tlog-proof@v1 for the entry at INDEX")
    p.add_argument("index", type=int, metavar="INDEX")
    p.add_argument("--size", type=int, help="tree size to prove against (default: latest checkpoint)")
    p.set_defaults(handler=cmd_log_prove)
    p = log.add_parser("consistency", help="print the consistency proof OLD -> NEW, one base64 hash per line")
    p.add_argument("old", type=int, metavar="OLD")
    p.add_argument("new", type=int, metavar="NEW")
    p.set_defaults(handler=cmd_log_consistency)
    p = log.add_parser("vkey", help="print the log's verifier key")
    p.set_defaults(handler=cmd_log_vkey)

    p = sub.add_parser("verify-proof", help="verify a tlog-proof for an entry offline; exit 0 only if valid")
    p.add_argument("proof", metavar="PROOF", help="tlog-proof file")
    p.add_argument("--entry", required=True, metavar="FILE", help="the entry's bytes")
    p.add_argument("--key", required=True, action="append", metavar="VKEY", help="verifier key, or a file holding it")
    p.add_argument("--origin", help="expected log origin (default: the key's name)")
    p.set_defaults(handler=cmd_verify_proof)

    p = sub.add_parser("serve", help="run the bridge: API (gunicorn) and background jobs")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int)
    p.set_defaults(handler=cmd_serve)

    from .cli_anchor import register as register_anchor  # here: cli_anchor imports this module's peers

    register_anchor(sub)
    from .cli_clients import register as register_clients

    register_clients(sub)
    from .cli_ingest import register as register_ingest

    register_ingest(sub)
    from .cli_consent import register as register_consent
    from .cli_verify import register as register_verify

    register_consent(sub)
    register_verify(sub)
    from adapters.fhir.cli import register as register_sync  # the CLI, like serve, is a composition root

    register_sync(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(
            args.config,
            data_dir=args.data_dir,
            database_url=args.database_url,
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
            workers=getattr(args, "workers", None),
        )
        return args.handler(args, config)
    except VerificationError as exc:
        print(f"fhir-bridge: {exc}", file=sys.stderr)
        return 1
    except (BridgeError, AnchoringError) as exc:
        print(f"fhir-bridge: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
