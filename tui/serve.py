"""``triptych serve``: the local engines behind OpenAI-compatible HTTP endpoints.

One engine process per modality, as in the TUI (:class:`~tui.engines.host.EngineHost`),
shared by every request; requests to the same engine wait their turn in arrival order.
``EngineHost.submit`` blocks, so each request runs it in a thread that feeds an asyncio
queue; a client that disconnects has its work cancelled (``host.cancel()``), even while
the model is still loading.

Endpoints: ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions`` (streamed
as server-sent events or not), ``POST /v1/images/generations`` (b64_json; the edits
endpoint and stable-diffusion.cpp's native job API are in :mod:`tui.serve_images`) and
``POST /v1/audio/transcriptions`` and ``POST /v1/audio/translations`` (to English;
multipart; json, text, srt, verbose_json, vtt).
Requests are built with the same builders as the panels and the CLI use
(:func:`tui.services.chat.chat_request`, :func:`tui.services.imagine.build_request`,
:func:`tui.services.listen.transcribe_request`). Served with uvicorn; loopback only
unless an API key is set.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hmac
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tui.cli_support import CliError, load_settings
from tui.config import Settings
from tui.engines import protocol as p
from tui.engines.host import EngineHost
from tui.safe_text import one_line

DISCONNECT_CHECK_S = 0.25
"""How often a running request asks whether its client is still connected."""
ENGINES = ("chat", "image", "speech")
TRANSCRIPT_FORMATS = ("json", "text", "txt", "srt", "verbose_json", "vtt")
_DONE = object()


# --- errors in OpenAI's shape ------------------------------------------------------------


class ApiError(Exception):
    """An error answered as ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = one_line(message)
        self.kind = kind
        self.param = param
        self.code = code

    def response(self) -> JSONResponse:
        body = {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }
        return JSONResponse(body, status_code=self.status)


def _engine_error(event: p.EngineFailed) -> ApiError:
    """An engine failure as an HTTP error: bad input is the client's, the rest the server's."""
    if event.kind == "input":
        return ApiError(400, event.message)
    return ApiError(500, event.message, kind="server_error", code=f"engine_{event.kind}")


# --- the engines ---------------------------------------------------------------------------


@dataclass
class ServedModels:
    """The model file served for each modality (None: that endpoint answers 404)."""

    chat: Path
    image: Path | None = None
    speech: Path | None = None

    def by_modality(self) -> dict[str, Path]:
        found = {"chat": self.chat, "image": self.image, "speech": self.speech}
        return {name: path for name, path in found.items() if path is not None}


def model_id(path: Path) -> str:
    """The id a model is served under: its file name."""
    return path.name


