"""Microphone capture: input devices, a crash-safe WAV recorder, and WAV repair.

The recorder runs three parties:

* PortAudio's audio thread calls ``Recorder._callback`` with each block (50 ms). It
  computes the level (RMS and peak, a few microseconds of numpy) and hands a copy of
  the block to a queue. It never touches the disk nor takes a lock.
* A writer thread appends the blocks to the WAV file as 16-bit PCM, keeps the recent
  audio in memory for live transcription, and every ``header_interval_s`` patches the
  RIFF and data sizes in the header, flushes and fsyncs. A process killed at any moment
  leaves a WAV file that plays up to the last patch (and ``repair_wav`` recovers the
  rest). It also notices a device that stopped delivering audio.
* The caller (the UI) starts, pauses, resumes and stops, and polls ``level``,
  ``elapsed_s`` and ``error``.

When the input device goes away mid-recording (unplugged, sound server died), PortAudio
ends the stream: ``error`` is set, the writer closes the WAV file cleanly, and ``stop()``
still returns the ``RecordingInfo`` of what was captured.

A device that refuses the requested rate (many sound cards only take 44.1/48 kHz) is
opened at its own default rate; the writer thread resamples (soxr) so that the file and
the readers always get the requested rate.

Audio for transcription is read as mono float32 at the recorder's rate, with
``recent(seconds)``, ``samples_since(offset)`` (everything since an offset: what fell
out of the in-memory history is read back from the WAV file) or ``subscribe(callback)``.
Paused audio is in none of them, nor in the file.

No Textual here; ``sounddevice`` (and so PortAudio) loads on first use only.
"""

from __future__ import annotations

import contextlib
import os
import queue
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tui.compat.sounddevice import reinitialize_portaudio

WAV_HEADER_BYTES = 44
_MAX_DATA_BYTES = 0xFFFFFFFF - 36
_STOP = object()


class RecorderError(RuntimeError):
    """The recording could not start (no device, device busy, bad settings...)."""


@dataclass(frozen=True)
class InputDevice:
    index: int
    name: str
    channels: int
    default_samplerate: float
    is_default: bool = False
    hostapi: str = ""


@dataclass(frozen=True)
class RecordingInfo:
    path: Path
    duration_s: float
    samplerate: int
    device_name: str
    channels: int = 1
    error: str | None = None
    """Why the recording ended on its own (device lost...), None after a normal stop()."""
    overflows: int = 0
    """Blocks in which the audio driver reported dropped input."""


# --- PortAudio, loaded lazily ----------------------------------------------------

_pa_lock = threading.RLock()
_open_streams = 0
_alsa_handler: Any = None


def _sounddevice() -> Any:
    """Import sounddevice (loads PortAudio); RecorderError when PortAudio is missing."""
    _quiet_alsa()
    try:
        import sounddevice
    except (OSError, ImportError) as exc:
        message = f"audio input unavailable: PortAudio could not be loaded ({exc})"
        raise RecorderError(message) from None
    return sounddevice


def _quiet_alsa() -> None:
    """Keep ALSA's diagnostics ("ALSA lib pcm.c: ... Unknown PCM") off the terminal.

    PortAudio probes every ALSA device it knows of and ALSA prints to stderr about each
    one that fails, which would scribble over the TUI. Best effort, Linux only.
    """
    global _alsa_handler
    if _alsa_handler is not None:
        return
    _alsa_handler = False
    try:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("asound") or "libasound.so.2"
        lib = ctypes.CDLL(name)
        handler_type = ctypes.CFUNCTYPE(
            None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p
        )
        handler = handler_type(lambda *args: None)
        lib.snd_lib_error_set_handler(handler)
        _alsa_handler = (lib, handler)  # keep both alive as long as the process
    except (OSError, AttributeError):
        pass


def _refresh(sd: Any) -> None:
    """Re-scan devices (PortAudio only sees those present at initialisation).

    Skipped while one of our streams is open: re-initialising would kill it.
    """
    with _pa_lock:
        if _open_streams:
            return
        reinitialize_portaudio(sd)


def _stream_opened(delta: int) -> None:
    global _open_streams
    with _pa_lock:
        _open_streams = max(0, _open_streams + delta)


