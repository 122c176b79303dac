"""`fhir-bridge serve`: the composition root of the running bridge.

This process owns the background jobs (sequencing the log, signing checkpoints; later issues add
listeners and anchoring) and runs the HTTP API in gunicorn as a child process, so that forking
workers never copies running threads.  SIGINT/SIGTERM stop both cleanly.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler

from anchoring.note import Signer, write_key_file

from .anchor_service import anchor_round, open_anchorer
from .audit_spool import SpoolFolder, spool_directory
from .config import ENV_PREFIX, Config
from .fhir_data import FhirData
from .heap import settle_heap
from .services import Services, open_services

log = logging.getLogger("fhir_bridge.serve")


def ensure_signing_key(config: Config) -> None:
    """Embedded defaults: create the signing key on first start, and say where it is."""
    path = config.resolved_key_file
    if not path.exists():
        signer = Signer.generate(config.log_origin)
        write_key_file(path, signer)
        log.warning("created signing key %s; verifier key: %s", path, signer.verifier.vkey)


def sequence_queue(services: Services) -> None:
    """One run of the sequencing job: give everything queued its log index."""
    while services.log.sequence(services.config.sequence_batch):
        pass


def fold_audits(folder: SpoolFolder) -> None:
    """Store the AuditEvents the API processes spooled (and delete the files of finished ones)."""
    stored = folder.fold()
    if stored:
        log.debug("stored %d spooled AuditEvents", stored)


def sign_checkpoint(services: Services) -> None:
    if services.log.size() > 0:
        services.log.checkpoint(services.signer)


def _start_ingest(config: Config, services: Services):  # type: ignore[no-untyped-def]
    """The MLLP listener and the file watcher (adapters), feeding the pipeline."""
    from adapters.listeners import start_listeners  # the composition root is the one place wiring adapters

    return start_listeners(config, services.db)


def _gunicorn_command(config: Config) -> list[str]:
    return [
        sys.executable, "-m", "gunicorn",
        "--bind", f"{config.host}:{config.port}",
        "--workers", str(config.workers),
        # threads, not only processes: the requests of one worker waiting on the audit spool at the
        # same moment share its fdatasync (bridge.audit_spool); a sync worker syncs one at a time
        "--worker-class", "gthread", "--threads", str(config.threads),
        # every /fhir request is recorded as an AuditEvent; a line per request on top costs about a
        # tenth of a read's CPU, so the access log is for debugging (or a proxy in front keeps one)
        *(["--access-logfile", "-"] if config.access_log else []),
        # the worker heartbeat touches a file per request: in memory where the system offers it
        *(["--worker-tmp-dir", "/dev/shm"] if Path("/dev/shm").is_dir() else []),
        "--graceful-timeout", "10",
        "bridge.api:create_app()",
    ]


def _child_env(config: Config) -> dict[str, str]:
    env = dict(os.environ)
    env[ENV_PREFIX + "DATA_DIR"] = str(config.data_dir.resolve())
    env[ENV_PREFIX + "DATABASE_URL"] = config.resolved_database_url
    env[ENV_PREFIX + "LOG_ORIGIN"] = config.log_origin
    env[ENV_PREFIX + "KEY_FILE"] = str(config.resolved_key_file.resolve())
    return env


def serve(config: Config) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # not a line per job run
    config.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_signing_key(config)
    services = open_services(config)
    fhir = FhirData(services.db, services.log)
    fhir.ensure_schema()  # before gunicorn's workers start, not in each
    audits = SpoolFolder(spool_directory(config.data_dir), services.db, fhir.store)
    fold_audits(audits)  # what the API spooled before a crash or stop
    scheduler = BackgroundScheduler(job_defaults={"coalesce": True, "max_instances": 1})
    scheduler.add_job(fold_audits, "interval", seconds=config.audit_fold_interval, args=[audits], id="audit")
    scheduler.add_job(sequence_queue, "interval", seconds=config.sequence_interval, args=[services], id="sequence")
    scheduler.add_job(sign_checkpoint, "interval", seconds=config.checkpoint_interval, args=[services], id="checkpoint")
    # Anchoring: the first round runs at once, to catch up after downtime (issue #4).
    anchorer = open_anchorer(services)
    scheduler.add_job(anchor_round, "interval", seconds=config.anchor_period, args=[anchorer], id="anchor",
                      next_run_time=datetime.now(UTC))
    from adapters.fhir.runner import schedule_sources  # one job per [[fhir_sources]] table with an interval

    for job_id in schedule_sources(scheduler, services.db, config.config_file):
        log.info("scheduled %s", job_id)
    scheduler.start()
    sign_checkpoint(services)
    listeners = _start_ingest(config, services)
    api = subprocess.Popen(_gunicorn_command(config), env=_child_env(config))
    log.info("serving the API on http://%s:%s (gunicorn pid %s)", config.host, config.port, api.pid)
    settle_heap()  # after start-up: what it made lives as long as the process
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while not stop.wait(0.5):
            if api.poll() is not None:
                log.error("the API server exited with status %s; stopping", api.returncode)
                return 1
        return 0
    finally:
        if api.poll() is None:
            api.terminate()
            try:
                api.wait(15)
            except subprocess.TimeoutExpired:
                api.kill()
        listeners.stop()  # no new message is accepted; what was acknowledged is committed
        scheduler.shutdown(wait=True)
        fold_audits(audits)  # the API processes have stopped: every spooled AuditEvent is stored
        sequence_queue(services)  # leave nothing queued that could be indexed now
        services.close()
