"""A loopback HTTP server that answers like the Hugging Face Hub for downloads.

It serves the calls huggingface_hub and tui.hub make: ``HEAD`` and ``GET`` of
``/{owner}/{repo}/resolve/{revision}/{path}``. Like the real Hub, a file
answers with a redirect to a CDN host (here ``localhost`` instead of
``127.0.0.1``) carrying ``X-Linked-Etag`` (the sha256), ``X-Linked-Size`` and
``X-Repo-Commit``; the CDN honours ``Range``. Errors carry the same
``X-Error-Code`` headers as the Hub: ``RepoNotFound`` (401, as the Hub
answers for a missing or private repo without credentials), ``GatedRepo``
(401 without a token, 403 with a token lacking access) and
``EntryNotFound`` (404).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class HubFile:
    content: bytes
    sha256: str = ""
    """What the Hub claims (defaults to the real hash)."""
    size: int | None = None
    """What the Hub claims (defaults to the real size)."""
    drops: list[int] = field(default_factory=list)
    """Each GET takes the first entry, if any, and closes the connection after
    sending that many bytes (0: right after the headers)."""
    gets: list[str] = field(default_factory=list)
    """The Range header of each GET (empty string for none)."""


class FakeHub:
    """The state behind the server: repos, files, gated repos and the valid token."""

    def __init__(self) -> None:
        self.files: dict[tuple[str, str], HubFile] = {}
        self.gated: set[str] = set()
        self.token = "hf_test_token"
        self.lock = threading.Lock()

    def add(self, repo: str, path: str, content: bytes, **claims: object) -> HubFile:
        entry = HubFile(content=content, **claims)  # type: ignore[arg-type]
        if not entry.sha256:
            entry.sha256 = hashlib.sha256(content).hexdigest()
        if entry.size is None:
            entry.size = len(content)
        self.files[(repo, path)] = entry
        return entry

    def repos(self) -> set[str]:
        return {repo for repo, _ in self.files}


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def do_HEAD(self) -> None:  # noqa: N802
            self._serve(body=False)

        def do_GET(self) -> None:  # noqa: N802
            self._serve(body=True)

        def _error(self, status: int, code: str, message: str) -> None:
            data = f'{{"error": "{message}"}}'.encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(data)

        def _serve(self, body: bool) -> None:
            path = unquote(self.path.split("?", 1)[0])
            if path.startswith("/cdn/"):
                self._cdn(path[len("/cdn/") :], body)
                return
            parts = path.strip("/").split("/")
            if len(parts) < 5 or parts[2] != "resolve":
                self._error(404, "", "not found")
                return
            repo, filename = "/".join(parts[:2]), "/".join(parts[4:])
            auth = self.headers.get("Authorization", "")
            authorised = auth == f"Bearer {hub.token}"
            if repo not in hub.repos():
                self._error(401, "RepoNotFound", "Repository not found")
                return
            if repo in hub.gated and not authorised:
                status = 403 if auth else 401
                self._error(status, "GatedRepo", f"Access to model {repo} is restricted.")
                return
            entry = hub.files.get((repo, filename))
            if entry is None:
                self._error(404, "EntryNotFound", f"{filename} does not exist")
                return
            port = self.server.server_address[1]
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{port}/cdn/{repo}/{filename}")
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("X-Linked-Etag", f'"{entry.sha256}"')
            self.send_header("X-Linked-Size", str(entry.size))
            self.send_header("ETag", f'"{entry.sha256}"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _cdn(self, key: str, body: bool) -> None:
            parts = key.split("/")
            entry = hub.files.get(("/".join(parts[:2]), "/".join(parts[2:])))
            if entry is None:
                self._error(404, "", "no such object")
                return
            data = entry.content
            start = 0
            range_header = self.headers.get("Range", "")
            if body:
                with hub.lock:
                    entry.gets.append(range_header)
            if range_header.startswith("bytes="):
                start = int(range_header[len("bytes=") :].split("-")[0] or 0)
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if not body:
                return
            payload = data[start:]
            with hub.lock:
                drop = entry.drops.pop(0) if entry.drops else None
            if drop is not None:
                self.wfile.write(payload[:drop])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            view = memoryview(payload)
            for offset in range(0, len(view), 1 << 16):
                self.wfile.write(view[offset : offset + (1 << 16)])

    return Handler


class HubServer:
    """Run a FakeHub on 127.0.0.1 in a thread; ``endpoint`` is its base URL."""

    def __init__(self) -> None:
        self.hub = FakeHub()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.hub))
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
