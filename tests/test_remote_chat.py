"""Chat with remote OpenAI-compatible servers, on loopback only.

The real server is llama-cpp-python's own (`python -m llama_cpp.server`, its
`server` extra) serving the test SmolLM2; the faults come from that server
killed mid-reply, started with an API key, and from tiny loopback servers that
never answer or answer garbage.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for_http

from tui.backends.chat import chat_backend_for
from tui.backends.remote import RemoteChatBackend
from tui.backends.servers import (
    BackendError,
    ServerConfig,
    parse_remote_spec,
    remote_spec,
    server_config,
)
from tui.config import Settings, load_layers
from tui.engines import protocol as p
from tui.engines.host import EngineHost
from tui.services import chat as cs
from tui.services.chat import ChatService, chat_request
from tui.services.settings import SettingsService
from tui.store import Store

REPO = Path(__file__).resolve().parent.parent
TRIPTYCH = Path(sys.executable).parent / "triptych"
PARIS_QUESTION = "Name the capital city of France."
STORY = "Write a long story about a dragon and a knight."


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LlamaServer:
    """llama_cpp.server on a free loopback port, ready once it lists its models."""

    def __init__(self, model: Path, log: Path, api_key: str = "") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            "2048",
            "--n_threads",
            "1",
        ]
        if api_key:
            command += ["--api_key", api_key]
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        wait_for_http(
            self.process, f"{self.url}/models", "llama_cpp.server", log, self.stop, 120, headers
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


@pytest.fixture(scope="session")
def llama_server(chat_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = LlamaServer(chat_model, tmp_path_factory.mktemp("llama") / "server.log")
    yield server.url
    server.stop()


def settings_with(servers: dict[str, dict[str, Any]]) -> Settings:
    settings = Settings()
    settings.servers = servers
    settings.sampling.temperature = 0.0
    settings.sampling.max_tokens = 32
    return settings


def paris_request(spec: str, settings: Settings, prompt: str = PARIS_QUESTION) -> p.ChatRequest:
    return chat_request(
        model_path=spec,
        system_prompt="You are a helpful assistant.",
        history=[p.ChatMessage("user", prompt)],
        sampling=settings.sampling,
        settings=settings,
    )


def run_backend(backend: RemoteChatBackend, request: p.ChatRequest) -> list[Any]:
    try:
        return list(backend.submit(request))
    finally:
        backend.shutdown()


def one_failure(events: list[Any]) -> str:
    """The message of the single terminal EngineFailed; checked to be one line."""
    assert events and isinstance(events[-1], p.EngineFailed), events
    assert [e for e in events if isinstance(e, p.TERMINAL_EVENTS)] == [events[-1]]
    message = events[-1].message
    assert message and "\n" not in message and "Traceback" not in message
    return message


# --- model specs and settings, no server --------------------------------------------------


def test_a_spec_names_a_server_and_optionally_its_model() -> None:
    assert parse_remote_spec("server:box") == ("box", "")
    assert parse_remote_spec("server:box/org/model-7b") == ("box", "org/model-7b")
    assert parse_remote_spec("/models/x.gguf") is None
    assert parse_remote_spec("") is None
    assert remote_spec("box", "org/m") == "server:box/org/m"
    assert parse_remote_spec(remote_spec("box")) == ("box", "")


def test_the_resolver_picks_the_local_host_or_a_configured_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_with({"box": {"url": "http://127.0.0.1:9/v1/", "model": "m1"}})
    local = object()
    assert chat_backend_for("", settings, local) is local
    assert chat_backend_for("/some/model.gguf", settings, local) is local
    remote = chat_backend_for("server:box", settings, local)
    assert isinstance(remote, RemoteChatBackend)
    assert (remote.server.url, remote.model) == ("http://127.0.0.1:9/v1", "m1")
    assert chat_backend_for("server:box/m2", settings, local).model == "m2"
    with pytest.raises(BackendError, match="no server named 'nope'.*box"):
        chat_backend_for("server:nope", settings, local)
    settings.servers["keyed"] = {"url": "http://127.0.0.1:9/v1", "api_key_env": "TT_KEY"}
    monkeypatch.delenv("TT_KEY", raising=False)
    with pytest.raises(BackendError, match="TT_KEY"):
        chat_backend_for("server:keyed", settings, local)
    settings.servers["ftp"] = {"url": "ftp://host/v1"}
    with pytest.raises(BackendError, match="not an http"):
        server_config("ftp", settings)


def test_servers_are_saved_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    service = SettingsService(path)
    entry = {"url": "http://127.0.0.1:8080/v1", "api_key_env": "BOX_KEY", "model": "m"}
    service.update(servers={"box": entry})
    assert load_layers(path).settings.servers == {"box": entry}
    service.update(servers={})
    assert load_layers(path).settings.servers == {}


def test_a_server_entry_that_is_not_a_table_is_named(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[servers]\nbad = "http://x"\n[servers.box]\nurl = "http://127.0.0.1:1/v1"\n')
    layers = load_layers(path)
    assert list(layers.settings.servers) == ["box"]
    assert any("servers.bad is not a table" in problem for problem in layers.problems)


# --- faults without a model ---------------------------------------------------------------


def test_nothing_listening_is_one_line_refused() -> None:
    config = ServerConfig("gone", f"http://127.0.0.1:{free_port()}/v1", model="m")
    settings = settings_with({})
    message = one_failure(run_backend(RemoteChatBackend(config), paris_request("x", settings)))
    assert "connection refused" in message and "gone" in message


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts connections and never answers a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(2)
    for conn in accepted:
        conn.close()
    listener.close()


def test_a_server_that_never_answers_times_out_in_one_line(silent_server: int) -> None:
    config = ServerConfig("mute", f"http://127.0.0.1:{silent_server}/v1", model="m", timeout_s=0.5)
    started = time.monotonic()
    message = one_failure(run_backend(RemoteChatBackend(config), paris_request("x", Settings())))
    assert time.monotonic() - started < 5
    assert "did not answer within 0.5 s" in message


class FaultHandler(BaseHTTPRequestHandler):
    """Answers every request with the server's (status, content type, body)."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._answer()

    def do_GET(self) -> None:  # noqa: N802
        self._answer()

    def _answer(self) -> None:
        status, kind, body = self.server.answer  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fault_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FaultHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def fault_config(server: ThreadingHTTPServer, scheme: str = "http") -> ServerConfig:
    return ServerConfig("odd", f"{scheme}://127.0.0.1:{server.server_address[1]}/v1", model="m")


