"""The Imagine panel's domain: parameters, presets, generating, saving, the gallery.

:class:`ImagineService` builds the image request (through
:func:`tui.imaging.image_request`, the one builder), runs it on the image
engine, writes each image as a PNG with its parameters and records it in the
store. Progress, previews and saved images are announced as the events below.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from tui import imaging, locations
from tui.backends.select import image_backend_for, is_remote
from tui.backends.servers import BackendError
from tui.cpu import describe_wait
from tui.engines import protocol as p
from tui.formats.image import check_image_model
from tui.imaging import ImageParams
from tui.services.base import Service
from tui.store import ImageRecord, StoreError

BUILTIN_PRESETS: dict[str, dict[str, Any]] = {
    "Turbo (SD-Turbo, SDXS)": {
        "steps": 2,
        "cfg_scale": 1.0,
        "sampler": "euler_a",
        "scheduler": "default",
    },
    "Quality": {"steps": 30, "cfg_scale": 7.0, "sampler": "dpm++2m", "scheduler": "karras"},
}
PRESET_FIELDS = ("width", "height", "steps", "cfg_scale", "sampler", "scheduler")

GALLERY_PAGE = 100
"""Images the gallery reads at a time."""


STOP_GRACE_S = 0.3
"""How long a stopped local generation may take to end on its own before it is killed."""


def images_dir() -> Path:
    return locations.data_dir() / "images"


def image_file_name(seed: int, index: int) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{seed}-{index + 1}.png"


def build_request(
    params: ImageParams, settings: Any, preview: bool = True, threads: int | None = None
) -> Any:
    """The image engine request for ``params``, for the panel and the CLI alike.

    ``threads`` defaults to the settings'. Blocks: reads the init image. Raises
    ValueError when the init image cannot be read.
    """
    init_png = None
    if params.init_image:
        init_png, _, _ = imaging.load_image_bytes(Path(params.init_image).expanduser())
    return imaging.image_request(
        params,
        init_png,
        settings.threads if threads is None else threads,
        preview=preview,
        **imaging.gpu_options(settings),
    )


def describe_image_wait(event: p.WaitingForCpu, remote: bool) -> str:
    """What a waiting generation waits for: other engines here, or a server's queue."""
    if remote:
        return "Queued on " + "; ".join(event.behind)
    return describe_wait(event.behind)


# --- events -------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationStarted:
    """A generation was handed to the engine; ``loading`` when its model loads first."""

    params: ImageParams
    loading: bool
    remote: str = ""
    """The server's name when it runs remotely ('' for the local engine)."""


@dataclass(frozen=True)
class WaitingForCpu:
    """The request waits for another engine to finish; ``text`` says which."""

    text: str


@dataclass(frozen=True)
class StepDone:
    """One denoising step finished."""

    image: int
    """1-based number of the image being made."""
    batch: int
    step: int
    steps: int
    seconds: float
    done: int
    """Steps finished over the whole batch."""
    total: int
    eta_s: float


@dataclass(frozen=True)
class PreviewReady:
    """A low-resolution preview of the image being made (PNG bytes)."""

    png: bytes


@dataclass(frozen=True)
class ImageSaved:
    """An image was written to disk with its parameters and recorded in the gallery."""

    record: ImageRecord


@dataclass(frozen=True)
class ImageNotSaved:
    """An image was made but could not be written or recorded."""

    message: str


@dataclass(frozen=True)
class GenerationEnded:
    """The generation finished (``reason`` 'stop') or was stopped ('cancelled')."""

    reason: str
    note: str = ""
    """A line for the user on how it ended, e.g. that a server finishes a stopped job."""


@dataclass(frozen=True)
class GenerationFailed:
    """The engine failed; ``message`` is one line for the user."""

    message: str


