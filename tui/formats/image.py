"""Image model files: which format a file is, checked before an image engine loads it."""

from __future__ import annotations

from pathlib import Path

from tui.formats import ModelFileError, check_model_path
from tui.formats.gguf import GGUF_MAGIC, read_gguf_info
from tui.formats.safetensors import read_safetensors_info

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".pkl", ".pickle")
"""Suffixes of PyTorch/pickle checkpoints (a ``.bin`` may be either, so it is sniffed)."""


def check_image_model(path: Path | str) -> str:
    """Validate an image model file (or a VAE / TAESD file); return its format.

    Returns "safetensors" or "gguf". Anything else - missing, a folder, empty,
    truncated, a text file, a pickle checkpoint - raises ModelFileError with one
    readable line naming the file. stable-diffusion.cpp crashes on incomplete
    files, so nothing may reach it without passing this check.
    """
    path = Path(path)
    file_size = check_model_path(path)
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise ModelFileError(f"cannot read model file ({reason}): {path}", path) from None

    if head[:4] == GGUF_MAGIC:
        read_gguf_info(path)
        return "gguf"
    suffix = path.suffix.lower()
    is_zip = head[:4] == b"PK\x03\x04"
    is_pickle = head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
    if suffix in PICKLE_SUFFIXES or is_pickle or (is_zip and suffix != ".safetensors"):
        raise ModelFileError(
            "refusing a pickle checkpoint (.ckpt/.pt): loading it would run Python pickle"
            f" code from the file; convert it to .safetensors first: {path}",
            path,
        )
    if suffix == ".safetensors" or (file_size >= 9 and head[8:9] == b"{"):
        read_safetensors_info(path)
        return "safetensors"
    raise ModelFileError(
        f"not an image model (expected a .safetensors or .gguf file; it starts with"
        f" {head[:8]!r}): {path}",
        path,
    )
