"""Tests for tui.formats: GGUF, safetensors and image-model header checks."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

from tui import cli
from tui.default_model import DEFAULT_CHAT_FILENAME, DEFAULT_CHAT_SIZE
from tui.formats import ModelFileError
from tui.formats.ggml import ggml_tensor_nbytes
from tui.formats.gguf import read_gguf_info
from tui.formats.image import check_image_model
from tui.formats.safetensors import SAFETENSORS_DTYPE_BITS, read_safetensors_info

REPO = Path(__file__).resolve().parent.parent
REAL_MODEL = REPO / ".fixtures" / "models" / DEFAULT_CHAT_FILENAME

# --------------------------------------------------------------------------- GGUF builder


def _gguf_string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def _kv(key: str, value_type: int, payload: bytes) -> bytes:
    return _gguf_string(key) + struct.pack("<I", value_type) + payload


def build_gguf(
    *,
    version: int = 3,
    alignment: int | None = None,
    tensors: list[tuple[str, tuple[int, ...]]] | None = None,
) -> tuple[bytes, int]:
    """A small valid GGUF file: some KVs (incl. a string array) and F32 tensors.

    Returns (file bytes, offset where the tensor data section starts).
    """
    if tensors is None:
        tensors = [("tok_embd.weight", (4, 3)), ("output_norm.weight", (5,))]
    align = alignment or 32
    kvs = [
        _kv("general.architecture", 8, _gguf_string("llama")),
        _kv("general.name", 8, _gguf_string("Tiny Test")),
        _kv("llama.context_length", 4, struct.pack("<I", 2048)),
        _kv("llama.rope.freq_base", 6, struct.pack("<f", 10000.0)),
        _kv(
            "tokenizer.ggml.tokens",
            9,
            struct.pack("<IQ", 8, 3) + b"".join(_gguf_string(t) for t in ("<s>", "é", "")),
        ),
        _kv("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, 3) + struct.pack("<3f", 0, 1, 2)),
        _kv("tokenizer.add_bos", 7, b"\x01"),
    ]
    if alignment is not None:
        kvs.append(_kv("general.alignment", 4, struct.pack("<I", alignment)))

    infos = b""
    offset = 0
    blobs: list[bytes] = []
    for name, dims in tensors:
        n = 1
        for d in dims:
            n *= d
        blob = struct.pack(f"<{n}f", *range(n))
        infos += _gguf_string(name) + struct.pack("<I", len(dims))
        infos += b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", 0, offset)  # type F32, offset in the data section
        padded = blob + b"\0" * (-len(blob) % align)
        blobs.append(padded)
        offset += len(padded)

    header = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    header += b"".join(kvs) + infos
    data_start = len(header) + (-len(header) % align)
    header += b"\0" * (data_start - len(header))
    # The last tensor's padding is not needed: the file ends right after its data.
    data = b"".join(blobs)
    last_name, last_dims = tensors[-1]
    last_size = 4
    for d in last_dims:
        last_size *= d
    data = data[: offset - len(blobs[-1]) + last_size]
    return header + data, data_start


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    raw, _ = build_gguf()
    path = tmp_path / "tiny.gguf"
    path.write_bytes(raw)
    return path


# --------------------------------------------------------------------------- read_gguf_info


def test_valid_file_parses(gguf: Path) -> None:
    info = read_gguf_info(gguf)
    assert info.version == 3
    assert info.architecture == "llama"
    assert info.name == "Tiny Test"
    assert info.tensor_count == 2
    assert info.kv_count == 7
    assert info.context_length == 2048
    assert info.file_size == gguf.stat().st_size
    assert info.data_end == info.file_size


def test_version_2_and_explicit_alignment(tmp_path: Path) -> None:
    raw, data_start = build_gguf(version=2, alignment=64)
    assert data_start % 64 == 0
    path = tmp_path / "v2.gguf"
    path.write_bytes(raw)
    info = read_gguf_info(path)
    assert info.version == 2
    assert info.data_end == len(raw)


def test_trailing_bytes_are_fine(gguf: Path) -> None:
    gguf.write_bytes(gguf.read_bytes() + b"\0" * 100)
    info = read_gguf_info(gguf)
    assert info.data_end == info.file_size - 100


def test_truncated_in_header(gguf: Path, tmp_path: Path) -> None:
    raw = gguf.read_bytes()
    for cut in (5, 20, 60, 200):
        short = tmp_path / f"cut{cut}.gguf"
        short.write_bytes(raw[:cut])
        with pytest.raises(ModelFileError) as err:
            read_gguf_info(short)
        assert str(err.value) == f"truncated GGUF model (header ends early): {short}"


def test_truncated_in_data(tmp_path: Path) -> None:
    raw, data_start = build_gguf()
    short = tmp_path / "short.gguf"
    short.write_bytes(raw[: data_start + 10])
    with pytest.raises(ModelFileError) as err:
        read_gguf_info(short)
    message = str(err.value)
    assert message.startswith(f"truncated GGUF model: {short} is {data_start + 10} bytes")
    assert f"need {len(raw)}" in message
    assert "\n" not in message


def test_text_file_renamed(tmp_path: Path) -> None:
    path = tmp_path / "notes.gguf"
    path.write_text("hello world\n")
    with pytest.raises(ModelFileError) as err:
        read_gguf_info(path)
    assert str(err.value) == f"not a GGUF model (it starts with b'hell'): {path}"


def test_empty_missing_directory(tmp_path: Path) -> None:
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError, match="^model file is empty: "):
        read_gguf_info(empty)
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelFileError) as err:
        read_gguf_info(missing)
    assert str(err.value) == f"model file not found: {missing}"
    with pytest.raises(ModelFileError) as err:
        read_gguf_info(tmp_path)
    assert str(err.value) == f"not a file: {tmp_path}"


def test_unsupported_versions(tmp_path: Path) -> None:
    raw, _ = build_gguf()
    for version, hint in ((1, "early"), (0x03000000, "big-endian"), (7, "supported")):
        path = tmp_path / f"v{version}.gguf"
        path.write_bytes(raw[:4] + struct.pack("<I", version) + raw[8:])
        with pytest.raises(ModelFileError) as err:
            read_gguf_info(path)
        assert str(err.value).startswith(f"unsupported GGUF version {version} (")
        assert hint in str(err.value)


def test_hostile_string_length_refused_quickly(tmp_path: Path) -> None:
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**62)
    path = tmp_path / "evil.gguf"
    path.write_bytes(header + b"x" * 64)
    start = time.perf_counter()
    with pytest.raises(ModelFileError, match=r"^corrupt GGUF model \(key claims \d+ bytes"):
        read_gguf_info(path)
    assert time.perf_counter() - start < 0.1


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (struct.pack("<QQ", 2**40, 0), "tensor count is"),
        (struct.pack("<QQ", 0, 1) + _kv("a", 9, struct.pack("<IQ", 8, 2**40)), "array length"),
        (struct.pack("<QQ", 0, 1) + _kv("a", 9, struct.pack("<IQ", 99, 1)), "element type 99"),
        (struct.pack("<QQ", 0, 1) + _kv("a", 42, b""), "unknown value type 42"),
        (struct.pack("<QQ", 1, 0) + _gguf_string("t") + struct.pack("<I", 1000), "dimensions"),
        (
            struct.pack("<QQ", 0, 1) + _kv("general.alignment", 4, struct.pack("<I", 3)),
            "not a power of two",
        ),
        (
            struct.pack("<QQ", 0, 1) + _gguf_string(b"\xff\xfe") + struct.pack("<I", 0) + b"\0",
            "not UTF-8",
        ),
        # Huge fixed-size array: refused by the size check, without reading it.
        (struct.pack("<QQ", 0, 1) + _kv("a", 9, struct.pack("<IQ", 12, 9_000_000)), "ends early"),
    ],
)
def test_corrupt_headers_give_one_line(tmp_path: Path, body: bytes, expected: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<I", 3) + body)
    with pytest.raises(ModelFileError) as err:
        read_gguf_info(path)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message and message.endswith(str(path))


def test_non_utf8_value_of_an_ignored_key_is_skipped(tmp_path: Path) -> None:
    body = struct.pack("<QQ", 0, 1) + _kv("k", 8, _gguf_string(b"\xff\xfe"))
    path = tmp_path / "odd.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<I", 3) + body)
    assert read_gguf_info(path).kv_count == 1


def test_huge_string_array_skipped_fast(tmp_path: Path) -> None:
    # 100k tokenizer strings, as in a real vocabulary: skipped, never kept.
    tokens = b"".join(_gguf_string(f"token{i}") for i in range(100_000))
    body = struct.pack("<QQ", 0, 2) + _kv("general.architecture", 8, _gguf_string("gpt2"))
    body += _kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 100_000) + tokens)
    path = tmp_path / "vocab.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<I", 3) + body)
    start = time.perf_counter()
    info = read_gguf_info(path)
    assert time.perf_counter() - start < 0.3
    assert info.architecture == "gpt2" and info.tensor_count == 0
    assert info.context_length is None


def test_ggml_sizes() -> None:
    assert ggml_tensor_nbytes(0, (4, 3)) == 48
    assert ggml_tensor_nbytes(3, (64, 2)) == 2 * 2 * 20  # Q4_1
    assert ggml_tensor_nbytes(12, (512,)) == 2 * 144  # Q4_K
    assert ggml_tensor_nbytes(4, (32,)) is None  # removed type


@pytest.mark.skipif(not REAL_MODEL.is_file(), reason="real model not fetched")
def test_real_model() -> None:
    start = time.perf_counter()
    info = read_gguf_info(REAL_MODEL)
    elapsed = time.perf_counter() - start
    assert info.architecture == "llama"
    assert info.data_end <= info.file_size == DEFAULT_CHAT_SIZE
    assert info.tensor_count > 0 and info.context_length
    assert elapsed < 0.5


# --------------------------------------------------------------------------- command line


def test_cli_info(gguf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["models", "info", str(gguf)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["architecture"] == "llama" and data["path"] == str(gguf)


def test_cli_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["models", "info", str(tmp_path / "none.gguf")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model file not found" in err


def test_random_corruption_only_raises_model_file_error(tmp_path: Path) -> None:
    # Flip random bytes of a valid file: every outcome is a parse or a ModelFileError.
    import random

    raw, _ = build_gguf()
    rng = random.Random(1234)
    path = tmp_path / "fuzz.gguf"
    for _ in range(500):
        mutated = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(4, len(raw))] = rng.randrange(256)
        path.write_bytes(bytes(mutated[: rng.randint(4, len(raw))]))
        try:
            read_gguf_info(path)
        except ModelFileError as exc:
            assert "\n" not in str(exc)


# --------------------------------------------------------------------------- safetensors


def build_safetensors(
    tensors: dict[str, tuple[str, list[int]]] | None = None,
    metadata: dict[str, str] | None = None,
    header_override: dict[str, object] | None = None,
) -> bytes:
    """A valid safetensors file: 8-byte LE header length, JSON header, contiguous data."""
    if tensors is None:
        tensors = {"model.weight": ("F16", [4, 3]), "model.bias": ("F32", [5])}
    header: dict[str, object] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = 1
        for d in shape:
            n *= d
        size = -(-n * SAFETENSORS_DTYPE_BITS[dtype] // 8)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    if header_override is not None:
        header.update(header_override)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # the reference writer pads with spaces
    return (
        struct.pack("<Q", len(raw))
        + raw
        + bytes(range(256)) * (offset // 256)
        + b"\1" * (offset % 256)
    )


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_safetensors_parses(tmp_path: Path) -> None:
    path = _write(tmp_path, "m.safetensors", build_safetensors(metadata={"format": "pt"}))
    info = read_safetensors_info(path)
    assert info.tensor_count == 2
    assert info.dtypes == ["F16", "F32"]
    assert info.metadata == {"format": "pt"}
    assert info.data_end == info.file_size == path.stat().st_size
    assert check_image_model(path) == "safetensors"
    assert json.loads(json.dumps(info.to_json()))["path"] == str(path)


def test_safetensors_sub_byte_and_empty_tensors(tmp_path: Path) -> None:
    data = build_safetensors({"a": ("F4", [3]), "b": ("BF16", [0, 7]), "c": ("F8_E4M3", [2])})
    info = read_safetensors_info(_write(tmp_path, "m.safetensors", data))
    assert info.tensor_count == 3


def test_safetensors_truncated_in_data(tmp_path: Path) -> None:
    raw = build_safetensors({"big": ("F32", [1000])})
    for keep in (len(raw) - 1, len(raw) // 2):
        path = _write(tmp_path, f"cut{keep}.safetensors", raw[:keep])
        with pytest.raises(ModelFileError) as err:
            check_image_model(path)
        message = str(err.value)
        assert message.startswith(f"truncated safetensors model: {path} is {keep} bytes")
        assert f"need {len(raw)} bytes" in message
        assert "\n" not in message


def test_safetensors_truncated_in_header(tmp_path: Path) -> None:
    raw = build_safetensors()
    path = _write(tmp_path, "cut.safetensors", raw[:20])
    with pytest.raises(ModelFileError) as err:
        read_safetensors_info(path)
    assert str(err.value).startswith(f"truncated safetensors model: {path} is 20 bytes")
    assert "header alone needs" in str(err.value)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            b"These are my notes, not a model.\n",
            "not a safetensors model (it starts with b'These ar')",
        ),
        (b"\x01\x00", "not a safetensors model (only 2 bytes)"),
        (struct.pack("<Q", 1) + b"{", "not a safetensors model"),
    ],
    ids=["text", "tiny", "header-too-short"],
)
def test_not_safetensors(tmp_path: Path, data: bytes, expected: str) -> None:
    path = _write(tmp_path, "notes.safetensors", data)
    with pytest.raises(ModelFileError) as err:
        check_image_model(path)
    message = str(err.value)
    assert message.startswith(expected), message
    assert message.endswith(f"): {path}")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"x": {"dtype": "Q9", "shape": [1], "data_offsets": [0, 1]}}, "unknown dtype 'Q9'"),
        ({"x": {"shape": [1], "data_offsets": [0, 1]}}, "has no dtype"),
        ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, "needs 8 bytes"),
        ({"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, "bad shape"),
        ({"x": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}}, "bad data_offsets"),
        ({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}, "bad data_offsets"),
        ({"x": [1, 2]}, "not described by an object"),
    ],
    ids=["dtype", "no-dtype", "size", "shape", "offsets-order", "offsets-length", "entry"],
)
def test_corrupt_safetensors_headers(
    tmp_path: Path, override: dict[str, object], expected: str
) -> None:
    path = _write(tmp_path, "bad.safetensors", build_safetensors(header_override=override))
    with pytest.raises(ModelFileError) as err:
        read_safetensors_info(path)
    message = str(err.value)
    assert message.startswith("corrupt safetensors model (")
    assert expected in message
    assert message.endswith(str(path))


def test_safetensors_data_beyond_the_file(tmp_path: Path) -> None:
    override = {"x": {"dtype": "U8", "shape": [10**6], "data_offsets": [0, 10**6]}}
    path = _write(tmp_path, "far.safetensors", build_safetensors(header_override=override))
    with pytest.raises(
        ModelFileError, match=r"^truncated safetensors model: .* need 1000\d\d\d bytes"
    ):
        read_safetensors_info(path)


def test_safetensors_bad_json_and_huge_header(tmp_path: Path) -> None:
    raw = b'{"x": ' + b"\xff" * 3
    path = _write(tmp_path, "a.safetensors", struct.pack("<Q", len(raw)) + raw)
    with pytest.raises(
        ModelFileError, match=r"^corrupt safetensors model \(its header is not UTF-8"
    ):
        read_safetensors_info(path)
    raw = b'{"x": [1, 2'
    path = _write(tmp_path, "b.safetensors", struct.pack("<Q", len(raw)) + raw)
    with pytest.raises(
        ModelFileError, match=r"^corrupt safetensors model \(its header is not valid"
    ):
        read_safetensors_info(path)
    raw = b"[1, 2, 3]"
    path = _write(tmp_path, "c.safetensors", struct.pack("<Q", len(raw)) + raw)
    with pytest.raises(ModelFileError):  # not starting with "{": not safetensors at all
        read_safetensors_info(path)
    path = _write(tmp_path, "d.safetensors", struct.pack("<Q", 2**40) + b"{" + b" " * 64)
    start = time.perf_counter()
    with pytest.raises(ModelFileError, match=r"^corrupt safetensors model \(its header claims"):
        read_safetensors_info(path)
    assert time.perf_counter() - start < 0.1
    path = _write(tmp_path, "e.safetensors", build_safetensors({}, metadata={"a": "b"}))
    with pytest.raises(ModelFileError, match="^safetensors file holds no tensors: "):
        read_safetensors_info(path)


def test_check_image_model_formats_and_refusals(tmp_path: Path, gguf: Path) -> None:
    assert check_image_model(gguf) == "gguf"
    # A safetensors file is recognised by its header whatever it is called.
    renamed = _write(tmp_path, "model.bin", build_safetensors())
    assert check_image_model(renamed) == "safetensors"

    for name, data in [
        ("model.ckpt", b"PK\x03\x04" + b"\0" * 60),  # torch zip checkpoint
        ("model.pt", b"\x80\x02}q\x00."),  # bare pickle
        ("weights.bin", b"\x80\x04\x95" + b"\0" * 20),  # pickle without the suffix
        ("notes.ckpt", b"just text"),  # the suffix alone is enough
    ]:
        path = _write(tmp_path, name, data)
        with pytest.raises(ModelFileError) as err:
            check_image_model(path)
        message = str(err.value)
        assert "pickle" in message and ".safetensors" in message, message
        assert message.endswith(str(path))
        assert "\n" not in message

    text = _write(tmp_path, "readme.txt", b"# Hello\nnot a model\n")
    with pytest.raises(ModelFileError) as err:
        check_image_model(text)
    assert str(err.value) == (
        f"not an image model (expected a .safetensors or .gguf file; it starts with"
        f" b'# Hello\\n'): {text}"
    )
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(ModelFileError) as err:
        check_image_model(missing)
    assert str(err.value) == f"model file not found: {missing}"
    with pytest.raises(ModelFileError, match="^not a file but a folder"):
        check_image_model(tmp_path)
    with pytest.raises(ModelFileError, match="^model file is empty: "):
        check_image_model(_write(tmp_path, "empty.safetensors", b""))
    short_gguf = _write(tmp_path, "short.gguf", gguf.read_bytes()[:-8])
    with pytest.raises(ModelFileError, match="^truncated GGUF model: "):
        check_image_model(short_gguf)


def test_gguf_header_is_read_again_only_when_the_file_changes(tmp_path) -> None:
    import shutil

    from tests.conftest import CHAT_MODEL
    from tui.formats import gguf

    if not CHAT_MODEL.is_file():
        pytest.skip("no test model")
    path = tmp_path / "model.gguf"
    shutil.copyfile(CHAT_MODEL, path)
    first = gguf.read_gguf_info(path)
    assert gguf.read_gguf_info(path) == first
    with path.open("r+b") as handle:  # cut in half: it must be read again and refused
        handle.truncate(first.file_size // 2)
    with pytest.raises(ModelFileError, match="truncated"):
        gguf.read_gguf_info(path)
