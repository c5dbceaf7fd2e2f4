"""Chat with a remote OpenAI-compatible server (llama-server, vLLM, Ollama, ...).

Uses the official ``openai`` client: ``POST /v1/chat/completions`` with
streaming and ``GET /v1/models``. :meth:`RemoteChatBackend.submit` yields the
same protocol events as the local engine host, so callers need no special case.
Every failure becomes one line naming the server; text the server sent is
flattened to one line with its control characters made visible.
"""

from __future__ import annotations

import functools
import queue
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

from tui.backends.servers import BackendError, ServerConfig
from tui.engines import protocol as p
from tui.safe_text import one_line

POLL_S = 0.05
"""How often a waiting reply checks for Stop."""

_MAX_DETAIL = 200

MAX_EVENT_BYTES = 1 << 20
"""Most bytes one server-sent event may take; the openai client sets no limit."""
MAX_BODY_BYTES = 8 << 20
"""Most bytes a reply that is not an event stream (models list, error) may take."""


CHARS_PER_TOKEN = 4
"""Characters a token, roughly, for counts without the server's tokenizer."""


def estimate_tokens(text: str) -> int:
    """About how many tokens ``text`` is (CHARS_PER_TOKEN characters a token)."""
    return -(-len(text) // CHARS_PER_TOKEN)


class ResponseTooLarge(BackendError):
    """A server sent more than the caps above: reading stops before memory grows."""


class _CappedStream:
    """Passes a response's bytes on, but stops a body or event that outgrows its cap.

    For an event stream the cap counts the bytes since the last blank line, so an
    endless ``data:`` line (or endless lines without an empty one) ends in
    ResponseTooLarge within MAX_EVENT_BYTES; any other body is capped in total.
    """

    def __init__(self, inner: Any, events: bool) -> None:
        self._inner = inner
        self._events = events
        self._limit = MAX_EVENT_BYTES if events else MAX_BODY_BYTES

    def __iter__(self) -> Iterator[bytes]:
        since = 0
        tail = b""
        for chunk in self._inner:
            if self._events:
                seen = tail + chunk
                end = max(seen.rfind(b"\n\n"), seen.rfind(b"\r\n\r\n"), seen.rfind(b"\r\r"))
                since = len(seen) - end if end >= 0 else since + len(chunk)
                tail = seen[-3:]
            else:
                since += len(chunk)
            if since > self._limit:
                what = "one event" if self._events else "a reply"
                raise ResponseTooLarge(
                    f"{what} larger than {self._limit >> 20} MiB; reading stopped"
                )
            yield chunk

    def close(self) -> None:
        self._inner.close()


@functools.cache
def _capped_type() -> type:
    """_CappedStream as the byte stream type httpx reads and closes (httpx2 loads late)."""
    import httpx2

    return type("CappedByteStream", (_CappedStream, httpx2.SyncByteStream), {})


def _cap_response(response: Any) -> None:
    """httpx response hook: every body the client reads goes through _CappedStream."""
    kind = response.headers.get("content-type", "")
    response.stream = _capped_type()(response.stream, "text/event-stream" in kind)


def _detail(text: Any) -> str:
    line = one_line(str(text))
    return line if len(line) <= _MAX_DETAIL else line[: _MAX_DETAIL - 1] + "…"


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _server_message(error: Any) -> str:
    """The message a server put in its error body (OpenAI or llama.cpp shape), or ''."""
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            message = inner.get("message") or inner.get("detail")
            if message:
                return _detail(message)
        elif isinstance(inner, str):
            return _detail(inner)
        if body.get("detail"):
            return _detail(body["detail"])
    elif isinstance(body, str) and body.strip():
        return _detail(body)
    return ""


def describe_error(error: BaseException, server: ServerConfig, model: str = "") -> str:
    """One line saying why a request to ``server`` failed."""
    import openai

    where = f"server {server.name} ({server.url})"
    for cause in _causes(error):
        if isinstance(cause, ResponseTooLarge):
            return f"{where} sent {cause}"
    if isinstance(error, openai.APITimeoutError):
        return f"{where} did not answer within {server.timeout_s:g} s"
    if isinstance(error, openai.APIConnectionError):
        for cause in _causes(error):
            if isinstance(cause, ConnectionRefusedError):
                return f"cannot connect to {where}: connection refused"
            if isinstance(cause, ssl.SSLError):
                reason = getattr(cause, "reason", None) or cause
                return f"TLS failure talking to {where}: {_detail(reason)}"
        innermost = list(_causes(error))[-1]
        return f"cannot reach {where}: {_detail(innermost) or type(innermost).__name__}"
    if isinstance(error, openai.AuthenticationError | openai.PermissionDeniedError):
        key = server.key_source()
        message = _server_message(error)
        return f"{where} refused the API key (HTTP {error.status_code}; sent {key})" + (
            f": {message}" if message else ""
        )
    if isinstance(error, openai.NotFoundError):
        message = _server_message(error)
        return (
            f"{where} has no model {model!r} or no such endpoint (HTTP 404)"
            + (f": {message}" if message else "")
            + "; `triptych servers models` lists what it offers"
        )
    if isinstance(error, openai.APIStatusError):
        message = _server_message(error) or "no message"
        return f"{where} answered HTTP {error.status_code}: {message}"
    if isinstance(error, BackendError):
        return str(error)
    return f"{where} sent something unreadable: {type(error).__name__}: {_detail(error)}"


class RemoteHostFace:
    """What screens, the status line and the memory budget read from an engine host,
    as a remote backend answers it: no local process, busy while a request runs."""

    server: ServerConfig
    _active: bool

    @property
    def alive(self) -> bool:
        return False

    @property
    def busy(self) -> bool:
        return self._active

    @property
    def label(self) -> str:
        """What the status line shows for this backend."""
        return f"remote {self.server.name}"


class RemoteChatBackend(RemoteHostFace):
    """Chat requests answered by one remote server; one request at a time.

    ``alive`` is always False and ``pid`` None: no local process holds memory
    for it. :meth:`cancel` returns the reply as 'cancelled' within POLL_S and
    closes the stream, which tells the server to stop generating.
    """

    engine = "chat"

    def __init__(self, server: ServerConfig, model: str = "") -> None:
        self.server = server
        self.model = model or server.model
        """The model id asked for; '' until the first request picks the server's first."""
        self._api_key = server.api_key()
        self._client: Any = None
        self._cancelled = threading.Event()
        self._active = False
        self._stream: Any = None
        self._stream_lock = threading.Lock()
        self.loaded_model: str | None = None
        self.waiting_for: list[str] = []
        self.pid: int | None = None

    def _openai(self) -> Any:
        if self._client is None:
            import openai

            self._client = openai.OpenAI(
                base_url=self.server.url,
                # The client insists on a key; servers without auth ignore this one.
                api_key=self._api_key or "none",
                timeout=self.server.timeout_s,
                max_retries=0,
                # Uncompressed, so that the caps on what is read bound what is decoded.
                default_headers={"Accept-Encoding": "identity"},
                http_client=openai.DefaultHttpxClient(
                    timeout=self.server.timeout_s, event_hooks={"response": [_cap_response]}
                ),
            )
        return self._client

    def models(self) -> list[str]:
        """The model ids the server offers (GET /v1/models); BackendError in one line."""
        try:
            return [model.id for model in self._openai().models.list()]
        except Exception as error:  # noqa: BLE001 - every failure is one line
            raise BackendError(describe_error(error, self.server, self.model)) from None

    def _model_id(self) -> str:
        if not self.model:
            offered = self.models()
            if not offered:
                raise BackendError(f"server {self.server.name} lists no models")
            self.model = offered[0]
        return self.model

    # --- requests --------------------------------------------------------------

    def submit(self, request: p.ChatRequest | p.CountTokens) -> Iterator[Any]:
        """Stream the reply to ``request``; ends with GenerationFinished or EngineFailed.

        CountTokens is answered here, without the server: about CHARS_PER_TOKEN
        characters a token, marked as estimates.
        """
        if isinstance(request, p.CountTokens):
            counts = [estimate_tokens(text) for text in request.texts]
            yield p.TokensCounted(counts, request.n_ctx, estimated=True)
            yield p.GenerationFinished("stop")
            return
        self._active = True
        try:
            yield from self._run(request)
        finally:
            # Also when the caller stops listening: the reader thread then ends too.
            self._cancelled.set()
            self._close_stream()
            self._active = False
            self._cancelled.clear()

    def cancel(self) -> None:
        """Stop the running request: it ends as 'cancelled' and its stream is closed."""
        if self._active:
            self._cancelled.set()
            self._close_stream()

    def shutdown(self) -> None:
        """Close the connection pool (a later request opens a new one)."""
        self.cancel()
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass

    def _close_stream(self) -> None:
        with self._stream_lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except Exception:  # noqa: BLE001 - it may already be broken
                pass

    def _params(self, request: p.ChatRequest, model: str) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": True,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_tokens": request.max_tokens,
            # Understood by llama.cpp's servers; others ignore what they do not know.
            "extra_body": {
                "top_k": request.top_k,
                "min_p": request.min_p,
                "repeat_penalty": request.repeat_penalty,
            },
        }
        if request.seed >= 0:
            params["seed"] = request.seed
        return params

    def _read(self, request: p.ChatRequest, events: queue.Queue[tuple[str, Any]]) -> None:
        """In a thread: open the stream and pass each part on, then 'end' or 'error'."""
        model = ""
        try:
            model = self._model_id()
            stream = self._openai().chat.completions.create(**self._params(request, model))
            with self._stream_lock:
                self._stream = stream
            if self._cancelled.is_set():
                self._close_stream()
                return
            for chunk in stream:
                if self._cancelled.is_set():
                    return
                events.put(("chunk", chunk))
            events.put(("end", None))
        except BaseException as error:  # noqa: BLE001 - reported as one line by submit
            if not self._cancelled.is_set():
                events.put(("error", (error, model)))
        finally:
            self._close_stream()

    def _run(self, request: p.ChatRequest) -> Iterator[Any]:
        request_id = request.request_id
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        started = time.monotonic()
        first_at: float | None = None
        count = 0
        reason: str | None = None
        usage: Any = None
        reader = threading.Thread(
            target=self._read, args=(request, events), name="remote-chat", daemon=True
        )
        reader.start()

        def stats() -> p.GenerationStats:
            finished = time.monotonic()
            tokens = getattr(usage, "completion_tokens", None) or count
            decode_s = finished - first_at if first_at is not None else 0.0
            return p.GenerationStats(
                tokens=tokens,
                prompt_tokens=getattr(usage, "prompt_tokens", None) or 0,
                ttft_s=(first_at if first_at is not None else finished) - started,
                tokens_per_s=(tokens - 1) / decode_s if tokens > 1 and decode_s > 0 else 0.0,
                elapsed_s=finished - started,
                seed=request.seed,
            )

        while True:
            if self._cancelled.is_set():
                self._close_stream()
                yield p.GenerationFinished("cancelled", stats(), request_id=request_id)
                return
            try:
                kind, item = events.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if kind == "error":
                error, model = item
                message = describe_error(error, self.server, model)
                if count:
                    message = f"the reply was cut off: {message}"
                yield p.EngineFailed(message, kind="crash", request_id=request_id)
                return
            if kind == "end":
                if reason is None:
                    yield p.EngineFailed(
                        f"the reply was cut off: server {self.server.name} closed the"
                        " stream before the reply was complete",
                        kind="crash",
                        request_id=request_id,
                    )
                    return
                yield p.GenerationFinished(
                    "length" if reason == "length" else "stop", stats(), request_id=request_id
                )
                return
            chunk = item
            if getattr(chunk, "usage", None) is not None:
                usage = chunk.usage
            for choice in chunk.choices or ():
                text = getattr(choice.delta, "content", None) if choice.delta else None
                if text:
                    if first_at is None:
                        first_at = time.monotonic()
                    count += 1
                    yield p.TokenGenerated(text, request_id=request_id)
                if choice.finish_reason:
                    reason = choice.finish_reason
