"""whisper.cpp ggml model files (the speech engine's models): header, vocabulary, tensors."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui.formats import ModelFileError
from tui.formats.ggml import ggml_tensor_nbytes

WHISPER_MAGIC = 0x67676D6C
WHISPER_HPARAMS = (
    "n_vocab",
    "n_audio_ctx",
    "n_audio_state",
    "n_audio_head",
    "n_audio_layer",
    "n_text_ctx",
    "n_text_state",
    "n_text_head",
    "n_text_layer",
    "n_mels",
    "ftype",
)


@dataclass
class WhisperInfo:
    """What the header of a whisper.cpp ggml model file says."""

    path: Path
    hparams: dict[str, int]
    tensor_count: int
    file_size: int


def read_whisper_info(path: Path | str) -> WhisperInfo:
    """Validate a whisper.cpp ggml model file end to end (header, vocabulary, tensor table).

    Raises ModelFileError with one readable line; never loads the weights.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelFileError(f"not a file: {path}")
    size = path.stat().st_size
    if size == 0:
        raise ModelFileError(f"model file is empty: {path}")

    def ints(handle: Any, count: int) -> tuple[int, ...]:
        data = handle.read(4 * count)
        if len(data) != 4 * count:
            raise ModelFileError(f"truncated whisper model: {path}")
        return struct.unpack(f"<{count}i", data)

    with open(path, "rb") as handle:
        head = handle.read(4)
        if len(head) < 4 or struct.unpack("<I", head)[0] != WHISPER_MAGIC:
            raise ModelFileError(f"not a whisper.cpp ggml model (it starts with {head!r}): {path}")
        hparams = dict(zip(WHISPER_HPARAMS, ints(handle, len(WHISPER_HPARAMS)), strict=True))
        if not (
            1000 <= hparams["n_vocab"] <= 100_000
            and hparams["n_mels"] in (80, 128)
            and 0 < hparams["n_audio_layer"] <= 64
            and 0 < hparams["n_text_layer"] <= 64
        ):
            raise ModelFileError(f"corrupt whisper model (implausible header {hparams}): {path}")
        n_mel, n_fft = ints(handle, 2)
        if not (0 < n_mel <= 256 and 0 < n_fft <= 4096):
            raise ModelFileError(f"corrupt whisper model (mel filters {n_mel}x{n_fft}): {path}")
        handle.seek(4 * n_mel * n_fft, 1)
        (n_vocab,) = ints(handle, 1)
        if not 0 <= n_vocab <= 100_000:
            raise ModelFileError(f"corrupt whisper model (vocabulary of {n_vocab}): {path}")
        for _ in range(n_vocab):
            (length,) = ints(handle, 1)
            if not 0 <= length <= 1024:
                raise ModelFileError(f"corrupt whisper model (token length {length}): {path}")
            handle.seek(length, 1)
        tensors = 0
        while True:
            head = handle.read(12)
            if not head:
                break
            if len(head) < 12:
                raise ModelFileError(f"truncated whisper model: {path}")
            n_dims, name_length, ftype = struct.unpack("<3i", head)
            if not (1 <= n_dims <= 4 and 0 < name_length <= 256):
                raise ModelFileError(f"corrupt whisper model (tensor {tensors}): {path}")
            dims = ints(handle, n_dims)
            handle.seek(name_length, 1)
            nbytes = ggml_tensor_nbytes(ftype, list(dims))
            if nbytes is None:
                raise ModelFileError(f"unsupported tensor type {ftype} in whisper model: {path}")
            end = handle.tell() + nbytes
            if end > size:
                raise ModelFileError(
                    f"truncated whisper model: {path} is {size} bytes but its tensors need "
                    f"at least {end}"
                )
            handle.seek(nbytes, 1)
            tensors += 1
        if tensors == 0:
            raise ModelFileError(f"truncated whisper model (no weights): {path}")
    return WhisperInfo(path, hparams, tensors, size)
