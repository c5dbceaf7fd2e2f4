"""stable-diffusion.cpp's native job API (``/sdcpp/v1``) of sd-server and ``triptych serve``.

A generation is a job: ``POST /sdcpp/v1/img_gen`` answers 202 with its id, ``GET
/sdcpp/v1/jobs/{id}`` tells its status (queued, generating, completed, failed,
cancelled) and ``POST /sdcpp/v1/jobs/{id}/cancel`` cancels it. sd-server can cancel
a queued job only (409 for one that is generating); ``triptych serve`` cancels both
and adds ``progress`` {step, steps} and ``preview`` (base64 PNG) to a generating
job's document. These URLs sit at the server's root, while a configured base URL
normally ends in ``/v1``.

:func:`run_job` turns one job into the protocol events of the image engine, using
the backend's cancellable request runner; this module only knows the API.
"""

from __future__ import annotations

import base64
import binascii
import functools
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tui.backends.servers import BackendError, ServerConfig
from tui.engines import protocol as p
from tui.safe_text import one_line

PROBE_TIMEOUT_S = 3.0
"""Longest wait for GET /sdcpp/v1/capabilities when the image API is 'auto'."""
POLL_INTERVAL_S = 0.25
"""How often a job's status is read."""
CANCEL_TIMEOUT_S = 0.8
"""Longest wait for the answer to a cancel, so that Stop ends within a second."""
STILL_RUNNING_NOTE = "the server cannot stop a job it is generating: it finishes it on its own"
"""The note of a stop that left a job generating on the server."""
_MAX_DETAIL = 200


def api_root(url: str) -> str:
    """The server's root for a configured base URL (``http://h:8080/v1`` -> ``http://h:8080``)."""
    parts = urlsplit(url.rstrip("/"))
    path = parts.path
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


@functools.cache
def _tls() -> Any:
    """One TLS context for every client: building one takes tens of milliseconds."""
    import httpx2

    return httpx2.create_ssl_context()


def _client(api_key: str, timeout: float, asynchronous: bool = False) -> Any:
    """An httpx2 client sending the API key, with the shared TLS context."""
    import httpx2

    kind = httpx2.AsyncClient if asynchronous else httpx2.Client
    return kind(timeout=timeout, headers=headers(api_key), verify=_tls())


def headers(api_key: str) -> dict[str, str]:
    """The request headers: the API key as a bearer token when there is one."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def speaks_native(server: ServerConfig, api_key: str) -> bool | None:
    """Whether ``server`` offers the native img_gen mode: True, False, or None when it
    could not be asked (unreachable): the caller then tries the OpenAI endpoints.
    """
    import httpx2

    url = f"{api_root(server.url)}/sdcpp/v1/capabilities"
    timeout = min(PROBE_TIMEOUT_S, server.timeout_s)
    try:
        with _client(api_key, timeout) as client:
            response = client.get(url)
    except httpx2.HTTPError:
        return None
    if response.status_code != 200:
        return False
    try:
        modes = response.json().get("supported_modes")
    except (ValueError, AttributeError):
        return False
    return isinstance(modes, list) and "img_gen" in modes


def job_body(request: p.ImageRequest) -> dict[str, Any]:
    """The native request body for ``request`` (init image as raw base64 PNG)."""
    sample: dict[str, Any] = {
        "sample_steps": request.steps,
        "guidance": {"txt_cfg": request.cfg_scale},
    }
    # 'default' leaves the choice to the server, as the local engine does.
    if request.sampler and request.sampler != "default":
        sample["sample_method"] = request.sampler
    if request.scheduler and request.scheduler != "default":
        sample["scheduler"] = request.scheduler
    body: dict[str, Any] = {
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "width": request.width,
        "height": request.height,
        "seed": request.seed,
        "batch_count": request.batch_count,
        "sample_params": sample,
        "output_format": "png",
    }
    if request.init_image is not None:
        body["init_image"] = base64.b64encode(request.init_image).decode("ascii")
        body["strength"] = request.strength
    return body


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) of a PNG; ValueError or OSError when ``png`` is not one."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        if image.format != "PNG":
            raise ValueError(f"the server sent a {image.format} image, not a PNG")
        return image.size


def _png_seed(png: bytes) -> int:
    """The seed a PNG's "parameters" text names ("..., Seed: 42, ..."), or -1."""
    import io
    import re

    from PIL import Image

    try:
        with Image.open(io.BytesIO(png)) as image:
            text = str(image.info.get("parameters", ""))
    except (OSError, ValueError):
        return -1
    found = re.search(r"\bSeed: (\d+)", text)
    return int(found.group(1)) if found else -1


