"""`fhir-bridge ingest` and `fhir-bridge messages`: feed files in, watch and fix what came in.

    fhir-bridge ingest FILE...                    one JSON line per message: id, control id, status, ack code, error
    fhir-bridge messages list [--status error]    one JSON line per kept message
    fhir-bridge messages show ID [--raw]          everything about one message (the raw bytes with --raw)
    fhir-bridge messages reprocess ID|--all-failed   convert again after a mapping fix

`ingest` exits 0 when every message was stored, 1 when some were kept with an error (listed, and
reprocessable), 2 on bad usage or configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import Config
from .errors import BridgeError, IngestError
from .id_key import resource_id_key_file
from .inbox import ERROR, STATUSES, STORED
from .pipeline import Incoming, Outcome, Pipeline, pipeline_from_config
from .services import Services, open_services


def _line(value: dict) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False) + "\n")


def _open(config: Config) -> tuple[Services, Pipeline]:
    services = open_services(config)
    try:
        id_key_file = resource_id_key_file(services.db, config.resolved_resource_id_key_file)
        return services, pipeline_from_config(services.db, config.mapping_override_dir, id_key_file=id_key_file)
    except BaseException:
        services.close()
        raise


def _outcome_line(outcome: Outcome, **extra: object) -> dict:
    out = outcome.as_json()
    return {**extra, **{k: out[k] for k in ("id", "control_id", "status", "ack_code", "duplicate", "error", "versions")}}


def cmd_ingest(args: argparse.Namespace, config: Config) -> int:
    from adapters.files.watcher import messages_of  # the file adapter's splitting rules, shared

    from .hl7.parser import split_batch

    services, pipeline = _open(config)
    try:
        all_stored = True
        for name in args.files:
            try:
                raw = Path(name).read_bytes()
            except OSError as exc:
                raise BridgeError(f"cannot read {name}: {exc.strerror}") from exc
            messages, envelope_error = messages_of(raw, split_batch)
            items = [Incoming(m, f"cli:{Path(name).name}", envelope_error) for m in messages]
            for at in range(0, len(items), config.ingest_group):
                for outcome in pipeline.ingest_many(items[at : at + config.ingest_group]):
                    all_stored &= outcome.status == STORED
                    _line(_outcome_line(outcome, file=name))
        while services.log.sequence(config.sequence_batch):
            pass
        return 0 if all_stored else 1
    finally:
        services.close()


def cmd_messages_list(args: argparse.Namespace, config: Config) -> int:
    services, inbox = _open_inbox(config)
    try:
        for m in inbox.list(status=args.status, limit=args.limit, after_id=args.after):
            _line({k: getattr(m, k) for k in ("id", "received_at", "source", "sender", "control_id", "message_type",
                                               "status", "ack_code", "error_code", "error_location", "error_text")})
        return 0
    finally:
        services.close()


def _open_inbox(config: Config):  # type: ignore[no-untyped-def]
    from .inbox import Inbox

    services = open_services(config)
    inbox = Inbox(services.db)
    inbox.ensure_schema()
    return services, inbox


def cmd_messages_show(args: argparse.Namespace, config: Config) -> int:
    services, inbox = _open_inbox(config)
    try:
        if args.raw:
            sys.stdout.buffer.write(inbox.raw(args.id))
            return 0
        message = inbox.get(args.id)
        value = message.as_dict()
        value["raw"] = inbox.raw(args.id).decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
        _line(value)
        return 0
    finally:
        services.close()


def cmd_messages_reprocess(args: argparse.Namespace, config: Config) -> int:
    if (args.id is None) == (not args.all_failed):
        raise IngestError("give a message ID or --all-failed (not both)")
    services, pipeline = _open(config)
    try:
        ids = pipeline.inbox.ids(ERROR) if args.all_failed else [args.id]
        all_stored = True
        for message_id in ids:
            outcome = pipeline.reprocess(message_id)
            all_stored &= outcome.status == STORED
            _line(_outcome_line(outcome))
        while services.log.sequence(config.sequence_batch):
            pass
        return 0 if all_stored else 1
    finally:
        services.close()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="ingest HL7v2 files (single messages or batches); one JSON line per message")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(handler=cmd_ingest)

    messages = sub.add_parser("messages", help="the inbox of received HL7v2 messages").add_subparsers(
        dest="messages_command", required=True, metavar="ACTION")
    p = messages.add_parser("list", help="one JSON line per kept message, oldest first")
    p.add_argument("--status", choices=STATUSES, help="only messages with this status (error: what needs a fix)")
    p.add_argument("--limit", type=int, help="at most this many")
    p.add_argument("--after", type=int, default=0, metavar="ID", help="only messages with a larger id (paging)")
    p.set_defaults(handler=cmd_messages_list)
    p = messages.add_parser("show", help="one message: status, error, fidelity report, versions and raw text")
    p.add_argument("id", type=int, metavar="ID")
    p.add_argument("--raw", action="store_true", help="write the raw bytes exactly as received")
    p.set_defaults(handler=cmd_messages_show)
    p = messages.add_parser("reprocess", help="convert messages again (after a mapping fix); one JSON line each")
    p.add_argument("id", type=int, nargs="?", metavar="ID")
    p.add_argument("--all-failed", action="store_true", help="every message with status error")
    p.set_defaults(handler=cmd_messages_reprocess)