def list_input_devices(refresh: bool = True) -> list[InputDevice]:
    """Every device PortAudio can record from; [] when there is none (never raises)."""
    try:
        sd = _sounddevice()
        if refresh:
            _refresh(sd)
        devices = sd.query_devices()
        try:
            default_index = int(sd.default.device[0])
        except Exception:
            default_index = -1
        try:
            hostapis = [h["name"] for h in sd.query_hostapis()]
        except Exception:
            hostapis = []
        found = []
        for dev in devices:
            if int(dev.get("max_input_channels", 0)) <= 0:
                continue
            index = int(dev["index"])
            api = int(dev.get("hostapi", -1))
            found.append(
                InputDevice(
                    index=index,
                    name=str(dev["name"]),
                    channels=int(dev["max_input_channels"]),
                    default_samplerate=float(dev.get("default_samplerate", 0.0)),
                    is_default=index == default_index,
                    hostapi=hostapis[api] if 0 <= api < len(hostapis) else "",
                )
            )
        return found
    except Exception:
        return []


def choose_input_device(devices: list[InputDevice], preferred: str = "") -> InputDevice | None:
    """The device named `preferred`, else PortAudio's default input, else the first, else None."""
    for dev in devices:
        if preferred and dev.name == preferred:
            return dev
    for dev in devices:
        if dev.is_default:
            return dev
    return devices[0] if devices else None


def default_input_device(refresh: bool = True) -> InputDevice | None:
    """PortAudio's default input, else the first input device, else None."""
    return choose_input_device(list_input_devices(refresh=refresh))


# --- WAV header ------------------------------------------------------------------


def _wav_header(samplerate: int, channels: int, data_bytes: int) -> bytes:
    block_align = channels * 2
    return b"".join(
        (
            b"RIFF",
            struct.pack("<I", 36 + data_bytes),
            b"WAVE",
            b"fmt ",
            struct.pack(
                "<IHHIIHH", 16, 1, channels, samplerate, samplerate * block_align, block_align, 16
            ),
            b"data",
            struct.pack("<I", data_bytes),
        )
    )


@dataclass(frozen=True)
class _WavLayout:
    channels: int
    samplerate: int
    block_align: int
    bits: int
    data_offset: int
    data_size_offset: int
    declared_data_bytes: int
    declared_riff_bytes: int


def _parse_wav(path: Path) -> _WavLayout:
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise ValueError(f"not a WAV file: {path}")
        riff = struct.unpack("<I", head[4:8])[0]
        fmt = None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                raise ValueError(f"WAV file has no data chunk: {path}")
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"fmt ":
                body = f.read(size + (size & 1))
                if len(body) < 16:
                    raise ValueError(f"WAV file has a truncated format chunk: {path}")
                _tag, channels, rate, _brate, align, bits = struct.unpack("<HHIIHH", body[:16])
                fmt = (channels, rate, align, bits)
            elif cid == b"data":
                if fmt is None:
                    raise ValueError(f"WAV file has no format chunk before its data: {path}")
                offset = f.tell()
                channels, rate, align, bits = fmt
                if not channels or not rate or not align:
                    raise ValueError(f"WAV file has an invalid format chunk: {path}")
                return _WavLayout(channels, rate, align, bits, offset, offset - 4, size, riff)
            else:
                f.seek(size + (size & 1), os.SEEK_CUR)


def wav_needs_repair(path: str | Path) -> bool:
    """True when the header's sizes disagree with the file length (a crashed recording)."""
    p = Path(path)
    try:
        layout = _parse_wav(p)
    except (OSError, ValueError):
        return False
    actual = p.stat().st_size - layout.data_offset
    actual -= actual % layout.block_align
    return layout.declared_data_bytes != min(actual, _MAX_DATA_BYTES)


def repair_wav(path: str | Path) -> float:
    """Rewrite the RIFF and data sizes of a WAV file from its length; return its duration.

    For the files a crashed or killed recording leaves: the data chunk is taken to run to
    the end of the file (a partial last frame is cut off). Raises ValueError when the
    file is not a WAV file with a format and a data chunk.
    """
    p = Path(path)
    try:
        layout = _parse_wav(p)
    except OSError as exc:
        raise ValueError(f"cannot read {p}: {exc.strerror or exc}") from None
    size = p.stat().st_size
    data = size - layout.data_offset
    data -= data % layout.block_align
    data = min(data, _MAX_DATA_BYTES)
    end = layout.data_offset + data
    with open(p, "r+b") as f:
        if end < size:
            f.truncate(end)
        f.seek(4)
        f.write(struct.pack("<I", end - 8))
        f.seek(layout.data_size_offset)
        f.write(struct.pack("<I", data))
        f.flush()
        os.fsync(f.fileno())
    return data / layout.block_align / layout.samplerate


# --- recorder --------------------------------------------------------------------


