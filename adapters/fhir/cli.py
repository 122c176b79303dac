"""`fhir-bridge sync`: pull from a configured FHIR source on demand, list sources, runs and rejects."""

from __future__ import annotations

import argparse
import json
import sys

from bridge.config import Config
from bridge.errors import ConfigError
from bridge.fhir_ingest import FhirIngest
from bridge.services import open_services

from .errors import FhirSourceError
from .intake import source_label
from .runner import ProgressBar, sync_source
from .sources import find_source, load_sources
from .state import SyncState


def cmd_sync(args: argparse.Namespace, config: Config) -> int:
    try:
        sources = load_sources(config.config_file)
        if args.list or not args.source:
            for s in sources:
                print(json.dumps({"name": s.name, "base_url": s.base_url, "mode": s.mode, "interval": s.interval,
                                  "resource_types": list(s.resource_types), "keep_ids": s.keep_ids,
                                  "auth": s.auth.type}))
            if not sources:
                print("no FHIR sources configured: add [[fhir_sources]] tables to the configuration file "
                      "(--config)", file=sys.stderr)
            return 0
        source = find_source(sources, args.source)
    except FhirSourceError as exc:
        raise ConfigError(str(exc)) from exc
    config.data_dir.mkdir(parents=True, exist_ok=True)
    services = open_services(config)  # the log's tables, with this bridge's origin
    db = services.db
    try:
        if args.status:
            state = SyncState(db)
            state.ensure_schema()
            print(json.dumps({"watermarks": state.watermarks(source.name), "runs": state.runs(source.name)}, indent=1))
            return 0
        if args.rejects:
            ingest = FhirIngest(db)
            ingest.ensure_schema()
            for reject in ingest.rejects(source_label(source), include_resolved=args.all):
                print(json.dumps(reject.as_dict()))
            return 0
        bar = None if args.quiet else ProgressBar(source.name)
        try:
            report = sync_source(db, source, mode=args.mode, full=args.full, progress=bar)
        finally:
            if bar:
                bar.finish()
    finally:
        services.close()
    for fault in report.faults:
        print(f"fault: {fault}", file=sys.stderr)
    print(report.summary(), file=sys.stderr)
    if args.json:
        print(json.dumps(report.as_dict()))
    return 0 if not report.errors else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sync", help="pull from a configured FHIR source now (REST or Bulk $export), with progress")
    p.add_argument("source", nargs="?", metavar="SOURCE", help="a [[fhir_sources]] name (none: list the sources)")
    p.add_argument("--list", action="store_true", help="list the configured sources")
    p.add_argument("--full", action="store_true", help="forget the watermarks and any export in progress: pull all")
    p.add_argument("--mode", choices=("rest", "bulk"), help="override the source's mode for this run")
    p.add_argument("--status", action="store_true", help="print the watermarks and the last runs")
    p.add_argument("--rejects", action="store_true", help="list invalid resources kept, with their OperationOutcome")
    p.add_argument("--all", action="store_true", help="with --rejects: include those resolved by a later valid version")
    p.add_argument("--json", action="store_true", help="print the run's report as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_sync)