class Engines:
    """One EngineHost per modality, shared by all requests, one request at a time each."""

    def __init__(self, threads: int, memory_budget_mb: int = 0) -> None:
        from tui import locations
        from tui.budget import MemoryBudget, budget_bytes
        from tui.cpu import CpuGate

        self.threads = threads
        self.hosts = {name: EngineHost(name, log_dir=locations.logs_dir()) for name in ENGINES}
        self.budget = MemoryBudget(list(self.hosts.values()), budget_bytes(memory_budget_mb))
        gate = CpuGate()
        for host in self.hosts.values():
            host.cpu_gate = gate
        self._turns: dict[str, asyncio.Lock] = {}

    def _turn(self, engine: str) -> asyncio.Lock:
        # Made on first use: an asyncio.Lock belongs to the loop that runs the server.
        if engine not in self._turns:
            self._turns[engine] = asyncio.Lock()
        return self._turns[engine]

    async def events(
        self,
        engine: str,
        request: Any,
        disconnected: Callable[[], Awaitable[bool]] | None = None,
        started: Callable[[], None] | None = None,
    ) -> AsyncIterator[Any]:
        """The request's engine events; its turn comes after the requests before it.

        The work is cancelled when the consumer stops early (a streaming client went
        away) or when ``disconnected()`` turns true. The engine's turn passes on only
        when the engine has finished with this request. ``started()`` is called when
        its turn has come.
        """
        turn = self._turn(engine)
        host = self.hosts[engine]
        await turn.acquire()
        if started is not None:
            started()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def put(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:
                pass  # the server's loop has closed: nobody is left to tell

        def work() -> None:
            cancel_sent = False
            try:
                for event in host.submit(request):
                    if stop.is_set() and not cancel_sent:
                        # Asked to stop before the request reached the engine.
                        host.cancel()
                        cancel_sent = True
                    put(event)
            except Exception as error:  # noqa: BLE001 - becomes the request's one-line error
                put(p.EngineFailed(f"the {engine} engine failed: {error}", kind="internal"))
            finally:
                put(_DONE)
                try:
                    loop.call_soon_threadsafe(turn.release)
                except RuntimeError:
                    pass

        try:
            threading.Thread(target=work, name=f"serve-{engine}", daemon=True).start()
        except BaseException:
            turn.release()
            raise
        finished = False
        checked = time.monotonic()
        try:
            while True:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    try:
                        async with asyncio.timeout(DISCONNECT_CHECK_S):
                            item = await queue.get()
                    except TimeoutError:
                        item = None
                if item is _DONE:
                    finished = True
                    return
                if isinstance(item, p.TERMINAL_EVENTS):
                    # The engine is done with the request: nothing is left to cancel.
                    finished = True
                now = time.monotonic()
                if disconnected is not None and now - checked >= DISCONNECT_CHECK_S:
                    checked = now
                    if await disconnected():
                        return
                if item is not None:
                    yield item
        finally:
            if not finished:
                stop.set()
                host.cancel()

    def shutdown(self) -> None:
        """Stop every request and end the engine processes."""
        for host in self.hosts.values():
            host.cancel(grace_s=0.3)
        for host in self.hosts.values():
            host.shutdown(timeout=2.0)


# --- request bodies --------------------------------------------------------------------------


def _body_field(
    body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any
) -> Any:
    value = body.get(name, default)
    if value is None:
        return default
    # bool is an int in Python, but not a number in JSON.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ApiError(400, f"'{name}' must not be a boolean", param=name)
    if not isinstance(value, kind):
        raise ApiError(400, f"'{name}' has the wrong type", param=name)
    return value


def _message_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            else:
                raise ApiError(400, "only text content parts are supported", param="messages")
        return "".join(parts)
    raise ApiError(400, "a message's content must be a string or a list of parts")


def _check_model(requested: Any, served: Path | None, modality: str) -> None:
    if served is None:
        raise ApiError(
            404,
            f"no {modality} model is configured on this server",
            code="model_not_found",
            param="model",
        )
    if requested in (None, "", model_id(served), str(served)):
        return
    raise ApiError(
        404,
        f"the model {str(requested)!r} does not exist here; the {modality} model is"
        f" {model_id(served)!r}",
        code="model_not_found",
        param="model",
    )


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


# --- the application --------------------------------------------------------------------------


async def images_response(
    engines: Engines, engine_request: Any, params: Any, request: Request
) -> JSONResponse:
    """Run an image request and answer in OpenAI's shape: b64_json PNGs, parameters embedded.

    ``params`` (imaging.ImageParams) is what each PNG records, with that image's seed; a
    client that goes away cancels the work (499), an engine failure is an ApiError.
    """
    from tui import imaging

    images: list[dict[str, Any]] = []
    async for event in engines.events("image", engine_request, request.is_disconnected):
        if isinstance(event, p.ImageGenerated):
            made = replace(params, seed=event.seed, batch_count=1, init_image="")
            png = await asyncio.to_thread(imaging.png_with_params, event.png, made)
            images.append(
                {
                    "b64_json": base64.b64encode(png).decode("ascii"),
                    "revised_prompt": params.prompt,
                    "seed": event.seed,
                }
            )
        elif isinstance(event, p.EngineFailed):
            raise _engine_error(event)
        elif isinstance(event, p.GenerationFinished) and event.reason != "stop":
            raise ApiError(499, "the generation was cancelled", code="cancelled")
    return JSONResponse({"created": int(time.time()), "data": images})


def create_app(
    engines: Engines,
    models: ServedModels,
    settings: Callable[[], Settings],
    api_key: str | None = None,
) -> FastAPI:
    """The ASGI application serving ``engines``; with ``api_key``, every /v1 request needs it."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            # Before uvicorn hands a caught signal back: the engines end with the server.
            await asyncio.to_thread(engines.shutdown)

    app = FastAPI(
        title="triptych serve",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    started = int(time.time())

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, error: ApiError) -> Response:
        return error.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, error: StarletteHTTPException) -> Response:
        return ApiError(error.status_code, str(error.detail)).response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> Response:
        problems = error.errors()
        first = problems[0] if problems else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        message = f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request"
        return ApiError(400, message, param=where or None).response()

    if api_key is not None:
        app.add_middleware(_RequireKey, api_key=api_key)

    from tui.serve_images import add_image_routes

    add_image_routes(app, engines, models.image, settings)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": {k: model_id(v) for k, v in models.by_modality().items()}}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        data = []
        for modality, path in models.by_modality().items():
            try:
                created = int(path.stat().st_mtime)
            except OSError:
                created = started
            data.append(
                {
                    "id": model_id(path),
                    "object": "model",
                    "created": created,
                    "owned_by": "triptych",
                    "modality": modality,
                }
            )
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = await _json_body(request)
        _check_model(body.get("model"), models.chat, "chat")
        engine_request = _chat_engine_request(body, models.chat, settings())
        stream = bool(_body_field(body, "stream", bool, False))
        options = _body_field(body, "stream_options", dict, {})
        completion_id = f"chatcmpl-{secrets.token_hex(12)}"
        events = engines.events("chat", engine_request, request.is_disconnected)
        reply = _ChatReply(completion_id, model_id(models.chat))
        if not stream:
            async for event in events:
                reply.take(event)
            return JSONResponse(reply.completion())
        # The first token (or a failure) before the status line: a model that cannot
        # load is an HTTP error, not an event inside a 200 stream.
        first: list[Any] = []
        async for event in events:
            first.append(event)
            if isinstance(event, (p.TokenGenerated, *p.TERMINAL_EVENTS)):
                break
        if first and isinstance(first[-1], p.EngineFailed):
            raise _engine_error(first[-1])
        if not first or not isinstance(first[-1], (p.TokenGenerated, p.GenerationFinished)):
            await events.aclose()
            raise ApiError(499, "the client went away", code="client_closed")
        include_usage = bool(options.get("include_usage"))
        return StreamingResponse(
            _sse(reply, first, events, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.post("/v1/images/generations")
    async def images_generations(request: Request) -> Response:
        body = await _json_body(request)
        _check_model(body.get("model"), models.image, "image")
        assert models.image is not None
        current = settings()
        params = _image_params(body, models.image, current)
        from tui.formats import ModelFileError
        from tui.formats.image import check_image_model
        from tui.services.imagine import build_request

        try:
            for path in (params.model, params.vae, params.taesd):
                if path:
                    check_image_model(path)
        except ModelFileError as error:
            raise ApiError(500, str(error), kind="server_error", code="model_error") from error
        engine_request = build_request(params, current, preview=False, threads=engines.threads)
        return await images_response(engines, engine_request, params, request)

    @app.post("/v1/audio/transcriptions")
    async def audio_transcriptions(
        request: Request,
        file: UploadFile,
        model: str = Form(""),
        language: str = Form(""),
        prompt: str = Form(""),
        response_format: str = Form("json"),
    ) -> Response:
        return await _speech(request, file, model, language, prompt, response_format)

    @app.post("/v1/audio/translations")
    async def audio_translations(
        request: Request,
        file: UploadFile,
        model: str = Form(""),
        prompt: str = Form(""),
        response_format: str = Form("json"),
    ) -> Response:
        """Speech in any language, written in English (whisper's translate task)."""
        return await _speech(request, file, model, "auto", prompt, response_format, translate=True)

    async def _speech(
        request: Request,
        file: UploadFile,
        model: str,
        language: str,
        prompt: str,
        response_format: str,
        *,
        translate: bool = False,
    ) -> Response:
        """Transcribe (or translate to English) one upload with the speech engine."""
        _check_model(model, models.speech, "speech")
        assert models.speech is not None
        fmt = response_format.strip().lower() or "json"
        if fmt not in TRANSCRIPT_FORMATS:
            raise ApiError(
                400,
                f"response_format must be one of {', '.join(TRANSCRIPT_FORMATS)}",
                param="response_format",
            )
        current = settings()
        from tui import transcript
        from tui.services.listen import ListenError, check_speech_model, transcribe_request

        try:
            check_speech_model(models.speech)
        except ListenError as error:
            raise ApiError(500, str(error), kind="server_error", code="model_error") from error
        suffix = Path(file.filename or "").suffix[:16]
        audio = await asyncio.to_thread(_spool_upload, file, suffix)
        try:
            engine_request = transcribe_request(
                current,
                audio_path=audio,
                model=models.speech,
                language=language.strip() or None,
                translate=translate,
                initial_prompt=prompt,
                n_threads=engines.threads,
            )
            segments: list[transcript.Segment] = []
            duration = 0.0
            async for event in engines.events("speech", engine_request, request.is_disconnected):
                if isinstance(event, p.SegmentTranscribed):
                    segments.append(transcript.Segment(event.start_s, event.end_s, event.text))
                elif isinstance(event, p.AudioLoaded):
                    duration = event.duration_s
                elif isinstance(event, p.EngineFailed):
                    raise _engine_error(event)
                elif isinstance(event, p.GenerationFinished) and event.reason != "stop":
                    raise ApiError(499, "the transcription was cancelled", code="cancelled")
        finally:
            audio.unlink(missing_ok=True)
        if translate:
            return _transcript_response(segments, fmt, "english", duration, task="translate")
        return _transcript_response(segments, fmt, engine_request.language, duration)

    return app


class _RequireKey:
    """ASGI middleware: every request but /health needs ``Authorization: Bearer KEY``.

    Plain ASGI rather than an ``@app.middleware`` function, which would copy every
    streamed chunk through an extra task and queue.
    """

    def __init__(self, app: Any, api_key: str) -> None:
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] != "/health":
            given = b""
            for name, value in scope["headers"]:
                if name == b"authorization":
                    given = value
                    break
            scheme, _, token = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                error = ApiError(
                    401,
                    "missing or incorrect API key (send Authorization: Bearer KEY)",
                    code="invalid_api_key",
                )
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


# --- chat ----------------------------------------------------------------------------------


def _chat_engine_request(body: dict[str, Any], model: Path, settings: Settings) -> p.ChatRequest:
    from tui.services.chat import chat_request, resolve_sampling

    raw_messages = _body_field(body, "messages", list, None)
    if not raw_messages:
        raise ApiError(400, "'messages' must be a non-empty list", param="messages")
    if _body_field(body, "n", int, 1) != 1:
        raise ApiError(400, "only n = 1 is supported", param="n")
    system: list[str] = []
    history: list[p.ChatMessage] = []
    for message in raw_messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ApiError(400, "each message needs a 'role'", param="messages")
        text = _message_text(message.get("content"))
        if message["role"] in ("system", "developer"):
            system.append(text)
        else:
            history.append(p.ChatMessage(message["role"], text))
    number = (int, float)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    overrides = {
        "temperature": _body_field(body, "temperature", number, None),
        "top_p": _body_field(body, "top_p", number, None),
        "top_k": _body_field(body, "top_k", int, None),
        "min_p": _body_field(body, "min_p", number, None),
        "repeat_penalty": _body_field(body, "repeat_penalty", number, None),
        "seed": _body_field(body, "seed", int, None),
        "max_tokens": _body_field({"max_tokens": max_tokens}, "max_tokens", int, None),
    }
    try:
        sampling = resolve_sampling(settings.sampling, overrides)
    except (ValueError, TypeError) as error:
        raise ApiError(400, str(error)) from error
    return chat_request(
        model_path=model,
        system_prompt="\n\n".join(system),
        history=history,
        sampling=sampling,
        settings=settings,
    )


class _ChatReply:
    """Turns chat engine events into OpenAI chat.completion(.chunk) objects."""

    def __init__(self, completion_id: str, model: str) -> None:
        self.id = completion_id
        self.model = model
        self.created = int(time.time())
        self.text: list[str] = []
        self.finish_reason = "stop"
        self.stats = p.GenerationStats()

    def take(self, event: Any) -> None:
        if isinstance(event, p.TokenGenerated):
            self.text.append(event.text)
        elif isinstance(event, p.GenerationFinished):
            self.finish_reason = "length" if event.reason == "length" else "stop"
            self.stats = event.stats
        elif isinstance(event, p.EngineFailed):
            raise _engine_error(event)

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.stats.prompt_tokens,
            "completion_tokens": self.stats.tokens,
            "total_tokens": self.stats.prompt_tokens + self.stats.tokens,
        }

    def timings(self) -> dict[str, float]:
        """llama-server's timings, so clients can show tokens/s and time to first token."""
        return {
            "prompt_n": self.stats.prompt_tokens,
            "prompt_ms": round(self.stats.ttft_s * 1000, 3),
            "predicted_n": self.stats.tokens,
            "predicted_per_second": round(self.stats.tokens_per_s, 3),
        }

    def completion(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(self.text)},
                    "finish_reason": self.finish_reason,
                }
            ],
            "usage": self.usage(),
            "timings": self.timings(),
        }

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> str:
        data = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        if finish_reason is not None:
            data["timings"] = self.timings()
        return _sse_event(data)


