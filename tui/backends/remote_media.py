"""Images and transcription on a remote OpenAI-compatible server.

:class:`RemoteImageBackend` uses stable-diffusion.cpp's native job API
(:mod:`tui.backends.sdcpp`) where the server has it, else ``POST
/v1/images/generations`` (``/v1/images/edits`` for image-to-image), and
:class:`RemoteSpeechBackend` ``POST /v1/audio/transcriptions`` or, to translate to
English, ``/v1/audio/translations`` (multipart, ``verbose_json`` for segments with
times) through the official ``openai``
client. Their ``submit`` yields the same protocol events as the local image and
speech engines, so the services and the CLI need no special case. A plain
OpenAI server reports no step progress: an image arrives whole.

Each request runs on its own event loop in a thread with the async client, so
:meth:`cancel` cancels the request's task, which closes its connection (the
server sees the client go away) and ends ``submit`` as 'cancelled' within a
second. Failures are one line (:func:`tui.backends.remote.describe_error`).
"""

from __future__ import annotations

import abc
import asyncio
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from tui.backends import sdcpp
from tui.backends.remote import POLL_S, RemoteHostFace, describe_error
from tui.backends.servers import ServerConfig
from tui.engines import protocol as p

SAMPLE_RATE = 16000
"""Rate of the samples in a TranscribeRequest (mono float32)."""
CANCEL_WAIT_S = 1.0
"""How long a cancelled request may take to close its connection."""


class _RemoteMediaBackend(RemoteHostFace, abc.ABC):
    """One request at a time to one server; no local process, so no memory held here."""

    engine = ""

    def __init__(self, server: ServerConfig, model: str = "") -> None:
        self.server = server
        self.model = model
        """The model id asked for ('' lets the server use its own)."""
        self._api_key = server.api_key()
        self._cancelled = threading.Event()
        self._active = False
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self.loaded_model: str | None = self.label
        self.waiting_for: list[str] = []
        self.pid: int | None = None

    def cancel(self) -> None:
        """Stop the running request: its connection is closed and it ends as 'cancelled'."""
        if not self._active:
            return
        self._cancelled.set()
        with self._lock:
            loop, task = self._loop, self._task
        if loop is not None and task is not None:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # the loop has already finished
                pass

    def unload(self) -> None:
        """Nothing is loaded here; the server keeps its own models."""
        return None

    def shutdown(self) -> None:
        self.cancel()

    def _call(
        self, work: Callable[[Any], Awaitable[Any]], client: Callable[[], Any] | None = None
    ) -> tuple[str, Any]:
        """Run ``work(client)``: ('ok', result), ('error', exception) or ('cancelled', None).

        ``client`` makes the async client (default: the openai one for this server).
        Blocks until it ends; a :meth:`cancel` ends it within CANCEL_WAIT_S.
        """
        outcome: dict[str, Any] = {}
        done = threading.Event()

        async def run() -> Any:
            with self._lock:
                if self._cancelled.is_set():
                    raise asyncio.CancelledError
                self._loop = asyncio.get_running_loop()
                self._task = asyncio.current_task()
            if client is not None:
                http = client()
            else:
                import openai

                http = openai.AsyncOpenAI(
                    base_url=self.server.url,
                    # The client insists on a key; servers without auth ignore this one.
                    api_key=self._api_key or "none",
                    timeout=self.server.timeout_s,
                    max_retries=0,
                )
            async with http:
                return await work(http)

        def main() -> None:
            try:
                outcome["ok"] = asyncio.run(run())
            except asyncio.CancelledError:
                pass
            except BaseException as error:  # noqa: BLE001 - reported as one line
                outcome["error"] = error
            finally:
                with self._lock:
                    self._loop = self._task = None
                done.set()

        thread = threading.Thread(target=main, name=f"remote-{self.engine}", daemon=True)
        thread.start()
        while not done.wait(POLL_S):
            if self._cancelled.is_set():
                self.cancel()
                done.wait(CANCEL_WAIT_S)
                return "cancelled", None
        if self._cancelled.is_set():
            return "cancelled", None
        if "error" in outcome:
            return "error", outcome["error"]
        return "ok", outcome.get("ok")

    def submit(self, request: Any) -> Iterator[Any]:
        """Run ``request``; ends with GenerationFinished or EngineFailed."""
        self._active = True
        try:
            yield from self._run(request)
        finally:
            # Also when the caller stops listening: the request is cancelled.
            self.cancel()
            self._active = False
            self._cancelled.clear()

    @abc.abstractmethod
    def _run(self, request: Any) -> Iterator[Any]:
        """The request's protocol events (without the busy/cancel bookkeeping)."""

    def _ended_early(
        self, kind: str, result: Any, elapsed_s: float, request_id: int
    ) -> p.GenerationFinished | p.EngineFailed | None:
        """The last event of a request that was cancelled or failed (None when it answered)."""
        if kind == "cancelled":
            return p.GenerationFinished(
                "cancelled", p.GenerationStats(elapsed_s=elapsed_s), request_id
            )
        if kind == "error":
            return self._failed(result, request_id)
        return None

    def _failed(self, error: BaseException, request_id: int) -> p.EngineFailed:
        return p.EngineFailed(
            describe_error(error, self.server, self.model), kind="crash", request_id=request_id
        )