def _detail(text: Any) -> str:
    line = one_line(str(text))
    return line if len(line) <= _MAX_DETAIL else line[: _MAX_DETAIL - 1] + "…"


def answer_message(response: Any) -> str:
    """What an error answer says: sd-server's {"error": "...", "message": "..."}, the
    OpenAI shape {"error": {"message"}}, or FastAPI's {"detail"}; '' when nothing."""
    try:
        body = response.json()
    except ValueError:
        return _detail(response.text) if response.text.strip() else ""
    if not isinstance(body, dict):
        return ""
    error = body.get("error")
    if isinstance(error, dict):
        error = error.get("message") or error.get("code")
    parts = [str(part) for part in (error, body.get("message"), body.get("detail")) if part]
    return _detail(": ".join(parts))


class NativeError(BackendError):
    """A native API request that failed, in one line naming the server."""


def describe_transport(error: BaseException, server: ServerConfig) -> str:
    """One line for an httpx2 error (no answer, or an unreadable one)."""
    import httpx2

    where = f"server {server.name} ({server.url})"
    if isinstance(error, NativeError):
        return str(error)
    if isinstance(error, httpx2.TimeoutException):
        return f"{where} did not answer within {server.timeout_s:g} s"
    if isinstance(error, httpx2.ConnectError):
        cause: BaseException | None = error
        while cause is not None:
            if isinstance(cause, ConnectionRefusedError):
                return f"cannot connect to {where}: connection refused"
            cause = cause.__cause__ or cause.__context__
        return f"cannot reach {where}: {_detail(error) or type(error).__name__}"
    if isinstance(error, httpx2.HTTPError):
        return f"cannot reach {where}: {_detail(error) or type(error).__name__}"
    return f"{where} sent something unreadable: {type(error).__name__}: {_detail(error)}"


def _checked(response: Any, server: ServerConfig, what: str) -> dict[str, Any]:
    """The JSON object of a 2xx answer; NativeError (one line) for anything else."""
    where = f"server {server.name} ({server.url})"
    if response.status_code in (401, 403):
        message = answer_message(response)
        raise NativeError(
            f"{where} refused the API key (HTTP {response.status_code}; sent"
            f" {server.key_source()})" + (f": {message}" if message else "")
        )
    if not 200 <= response.status_code < 300:
        message = answer_message(response) or "no message"
        raise NativeError(f"{where} answered HTTP {response.status_code} to {what}: {message}")
    try:
        body = response.json()
    except ValueError:
        raise NativeError(f"{where} answered {what} with something that is not JSON") from None
    if not isinstance(body, dict):
        raise NativeError(f"{where} answered {what} with JSON that is not an object")
    return body


def cancel_job(server: ServerConfig, api_key: str, job_id: str) -> int | None:
    """Ask the server to cancel job ``job_id``: the HTTP status, or None without an answer.

    Synchronous with a short timeout, for use after the running request was stopped.
    """
    import httpx2

    url = f"{api_root(server.url)}/sdcpp/v1/jobs/{job_id}/cancel"
    try:
        with _client(api_key, CANCEL_TIMEOUT_S) as client:
            return client.post(url).status_code
    except httpx2.HTTPError:
        return None