def _sse_event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


async def _sse(
    reply: _ChatReply, first: list[Any], events: AsyncIterator[Any], include_usage: bool
) -> AsyncIterator[str]:
    """The reply as server-sent events: role, content deltas, finish, [DONE]."""

    async def rest() -> AsyncIterator[Any]:
        for event in first:
            yield event
        async for event in events:
            yield event

    yield reply.chunk({"role": "assistant", "content": ""})
    try:
        async for event in rest():
            if isinstance(event, p.TokenGenerated):
                reply.text.append(event.text)
                yield reply.chunk({"content": event.text})
            elif isinstance(event, p.GenerationFinished):
                reply.take(event)
                yield reply.chunk({}, reply.finish_reason)
                if include_usage:
                    yield _sse_event(
                        {
                            "id": reply.id,
                            "object": "chat.completion.chunk",
                            "created": reply.created,
                            "model": reply.model,
                            "choices": [],
                            "usage": reply.usage(),
                        }
                    )
            elif isinstance(event, p.EngineFailed):
                error = _engine_error(event)
                yield _sse_event(
                    {"error": {"message": error.message, "type": error.kind, "code": error.code}}
                )
                return
        yield "data: [DONE]\n\n"
    finally:
        await events.aclose()  # type: ignore[attr-defined]


