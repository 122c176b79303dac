"""`fhir-bridge verify BUNDLE.json --key VKEY [--rpc URL]`: a regulator's offline check of a Bundle.

Exit status 0 only if every entry verifies (canonical hash with its salt, inclusion proof, the
checkpoint's signature) and, with ``--rpc``, the checkpoint is anchored on that chain.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from anchoring.bundle_report import check_anchor, render
from anchoring.bundle_verify import verify_bundle
from anchoring.errors import VerificationError
from anchoring.note import parse_verifier_key

from .config import Config
from .errors import BridgeError


def _key(value: str) -> str:
    path = Path(value)
    return path.read_text().strip() if path.is_file() else value.strip()


def cmd_verify(args: argparse.Namespace, config: Config) -> int:
    try:
        raw = Path(args.bundle).read_bytes() if args.bundle != "-" else sys.stdin.buffer.read()
    except OSError as exc:
        raise BridgeError(f"cannot read {args.bundle}: {exc.strerror}") from exc
    try:
        bundle = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        print(f"INVALID: {args.bundle} is not JSON ({exc})", file=sys.stderr)
        return 1
    verifiers = [parse_verifier_key(_key(k)) for k in args.key]
    try:
        report = verify_bundle(bundle, verifiers, args.origin)
    except VerificationError as exc:
        print(f"INVALID: {exc}", file=sys.stderr)
        return 1
    if args.rpc:
        check_anchor(report, args.rpc, args.confirmations)
    sys.stdout.write(render(report))
    return 0 if report.ok else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="verify every entry of a Bundle from the API offline; exit 0 only if all do")
    p.add_argument("bundle", metavar="BUNDLE.json", help="the Bundle as received (- for standard input)")
    p.add_argument("--key", required=True, action="append", metavar="VKEY", help="the log's verifier key, or a file")
    p.add_argument("--origin", help="expected log origin (default: the key's name)")
    p.add_argument("--rpc", metavar="URL", help="EVM JSON-RPC endpoint: also check the checkpoint's anchor on chain")
    p.add_argument("--confirmations", type=int, default=1, help="confirmations the anchor needs (default 1)")
    p.set_defaults(handler=cmd_verify)