class Recorder:
    """Record an input device to a 16-bit PCM WAV file, written as audio comes in."""

    def __init__(
        self,
        path: str | Path,
        device: int | str | None = None,
        samplerate: int = 16_000,
        channels: int = 1,
        *,
        block_s: float = 0.05,
        history_s: float = 120.0,
        header_interval_s: float = 0.5,
        stall_timeout_s: float = 3.0,
        device_samplerate: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.device = device
        self.samplerate = int(samplerate)
        self.channels = int(channels)
        if self.samplerate <= 0 or self.channels <= 0:
            raise ValueError("samplerate and channels must be positive")
        self.block_s = block_s
        self.blocksize = max(1, int(self.samplerate * block_s))
        # The rate the device records at. None: `samplerate` when the device takes it,
        # else its default rate. Either way the file and the readers get `samplerate`
        # (soxr resamples on the writer thread).
        self.device_samplerate = int(device_samplerate) if device_samplerate else None
        self.header_interval_s = header_interval_s
        self.stall_timeout_s = stall_timeout_s
        self._history_samples = max(self.blocksize, int(history_s * self.samplerate))

        self.device_name = ""
        self._stream: Any = None
        self._file: Any = None
        self._writer: threading.Thread | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._state = "new"  # new, recording, stopping, stopped
        self._paused = False
        self._error: str | None = None
        self._frames = 0  # device frames accepted by the callback (not paused)
        self._capture_rate = self.samplerate
        self._resampler: Any = None
        self._data_bytes = 0  # written by the writer
        self._level = 0.0
        self._peak = 0.0
        self._overflows = 0
        self._last_block = 0.0
        self._writer_done = threading.Event()

        self._lock = threading.Lock()
        self._history: deque[np.ndarray] = deque()
        self._history_start = 0  # absolute sample index of _history[0][0]
        self._history_end = 0
        self._flushed = 0  # samples known to be on disk (readable through another handle)
        self._subscribers: list[Callable[[np.ndarray, int], None]] = []

    # --- state -------------------------------------------------------------------

    @property
    def recording(self) -> bool:
        """Started, not stopped and not failed (paused counts as recording)."""
        return self._state == "recording" and self._error is None

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def error(self) -> str | None:
        return self._error

    @property
    def finished(self) -> bool:
        """The WAV file is complete and closed (after stop() or an error)."""
        return self._writer_done.is_set()

    @property
    def elapsed_s(self) -> float:
        """Seconds of audio recorded so far (pauses excluded)."""
        return self._frames / self._capture_rate

    @property
    def level(self) -> float:
        """RMS of the last block, 0..1 (full scale sine: 0.707). Updates while paused."""
        return self._level

    @property
    def peak(self) -> float:
        """Peak absolute sample of the last block, 0..1."""
        return self._peak

    @property
    def overflows(self) -> int:
        return self._overflows

    @property
    def samples_available(self) -> int:
        """Mono samples readable through samples_since (the offset of the next one)."""
        return self._history_end

    # --- control -----------------------------------------------------------------

    def start(self) -> None:
        if self._state != "new":
            raise RecorderError("a Recorder records once; make a new one")
        sd = _sounddevice()
        with _pa_lock:  # no re-scan between finding the device and opening it
            _refresh(sd)
            stream = self._open_stream(sd)
            _stream_opened(+1)
        self._capture_rate = int(stream.samplerate)
        if self._capture_rate != self.samplerate:
            import soxr

            self._resampler = soxr.ResampleStream(
                self._capture_rate, self.samplerate, self.channels, dtype="int16", quality="HQ"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "wb")  # noqa: SIM115 - closed by the writer thread
            self._file.write(_wav_header(self.samplerate, self.channels, 0))
            self._file.flush()
        except OSError as exc:
            self._close_stream(stream)
            raise RecorderError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self._stream = stream
        self._state = "recording"
        self._last_block = time.monotonic()
        self._writer = threading.Thread(
            target=self._write_loop, name="recorder-writer", daemon=True
        )
        self._writer.start()
        try:
            stream.start()
        except sd.PortAudioError as exc:
            self._error = f"cannot start audio input {self.device_name!r}: {exc}"
            self._queue.put(_STOP)
            self._writer.join(timeout=5)
            self._close_stream(stream)
            self._stream = None
            self._state = "stopped"
            with contextlib.suppress(OSError):
                self.path.unlink()
            raise RecorderError(self._error) from None

    def _open_stream(self, sd: Any) -> Any:
        """Find the device and open a stream on it (at 16 kHz or its own rate)."""
        try:
            info = sd.query_devices(self.device, "input")
        except (ValueError, sd.PortAudioError):
            if self.device is None:
                raise RecorderError("no audio input device found") from None
            names = [d.name for d in list_input_devices(refresh=False)]
            known = f"inputs: {', '.join(names)}" if names else "there is no input device"
            raise RecorderError(f"no audio input device {self.device!r} ({known})") from None
        self.device_name = str(info["name"])
        rates = [self.device_samplerate or self.samplerate]
        native = int(info.get("default_samplerate") or 0)
        if self.device_samplerate is None and native > 0 and native != self.samplerate:
            rates.append(native)  # many sound cards record at 44.1/48 kHz only
        stream = None
        for rate in rates:
            try:
                stream = sd.InputStream(
                    device=self.device,
                    samplerate=rate,
                    channels=self.channels,
                    dtype="int16",
                    blocksize=max(1, int(rate * self.block_s)),
                    callback=self._callback,
                    finished_callback=self._finished_callback,
                )
                break
            except (ValueError, sd.PortAudioError) as exc:
                error = exc
        if stream is None:
            raise RecorderError(f"cannot open audio input {self.device_name!r}: {error}") from None
        return stream

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def stop(self, timeout: float = 5.0) -> RecordingInfo:
        """Stop recording, finish the WAV file and describe it. Safe to call twice."""
        if self._state == "new":
            raise RecorderError("the recording was never started")
        if self._state == "recording":
            self._state = "stopping"
            stream, self._stream = self._stream, None
            if stream is not None:
                # abort(), not stop(): it does not wait for the device to drain (the few ms
                # left in its buffer are not worth it). Even so a wedged driver or sound
                # server can block abort() or close() for good, so they run on a thread
                # of their own and the recording is finished without them.
                closer = threading.Thread(
                    target=self._close_stream, args=(stream, True), name="recorder-close"
                )
                closer.daemon = True
                closer.start()
                closer.join(timeout=min(timeout, 2.0))
                if closer.is_alive() and self._error is None:
                    self._error = f"audio input {self.device_name!r} did not stop (driver hung)"
            self._queue.put(_STOP)
            if self._writer is not None:
                self._writer.join(timeout=timeout)
            self._state = "stopped"
        return self.info()

    def info(self) -> RecordingInfo:
        bytes_per_frame = 2 * self.channels
        return RecordingInfo(
            path=self.path,
            duration_s=self._data_bytes / bytes_per_frame / self.samplerate,
            samplerate=self.samplerate,
            device_name=self.device_name,
            channels=self.channels,
            error=self._error,
            overflows=self._overflows,
        )

    def __enter__(self) -> Recorder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._state in ("recording", "stopping"):
            self.stop()

    # --- reading -----------------------------------------------------------------

    def subscribe(self, callback: Callable[[np.ndarray, int], None]) -> Callable[[], None]:
        """Call ``callback(mono_float32_block, offset)`` for every block written.

        Runs on the writer thread: keep it short (hand the block over to another queue).
        Exceptions are swallowed. Returns a function that unsubscribes.
        """
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    def recent(self, seconds: float) -> np.ndarray:
        """The last `seconds` of recorded audio (at most the in-memory history)."""
        want = max(0, int(seconds * self.samplerate))
        with self._lock:
            start = max(self._history_start, self._history_end - want)
            return self._slice_memory(start, self._history_end)

    def samples_since(self, offset: int) -> tuple[np.ndarray, int]:
        """Every recorded sample from `offset` on, and the offset to ask for next time."""
        offset = max(0, int(offset))
        with self._lock:
            end = self._history_end
            mem_start = self._history_start
            if offset >= end:
                return np.zeros(0, dtype=np.float32), end
            memory = self._slice_memory(max(offset, mem_start), end)
        if offset >= mem_start:
            return memory, end
        older = self._read_file(offset, mem_start)
        return np.concatenate([older, memory]), end

    # --- internals ---------------------------------------------------------------

    def _callback(self, indata: np.ndarray, frames: int, _time: Any, status: Any) -> None:
        # PortAudio's thread: no locks, no I/O, no allocation beyond the copy.
        if status and status.input_overflow:
            self._overflows += 1
        self._last_block = time.monotonic()
        if frames:
            block = indata[:, 0] if self.channels == 1 else indata.mean(axis=1)
            block = block.astype(np.float32)
            block *= 1.0 / 32768.0
            self._peak = float(np.max(np.abs(block)))
            self._level = float(np.sqrt(np.mean(block * block)))
        if self._paused or self._state != "recording" or self._error is not None:
            return
        self._frames += frames
        self._queue.put(indata.copy())

    def _finished_callback(self) -> None:
        # The stream ended: after our stop(), or on its own (device lost).
        if self._state == "recording" and self._error is None:
            self._error = f"audio input {self.device_name!r} stopped (device lost?)"
            self._queue.put(_STOP)

    def _write_loop(self) -> None:
        f = self._file
        last_patch = time.monotonic()
        try:
            while True:
                try:
                    item = self._queue.get(timeout=0.1)
                except queue.Empty:
                    item = None
                if item is _STOP:
                    break
                if item is not None and not self._write_block(f, item):
                    break
                now = time.monotonic()
                if now - last_patch >= self.header_interval_s:
                    self._patch_header(f)
                    last_patch = now
                if (
                    self._state == "recording"
                    and self._error is None
                    and now - self._last_block > self.stall_timeout_s
                ):
                    self._error = (
                        f"audio input {self.device_name!r} stopped delivering audio "
                        f"for {self.stall_timeout_s:.0f} s"
                    )
                    break
            # Blocks queued before the stop still belong to the recording.
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not _STOP and not self._write_block(f, item):
                    break
            if self._resampler is not None:
                tail = self._resampler.resample_chunk(
                    np.zeros((0, self.channels), dtype=np.int16), last=True
                )
                self._resampler = None
                if len(tail):
                    self._write_block(f, tail)
        except OSError as exc:
            if self._error is None:
                self._error = f"cannot write {self.path}: {exc.strerror or exc}"
        finally:
            with contextlib.suppress(OSError):
                self._patch_header(f)
            with contextlib.suppress(OSError):
                f.close()
            self._writer_done.set()

    def _write_block(self, f: Any, block: np.ndarray) -> bool:
        if self._resampler is not None:
            block = self._resampler.resample_chunk(block).reshape(-1, self.channels)
            if not len(block):
                return True
        data = np.ascontiguousarray(block, dtype="<i2").tobytes()
        if self._data_bytes + len(data) > _MAX_DATA_BYTES:
            if self._error is None:
                self._error = "recording reached the WAV size limit (4 GiB)"
            return False
        f.write(data)
        self._data_bytes += len(data)
        mono = block[:, 0] if block.shape[1] == 1 else block.mean(axis=1)
        mono = mono.astype(np.float32) * (1.0 / 32768.0)
        with self._lock:
            offset = self._history_end
            self._history.append(mono)
            self._history_end += len(mono)
            while (
                self._history
                and self._history_end - self._history_start - len(self._history[0])
                >= self._history_samples
                and self._history_start + len(self._history[0]) <= self._flushed
            ):
                self._history_start += len(self._history.popleft())
            subscribers = list(self._subscribers)
        for callback in subscribers:
            with contextlib.suppress(Exception):
                callback(mono, offset)
        return True

    def _patch_header(self, f: Any) -> None:
        if f.closed:
            return
        f.flush()
        end = f.tell()
        f.seek(4)
        f.write(struct.pack("<I", 36 + self._data_bytes))
        f.seek(40)
        f.write(struct.pack("<I", self._data_bytes))
        f.seek(end)
        f.flush()
        os.fsync(f.fileno())
        with self._lock:
            self._flushed = self._data_bytes // (2 * self.channels)

    def _slice_memory(self, start: int, end: int) -> np.ndarray:
        """Samples [start, end) from the in-memory history (caller holds the lock)."""
        parts = []
        pos = self._history_start
        for chunk in self._history:
            chunk_end = pos + len(chunk)
            if chunk_end > start and pos < end:
                parts.append(chunk[max(0, start - pos) : min(len(chunk), end - pos)])
            pos = chunk_end
            if pos >= end:
                break
        if not parts:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)

    def _read_file(self, start: int, end: int) -> np.ndarray:
        frame_bytes = 2 * self.channels
        try:
            with open(self.path, "rb") as f:
                f.seek(WAV_HEADER_BYTES + start * frame_bytes)
                raw = f.read((end - start) * frame_bytes)
        except OSError:
            return np.zeros(0, dtype=np.float32)
        raw = raw[: len(raw) - len(raw) % frame_bytes]
        data = np.frombuffer(raw, dtype="<i2").reshape(-1, self.channels)
        mono = data[:, 0] if self.channels == 1 else data.mean(axis=1)
        return mono.astype(np.float32) * (1.0 / 32768.0)

    @staticmethod
    def _close_stream(stream: Any, abort: bool = False) -> None:
        try:
            if abort:
                stream.abort()
            else:
                stream.stop()
        except Exception:
            pass
        try:
            stream.close()
        except Exception:
            pass
        _stream_opened(-1)
