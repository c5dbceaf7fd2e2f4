"""safetensors model files (Stable Diffusion checkpoints, VAEs, TAESDs): the header."""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

from tui.formats import ModelFileError, check_model_path, human_size

SAFETENSORS_MAX_HEADER = 100_000_000
"""Largest safetensors JSON header we read (the format's own reference limit)."""

# safetensors dtypes -> bits per element (the spec's list, including the newer
# sub-byte float types).
SAFETENSORS_DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "F64": 64,
    "I64": 64,
    "U64": 64,
    "C64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}


@dataclass
class SafetensorsInfo:
    """What the header of a safetensors file says."""

    path: Path
    header_size: int
    """Bytes of JSON after the 8-byte length."""
    tensor_count: int
    dtypes: list[str]
    """The distinct tensor dtypes, sorted."""
    metadata: dict[str, str]
    """The ``__metadata__`` entry (string to string), empty if absent."""
    file_size: int
    data_end: int
    """Offset just past the last tensor's data: the file must be at least this long."""
    role: str = "model"
    """What the tensor names say it is: "model", "vae" or "taesd"."""

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


_FULL_MODEL_PREFIXES = (
    "model.diffusion_model.",
    "cond_stage_model.",
    "conditioner.",
    "text_encoders.",
)


def image_file_role(names: list[str]) -> str:
    """Classify a safetensors image file by its tensor names: model, vae or taesd."""
    if any(n.startswith(_FULL_MODEL_PREFIXES) for n in names):
        return "model"
    if any(n.startswith(("decoder.layers.", "encoder.layers.")) for n in names):
        return "taesd"
    if any(n.startswith(("decoder.", "encoder.", "first_stage_model.")) for n in names):
        return "vae"
    return "model"


class _Corrupt(Exception):
    """Internal: the header holds something impossible; the text says what."""


_U64 = struct.Struct("<Q")


def _safetensors_tensor(name: str, entry: object) -> tuple[str, int]:
    """Validate one header entry; return (dtype, end offset). Raises _Corrupt."""
    if not isinstance(entry, dict):
        raise _Corrupt(f"tensor {name!r} is not described by an object")
    dtype = entry.get("dtype")
    shape = entry.get("shape")
    offsets = entry.get("data_offsets")
    if not isinstance(dtype, str):
        raise _Corrupt(f"tensor {name!r} has no dtype")
    bits = SAFETENSORS_DTYPE_BITS.get(dtype)
    if bits is None:
        raise _Corrupt(f"tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise _Corrupt(f"tensor {name!r} has a bad shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise _Corrupt(f"tensor {name!r} has bad data_offsets {offsets!r}")
    elements = 1
    for d in shape:
        elements *= d
    needed = -(-elements * bits // 8)
    begin, end = offsets
    if end - begin != needed:
        raise _Corrupt(
            f"tensor {name!r} ({dtype} {shape}) needs {needed} bytes"
            f" but data_offsets span {end - begin}"
        )
    return dtype, end


def read_safetensors_info(path: Path | str) -> SafetensorsInfo:
    """Read and sanity-check the header of a safetensors file.

    Layout: an 8-byte little-endian header length N, N bytes of JSON (tensor name
    -> dtype, shape, data_offsets relative to the end of the header), then the
    data. Reads only the header (at most SAFETENSORS_MAX_HEADER bytes) and checks
    every tensor's dtype is known, its size matches its shape and its data lies
    within the file. Raises ModelFileError with a one-line message otherwise.
    """
    path = Path(path)
    file_size = check_model_path(path)
    try:
        with path.open("rb") as f:
            head = f.read(9)
            if len(head) < 9:
                raise ModelFileError(
                    f"not a safetensors model (only {len(head)} bytes): {path}", path
                )
            (header_size,) = _U64.unpack_from(head)
            looks_like_json = head[8:9] == b"{"
            if not looks_like_json or header_size < 2:
                raise ModelFileError(
                    f"not a safetensors model (it starts with {head[:8]!r}): {path}", path
                )
            if header_size > SAFETENSORS_MAX_HEADER:
                raise ModelFileError(
                    f"corrupt safetensors model (its header claims {header_size} bytes,"
                    f" more than the {human_size(SAFETENSORS_MAX_HEADER)} allowed): {path}",
                    path,
                )
            if 8 + header_size > file_size:
                raise ModelFileError(
                    f"truncated safetensors model: {path} is {file_size} bytes"
                    f" ({human_size(file_size)}) but its header alone needs"
                    f" {8 + header_size} bytes",
                    path,
                )
            f.seek(8)
            raw = f.read(header_size)
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise ModelFileError(f"cannot read model file ({reason}): {path}", path) from None
    if len(raw) < header_size:  # the file shrank under us
        raise ModelFileError(f"truncated safetensors model (header ends early): {path}", path)

    try:
        header = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ModelFileError(
            f"corrupt safetensors model (its header is not UTF-8): {path}", path
        ) from None
    except ValueError as exc:
        reason = str(exc).split(":")[0]
        raise ModelFileError(
            f"corrupt safetensors model (its header is not valid JSON: {reason}): {path}", path
        ) from None
    if not isinstance(header, dict):
        raise ModelFileError(
            f"corrupt safetensors model (its header is not a JSON object): {path}", path
        )

    data_start = 8 + header_size
    metadata: dict[str, str] = {}
    dtypes: set[str] = set()
    data_extent = 0
    count = 0
    try:
        for name, entry in header.items():
            if name == "__metadata__":
                if isinstance(entry, dict):
                    metadata = {str(k): str(v) for k, v in entry.items()}
                continue
            dtype, end = _safetensors_tensor(name, entry)
            dtypes.add(dtype)
            data_extent = max(data_extent, end)
            count += 1
    except _Corrupt as exc:
        raise ModelFileError(f"corrupt safetensors model ({exc}): {path}", path) from None

    data_end = data_start + data_extent
    if data_end > file_size:
        raise ModelFileError(
            f"truncated safetensors model: {path} is {file_size} bytes ({human_size(file_size)})"
            f" but its tensors need {data_end} bytes ({human_size(data_end)})",
            path,
        )
    if count == 0:
        raise ModelFileError(f"safetensors file holds no tensors: {path}", path)
    return SafetensorsInfo(
        role=image_file_role([n for n in header if n != "__metadata__"]),
        path=path,
        header_size=header_size,
        tensor_count=count,
        dtypes=sorted(dtypes),
        metadata=metadata,
        file_size=file_size,
        data_end=data_end,
    )
