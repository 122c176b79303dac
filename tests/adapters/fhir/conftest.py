"""Fixtures for the FHIR source adapter: a real Medplum FHIR server (node), the Synthea corpus, sources."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from adapters.fhir.sources import AuthSettings, FhirSource
from anchoring.log import MerkleLog
from bridge.db import open_database
from tests.components import free_port, missing

ROOT = Path(__file__).resolve().parents[3]
SERVER = Path(__file__).with_name("medplum_server.mjs")


def synthea_bundles(corpus: Path) -> list[dict]:
    files = sorted((corpus / "fhir" / "synthea").glob("*.json"), key=lambda p: ("practitioner" not in p.name, p.name))
    return [json.loads(p.read_text()) for p in files]


class MedplumServer:
    def __init__(self) -> None:
        node = shutil.which("node")
        if node is None:
            missing("node (Node 20)", "apt-get install nodejs")
        if not (ROOT / "node_modules" / "@medplum" / "fhir-router").is_dir():
            missing("@medplum/fhir-router", "npm ci at the repository root")
        self.port = free_port()
        self.process = subprocess.Popen([node, str(SERVER), str(self.port)], cwd=ROOT, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line.startswith("listening"):
            self.process.kill()
            raise RuntimeError(f"medplum server did not start: {line} {self.process.stderr.read() if self.process.stderr else ''}")
        self.base_url = f"http://127.0.0.1:{self.port}/fhir"

    def post(self, resource: dict) -> dict:
        response = requests.post(self.base_url, json=resource, timeout=60,
                                 headers={"Content-Type": "application/fhir+json"})
        response.raise_for_status()
        return response.json()

    def put(self, resource: dict) -> dict:
        response = requests.put(f"{self.base_url}/{resource['resourceType']}/{resource['id']}", json=resource,
                                timeout=30, headers={"Content-Type": "application/fhir+json"})
        response.raise_for_status()
        return response.json()

    def create(self, resource: dict) -> dict:
        response = requests.post(f"{self.base_url}/{resource['resourceType']}", json=resource, timeout=30,
                                 headers={"Content-Type": "application/fhir+json"})
        response.raise_for_status()
        return response.json()

    def search(self, res_type: str, **params: str) -> list[dict]:
        params.setdefault("_count", "1000")
        response = requests.get(f"{self.base_url}/{res_type}", params=params, timeout=30)
        response.raise_for_status()
        return [e["resource"] for e in response.json().get("entry", [])]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture
def medplum():
    server = MedplumServer()
    yield server
    server.stop()


@pytest.fixture
def loaded_medplum(medplum, corpus):
    for bundle in synthea_bundles(corpus):
        medplum.post(bundle)
    return medplum


@pytest.fixture
def store_db(database_url):
    database = open_database(database_url)
    MerkleLog(database, "test.example/log").ensure_schema()  # what open_services does in the CLI and serve
    yield database
    database.close()


def source(base_url: str, types: tuple[str, ...], **settings) -> FhirSource:
    auth = settings.pop("auth", AuthSettings())
    defaults = {"backoff_base": 0.05, "backoff_max": 1.0, "timeout": 5.0, "page_size": 100}
    return FhirSource(name=settings.pop("name", "ehr"), base_url=base_url, resource_types=types, auth=auth,
                      **{**defaults, **settings})


def wait_next_second() -> None:
    """HTTP Date has whole seconds: start a sync in a later second than the last change."""
    time.sleep(1.05 - (time.time() % 1.0))