class ImagineService(Service):
    """One image engine, the store's gallery and the settings' presets and models."""

    def __init__(
        self,
        host: Any,
        store: Any,
        settings_service: Any,
        folder: Path | None = None,
    ) -> None:
        super().__init__()
        self.host = host
        self.store = store
        self.settings_service = settings_service
        self.folder = folder
        """Where images are written; None: the data dir's ``images``."""
        self.generating = False
        self._backend: Any = None
        """The backend of the generation running (the host or a remote server)."""

    @property
    def settings(self) -> Any:
        return self.settings_service.current

    # --- presets ----------------------------------------------------------------

    def preset_names(self) -> list[str]:
        return list(BUILTIN_PRESETS) + sorted(self.settings.image_presets)

    def preset(self, name: str) -> dict[str, Any] | None:
        return BUILTIN_PRESETS.get(name) or self.settings.image_presets.get(name)

    def save_preset(self, name: str, params: ImageParams) -> None:
        """Save the preset fields of ``params`` under ``name`` in the settings."""
        values = {key: getattr(params, key) for key in PRESET_FIELDS}
        presets = {**self.settings.image_presets, name: values}
        self.settings_service.update(image_presets=presets)

    # --- requests ---------------------------------------------------------------

    def check(self, params: ImageParams) -> None:
        """Raise ValueError or ModelFileError with one line if ``params`` cannot run.

        Reads the model files' headers (a few kilobytes each); a remote model
        (``server:NAME[/MODEL]``) is the server's to check.
        """
        params.validate()
        if not params.model:
            raise ValueError("choose an image model: type its path under Models")
        if is_remote(params.model):
            try:
                image_backend_for(params.model, self.settings, self.host)
            except BackendError as error:
                raise ValueError(str(error)) from None
            if params.vae or params.taesd:
                raise ValueError("a remote image model uses the server's VAE: clear VAE and TAESD")
            return
        for path in (params.model, params.vae, params.taesd):
            if path:
                check_image_model(Path(path).expanduser())

    def remember_models(self, params: ImageParams) -> None:
        """Keep the model, VAE and TAESD as the ones the form starts with next time."""
        self.settings_service.update(
            image_model=params.model, image_vae=params.vae, image_taesd=params.taesd
        )

    def request(self, params: ImageParams, preview: bool = True) -> Any:
        """The engine request for ``params``. Blocks: reads the init image."""
        return build_request(params, self.settings, preview=preview)

    # --- generating ---------------------------------------------------------------

    def generate(self, params: ImageParams) -> None:
        """Make the images ``params`` describe, saving each. Blocks until the engine ends.

        Announces GenerationStarted, WaitingForCpu, StepDone, PreviewReady,
        ImageSaved or ImageNotSaved per image, and GenerationEnded or
        GenerationFailed last. Never raises for an engine or file problem.
        """
        self.generating = True
        try:
            try:
                request = self.request(params)
                backend = image_backend_for(params.model, self.settings, self.host)
            except (ValueError, BackendError) as error:
                self.emit(GenerationFailed(str(error)))
                return
            self._backend = backend
            remote = backend.server.name if backend is not self.host else ""
            self.emit(GenerationStarted(params, not backend.loaded_model, remote))
            self._run(request, params)
        except Exception as error:  # noqa: BLE001 - any failure ends the generation visibly
            self.emit(GenerationFailed(f"the image engine failed: {error}"))
        finally:
            self._backend = None
            self.generating = False

    def _run(self, request: Any, params: ImageParams) -> None:
        step_times: list[float] = []
        done_images = 0
        total = params.steps * params.batch_count
        backend = self._backend or self.host
        for event in backend.submit(request):
            if isinstance(event, p.StepProgressed):
                step_times.append(event.seconds)
                done = done_images * params.steps + event.step
                recent = step_times[-5:]
                eta = (total - done) * (sum(recent) / len(recent))
                self.emit(
                    StepDone(
                        done_images + 1, params.batch_count, event.step, event.steps,
                        event.seconds, done, total, eta,
                    )
                )  # fmt: skip
            elif isinstance(event, p.PreviewUpdated):
                self.emit(PreviewReady(event.png))
            elif isinstance(event, p.WaitingForCpu):
                self.emit(WaitingForCpu(describe_image_wait(event, backend is not self.host)))
            elif isinstance(event, p.CpuGranted):
                self.emit(GenerationStarted(params, loading=not backend.loaded_model))
            elif isinstance(event, p.ImageGenerated):
                done_images += 1
                try:
                    record = self.save_image(event, params)
                except (OSError, StoreError) as error:
                    self.emit(ImageNotSaved(f"could not save the image: {error}"))
                else:
                    self.emit(ImageSaved(record))
            elif isinstance(event, p.GenerationFinished):
                self.emit(GenerationEnded(event.reason, event.note))
            elif isinstance(event, p.EngineFailed):
                self.emit(GenerationFailed(event.message))

    def save_image(self, event: Any, params: ImageParams) -> ImageRecord:
        """Write one generated image with the parameters that made exactly it, and record it.

        Blocks (re-encodes the PNG, writes it, writes the store). Raises OSError
        or StoreError.
        """
        used = replace(params, seed=event.seed, batch_count=1)
        folder = self.folder or images_dir()
        path = folder / image_file_name(event.seed, event.index)
        imaging.save_png(event.png, path, used)
        return self.store.add_image(
            str(path),
            used.to_dict(),
            seed=event.seed,
            width=event.width,
            height=event.height,
            seconds=event.seconds,
        )

    def stop(self) -> None:
        """Ask the engine to stop the generation (it is killed if it does not within 0.6 s).

        A remote generation's request is closed.
        """
        backend = self._backend or self.host
        if backend is self.host:
            # sd.cpp cannot abort a step, so a stop mid-step always ends in the kill:
            # a long grace only delays it. It still lets a batch stop between images.
            self.host.cancel(grace_s=STOP_GRACE_S)
        else:
            backend.cancel()

    def free_memory(self) -> bool:
        """Unload the image model; False while generating."""
        if self.generating or self.host.busy:
            return False
        self.host.unload()
        return True

    # --- gallery ------------------------------------------------------------------------

    def gallery_page(
        self, search: str = "", offset: int = 0, limit: int = GALLERY_PAGE
    ) -> list[ImageRecord]:
        """Newest first, ``limit`` images from ``offset``. Blocks (reads the store)."""
        return self.store.list_images(search, limit=limit, offset=offset)

    def delete_image(self, record: ImageRecord) -> None:
        """Delete the file and forget the image. Blocks. Raises OSError or StoreError."""
        Path(record.path).unlink(missing_ok=True)
        self.store.delete_image(record.id)

    @staticmethod
    def same_again(record: ImageRecord) -> ImageParams:
        """The parameters that make exactly this image again (one image)."""
        return replace(ImageParams.from_dict(record.params), batch_count=1)

    @staticmethod
    def vary_seed(record: ImageRecord) -> ImageParams:
        """This image's parameters with a new random seed."""
        return replace(ImageParams.from_dict(record.params), seed=-1, batch_count=1)
