"""`fhir-bridge serve` for real: the scheduled pull from a FHIR source, and a push through gunicorn."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import requests

from bridge.config import load_config
from bridge.services import open_services
from tests.bridge.fhir_support import bearer
from tests.components import free_port

from .fhir_test_server import FhirTestServer
from .support import corpus_resources, versions


def test_serve_pulls_on_schedule_and_accepts_pushes(tmp_path, corpus):
    data = corpus_resources(corpus, patients=1)
    for items in data.values():
        for r in items:
            r["meta"] = {"lastUpdated": "2026-02-01T00:00:00.000Z"}
    server = FhirTestServer({}, {"Patient": data["Patient"], "Encounter": data["Encounter"]}).start()
    port = free_port()
    config = tmp_path / "bridge.toml"
    config.write_text(f"""
data_dir = "{tmp_path / 'data'}"
log_origin = "serve.example/log"
port = {port}
mllp_port = 0
sequence_interval = 0.2

[[fhir_sources]]
name = "ehr"
base_url = "{server.base_url}"
resource_types = ["Patient", "Encounter"]
interval = 1
""")
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "--config", str(config), "serve"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    services = None
    try:
        expected = len(data["Patient"]) + len(data["Encounter"])
        deadline = time.monotonic() + 40
        services = open_services(load_config(config, env={}))
        while time.monotonic() < deadline:
            try:
                if len(versions(services.db)) >= expected:
                    break
            except Exception:  # the tables are not there yet
                pass
            time.sleep(0.2)
        assert len(versions(services.db)) == expected, "the scheduled sync pulled every resource"

        body = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:0b9f8a4e-1111-4222-8333-944455556666", "request": {"method": "POST", "url": "Patient"},
             "resource": {"resourceType": "Patient", "gender": "male"}}]}
        deadline = time.monotonic() + 30
        while True:
            try:
                response = requests.post(f"http://127.0.0.1:{port}/fhir", data=json.dumps(body), timeout=10,
                                         headers={**bearer(services, "org-x", "system/*.cruds"),
                                                  "Content-Type": "application/fhir+json"})
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert response.status_code == 200, response.text
        assert response.json()["entry"][0]["response"]["status"] == "201 Created"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert "scheduled fhir-sync:ehr" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        if services is not None:
            services.close()
        server.stop()
