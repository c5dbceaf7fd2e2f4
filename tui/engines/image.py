"""stable-diffusion.cpp side of the image engine. Runs only inside an engine process.

One model stays loaded, keyed by (model, VAE, TAESD, threads). Every file is
checked with tui.formats.image.check_image_model before sd.cpp sees it: sd.cpp
crashes on incomplete files (and a crash still only costs this process).

sd.cpp cannot abort a generation: a cancelled request is stopped by the host,
which kills this process after a short grace period; the next request starts a
fresh one. Between the images of a batch the engine stops on its own.

Callbacks: sd.cpp keeps one global progress callback and one global preview
callback. The binding installs ctypes wrappers that it lets go of when
generate_image returns, so a later call into sd.cpp (loading another model
reports progress too) would jump into freed memory. This engine installs its
own wrappers once, keeps them for the life of the process, and never passes
callbacks to the binding.

A file sd.cpp cannot use (say a VAE given as the model) makes it return a NULL
context, which the binding (0.4.7) takes for a loaded model; the engine catches
that and drops the context unfreed, since free_sd_ctx(NULL) segfaults.
"""

from __future__ import annotations

import collections
import ctypes
import io
import logging
import random
import re
import sys
import time
from collections.abc import Callable
from typing import Any

from tui.compat.stable_diffusion_cpp import drop_unloaded_context
from tui.cpu import bound_threads
from tui.engines import protocol as p
from tui.engines.channel import Channel
from tui.formats import ModelFileError
from tui.formats.image import check_image_model
from tui.imaging import ImageParams

PREVIEW_MAX_SIDE = 256
PREVIEW_MIN_INTERVAL_S = 0.25
"""Previews are sent at most this often (the UI cannot show them faster anyway)."""

SEED_LIMIT = 2**63
"""sd.cpp seeds are int64."""

_LOG_KEEP = 20

# sd.cpp's enum preview_t (PREVIEW_NONE, PREVIEW_PROJ, PREVIEW_TAE, PREVIEW_VAE).
_PREVIEW_NONE, _PREVIEW_PROJ, _PREVIEW_TAE = 0, 1, 2
# sd.cpp's enum sd_log_level_t.
_LOG_WARN, _LOG_ERROR = 2, 3


def random_seed() -> int:
    return random.randrange(2**31)


def image_png(image: Any, compress_level: int = 6) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="PNG", compress_level=compress_level)
    return out.getvalue()


class _NativeHooks:
    """sd.cpp's global log, progress and preview callbacks, installed once per process."""

    def __init__(self) -> None:
        import stable_diffusion_cpp as sd_cpp

        self.sd_cpp = sd_cpp
        self.on_progress: Callable[[int, int, float], None] | None = None
        self.on_preview: Callable[[int, Any], None] | None = None
        self.log_lines: collections.deque[str] = collections.deque(maxlen=_LOG_KEEP)
        self._partial = ""

        # References kept on self: sd.cpp holds the raw function pointers.
        self._log = sd_cpp.sd_log_callback(self._log_cb)
        self._progress = sd_cpp.sd_progress_callback(self._progress_cb)
        self._preview = sd_cpp.sd_preview_callback(self._preview_cb)
        sd_cpp.sd_set_log_callback(self._log, None)
        sd_cpp.sd_set_progress_callback(self._progress, None)
        self.set_preview(_PREVIEW_NONE)

    def set_preview(self, mode: int) -> None:
        # interval 1, denoised previews (not the noisy latents)
        self.sd_cpp.sd_set_preview_callback(self._preview, mode, 1, True, False, None)

    # The callbacks must never raise: ctypes would print and swallow the exception.

    def _log_cb(self, level: int, text: bytes | None, _data: Any) -> None:
        if level < _LOG_WARN or not text:
            return
        try:
            line = text.decode("utf-8", errors="replace")
            self._partial += line
            if not self._partial.endswith("\n"):
                return
            for piece in self._partial.splitlines():
                if piece.strip():
                    self.log_lines.append(("error: " if level >= _LOG_ERROR else "") + piece)
                    print(f"sd.cpp: {piece}", file=sys.stderr, flush=True)
            self._partial = ""
        except Exception:  # noqa: BLE001
            pass

    def _progress_cb(self, step: int, steps: int, seconds: float, _data: Any) -> None:
        handler = self.on_progress
        if handler is not None:
            try:
                handler(step, steps, seconds)
            except Exception:  # noqa: BLE001
                pass

    def _preview_cb(self, step: int, count: int, frames: Any, _noisy: bool, _data: Any) -> None:
        handler = self.on_preview
        if handler is None or count < 1 or not frames:
            return
        try:
            frame = frames[0]
            width, height, channels = frame.width, frame.height, frame.channel
            if width <= 0 or height <= 0 or channels not in (1, 3, 4) or not frame.data:
                return

            def pixels() -> Any:
                from PIL import Image

                raw = ctypes.string_at(frame.data, width * height * channels)
                mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
                return Image.frombytes(mode, (width, height), raw)

            handler(step, pixels)
        except Exception:  # noqa: BLE001
            pass

    def last_error(self) -> str:
        """sd.cpp's last error (or warning) line, without its source location, or ""."""
        errors = [line[len("error: ") :] for line in self.log_lines if line.startswith("error: ")]
        text = errors[-1] if errors else (self.log_lines[-1] if self.log_lines else "")
        text = re.sub(r"^\S+\.(?:cpp|hpp|h|c):\d+\s*-\s*", "", text.strip())
        if text.startswith("get sd version from file failed"):
            return (
                "sd.cpp does not recognise it as a Stable Diffusion model"
                " (a VAE, a TAESD or a language model cannot be the model)"
            )
        return " ".join(text.split())


