"""A real, throwaway PostgreSQL server: initdb into a temporary folder, pg_ctl start on 127.0.0.1."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from .components import find_executable, free_port, missing

PG_GLOBS = ("/usr/lib/postgresql/*/bin/{name}",)


def _pg_bin(name: str) -> str | None:
    return find_executable(name, tuple(g.format(name=name) for g in PG_GLOBS))


class PostgresServer:
    """PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user."""

    def __init__(self) -> None:
        initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if not initdb or not pg_ctl:
            missing("PostgreSQL server binaries (initdb, pg_ctl)", "apt-get install postgresql")
        self.initdb, self.pg_ctl = initdb, pg_ctl
        self.root = Path(tempfile.mkdtemp(prefix="fhir-bridge-pg-"))
        self.port = free_port()
        self.user = "postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                missing("a 'postgres' system user", "PostgreSQL cannot run as root; apt-get install postgresql creates it")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self._as, *cmd], check=True, capture_output=True, cwd=self.root)

    def start(self) -> PostgresServer:
        data = str(self.root / "data")
        self._run(self.initdb, "-D", data, "-U", self.user, "--auth=trust", "-E", "UTF8", "--no-sync")
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        self._run(self.pg_ctl, "-D", data, "-o", opts, "-l", str(self.root / "log"), "-w", "start")
        return self

    def stop(self) -> None:
        subprocess.run([*self._as, self.pg_ctl, "-D", str(self.root / "data"), "-m", "immediate", "stop"],
                       capture_output=True, cwd=self.root)
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh database per test, so tests never see each other's tables."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