# --- images --------------------------------------------------------------------------------


def _image_params(body: dict[str, Any], model: Path, settings: Settings) -> Any:
    from tui import imaging

    prompt = _body_field(body, "prompt", str, "")
    size = _body_field(body, "size", str, "512x512")
    try:
        width_text, height_text = size.lower().split("x")
        width, height = int(width_text), int(height_text)
    except ValueError:
        raise ApiError(400, f"size must be WIDTHxHEIGHT, e.g. 512x512, not {size!r}") from None
    response_format = _body_field(body, "response_format", str, "b64_json")
    if response_format != "b64_json":
        raise ApiError(400, "only response_format 'b64_json' is supported", param="response_format")
    number = (int, float)
    params = imaging.ImageParams(
        prompt=prompt,
        negative_prompt=_body_field(body, "negative_prompt", str, ""),
        model=str(model),
        vae=settings.image_vae,
        taesd=settings.image_taesd,
        width=width,
        height=height,
        steps=_body_field(body, "steps", int, 20),
        cfg_scale=float(_body_field(body, "cfg_scale", number, 7.0)),
        sampler=_body_field(body, "sampler", str, "default"),
        scheduler=_body_field(body, "scheduler", str, "default"),
        seed=_body_field(body, "seed", int, -1),
        batch_count=_body_field(body, "n", int, 1),
    )
    try:
        params.validate()
    except ValueError as error:
        raise ApiError(400, str(error)) from error
    return params


