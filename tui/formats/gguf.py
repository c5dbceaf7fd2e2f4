"""GGUF model files (llama.cpp, and stable-diffusion.cpp's quantised models): the header."""

from __future__ import annotations

import os
import struct
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from tui.formats import ModelFileError, human_size
from tui.formats.ggml import ggml_tensor_nbytes

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


_CACHE: dict[tuple[str, int, int, int], GGUFInfo] = {}
_CACHE_SIZE = 16


def read_gguf_info(path: Path | str) -> GGUFInfo:
    """Read and sanity-check the header of a GGUF model file (see ``_read_gguf_info``).

    Parsing a header with a 50,000-token vocabulary takes about 45 ms, and the chat
    checks its model before every reply: a header is read again only when the file
    changed (its inode, size or modification time), and problems are never cached.
    """
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return _read_gguf_info(path)  # says what is wrong with it
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    cached = _CACHE.get(key)
    if cached is None:
        cached = _read_gguf_info(path)
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = cached
    return replace(cached, path=path)


def _read_gguf_info(path: Path | str) -> GGUFInfo:
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