def test_malformed_events_are_one_line(fault_server: ThreadingHTTPServer) -> None:
    fault_server.answer = (200, "text/event-stream", b"data: {not json at all\n\n")  # type: ignore[attr-defined]
    message = one_failure(
        run_backend(RemoteChatBackend(fault_config(fault_server)), paris_request("x", Settings()))
    )
    assert "odd" in message and "unreadable" in message


def test_a_stream_that_ends_without_finishing_is_cut_off(
    fault_server: ThreadingHTTPServer,
) -> None:
    chunk = {"choices": [{"index": 0, "delta": {"content": "Par"}, "finish_reason": None}]}
    chunk.update(id="c", object="chat.completion.chunk", created=0, model="m")
    fault_server.answer = (200, "text/event-stream", f"data: {json.dumps(chunk)}\n\n".encode())  # type: ignore[attr-defined]
    events = run_backend(
        RemoteChatBackend(fault_config(fault_server)), paris_request("x", Settings())
    )
    assert [e.text for e in events if isinstance(e, p.TokenGenerated)] == ["Par"]
    assert "cut off" in one_failure(events)
    assert events[-1].kind == "crash"


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (
            404,
            {"error": {"message": "model 'm' not found"}},
            ["no model 'm'", "model 'm' not found"],
        ),
        (500, {"error": {"message": "out of\nmemory"}}, ["HTTP 500", "out of memory"]),
        (403, {"detail": "forbidden"}, ["refused the API key", "HTTP 403"]),
    ],
)
def test_server_errors_carry_the_servers_message_in_one_line(
    fault_server: ThreadingHTTPServer, status: int, body: dict[str, Any], words: list[str]
) -> None:
    fault_server.answer = (status, "application/json", json.dumps(body).encode())  # type: ignore[attr-defined]
    message = one_failure(
        run_backend(RemoteChatBackend(fault_config(fault_server)), paris_request("x", Settings()))
    )
    for word in words:
        assert word in message, message


def test_tls_to_a_plain_http_server_is_a_tls_failure(fault_server: ThreadingHTTPServer) -> None:
    fault_server.answer = (200, "application/json", b"{}")  # type: ignore[attr-defined]
    config = fault_config(fault_server, scheme="https")
    message = one_failure(run_backend(RemoteChatBackend(config), paris_request("x", Settings())))
    assert message.startswith("TLS failure talking to server odd"), message


# --- against llama_cpp.server ---------------------------------------------------------------


@pytest.mark.slow
def test_the_remote_backend_streams_paris_with_stats(llama_server: str) -> None:
    backend = RemoteChatBackend(ServerConfig("box", llama_server))
    assert backend.models() and backend.models()[0].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    events = run_backend(backend, paris_request("server:box", settings_with({})))
    tokens = [e.text for e in events if isinstance(e, p.TokenGenerated)]
    assert "Paris" in "".join(tokens)
    finished = events[-1]
    assert isinstance(finished, p.GenerationFinished) and finished.reason == "stop"
    assert finished.stats.tokens == len(tokens)
    assert 0 < finished.stats.ttft_s < finished.stats.elapsed_s
    assert finished.stats.tokens_per_s > 0
    assert not backend.busy


