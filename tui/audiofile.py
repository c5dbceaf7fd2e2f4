"""Read any common audio file as 16 kHz mono float32 (what Whisper wants).

Decoding is libsndfile's (through ``soundfile``: WAV, FLAC, OGG/Vorbis/Opus and, with
libsndfile >= 1.1, MP3), resampling is soxr's. Files are decoded and resampled in
blocks, so a long recording never needs its original-rate samples in memory at once.
``AudioWindows`` goes further for transcription: it hands the 16 kHz audio over in
windows of at most ``WINDOW_S`` seconds, each cut at the quietest point near its end
(a pause, not the middle of a word), and never holds more than one window and one
decoded block, so memory stays flat whatever the length of the file.

Every failure is a ``ValueError`` with a one-line message naming the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 16_000
_BLOCK_FRAMES = 1 << 18  # ~6 s at 44.1 kHz per decoded block
WINDOW_S = 30.0
"""Longest window handed to Whisper: its own context is 30 s, so one pass per window."""
CUT_SEARCH_S = 5.0
"""A window is cut at the quietest point of its last this-many seconds."""
_CUT_FRAME = 320  # 20 ms at 16 kHz: the unit of the quiet-point search
_CUT_SMOOTH = 10  # frames averaged (200 ms), so a cut lands in a pause, not a stop consonant


def open_audio(path: str | Path) -> Any:
    """Open `path` for decoding (a ``soundfile.SoundFile``); ValueError names what is wrong."""
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise ValueError(f"no such file: {p}")
    if not p.is_file():
        raise ValueError(f"not a file: {p}")
    if p.stat().st_size == 0:
        raise ValueError(f"empty file: {p}")
    try:
        return sf.SoundFile(str(p))
    except (RuntimeError, TypeError) as exc:  # sf.LibsndfileError is a RuntimeError
        raise ValueError(f"not an audio file: {p} ({_reason(exc)})") from None


def _blocks_16k(handle: Any, path: Path) -> Iterator[np.ndarray]:
    """Decode an open file block by block as 16 kHz mono float32 (empty blocks skipped)."""
    import soxr

    rate = int(handle.samplerate)
    resampler = (
        soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        if rate != SAMPLE_RATE
        else None
    )
    while True:
        try:
            block = handle.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
        except RuntimeError as exc:
            raise ValueError(f"cannot decode {path} ({_reason(exc)})") from None
        last = len(block) < _BLOCK_FRAMES
        mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
        mono = np.ascontiguousarray(mono, dtype=np.float32)
        if resampler is not None:
            mono = resampler.resample_chunk(mono, last=last)
        if len(mono):
            yield np.asarray(mono, dtype=np.float32)
        if last:
            return


def load_audio_16k(path: str | Path) -> np.ndarray:
    """Decode `path` to a 1-D float32 array: mono (channels averaged), 16 kHz."""
    p = Path(path)
    with open_audio(p) as handle:
        chunks = list(_blocks_16k(handle, p))
    samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    if samples.size == 0:
        raise ValueError(f"no audio in {p} (zero length)")
    return samples


def quiet_cut(samples: np.ndarray, search_from: int) -> int:
    """Index in ``samples[search_from:]`` where cutting splits no word: the middle of its
    quietest 200 ms (the latest such stretch, so windows stay long). ``len(samples)``
    when the stretch is too short to search."""
    region = samples[search_from:]
    frames = len(region) // _CUT_FRAME
    if frames < _CUT_SMOOTH:
        return len(samples)
    framed = region[: frames * _CUT_FRAME].reshape(frames, _CUT_FRAME).astype(np.float64)
    energy = np.mean(framed * framed, axis=1)
    smooth = np.convolve(energy, np.ones(_CUT_SMOOTH) / _CUT_SMOOTH, mode="valid")
    # Energies of digital silence tie at 0; prefer the last minimum.
    latest = len(smooth) - 1 - int(np.argmin(smooth[::-1]))
    return search_from + (latest + _CUT_SMOOTH // 2) * _CUT_FRAME


class Windower:
    """Turns a stream of 16 kHz blocks into transcription windows cut at quiet points.

    ``push`` a block, get back the windows it completed as ``(start_sample, samples)``;
    ``finish`` returns the rest. Every window but the last is between
    ``window_s - search_s`` and ``window_s`` long; windows are consecutive, without gaps
    or overlap. ``max_buffered`` is the most samples held at once (one window plus the
    block that completed it), which tests use to prove memory does not grow.
    """

    def __init__(self, window_s: float = WINDOW_S, search_s: float = CUT_SEARCH_S) -> None:
        if not 0 < search_s < window_s:
            raise ValueError("need 0 < search_s < window_s")
        self.window = round(window_s * SAMPLE_RATE)
        self.search = round(search_s * SAMPLE_RATE)
        self.max_buffered = 0
        self._pending: list[np.ndarray] = []
        self._pending_len = 0
        self._start = 0  # sample index of the first pending sample

    def push(self, block: np.ndarray) -> list[tuple[int, np.ndarray]]:
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        if block.size == 0:
            return []
        self._pending.append(block)
        self._pending_len += block.size
        self.max_buffered = max(self.max_buffered, self._pending_len)
        done: list[tuple[int, np.ndarray]] = []
        if self._pending_len < self.window:
            return done
        buffer = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        begin = 0
        while len(buffer) - begin >= self.window:
            view = buffer[begin : begin + self.window]
            cut = quiet_cut(view, self.window - self.search)
            # A copy, so the window does not keep the whole decoded buffer alive.
            done.append((self._start, view[:cut].copy()))
            self._start += cut
            begin += cut
        rest = buffer[begin:].copy()
        self._pending = [rest] if rest.size else []
        self._pending_len = rest.size
        return done

    def finish(self) -> list[tuple[int, np.ndarray]]:
        if not self._pending_len:
            return []
        rest = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending, self._pending_len = [], 0
        start, self._start = self._start, self._start + rest.size
        return [(start, rest)]


class AudioWindows:
    """A file decoded window by window (see ``Windower``); the duration comes from the
    header, before anything is decoded.

        with AudioWindows(path) as audio:
            print(audio.duration_s)
            for start, samples in audio:
                ...
    """

    def __init__(
        self, path: str | Path, window_s: float = WINDOW_S, search_s: float = CUT_SEARCH_S
    ) -> None:
        self.path = Path(path)
        self._handle = open_audio(self.path)
        frames, rate = int(self._handle.frames), int(self._handle.samplerate)
        if frames <= 0 or rate <= 0:
            self._handle.close()
            raise ValueError(f"no audio in {self.path} (zero length)")
        self.duration_s = frames / rate
        self.windower = Windower(window_s, search_s)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        for block in _blocks_16k(self._handle, self.path):
            yield from self.windower.push(block)
        yield from self.windower.finish()

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> AudioWindows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_wav_16k(samples: np.ndarray, path: str | Path) -> Path:
    """Write mono float32 samples (-1..1, 16 kHz) as a 16-bit PCM WAV file."""
    import soundfile as sf

    p = Path(path)
    data = np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0)
    sf.write(str(p), data, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return p


def duration_s(samples: np.ndarray) -> float:
    """Duration of 16 kHz samples in seconds."""
    return len(samples) / SAMPLE_RATE


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "error_string", "") or str(exc)
    text = " ".join(text.split())
    # soundfile prefixes "Error opening 'PATH': "; the caller names the file already.
    if ": " in text and text.startswith("Error opening"):
        text = text.split(": ", 1)[1]
    if "does not exist or is not a regular file" in text or "format not recognised" in text.lower():
        # libsndfile's words for "no decoder recognised it" (we checked the file exists)
        return "unrecognised format"
    return text.rstrip(".") or type(exc).__name__
