"""Read any common audio file as 16 kHz mono float32 (what Whisper wants).

Decoding is libsndfile's (through ``soundfile``: WAV, FLAC, OGG/Vorbis/Opus and, with
libsndfile >= 1.1, MP3), resampling is soxr's. Files are decoded and resampled in
blocks, so a long recording never needs its original-rate samples in memory at once.

Every failure is a ``ValueError`` with a one-line message naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
_BLOCK_FRAMES = 1 << 18  # ~6 s at 44.1 kHz per decoded block


def load_audio_16k(path: str | Path) -> np.ndarray:
    """Decode `path` to a 1-D float32 array: mono (channels averaged), 16 kHz."""
    import soundfile as sf
    import soxr

    p = Path(path)
    if not p.exists():
        raise ValueError(f"no such file: {p}")
    if not p.is_file():
        raise ValueError(f"not a file: {p}")
    if p.stat().st_size == 0:
        raise ValueError(f"empty file: {p}")
    try:
        handle = sf.SoundFile(str(p))
    except (RuntimeError, TypeError) as exc:  # sf.LibsndfileError is a RuntimeError
        raise ValueError(f"not an audio file: {p} ({_reason(exc)})") from None

    chunks: list[np.ndarray] = []
    with handle:
        rate = int(handle.samplerate)
        resampler = (
            soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
            if rate != SAMPLE_RATE
            else None
        )
        try:
            while True:
                block = handle.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
                last = len(block) < _BLOCK_FRAMES
                mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
                mono = np.ascontiguousarray(mono, dtype=np.float32)
                if resampler is not None:
                    mono = resampler.resample_chunk(mono, last=last)
                if len(mono):
                    chunks.append(np.asarray(mono, dtype=np.float32))
                if last:
                    break
        except RuntimeError as exc:
            raise ValueError(f"cannot decode {p} ({_reason(exc)})") from None

    samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    if samples.size == 0:
        raise ValueError(f"no audio in {p} (zero length)")
    return samples


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