class ImageEngine:
    def __init__(self) -> None:
        self.sd: Any = None
        self.key: tuple[Any, ...] | None = None
        self._hooks: _NativeHooks | None = None

    @property
    def hooks(self) -> _NativeHooks:
        if self._hooks is None:
            self._hooks = _NativeHooks()
        return self._hooks

    # --- loading ------------------------------------------------------------

    def _load(self, request: p.ImageRequest, channel: Channel) -> bool:
        threads = bound_threads(request.n_threads)
        key = (
            request.model_path,
            request.vae_path,
            request.taesd_path,
            threads,
            request.offload_to_cpu,
            request.keep_clip_on_cpu,
            request.keep_vae_on_cpu,
        )
        if self.sd is not None and self.key == key:
            return True
        # Check every file before unloading: a bad pick keeps the loaded model.
        try:
            for path in (request.model_path, request.vae_path, request.taesd_path):
                if path:
                    check_image_model(path)
        except ModelFileError as error:
            channel.emit(p.EngineFailed(str(error), "model", request.request_id))
            return False
        self._unload()
        hooks = self.hooks
        hooks.log_lines.clear()
        from stable_diffusion_cpp import StableDiffusion  # only engine processes load it

        started = time.perf_counter()
        try:
            # verbose=True only stops the binding from redirecting fds 1 and 2 around
            # every call; what sd.cpp logs goes through our own log callback.
            self.sd = StableDiffusion(
                model_path=request.model_path,
                vae_path=request.vae_path,
                taesd_path=request.taesd_path,
                n_threads=threads,
                offload_params_to_cpu=request.offload_to_cpu,
                keep_clip_on_cpu=request.keep_clip_on_cpu,
                keep_vae_on_cpu=request.keep_vae_on_cpu,
                verbose=True,
            )
        except (ValueError, RuntimeError, OSError) as error:
            self.sd = None
            self._load_failed(request, channel, hooks.last_error() or str(error))
            return False
        # The binding misses a failed load (a NULL context); closing one would crash.
        if not drop_unloaded_context(self.sd):
            self.sd = None
            self._load_failed(request, channel, hooks.last_error() or "sd.cpp could not load it")
            return False
        # The binding prints sd.cpp's system info to stdout on every generation when its
        # logger is verbose; our log callback has replaced its sd.cpp logging anyway.
        logging.getLogger("stable-diffusion-cpp-python").setLevel(logging.ERROR)
        self.key = key
        channel.emit(
            p.ModelLoaded(
                model_path=request.model_path, load_s=time.perf_counter() - started, n_ctx=0
            )
        )
        return True

    @staticmethod
    def _load_failed(request: p.ImageRequest, channel: Channel, detail: str) -> None:
        channel.emit(
            p.EngineFailed(
                f"could not load {request.model_path}: {detail}", "model", request.request_id
            )
        )

    def _unload(self) -> None:
        if self.sd is not None:
            self.sd.close()
        self.sd = self.key = None

    # --- requests -----------------------------------------------------------

    def handle(self, request: Any, channel: Channel) -> None:
        if isinstance(request, p.Unload):
            self._unload()
        elif isinstance(request, p.ImageRequest):
            self.generate(request, channel)
        else:
            channel.emit(p.EngineFailed(f"unknown request {type(request).__name__}", "internal"))

    def _check_input(self, request: p.ImageRequest, channel: Channel) -> tuple[bool, Any]:
        """Validate the parameters; return (ok, init image as PIL or None)."""
        params = ImageParams(
            prompt=request.prompt,
            width=request.width,
            height=request.height,
            steps=request.steps,
            cfg_scale=request.cfg_scale,
            sampler=request.sampler,
            scheduler=request.scheduler,
            seed=request.seed,
            batch_count=request.batch_count,
            strength=request.strength,
        )
        try:
            params.validate()
        except ValueError as error:
            channel.emit(p.EngineFailed(str(error), "input", request.request_id))
            return False, None
        if request.init_image is None:
            return True, None
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(request.init_image)) as image:
                return True, image.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError) as error:
            message = f"the init image is not an image ({error})"
            channel.emit(p.EngineFailed(message, "input", request.request_id))
            return False, None

    def generate(self, request: p.ImageRequest, channel: Channel) -> None:
        ok, init = self._check_input(request, channel)
        if not ok:
            return
        if not self._load(request, channel):
            return
        hooks = self.hooks
        rid = request.request_id
        base_seed = request.seed if request.seed >= 0 else random_seed()
        preview_mode = _PREVIEW_NONE
        if request.preview:
            preview_mode = _PREVIEW_TAE if request.taesd_path else _PREVIEW_PROJ
        hooks.set_preview(preview_mode)

        started = time.perf_counter()
        state = {"index": 0, "last": started, "preview_at": 0.0}

        def on_progress(step: int, steps: int, seconds: float) -> None:
            now = time.perf_counter()
            if step <= 0:  # sampling starts (after the prompt is encoded)
                state["last"] = now
                return
            step_s = now - state["last"]
            state["last"] = now
            if channel.cancelled.is_set():
                return  # the host kills us shortly; spare the pipe
            channel.emit(p.StepProgressed(step, steps, step_s, int(state["index"]), rid))

        def on_preview(step: int, pixels: Callable[[], Any]) -> None:
            now = time.perf_counter()
            if channel.cancelled.is_set() or now - state["preview_at"] < PREVIEW_MIN_INTERVAL_S:
                return
            image = pixels()
            image.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
            channel.emit(p.PreviewUpdated(image_png(image, compress_level=1), step, rid))
            state["preview_at"] = time.perf_counter()

        hooks.on_progress = on_progress
        hooks.on_preview = on_preview if preview_mode != _PREVIEW_NONE else None
        reason = "stop"
        try:
            # One call per image, seeds base, base+1, ... exactly as the binding's own
            # batch_count does; this way each image is sent as soon as it is done and a
            # cancelled batch stops between images.
            for index in range(request.batch_count):
                if channel.cancelled.is_set():
                    reason = "cancelled"
                    break
                seed = (base_seed + index) % SEED_LIMIT
                state["index"] = index
                image_started = time.perf_counter()
                hooks.log_lines.clear()
                try:
                    images = self.sd.generate_image(
                        prompt=request.prompt,
                        negative_prompt=request.negative_prompt,
                        init_image=init,
                        width=request.width,
                        height=request.height,
                        cfg_scale=request.cfg_scale,
                        sample_method=request.sampler,
                        scheduler=request.scheduler,
                        sample_steps=request.steps,
                        strength=request.strength,
                        seed=seed,
                        batch_count=1,
                    )
                except (ValueError, RuntimeError, OSError) as error:
                    detail = hooks.last_error()
                    message = f"image generation failed: {error}"
                    if detail:
                        message += f" (sd.cpp: {detail})"
                    channel.emit(p.EngineFailed(message, "internal", rid))
                    return
                if not images:
                    channel.emit(p.EngineFailed("sd.cpp returned no image", "internal", rid))
                    return
                image = images[0]
                channel.emit(
                    p.ImageGenerated(
                        png=image_png(image),
                        seed=seed,
                        index=index,
                        width=image.width,
                        height=image.height,
                        seconds=time.perf_counter() - image_started,
                        request_id=rid,
                    )
                )
        finally:
            hooks.on_progress = hooks.on_preview = None
        stats = p.GenerationStats(elapsed_s=time.perf_counter() - started, seed=base_seed)
        channel.emit(p.GenerationFinished(reason, stats, rid))