# --- transcription ---------------------------------------------------------------------------


def _spool_upload(upload: UploadFile, suffix: str) -> Path:
    """Copy the uploaded audio to a temporary file that the engine can open."""
    handle, name = tempfile.mkstemp(prefix="triptych-serve-", suffix=suffix)
    try:
        with os.fdopen(handle, "wb") as out:
            upload.file.seek(0)
            shutil.copyfileobj(upload.file, out, 1 << 20)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def _transcript_response(
    segments: list[Any], fmt: str, language: str, duration: float, task: str = "transcribe"
) -> Response:
    from tui import transcript

    cleaned = transcript.clean_segments(segments)
    text = " ".join(" ".join(s.text.splitlines()) for s in cleaned)
    if fmt == "json":
        return JSONResponse({"text": text})
    if fmt == "verbose_json":
        return JSONResponse(
            {
                "task": task,
                "language": language,
                "duration": round(duration, 3),
                "text": text,
                "segments": [
                    {
                        "id": number,
                        "start": round(s.start_s, 3),
                        "end": round(s.end_s, 3),
                        "text": s.text,
                    }
                    for number, s in enumerate(cleaned)
                ],
            }
        )
    if fmt in ("text", "txt"):
        return PlainTextResponse(transcript.to_txt(cleaned))
    if fmt == "srt":
        return PlainTextResponse(transcript.to_srt(cleaned))
    return PlainTextResponse(transcript.to_vtt(cleaned), media_type="text/vtt")


