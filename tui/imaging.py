"""Image parameters, validation and PNG metadata (no Textual, no native binding).

Every generated image is a PNG whose text chunks carry the parameters that
made it: a JSON chunk ``triptych`` (machine-readable, used for "same again")
and a ``parameters`` chunk in the common A1111 style (readable by other tools).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

MAX_SIDE = 2048
MAX_STEPS = 150
MAX_BATCH = 16

SAMPLERS = (
    "default", "euler", "euler_a", "heun", "dpm2", "dpm++2s_a", "dpm++2m", "dpm++2mv2",
    "ipndm", "ipndm_v", "lcm", "ddim_trailing", "tcd", "res_multistep", "res_2s", "er_sde",
)  # fmt: skip
"""The binding's sample methods (stable-diffusion-cpp-python 0.4.7)."""

SCHEDULERS = (
    "default", "discrete", "karras", "exponential", "ays", "gits", "sgm_uniform", "simple",
    "smoothstep", "kl_optimal", "lcm", "bong_tangent",
)  # fmt: skip
"""The binding's schedulers (stable-diffusion-cpp-python 0.4.7)."""


@dataclass
class ImageParams:
    """Everything that determines an image; embedded in its PNG."""

    prompt: str
    negative_prompt: str = ""
    model: str = ""
    vae: str = ""
    taesd: str = ""
    width: int = 512
    height: int = 512
    steps: int = 20
    cfg_scale: float = 7.0
    sampler: str = "default"
    scheduler: str = "default"
    seed: int = -1
    """-1 picks a random seed; a saved image always records the seed used."""
    batch_count: int = 1
    init_image: str = ""
    """Path of the image-to-image source; empty for text-to-image."""
    strength: float = 0.75

    def validate(self) -> None:
        """Raise ValueError with one readable line for anything out of range."""
        if not self.prompt.strip():
            raise ValueError("the prompt is empty")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value % 64 or not 64 <= value <= MAX_SIDE:
                raise ValueError(
                    f"{name} must be a multiple of 64 from 64 to {MAX_SIDE}, not {value}"
                )
        if not 1 <= self.steps <= MAX_STEPS:
            raise ValueError(f"steps must be from 1 to {MAX_STEPS}, not {self.steps}")
        if not 0.0 <= self.cfg_scale <= 30.0:
            raise ValueError(f"CFG scale must be from 0 to 30, not {self.cfg_scale}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; one of: {', '.join(SAMPLERS)}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(
                f"unknown scheduler {self.scheduler!r}; one of: {', '.join(SCHEDULERS)}"
            )
        if self.seed < -1 or self.seed >= 2**63:
            raise ValueError("seed must be -1 (random) or a non-negative number")
        if not 1 <= self.batch_count <= MAX_BATCH:
            raise ValueError(f"batch count must be from 1 to {MAX_BATCH}")
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError("strength must be from 0 to 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageParams:
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key in known:
                values[key] = value
        if "prompt" not in values:
            values["prompt"] = ""
        return cls(**values)

    def a1111_text(self) -> str:
        """The parameters in the A1111 'parameters' text style."""
        lines = [self.prompt]
        if self.negative_prompt:
            lines.append(f"Negative prompt: {self.negative_prompt}")
        details = [
            f"Steps: {self.steps}",
            f"Sampler: {self.sampler}",
            f"Schedule type: {self.scheduler}",
            f"CFG scale: {self.cfg_scale}",
            f"Seed: {self.seed}",
            f"Size: {self.width}x{self.height}",
            f"Model: {Path(self.model).name}",
        ]
        if self.init_image:
            details.append(f"Denoising strength: {self.strength}")
        lines.append(", ".join(details))
        return "\n".join(lines)


def gpu_options(settings: Any) -> dict[str, bool]:
    """The image engine's GPU memory settings (they matter only on a GPU build)."""
    return {
        "offload_to_cpu": settings.image_offload_to_cpu,
        "keep_clip_on_cpu": settings.image_keep_clip_on_cpu,
        "keep_vae_on_cpu": settings.image_keep_vae_on_cpu,
    }


def image_request(
    params: ImageParams,
    init_png: bytes | None,
    threads: int,
    preview: bool = True,
    **gpu: bool,
) -> Any:
    """The engine request (tui.engines.protocol.ImageRequest) for these parameters."""
    from tui.engines.protocol import ImageRequest

    def path(value: str) -> str:
        return str(Path(value).expanduser()) if value else ""

    return ImageRequest(
        model_path=path(params.model),
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        width=params.width,
        height=params.height,
        steps=params.steps,
        cfg_scale=params.cfg_scale,
        sampler=params.sampler,
        scheduler=params.scheduler,
        seed=params.seed,
        batch_count=params.batch_count,
        init_image=init_png,
        strength=params.strength,
        vae_path=path(params.vae),
        taesd_path=path(params.taesd),
        n_threads=threads,
        preview=preview,
        **gpu,
    )


def png_with_params(png: bytes, params: ImageParams) -> bytes:
    """Re-encode PNG bytes with the parameters as text chunks."""
    from PIL import Image, PngImagePlugin

    with Image.open(io.BytesIO(png)) as image:
        info = PngImagePlugin.PngInfo()
        info.add_text("triptych", json.dumps(params.to_dict(), ensure_ascii=False))
        info.add_text("parameters", params.a1111_text())
        for key in ("prompt", "negative_prompt", "model", "sampler", "steps", "cfg_scale", "seed"):
            info.add_text(key, str(getattr(params, key)))
        info.add_text("size", f"{params.width}x{params.height}")
        if params.init_image:
            info.add_text("strength", str(params.strength))
        out = io.BytesIO()
        image.save(out, format="PNG", pnginfo=info)
        return out.getvalue()


def save_png(png: bytes, path: Path, params: ImageParams) -> Path:
    """Write the image with its parameters atomically; return the path."""
    data = png_with_params(png, params)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".png.part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_params(path: Path) -> ImageParams | None:
    """The parameters embedded in a Triptych PNG, or None."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            text = image.info.get("triptych")
    except OSError:
        return None
    if not text:
        return None
    try:
        return ImageParams.from_dict(json.loads(text))
    except (ValueError, TypeError):
        return None


def load_image_bytes(path: Path) -> tuple[bytes, int, int]:
    """Read an image file for image-to-image: PNG bytes, width, height.

    Raises ValueError with a readable line when it is missing or not an image.
    """
    from PIL import Image, UnidentifiedImageError

    from tui.files import check_input_file

    check_input_file(path, "init image")  # a FIFO or /dev/zero would never finish reading
    try:
        with Image.open(path) as image:
            image.load()
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"not an image: {path} ({error})") from None
    out = io.BytesIO()
    rgb.save(out, format="PNG")
    return out.getvalue(), rgb.width, rgb.height
