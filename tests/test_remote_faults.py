"""A server that sends 50 MB: reading stops at a cap, memory stays bounded, and the
user gets one line, not a hang. Loopback servers written for the fault, against the
real RemoteChatBackend and its openai client."""

from __future__ import annotations

import json
import threading
import time
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.test_remote_chat import one_failure, paris_request, run_backend
from tui.backends.remote import MAX_BODY_BYTES, MAX_EVENT_BYTES, RemoteChatBackend
from tui.backends.servers import BackendError, ServerConfig
from tui.config import Settings

FIFTY_MB = 50 << 20
PIECE = 64 << 10


class FloodHandler(BaseHTTPRequestHandler):
    """Sends the server's ``flood`` shape: 50 MB of it, in 64 KiB writes."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._flood()

    def do_GET(self) -> None:  # noqa: N802
        self._flood()

    def _flood(self) -> None:
        shape = self.server.flood  # type: ignore[attr-defined]
        if shape == "json-error":
            head = b'{"error": {"message": "'
            tail = b'"}}'
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(head) + FIFTY_MB + len(tail)))
            self.end_headers()
            parts = [head, *([b"x" * PIECE] * (FIFTY_MB // PIECE)), tail]
        else:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            if shape == "endless-line":
                parts = [b"data: ", *([b"x" * PIECE] * (FIFTY_MB // PIECE))]
            else:  # many short data lines, never the blank line that ends an event
                line = b"data: " + b"y" * 56 + b"\n"
                parts = [line * (PIECE // len(line))] * (FIFTY_MB // PIECE)
        sent = 0
        try:
            for part in parts:
                self.wfile.write(part)
                sent += len(part)
        except OSError:  # the client hung up: what the cap is for
            pass
        self.server.sent = sent  # type: ignore[attr-defined]

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def flood_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FloodHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def config(server: ThreadingHTTPServer) -> ServerConfig:
    return ServerConfig("flood", f"http://127.0.0.1:{server.server_address[1]}/v1", model="m")


@pytest.mark.parametrize(
    ("shape", "words", "cap"),
    [
        ("endless-line", "one event larger than 1 MiB", MAX_EVENT_BYTES),
        ("lines-without-end", "one event larger than 1 MiB", MAX_EVENT_BYTES),
        ("json-error", "a reply larger than 8 MiB", MAX_BODY_BYTES),
    ],
)
def test_a_50_mb_reply_is_cut_at_the_cap_in_one_line(
    flood_server: ThreadingHTTPServer, shape: str, words: str, cap: int
) -> None:
    flood_server.flood = shape  # type: ignore[attr-defined]
    # Once untraced first, so that importing the client and building its types
    # (tens of MB, once per process) is not counted as the reply's memory.
    run_backend(RemoteChatBackend(config(flood_server)), paris_request("x", Settings()))
    backend = RemoteChatBackend(config(flood_server))
    tracemalloc.start()
    started = time.monotonic()
    try:
        events = run_backend(backend, paris_request("x", Settings()))
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = one_failure(events)
    assert (
        message == f"server flood (http://127.0.0.1:{flood_server.server_address[1]}/v1)"
        f" sent {words}; reading stopped"
    )
    assert elapsed < 10, elapsed
    # Bounded by the cap (a few copies of it at most), nowhere near the 50 MB sent.
    assert peak < 4 * cap + (4 << 20), peak
    print(f"{shape}: failed after {elapsed:.2f} s, peak Python memory {peak / (1 << 20):.1f} MiB")


def test_a_50_mb_models_list_is_one_line(flood_server: ThreadingHTTPServer) -> None:
    flood_server.flood = "json-error"  # type: ignore[attr-defined]
    backend = RemoteChatBackend(config(flood_server))
    try:
        with pytest.raises(BackendError, match="sent a reply larger than 8 MiB"):
            backend.models()
    finally:
        backend.shutdown()


def test_replies_under_the_caps_still_arrive(flood_server: ThreadingHTTPServer) -> None:
    """The caps count per event: a long reply in many small events is not cut."""

    class Many(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            chunk: dict[str, Any] = {"id": "c", "object": "chat.completion.chunk", "created": 0}
            chunk["model"] = "m"
            for index in range(3000):  # about 2 MiB of events in all
                chunk["choices"] = [
                    {
                        "index": 0,
                        "delta": {"content": f"w{index} " + "z" * 500},
                        "finish_reason": None,
                    }
                ]
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            chunk["choices"] = [{"index": 0, "delta": {}, "finish_reason": "stop"}]
            self.wfile.write(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Many)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        events = run_backend(RemoteChatBackend(config(server)), paris_request("x", Settings()))
    finally:
        server.shutdown()
        server.server_close()
    tokens = [e for e in events if type(e).__name__ == "TokenGenerated"]
    assert len(tokens) == 3000 and type(events[-1]).__name__ == "GenerationFinished"