def run_job(backend: Any, request: p.ImageRequest) -> Iterator[Any]:
    """Submit ``request`` as a job on ``backend.server`` and follow it to its end.

    ``backend`` is a RemoteImageBackend: its ``_call(work, client)`` runs one request
    and returns ('ok' | 'error' | 'cancelled', result). Yields WaitingForCpu while the
    job is queued, StepProgressed / PreviewUpdated when the server reports them,
    ImageGenerated per image, and GenerationFinished or EngineFailed last.
    """

    server: ServerConfig = backend.server
    api_key: str = backend._api_key
    rid = request.request_id
    root = api_root(server.url)
    started = time.monotonic()

    def client() -> Any:
        return _client(api_key, server.timeout_s, asynchronous=True)

    def failed(error: BaseException) -> p.EngineFailed:
        return p.EngineFailed(describe_transport(error, server), kind="crash", request_id=rid)

    def finished(reason: str, note: str = "") -> p.GenerationFinished:
        stats = p.GenerationStats(elapsed_s=time.monotonic() - started, seed=request.seed)
        return p.GenerationFinished(reason, stats, rid, note=note)

    body = job_body(request)

    async def submit(http: Any) -> dict[str, Any]:
        return _checked(await http.post(f"{root}/sdcpp/v1/img_gen", json=body), server, "img_gen")

    kind, result = backend._call(submit, client)
    if kind == "cancelled":
        yield finished("cancelled")
        return
    if kind == "error":
        yield failed(result)
        return
    job_id = str(result.get("id") or "")
    if not job_id or not job_id.replace("_", "").replace("-", "").isalnum():
        yield failed(NativeError(f"server {server.name} answered img_gen without a job id"))
        return
    backend.job_id = job_id

    async def poll(http: Any) -> dict[str, Any]:
        return _checked(await http.get(f"{root}/sdcpp/v1/jobs/{job_id}"), server, "a job poll")

    def stopped() -> p.GenerationFinished:
        status = cancel_job(server, api_key, job_id)
        return finished("cancelled", "" if status == 200 else STILL_RUNNING_NOTE)

    last_wait: int | None = None
    last_step = (0, 0)
    last_preview = ""
    step_started = time.monotonic()
    while True:
        kind, job = backend._call(poll, client)
        if kind == "cancelled" or backend._cancelled.is_set():
            yield stopped()
            return
        if kind == "error":
            yield failed(job)
            return
        status = job.get("status")
        if status == "queued":
            position = job.get("queue_position")
            ahead = position if isinstance(position, int) and position > 0 else 1
            if ahead != last_wait:
                last_wait = ahead
                jobs = "job" if ahead == 1 else "jobs"
                yield p.WaitingForCpu([f"server {server.name}, {ahead} {jobs} ahead"], rid)
        elif status == "generating":
            if last_wait is not None:
                last_wait = None
                yield p.CpuGranted(time.monotonic() - started, rid)
            progress = job.get("progress")
            if isinstance(progress, dict):
                step, steps = progress.get("step"), progress.get("steps")
                if isinstance(step, int) and isinstance(steps, int) and (step, steps) != last_step:
                    now = time.monotonic()
                    seconds = (now - step_started) / max(step - last_step[0], 1)
                    step_started, last_step = now, (step, steps)
                    yield p.StepProgressed(step, steps, seconds, request_id=rid)
            preview = job.get("preview")
            if isinstance(preview, str) and preview and preview != last_preview:
                last_preview = preview
                try:
                    png = base64.b64decode(preview, validate=True)
                except binascii.Error:
                    png = b""
                if png:
                    yield p.PreviewUpdated(png, last_step[0], request_id=rid)
        elif status == "completed":
            yield from _images(job, request, server, time.monotonic() - started)
            return
        elif status == "failed":
            error = job.get("error")
            message = error.get("message") if isinstance(error, dict) else error
            yield p.EngineFailed(
                f"server {server.name} could not make the image: "
                + (_detail(message) if message else "no reason given"),
                kind="crash",
                request_id=rid,
            )
            return
        elif status == "cancelled":
            yield finished("cancelled")
            return
        else:
            yield failed(NativeError(f"server {server.name} sent a job status {status!r}"))
            return
        if backend._cancelled.wait(POLL_INTERVAL_S):
            yield stopped()
            return


def _images(
    job: dict[str, Any], request: p.ImageRequest, server: ServerConfig, elapsed: float
) -> Iterator[Any]:
    """ImageGenerated per image of a completed job, then GenerationFinished."""
    rid = request.request_id
    result = job.get("result")
    images = result.get("images") if isinstance(result, dict) else None
    if not isinstance(images, list) or not images:
        yield p.EngineFailed(f"server {server.name} sent no image", kind="crash", request_id=rid)
        return
    for position, item in enumerate(images):
        index = item.get("index", position) if isinstance(item, dict) else position
        index = index if isinstance(index, int) else position
        try:
            if not isinstance(item, dict):
                raise ValueError("not an object")
            png = base64.b64decode(item.get("b64_json") or "", validate=True)
            width, height = png_size(png)
        except (binascii.Error, ValueError, OSError) as error:
            yield p.EngineFailed(
                f"server {server.name} sent an unreadable image {position + 1}: {_detail(error)}",
                kind="crash",
                request_id=rid,
            )
            return
        # sd-server numbers seeds as the local engine does: one more per image.
        seed = request.seed + index if request.seed >= 0 else _png_seed(png)
        yield p.ImageGenerated(
            png, seed, index, width, height, elapsed / len(images), request_id=rid
        )
    yield p.GenerationFinished("stop", p.GenerationStats(elapsed_s=elapsed, seed=request.seed), rid)