class RemoteImageBackend(_RemoteMediaBackend):
    """Images on a server: stable-diffusion.cpp's native job API where the server has it
    (progress, queue position, Stop), else ``POST /v1/images/generations`` and, for
    image-to-image, ``POST /v1/images/edits`` (b64_json PNGs).

    The server's ``image_api`` setting chooses; 'auto' asks GET /sdcpp/v1/capabilities
    once per backend.
    """

    engine = "image"

    def __init__(self, server: ServerConfig, model: str = "") -> None:
        super().__init__(server, model)
        self._image_api = server.image_api if server.image_api != "auto" else ""
        """'sdcpp' or 'openai' once known ('' until an 'auto' server was asked)."""
        self.job_id = ""
        """The id of the last native job submitted ('' before the first)."""

    @property
    def image_api(self) -> str:
        """The API the requests use: 'sdcpp' or 'openai'. Blocks once to ask an 'auto' server."""
        if not self._image_api:
            native = sdcpp.speaks_native(self.server, self._api_key)
            if native is None:
                # Unreachable: the OpenAI request says why; ask again next time.
                return "openai"
            self._image_api = "sdcpp" if native else "openai"
        return self._image_api

    def _run(self, request: p.ImageRequest) -> Iterator[Any]:
        if self.image_api == "sdcpp":
            yield from sdcpp.run_job(self, request)
            return
        rid = request.request_id
        params: dict[str, Any] = {
            "prompt": request.prompt,
            "size": f"{request.width}x{request.height}",
            "n": request.batch_count,
            "response_format": "b64_json",
            # Understood by `triptych serve` and stable-diffusion.cpp's servers.
            "extra_body": {
                "negative_prompt": request.negative_prompt,
                "steps": request.steps,
                "cfg_scale": request.cfg_scale,
                "seed": request.seed,
                "sampler": request.sampler,
                "scheduler": request.scheduler,
            },
        }
        if self.model:
            params["model"] = self.model
        if request.init_image is not None:
            params["image"] = ("init.png", request.init_image, "image/png")
            params["extra_body"]["strength"] = request.strength

            def work(client: Any) -> Awaitable[Any]:
                return client.images.edit(**params)
        else:

            def work(client: Any) -> Awaitable[Any]:
                return client.images.generate(**params)

        started = time.monotonic()
        kind, result = self._call(work)
        elapsed = time.monotonic() - started
        ended = self._ended_early(kind, result, elapsed, rid)
        if ended is not None:
            yield ended
            return
        import base64
        import binascii

        items = list(result.data or ())
        if not items:
            yield p.EngineFailed(
                f"server {self.server.name} sent no image", kind="crash", request_id=rid
            )
            return
        for index, item in enumerate(items):
            try:
                png = base64.b64decode(item.b64_json or "", validate=True)
                width, height = sdcpp.png_size(png)
            except (binascii.Error, ValueError, OSError) as error:
                yield self._failed(ValueError(f"image {index + 1}: {error}"), rid)
                return
            seed = getattr(item, "seed", None)
            if not isinstance(seed, int):
                # A server that does not say: the seed asked for, as the local engine counts.
                seed = request.seed + index if request.seed >= 0 else -1
            yield p.ImageGenerated(
                png, seed, index, width, height, elapsed / len(items), request_id=rid
            )
        yield p.GenerationFinished(
            "stop", p.GenerationStats(elapsed_s=elapsed, seed=request.seed), rid
        )


