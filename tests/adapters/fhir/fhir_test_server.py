"""A small FHIR server for fault tests: Bulk Data ``$export`` and a plain search, with injected faults.

Real sockets, real HTTP (``http.server``): an interruption is the server closing the connection in the
middle of a file it announced with its full ``Content-Length``.  Faults are planned per path as a list
of actions, one used per request:

* ``"500"``, ``"503"``, ``"429:<seconds>"``: answer that status (with ``Retry-After`` for 429)
* ``"cut:<bytes>"``: send that many bytes of the body, then close the socket
* ``"slow:<seconds>"``: wait before answering (longer than the client's timeout: a timeout)
* ``"ok"``: answer normally (to let earlier requests through)
* ``"trickle:<seconds>"``: send the file in 16 KiB pieces, waiting that long between them
* ``"ignore-range"``: answer 200 with the whole file even when a Range was asked
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class FhirTestServer:
    def __init__(self, files: dict[str, bytes], resources: dict[str, list[dict]] | None = None,
                 polls_before_ready: int = 2, retry_after: str = "1", auth: str | None = None) -> None:
        self.files = files  # "Patient.ndjson" -> bytes
        self.resources = resources or {}
        self.polls_before_ready = polls_before_ready
        self.retry_after = retry_after
        self.auth = auth  # the exact Authorization header required, or None
        self.client_credentials: tuple[str, str] | None = None  # (id, secret) accepted at /token
        self.token = "test-access-token"
        self.faults: dict[str, list[str]] = defaultdict(list)
        self.requests: list[tuple[str, str, dict]] = []  # (method, path with query, headers)
        self.kickoffs = 0
        self.polls = 0
        self.deleted = False
        self.transaction_time = "2026-01-02T03:04:05.678Z"
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/fhir"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> FhirTestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def plan(self, path: str, *actions: str) -> None:
        self.faults[path].extend(actions)

    def _next_fault(self, path: str) -> str | None:
        with self._lock:
            actions = self.faults.get(path)
            return actions.pop(0) if actions else None

    def _handler(self):  # type: ignore[no-untyped-def]
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, status: int, body: bytes = b"", headers: dict | None = None,
                      content_type: str = "application/fhir+json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status: int, value: dict, headers: dict | None = None) -> None:
                self._send(status, json.dumps(value).encode(), headers)

            def _fault(self, path: str) -> str | None:
                action = server._next_fault(path)
                if action == "ok":
                    return None
                if action is None or action == "ignore-range" or action.startswith(("cut:", "trickle:")):
                    return action
                if action.startswith("slow:"):
                    time.sleep(float(action.split(":")[1]))
                    return None
                status, _, after = action.partition(":")
                headers = {"Retry-After": after} if after else {}
                self._json(int(status), {"resourceType": "OperationOutcome",
                                         "issue": [{"severity": "error", "code": "transient",
                                                    "diagnostics": f"injected {status}"}]}, headers)
                return "answered"

            def _authorised(self) -> bool:
                if server.auth is None or self.headers.get("Authorization") == server.auth:
                    return True
                self._json(401, {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "login"}]})
                return False

            def do_DELETE(self) -> None:  # noqa: N802
                server.requests.append(("DELETE", self.path, dict(self.headers)))
                server.deleted = True
                self._send(202)

            def do_POST(self) -> None:  # noqa: N802
                server.requests.append(("POST", self.path, dict(self.headers)))
                length = int(self.headers.get("Content-Length", 0))
                form = parse_qs(self.rfile.read(length).decode())
                expected = server.client_credentials
                given = self.headers.get("Authorization", "")
                if (self.path == "/token" and expected and form.get("grant_type") == ["client_credentials"]
                        and given == "Basic " + base64.b64encode(f"{expected[0]}:{expected[1]}".encode()).decode()):
                    self._json(200, {"access_token": server.token, "token_type": "bearer", "expires_in": 300})
                else:
                    self._json(401, {"error": "invalid_client"})

            def do_GET(self) -> None:  # noqa: N802
                server.requests.append(("GET", self.path, dict(self.headers)))
                parts = urlsplit(self.path)
                path, query = parts.path, parse_qs(parts.query)
                if path.startswith("/files/"):
                    return self._file(path[len("/files/"):])
                if not self._authorised():
                    return None
                if self._fault(path) == "answered":
                    return None
                if path.endswith("/$export"):
                    if self.headers.get("Prefer") != "respond-async":
                        return self._json(400, {"resourceType": "OperationOutcome",
                                                "issue": [{"severity": "error", "code": "required"}]})
                    server.kickoffs += 1
                    return self._send(202, b"", {"Content-Location": f"/fhir/bulk-status/{server.kickoffs}"})
                if path.startswith("/fhir/bulk-status/"):
                    server.polls += 1
                    if server.polls <= server.polls_before_ready:
                        return self._send(202, b"", {"Retry-After": server.retry_after,
                                                     "X-Progress": f"{server.polls * 30}% done"})
                    types = (query.get("_type") or [""])[0]
                    output = [{"type": name.split(".")[0], "url": f"http://127.0.0.1:{server.port}/files/{name}"}
                              for name in sorted(server.files) if not types or name.split(".")[0] in types]
                    return self._json(200, {"transactionTime": server.transaction_time, "request": "$export",
                                            "requiresAccessToken": server.auth is not None, "output": output,
                                            "error": []})
                res_type = path[len("/fhir/"):]
                if res_type in server.resources:
                    return self._search(res_type, query)
                return self._json(404, {"resourceType": "OperationOutcome", "issue": [{"severity": "error",
                                                                                        "code": "not-found"}]})

            def _search(self, res_type: str, query: dict) -> None:
                count = int((query.get("_count") or ["10"])[0])
                offset = int((query.get("_offset") or ["0"])[0])
                since = (query.get("_lastUpdated") or [""])[0].removeprefix("gt")
                matching = [r for r in server.resources[res_type] if not since or r["meta"]["lastUpdated"] > since]
                page = matching[offset:offset + count]
                base = f"http://127.0.0.1:{server.port}/fhir/{res_type}"
                links = [{"relation": "self", "url": f"{base}?_count={count}&_offset={offset}"}]
                if offset + count < len(matching):
                    extra = f"&_lastUpdated=gt{since}" if since else ""
                    links.append({"relation": "next", "url": f"{base}?_count={count}&_offset={offset + count}{extra}"})
                self._json(200, {"resourceType": "Bundle", "type": "searchset", "total": len(matching),
                                 "meta": {"lastUpdated": "2030-01-01T00:00:00.000Z"}, "link": links,
                                 "entry": [{"resource": r, "search": {"mode": "match"}} for r in page]})

            def _file(self, name: str) -> None:
                data = server.files.get(name)
                if data is None:
                    return self._send(404)
                if server.auth is not None and self.headers.get("Authorization") != server.auth:
                    return self._send(401)
                action = self._fault("/files/" + name)
                if action == "answered":
                    return None
                start = 0
                wanted = self.headers.get("Range", "")
                status, headers = 200, {}
                if wanted.startswith("bytes=") and action != "ignore-range":
                    start = int(wanted[6:].split("-")[0])
                    if start >= len(data):
                        return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                    status = 206
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+ndjson")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if action and action.startswith("cut:"):
                    cut = int(action.split(":")[1])
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)  # a real fault: the socket closes mid-file
                    return None
                pause = float(action.split(":")[1]) if action and action.startswith("trickle:") else 0.0
                for i in range(0, len(body), 16384):  # in chunks, as a file server streams
                    self.wfile.write(body[i:i + 16384])
                    if pause:
                        self.wfile.flush()
                        time.sleep(pause)
                return None

        return Handler