@pytest.mark.slow
def test_cli_chat_with_a_server(llama_server: str, app_dirs: Path) -> None:
    def triptych(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(TRIPTYCH), *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    added = triptych("servers", "add", "box", llama_server)
    assert added.returncode == 0 and added.stdout == "added server box\n", added.stderr
    assert triptych("servers", "list").stdout == f"box  {llama_server}\n"
    models = triptych("servers", "models", "box")
    assert models.stdout.strip().endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    chat = triptych("chat", "--server", "box", "--temperature", "0", "--stats", PARIS_QUESTION)
    assert chat.returncode == 0, chat.stderr
    assert "Paris" in chat.stdout
    stats = json.loads(chat.stderr)
    assert stats["tokens"] > 0 and stats["tokens_per_s"] > 0 and stats["ttft_s"] > 0
    # The model spec works as --model too.
    spec = triptych("chat", "--model", "server:box", "--temperature", "0", PARIS_QUESTION)
    assert "Paris" in spec.stdout, spec.stderr
    # ...and so does server:NAME/MODEL, naming one of the models the server listed.
    model_id = models.stdout.strip().splitlines()[-1]
    named = triptych(
        "chat", "--model", f"server:box/{model_id}", "--temperature", "0", PARIS_QUESTION
    )
    assert named.returncode == 0 and "Paris" in named.stdout, named.stderr
    assert triptych("servers", "rm", "box").returncode == 0
    gone = triptych("chat", "--server", "box", "hi")
    assert (
        gone.returncode == 1
        and gone.stderr == "triptych: no server named 'box' in the settings (none is configured)\n"
    )
    tui = triptych("--model", "server:box")
    assert tui.returncode == 1 and "no server named 'box'" in tui.stderr
    assert len(tui.stderr.splitlines()) == 1
    refused = triptych("servers", "add", "bad", "localhost:8080")
    assert refused.returncode == 1 and "not an http" in refused.stderr


def remote_service(store: Store, url: str, tmp_path: Path, **settings: Any) -> ChatService:
    chosen = settings_with({"box": {"url": url}})
    for name, value in settings.items():
        setattr(chosen.sampling, name, value)
    local = EngineHost("chat", log_dir=tmp_path)
    return ChatService(store, local, lambda: chosen, lambda: "server:box")


@pytest.mark.slow
def test_a_remote_conversation_saves_its_reply_complete(
    llama_server: str, store: Store, tmp_path: Path
) -> None:
    service = remote_service(store, llama_server, tmp_path)
    events: list[Any] = []
    service.subscribe(events.append)
    service.add_user_message(PARIS_QUESTION)
    assert service.conversation is not None
    assert service.conversation.model == "server:box", "remembered as remote"
    assert service.remote_server() == "box"
    reply, request = service.start_reply()
    service.stream(request)
    [finished] = [e for e in events if isinstance(e, cs.ReplyFinished)]
    assert "Paris" in finished.content and finished.state == "complete"
    assert finished.stats and finished.stats["tokens"] > 0
    saved = store.get_message(reply.id)
    assert saved is not None and (saved.content, saved.state) == (finished.content, "complete")
    assert not service.host.alive, "the local engine was never started"


@pytest.mark.slow
def test_stop_closes_the_stream_within_a_second(
    llama_server: str, store: Store, tmp_path: Path
) -> None:
    service = remote_service(store, llama_server, tmp_path, max_tokens=400)
    service.add_user_message(STORY)
    reply, request = service.start_reply()
    tokens: list[str] = []
    first = threading.Event()
    events: list[Any] = []
    service.subscribe(events.append)
    service.subscribe(
        lambda e: isinstance(e, cs.TokenReceived) and (tokens.append(e.text), first.set())
    )
    worker = threading.Thread(target=service.stream, args=(request,))
    worker.start()
    assert first.wait(60), "no token"
    stopped_at = time.monotonic()
    assert service.stop()
    worker.join(5)
    took = time.monotonic() - stopped_at
    assert not worker.is_alive()
    assert took < 1.0, took
    [finished] = [e for e in events if isinstance(e, cs.ReplyFinished)]
    assert finished.reason == "cancelled" and finished.state == "stopped"
    saved = store.get_message(reply.id)
    assert saved is not None and saved.state == "stopped" and saved.content == service.reply_text
    assert len(tokens) < 400
    print(f"stop took {took * 1000:.0f} ms after {len(tokens)} tokens")


@pytest.mark.slow
def test_a_wrong_api_key_is_one_line(
    chat_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = LlamaServer(chat_model, tmp_path / "keyed.log", api_key="right-key")
    try:
        config = ServerConfig("keyed", server.url, api_key_env="TT_REMOTE_KEY")
        monkeypatch.setenv("TT_REMOTE_KEY", "wrong-key")
        backend = RemoteChatBackend(config, "any")
        message = one_failure(run_backend(backend, paris_request("x", settings_with({}))))
        assert "refused the API key" in message and "TT_REMOTE_KEY" in message
        assert "wrong-key" not in message, "the key itself is never shown"
        with pytest.raises(BackendError, match="refused the API key"):
            RemoteChatBackend(config).models()
        monkeypatch.setenv("TT_REMOTE_KEY", "right-key")
        events = run_backend(RemoteChatBackend(config), paris_request("x", settings_with({})))
        assert isinstance(events[-1], p.GenerationFinished), events[-1]
    finally:
        server.stop()


@pytest.mark.slow
def test_a_server_killed_mid_reply_keeps_the_partial_reply_marked(
    chat_model: Path, store: Store, tmp_path: Path
) -> None:
    server = LlamaServer(chat_model, tmp_path / "doomed.log")
    try:
        service = remote_service(store, server.url, tmp_path, max_tokens=400)
        events: list[Any] = []
        service.subscribe(events.append)
        count = 0

        def kill_after_five(event: Any) -> None:
            nonlocal count
            if isinstance(event, cs.TokenReceived):
                count += 1
                if count == 5:
                    os.kill(server.process.pid, signal.SIGKILL)

        service.subscribe(kill_after_five)
        service.add_user_message(STORY)
        reply, request = service.start_reply()
        service.stream(request)
    finally:
        server.stop()
    [failed] = [e for e in events if isinstance(e, cs.ReplyFailed)]
    assert failed.content and failed.reply_id == reply.id
    assert "cut off" in failed.error and "\n" not in failed.error
    saved = store.get_message(reply.id)
    assert saved is not None and saved.state == "error" and saved.content == failed.content
    assert failed.error_message is not None and failed.error_message.content == failed.error


@pytest.mark.slow
async def test_the_tui_chats_with_a_server_chosen_in_the_settings_dialog(
    llama_server: str, app_dirs: Path, chat_model: Path
) -> None:
    from tests.helpers import wait_until
    from tui.app import TriptychApp
    from tui.widgets.engine_status import EngineStatus
    from tui.widgets.prompt_input import PromptInput

    settings = settings_with({"box": {"url": llama_server}})
    store = Store()
    conversation = store.create_conversation("Remote")
    app = TriptychApp(chat_model=str(chat_model), settings=settings, store=store)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("ctrl+o")
        await pilot.pause()
        app.screen.query_one("#model-path").value = "server:nope"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "no server named 'nope'" in str(app.screen.query_one("#error").render())
        app.screen.query_one("#model-path").value = "server:box"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert store.get_conversation(conversation.id).model == "server:box"
        assert "chat remote box" in app.screen.query_one(EngineStatus).status_text()
        prompt = app.screen.query_one(PromptInput)
        prompt.focus()
        prompt.text = PARIS_QUESTION
        await pilot.press("enter")

        def replied() -> bool:
            messages = store.list_messages(conversation.id)
            return len(messages) == 2 and messages[1].state != "streaming"

        await wait_until(pilot, replied, 60, "the remote reply")
        reply = store.list_messages(conversation.id)[1]
        assert "Paris" in reply.content and reply.state == "complete"
        assert not app.chat_host.alive, "no local engine was started"


@pytest.mark.slow
async def test_the_settings_dialog_offers_the_models_a_server_listed(
    llama_server: str, app_dirs: Path, chat_model: Path
) -> None:
    from textual.widgets import Select

    from tests.helpers import wait_until
    from tui.app import TriptychApp
    from tui.screens.chat_settings import ChatSettingsScreen
    from tui.services.settings import SettingsService

    SettingsService().update(servers={"box": {"url": llama_server}})
    store = Store()
    conversation = store.create_conversation("Remote")
    app = TriptychApp(chat_model=str(chat_model), settings=Settings.load(), store=store)
    async with app.run_test(size=(100, 30)) as pilot:
        # The Servers tab asks box for its models; the dialog then offers each of them.
        await pilot.press("f5", "4")
        await wait_until(pilot, lambda: "box" in app.server_models, 30, "box checked")
        (model_id,) = app.server_models["box"]
        spec = f"server:box/{model_id}"
        await pilot.press("f2")
        await pilot.pause()
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert isinstance(app.screen, ChatSettingsScreen)
        offered = [value for _, value in app.screen._model_options()]
        assert offered[-2:] == ["server:box", spec], offered
        app.screen.query_one("#model", Select).value = spec  # refused unless offered
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert store.get_conversation(conversation.id).model == spec
        # Reopened, the dialog shows the conversation's server model.
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert app.screen.query_one("#model", Select).value == spec
        await pilot.press("escape")