class RemoteSpeechBackend(_RemoteMediaBackend):
    """Transcription on a server (``POST /v1/audio/transcriptions``, verbose_json);
    a request to translate goes to ``POST /v1/audio/translations`` (English text)."""

    engine = "speech"

    def _run(self, request: p.TranscribeRequest) -> Iterator[Any]:
        rid = request.request_id
        started = time.monotonic()
        temporary: Path | None = None
        try:
            if request.audio_path:
                audio = Path(request.audio_path)
                duration = _duration(audio)
            else:
                import numpy as np
                import soundfile

                samples = np.frombuffer(request.samples or b"", dtype=np.float32)
                duration = len(samples) / SAMPLE_RATE
                handle, name = tempfile.mkstemp(prefix="triptych-phrase-", suffix=".wav")
                temporary = audio = Path(name)
                with open(handle, "wb") as out:
                    soundfile.write(out, samples, SAMPLE_RATE, format="WAV", subtype="PCM_16")
            if duration is not None:
                yield p.AudioLoaded(duration, request_id=rid)
            yield from self._transcribe(request, audio, duration, started)
        except OSError as error:
            yield p.EngineFailed(
                f"cannot read the audio: {error.strerror or error}", kind="input", request_id=rid
            )
        finally:
            if temporary is not None:
                temporary.unlink(missing_ok=True)

    def _transcribe(
        self, request: p.TranscribeRequest, audio: Path, duration: float | None, started: float
    ) -> Iterator[Any]:
        rid = request.request_id
        language = request.language.strip()
        with audio.open("rb") as handle:
            params: dict[str, Any] = {
                "model": self.model,
                "file": (audio.name, handle),
                "response_format": "verbose_json",
            }
            if language and language != "auto" and not request.translate:
                params["language"] = language
            if request.initial_prompt:
                params["prompt"] = request.initial_prompt
            if request.translate:
                # /v1/audio/translations: any spoken language, English text; no language field.
                kind, result = self._call(lambda client: client.audio.translations.create(**params))
            else:
                kind, result = self._call(
                    lambda client: client.audio.transcriptions.create(**params)
                )
        elapsed = time.monotonic() - started
        ended = self._ended_early(kind, result, elapsed, rid)
        if ended is not None:
            yield ended
            return
        if duration is None and isinstance(getattr(result, "duration", None), int | float):
            yield p.AudioLoaded(float(result.duration), request_id=rid)
        segments = getattr(result, "segments", None)
        offset = request.offset_s
        if segments:
            for segment in segments:
                try:
                    start, end = float(_field(segment, "start")), float(_field(segment, "end"))
                except (TypeError, ValueError):
                    yield self._failed(ValueError("a segment without start and end times"), rid)
                    return
                text = str(_field(segment, "text") or "")
                yield p.SegmentTranscribed(offset + start, offset + end, text, request_id=rid)
        elif (getattr(result, "text", "") or "").strip():
            # A server that gives no segments: the whole text over the whole audio.
            end = float(getattr(result, "duration", None) or duration or 0.0)
            yield p.SegmentTranscribed(offset, offset + end, str(result.text), request_id=rid)
        yield p.GenerationFinished("stop", p.GenerationStats(elapsed_s=elapsed), rid)


def _field(item: Any, name: str) -> Any:
    """A field of a segment, whether the client built an object or left a dict."""
    return item.get(name) if isinstance(item, dict) else getattr(item, name, None)


def _duration(audio: Path) -> float | None:
    """Seconds of audio when libsndfile can read the header, else None."""
    import soundfile

    try:
        return float(soundfile.info(str(audio)).duration)
    except Exception:  # noqa: BLE001 - a format libsndfile lacks: the server may still decode it
        if not audio.is_file():
            raise FileNotFoundError(2, "no such file", str(audio)) from None
        return None
