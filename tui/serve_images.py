"""``triptych serve``'s image endpoints beyond ``/v1/images/generations``.

- ``POST /v1/images/edits``: image-to-image in OpenAI's multipart shape (an ``image``
  file, ``prompt``, ``size``, ``n``, ``response_format`` b64_json), with the same extra
  fields as generations (``negative_prompt``, ``steps``, ``cfg_scale``, ``seed``,
  ``sampler``, ``scheduler``) and ``strength`` as form fields.
- stable-diffusion.cpp's native job API, as sd-server serves it: ``GET
  /sdcpp/v1/capabilities``, ``POST /sdcpp/v1/img_gen`` (202 and a job), ``GET
  /sdcpp/v1/jobs/{id}`` and ``POST /sdcpp/v1/jobs/{id}/cancel``. Unlike sd-server this
  cancels a generating job too, and a generating job's document has two extra fields:
  ``progress`` {step, steps} and ``preview`` (the latest preview, base64 PNG).

Jobs wait their turn on the image engine like every other request. Finished jobs are
kept for JOB_KEEP_S (at most JOBS_KEPT of them); after that their id answers 410.
Requests are built with :func:`tui.services.imagine.build_request`, as everywhere.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from tui.config import Settings
from tui.engines import protocol as p

JOB_KEEP_S = 600.0
"""How long a finished job can still be read."""
JOBS_KEPT = 64
"""Most finished jobs kept; older ones are forgotten first."""
EXPIRED_KEPT = 4096
"""Most forgotten job ids remembered (to answer 410 rather than 404)."""
MAX_QUEUED = 64
"""Most jobs waiting at once; more are refused with 429."""


@dataclass
class Job:
    """One native img_gen job and what is known of it."""

    id: str
    params: Any
    """The ImageParams it runs (init_image: a temporary file, removed once the request is built)."""
    request: Any
    created: int = field(default_factory=lambda: int(time.time()))
    status: str = "queued"
    started: int | None = None
    completed: int | None = None
    finished_at: float = 0.0
    step: int = 0
    steps: int = 0
    preview: str = ""
    images: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, str] | None = None
    task: asyncio.Task[None] | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed", "cancelled")

    def end(self, status: str, code: str = "", message: str = "") -> None:
        self.status = status
        self.completed = int(time.time())
        self.finished_at = time.monotonic()
        self.preview = ""
        if message:
            self.error = {"code": code, "message": message}


class Jobs:
    """The jobs of one server, in order of submission."""

    def __init__(self) -> None:
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.expired: OrderedDict[str, None] = OrderedDict()

    def add(self, job: Job) -> None:
        self.purge()
        self.jobs[job.id] = job

    def waiting(self) -> int:
        return sum(1 for job in self.jobs.values() if job.status == "queued")

    def ahead_of(self, job: Job) -> int:
        """Jobs before ``job`` that still hold or wait for the engine."""
        count = 0
        for other in self.jobs.values():
            if other is job:
                break
            if other.status in ("queued", "generating"):
                count += 1
        return count

    def purge(self) -> None:
        """Forget finished jobs older than JOB_KEEP_S, and all but the last JOBS_KEPT."""
        now = time.monotonic()
        finished = [job for job in self.jobs.values() if job.finished]
        for index, job in enumerate(finished):
            if now - job.finished_at > JOB_KEEP_S or index < len(finished) - JOBS_KEPT:
                del self.jobs[job.id]
                self.expired[job.id] = None
        while len(self.expired) > EXPIRED_KEPT:
            self.expired.popitem(last=False)

    def document(self, job: Job) -> dict[str, Any]:
        """The job as GET /sdcpp/v1/jobs/{id} answers it."""
        body: dict[str, Any] = {
            "id": job.id,
            "kind": "img_gen",
            "status": job.status,
            "created": job.created,
            "started": job.started,
            "completed": job.completed,
            "queue_position": self.ahead_of(job) if job.status == "queued" else 0,
            "result": None,
            "error": job.error,
        }
        if job.status == "completed":
            body["result"] = {"output_format": "png", "images": job.images}
        if job.status == "generating":
            body["progress"] = {"step": job.step, "steps": job.steps}
            if job.preview:
                body["preview"] = job.preview
        return body


def _decode_image(text: str) -> bytes:
    """A raw base64 string or a data URL as bytes; ValueError when it is neither."""
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("init_image is not base64 or a data URL") from None


def _write_temporary(data: bytes, suffix: str = ".png") -> Path:
    handle, name = tempfile.mkstemp(prefix="triptych-serve-", suffix=suffix)
    with open(handle, "wb") as out:
        out.write(data)
    return Path(name)


def add_image_routes(
    app: FastAPI, engines: Any, image_model: Path | None, settings: Callable[[], Settings]
) -> None:
    """Add the edits endpoint and the native job API for ``image_model`` to ``app``."""
    from tui import serve as s

    jobs = Jobs()

    def checked_model(requested: Any = None) -> Path:
        s._check_model(requested, image_model, "image")
        assert image_model is not None
        return image_model

    async def engine_request(params: Any, init: bytes | None, preview: bool) -> Any:
        """The engine request for ``params`` (with ``init`` as its init image), checked."""
        from tui.formats import ModelFileError
        from tui.formats.image import check_image_model
        from tui.services.imagine import build_request

        current = settings()
        try:
            for path in (params.model, params.vae, params.taesd):
                if path:
                    check_image_model(path)
        except ModelFileError as error:
            raise s.ApiError(500, str(error), kind="server_error", code="model_error") from error
        if init is None:
            return build_request(params, current, preview=preview, threads=engines.threads)
        source = await asyncio.to_thread(_write_temporary, init)
        try:
            return await asyncio.to_thread(
                build_request,
                replace(params, init_image=str(source)),
                current,
                preview,
                engines.threads,
            )
        except ValueError as error:
            raise s.ApiError(400, f"the init image cannot be read: {error}") from None
        finally:
            source.unlink(missing_ok=True)

    # --- OpenAI: /v1/images/edits ---------------------------------------------------------

    @app.post("/v1/images/edits")
    async def images_edits(
        request: Request,
        image: UploadFile,
        prompt: str = Form(""),
        model: str = Form(""),
        size: str = Form(""),
        n: int = Form(1),
        response_format: str = Form("b64_json"),
        negative_prompt: str = Form(""),
        steps: int = Form(20),
        cfg_scale: float = Form(7.0),
        seed: int = Form(-1),
        sampler: str = Form("default"),
        scheduler: str = Form("default"),
        strength: float = Form(0.75),
    ) -> Response:
        """Image-to-image: the uploaded image, changed as the prompt says."""

        served = checked_model(model or None)
        init = await image.read()
        if not size:
            # The init image's own size (the engine needs multiples of 64).
            try:
                from io import BytesIO

                from PIL import Image

                with Image.open(BytesIO(init)) as opened:
                    width, height = opened.size
            except (OSError, ValueError, Image.DecompressionBombError):
                raise s.ApiError(400, "the image is not an image file", param="image") from None
            size = f"{max(64, width // 64 * 64)}x{max(64, height // 64 * 64)}"
        body = {
            "prompt": prompt,
            "size": size,
            "n": n,
            "response_format": response_format,
            "negative_prompt": negative_prompt,
            "steps": steps,
            "cfg_scale": cfg_scale,
            "seed": seed,
            "sampler": sampler,
            "scheduler": scheduler,
        }
        params = s._image_params(body, served, settings())
        params = replace(params, strength=strength)
        try:
            params.validate()
        except ValueError as error:
            raise s.ApiError(400, str(error)) from error
        made = await engine_request(params, init, preview=False)
        return await s.images_response(engines, made, params, request)

    # --- stable-diffusion.cpp's native job API ---------------------------------------------

    def native_error(status: int, error: str, message: str = "") -> JSONResponse:
        """An error in sd-server's shape: {"error": "...", "message": "..."}."""
        body = {"error": error, **({"message": message} if message else {})}
        return JSONResponse(body, status_code=status)

    @app.get("/sdcpp/v1/capabilities")
    async def capabilities() -> Response:
        from tui import imaging

        if image_model is None:
            return native_error(404, "no image model is configured on this server")
        features = {
            "init_image": True,
            "mask_image": False,
            "control_image": False,
            "ref_images": False,
            "lora": False,
            "vae_tiling": False,
            "hires": False,
            "cache": False,
            "cancel_queued": True,
            "cancel_generating": True,
        }
        defaults = {
            "prompt": "",
            "negative_prompt": "",
            "width": 512,
            "height": 512,
            "strength": 0.75,
            "seed": -1,
            "batch_count": 1,
            "sample_params": {
                "sample_method": "default",
                "scheduler": "default",
                "sample_steps": 20,
                "guidance": {"txt_cfg": 7.0},
            },
            "output_format": "png",
        }
        return JSONResponse(
            {
                # The file name only: the server's folders are not the client's business.
                "model": {
                    "name": image_model.name,
                    "stem": image_model.stem,
                    "path": image_model.name,
                },
                "current_mode": "img_gen",
                "supported_modes": ["img_gen"],
                "defaults": defaults,
                "output_formats": ["png"],
                "features": features,
                "defaults_by_mode": {"img_gen": defaults},
                "output_formats_by_mode": {"img_gen": ["png"]},
                "features_by_mode": {"img_gen": features},
                "samplers": list(imaging.SAMPLERS),
                "schedulers": list(imaging.SCHEDULERS),
                "loras": [],
                "upscalers": [],
                "limits": {
                    "min_width": 64,
                    "max_width": imaging.MAX_SIDE,
                    "min_height": 64,
                    "max_height": imaging.MAX_SIDE,
                    "max_batch_count": imaging.MAX_BATCH,
                    "max_queue_size": MAX_QUEUED,
                },
            }
        )

    def native_params(body: dict[str, Any], served: Path) -> tuple[Any, bytes | None]:
        """ImageParams and the init image's bytes for a native request body."""
        from tui import imaging

        number = (int, float)
        sample = s._body_field(body, "sample_params", dict, {})
        guidance = s._body_field(sample, "guidance", dict, {})
        init_text = s._body_field(body, "init_image", str, "")
        current = settings()
        params = imaging.ImageParams(
            prompt=s._body_field(body, "prompt", str, ""),
            negative_prompt=s._body_field(body, "negative_prompt", str, ""),
            model=str(served),
            vae=current.image_vae,
            taesd=current.image_taesd,
            width=s._body_field(body, "width", int, 512),
            height=s._body_field(body, "height", int, 512),
            steps=s._body_field(sample, "sample_steps", int, 20),
            cfg_scale=float(s._body_field(guidance, "txt_cfg", number, 7.0)),
            sampler=s._body_field(sample, "sample_method", str, "default"),
            scheduler=s._body_field(sample, "scheduler", str, "default"),
            seed=s._body_field(body, "seed", int, -1),
            batch_count=s._body_field(body, "batch_count", int, 1),
            strength=float(s._body_field(body, "strength", number, 0.75)),
        )
        try:
            params.validate()
            init = _decode_image(init_text) if init_text else None
        except ValueError as error:
            raise s.ApiError(400, str(error)) from error
        return params, init

    async def run_job(job: Job) -> None:
        """Run ``job`` on the image engine when its turn comes, recording what happens."""
        from tui import imaging

        def started() -> None:
            job.status = "generating"
            job.started = int(time.time())

        try:
            async for event in engines.events("image", job.request, started=started):
                if isinstance(event, p.StepProgressed):
                    job.step, job.steps = event.step, event.steps
                elif isinstance(event, p.PreviewUpdated):
                    job.preview = base64.b64encode(event.png).decode("ascii")
                elif isinstance(event, p.ImageGenerated):
                    used = replace(job.params, seed=event.seed, batch_count=1)
                    png = await asyncio.to_thread(imaging.png_with_params, event.png, used)
                    job.images.append(
                        {"index": event.index, "b64_json": base64.b64encode(png).decode("ascii")}
                    )
                elif isinstance(event, p.EngineFailed):
                    job.end("failed", f"engine_{event.kind}", event.message)
                elif isinstance(event, p.GenerationFinished):
                    if event.reason == "stop":
                        job.end("completed")
                    else:
                        job.end("cancelled", "cancelled", "job cancelled")
        except asyncio.CancelledError:
            job.end("cancelled", "cancelled", "job cancelled by client")
            return
        except Exception as error:  # noqa: BLE001 - the job records it as its error
            job.end("failed", "server_error", str(error))
            return
        if not job.finished:
            job.end("failed", "generation_failed", "the image engine ended without a result")

    @app.post("/sdcpp/v1/img_gen")
    async def img_gen(request: Request) -> Response:
        if image_model is None:
            return native_error(400, "no image model is configured on this server")
        try:
            body = await s._json_body(request)
            params, init = native_params(body, image_model)
            made = await engine_request(params, init, preview=True)
        except s.ApiError as error:
            return native_error(error.status, "invalid generation parameters", error.message)
        jobs.purge()
        if jobs.waiting() >= MAX_QUEUED:
            return native_error(429, "job queue is full")
        job = Job(f"job_{secrets.token_hex(8)}", replace(params, init_image=""), made)
        jobs.add(job)
        job.task = asyncio.create_task(run_job(job))
        return JSONResponse(
            {
                "id": job.id,
                "kind": "img_gen",
                "status": job.status,
                "created": job.created,
                "poll_url": f"/sdcpp/v1/jobs/{job.id}",
            },
            status_code=202,
        )

    def find(job_id: str) -> Job | JSONResponse:
        jobs.purge()
        job = jobs.jobs.get(job_id)
        if job is not None:
            return job
        if job_id in jobs.expired:
            return native_error(410, "job expired")
        return native_error(404, "job not found")

    @app.get("/sdcpp/v1/jobs/{job_id}")
    async def job_status(job_id: str) -> Response:
        found = find(job_id)
        if isinstance(found, JSONResponse):
            return found
        return JSONResponse(jobs.document(found))

    @app.post("/sdcpp/v1/jobs/{job_id}/cancel")
    async def job_cancel(job_id: str) -> Response:
        """Cancel a queued or generating job; a finished one is answered as it is."""
        found = find(job_id)
        if isinstance(found, JSONResponse):
            return found
        task = found.task
        if not found.finished and task is not None:
            task.cancel()
            # Leaving the engine's events cancels the engine's request (host.cancel()).
            await asyncio.wait({task}, timeout=5.0)
        return JSONResponse(jobs.document(found))
