"""`python -m adapters.mllp`: the ingest listeners alone (MLLP and the file drop), without the API.

Prints ``listening on HOST:PORT`` once ready; SIGTERM or SIGINT stops it cleanly.  `fhir-bridge
serve` runs the same listeners beside the API and the log jobs.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from bridge.config import load_config
from bridge.errors import BridgeError
from bridge.services import open_services

from ..errors import AdapterError
from ..listeners import start_listeners


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adapters.mllp", description=__doc__.splitlines()[0])
    parser.add_argument("--config")
    parser.add_argument("--data-dir")
    parser.add_argument("--database-url")
    parser.add_argument("--host", dest="mllp_host")
    parser.add_argument("--port", dest="mllp_port", type=int, help="0 picks a free port (printed)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config, data_dir=args.data_dir, database_url=args.database_url,
                             mllp_host=args.mllp_host)
        services = open_services(config)
    except BridgeError as exc:
        print(f"adapters.mllp: {exc}", file=sys.stderr)
        return 2
    try:
        listeners = start_listeners(config, services.db, mllp_port=args.mllp_port)
    except (BridgeError, AdapterError) as exc:
        services.close()
        print(f"adapters.mllp: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"listening on {config.mllp_host}:{listeners.mllp_port}", flush=True)
    try:
        stop.wait()
    finally:
        listeners.stop()
        services.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
