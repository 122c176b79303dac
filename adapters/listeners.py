"""Starting and stopping the ingest listeners (MLLP, file drop) from a configuration.

Used by the composition roots: `fhir-bridge serve` and `python -m adapters.mllp`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from anchoring.db import Database
from bridge.config import Config
from bridge.id_key import resource_id_key_file
from bridge.pipeline import Pipeline, pipeline_from_config

from .files.watcher import FileInbox
from .mllp.ingestor import Ingestor
from .mllp.server import MllpServer, MllpThread, tls_context

log = logging.getLogger("fhir_bridge.listeners")


@dataclass
class Listeners:
    pipeline: Pipeline
    ingestor: Ingestor
    mllp: MllpThread | None
    files: FileInbox | None

    @property
    def mllp_port(self) -> int | None:
        return None if self.mllp is None else self.mllp.server.port

    def stop(self) -> None:
        if self.files is not None:
            self.files.stop()
        if self.mllp is not None:
            self.mllp.stop()
        self.ingestor.stop()
        self.pipeline.close()


def start_listeners(config: Config, db: Database, mllp_port: int | None = None, files: bool = True) -> Listeners:
    """Finish what an earlier run kept but did not convert, then listen as configured.

    ``mllp_port`` overrides the configured port; 0 there means any free port (config's 0 disables MLLP).
    """
    from bridge.hl7.parser import split_batch

    pipeline = pipeline_from_config(db, config.mapping_override_dir, config.ingest_workers,
                                    resource_id_key_file(db, config.resolved_resource_id_key_file))
    recovered = pipeline.recover()
    if recovered:
        log.warning("finished %d message(s) kept but not converted before the last stop", len(recovered))
    ingestor = Ingestor.pipelined(pipeline, config.ingest_group).start()
    thread = None
    port = config.mllp_port if mllp_port is None else mllp_port
    if port or mllp_port is not None:
        context = None
        if config.mllp_tls_cert or config.mllp_tls_key:
            context = tls_context(_resolve(config, config.mllp_tls_cert), _resolve(config, config.mllp_tls_key))
        server = MllpServer(ingestor, config.mllp_host, port, context, config.mllp_max_frame, config.mllp_idle_timeout)
        try:
            thread = MllpThread(server).start()
        except BaseException:
            ingestor.stop()
            pipeline.close()
            raise
        log.info("MLLP%s listening on %s:%s", " over TLS" if context else "", config.mllp_host, server.port)
    watcher = None
    folder = config.resolved_inbox_dir
    if files and folder is not None:
        watcher = FileInbox(folder, pipeline.ingest_many, split_batch, config.ingest_group).start(config.inbox_poll_interval)
        log.info("watching %s for HL7v2 files every %ss", folder, config.inbox_poll_interval)
    return Listeners(pipeline, ingestor, thread, watcher)


def _resolve(config: Config, name: str) -> str:
    from pathlib import Path

    path = Path(name).expanduser()
    return str(path if path.is_absolute() else config.data_dir / path)