# --- the command -------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def api_key_from_env(name: str | None, host: str) -> str | None:
    """The API key held by the environment variable ``name``; CliError when one is needed."""
    if name:
        key = os.environ.get(name, "").strip()
        if not key:
            raise CliError(
                f"--api-key-env {name}: the environment variable {name} is empty or unset"
            )
        return key
    if not is_loopback(host):
        raise CliError(
            f"--host {host} exposes the engines beyond this machine: it needs an API key"
            " (--api-key-env NAME, the environment variable that holds it)"
        )
    return None


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; CliError (one line) when it cannot be had."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise CliError(f"cannot listen on {host}: {error.strerror or error}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as error:
        sock.close()
        raise CliError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    sock.set_inheritable(True)
    return sock


def _served_models(args: argparse.Namespace, settings: Settings) -> ServedModels:
    from tui.default_model import resolve_chat_model
    from tui.formats import ModelFileError, gguf

    chat = resolve_chat_model(
        args.chat_model or getattr(args, "model", None) or settings.chat_model
    )
    try:
        gguf.read_gguf_info(chat)
    except ModelFileError as error:
        raise CliError(str(error)) from error

    def optional(spec: str) -> Path | None:
        return Path(spec).expanduser().resolve() if spec.strip() else None

    return ServedModels(
        chat=chat.resolve(),
        image=optional(settings.image_model),
        speech=optional(settings.speech_model),
    )


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def run_serve(args: argparse.Namespace) -> int:
    """Serve until Ctrl+C or SIGTERM; the engines end with the server."""
    import uvicorn

    from tui.cli import _threads

    host = args.host
    api_key = api_key_from_env(args.api_key_env, host)
    service = load_settings()
    settings = service.current
    threads = _threads(args.threads, settings.threads)
    models = _served_models(args, settings)
    sock = _bind(host, args.port)
    port = sock.getsockname()[1]
    engines = Engines(threads, settings.memory_budget_mb)
    app = create_app(engines, models, lambda: service.current, api_key)
    shown = f"[{host}]" if ":" in host else host
    lines = [f"triptych serve: http://{shown}:{port}/v1"]
    for modality, path in models.by_modality().items():
        lines.append(f"  {modality}: {one_line(model_id(path))}")
    if api_key is not None:
        lines.append(f"  API key required (from ${args.api_key_env})")
    print("\n".join(lines), flush=True)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    # uvicorn stops on SIGTERM and then raises it again: end with status 143 through
    # the finally below (the engines are stopped) rather than by the default action.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
        engines.shutdown()
        sock.close()
        print("triptych serve: stopped", file=sys.stderr, flush=True)
    return 0
