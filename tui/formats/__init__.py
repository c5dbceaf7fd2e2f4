"""Model file formats: header readers that check a file before an engine loads it.

One module per format (``gguf``, ``safetensors``, ``whisper``; ``image`` sniffs an
image model's format; ``ggml`` holds the tensor types GGUF and whisper.cpp share).
Everything here is plain standard library (no Textual, no native binding), so the
UI process can validate a model before an engine process ever loads it: the
native libraries crash on incomplete files.
"""

from __future__ import annotations

from pathlib import Path


class ModelFileError(Exception):
    """A model file that cannot be used; str() is one readable line naming the file."""

    def __init__(self, message: str, path: Path | str | None = None) -> None:
        # Collapse whitespace so the message always fits on one status line.
        super().__init__(" ".join(str(message).split()))
        self.path = Path(path) if path is not None else None


def human_size(n: int) -> str:
    """Bytes as a short human string: 512 B, 1.5 KiB, 93.8 MiB."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # unreachable; keeps type checkers content


def check_model_path(path: Path) -> int:
    """Existence checks shared by the image-model readers; returns the file size."""
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}", path)
    if path.is_dir():
        raise ModelFileError(
            f"not a file but a folder (use a single .safetensors or .gguf file): {path}", path
        )
    if not path.is_file():
        raise ModelFileError(f"not a file: {path}", path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise ModelFileError(f"cannot read model file ({reason}): {path}", path) from None
    if size == 0:
        raise ModelFileError(f"model file is empty: {path}", path)
    return size
