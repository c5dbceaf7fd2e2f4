"""Microphone capture (tui.audio) against a real PulseAudio virtual microphone."""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.virtual_mic import APT_PACKAGES, VirtualMic, VirtualMicError, make_speech, speech_span
from tui.audio import (
    Recorder,
    RecorderError,
    default_input_device,
    list_input_devices,
    repair_wav,
    wav_needs_repair,
)
from tui.audiofile import load_audio_16k

REPO = Path(__file__).resolve().parent.parent
SENTENCE = "The quick brown fox jumps over the lazy dog."


def _start_mic() -> VirtualMic:
    try:
        return VirtualMic().start()
    except VirtualMicError as exc:
        pytest.fail(f"virtual microphone unavailable: {exc}\n(apt-get install {APT_PACKAGES})")


@pytest.fixture(scope="module")
def mic() -> Iterator[VirtualMic]:
    m = _start_mic()
    yield m
    m.stop()


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_speech(tmp_path_factory.mktemp("speech") / "fox.wav", SENTENCE)


def _wait_elapsed(rec: Recorder, seconds: float, timeout: float = 15.0) -> list[float]:
    """Poll like a UI would (every 50 ms) until rec has `seconds` of audio; the levels."""
    levels = []
    deadline = time.monotonic() + timeout
    while rec.elapsed_s < seconds:
        assert time.monotonic() < deadline, f"recorded only {rec.elapsed_s:.2f} s"
        assert rec.error is None, rec.error
        levels.append(rec.level)
        time.sleep(0.05)
    return levels


def test_virtual_mic_is_an_input_device(mic: VirtualMic) -> None:
    names = [d.name for d in list_input_devices()]
    assert mic.device in names
    default = default_input_device()
    assert default is not None and default.channels >= 1


def test_records_speech_to_a_wav_file(mic: VirtualMic, speech: Path, tmp_path: Path) -> None:
    spoken = speech_span(load_audio_16k(speech))
    assert spoken is not None
    path = tmp_path / "sub" / "rec.wav"
    rec = Recorder(path, mic.device)
    rec.start()
    silent_levels = _wait_elapsed(rec, 0.5)
    mic.say(speech)
    speech_levels = _wait_elapsed(rec, 0.5 + spoken[1] + 0.1)
    mic.wait_idle()
    _wait_elapsed(rec, 3.6)
    tail_level = rec.level
    _wait_elapsed(rec, 4.0)
    info = rec.stop()

    assert info.error is None
    assert info.device_name == mic.device and info.samplerate == 16000
    assert 4.0 <= info.duration_s <= 4.3
    data, rate = sf.read(path, dtype="float32")
    assert rate == 16000 and data.ndim == 1
    assert len(data) / rate == pytest.approx(info.duration_s, abs=1e-6)
    assert not wav_needs_repair(path)
    span = speech_span(data)
    assert span is not None, "the recording is silent"
    start, end = span
    assert 0.35 <= start <= 1.2, span  # said at ~0.5 s, plus the audio path's latency
    assert end - start == pytest.approx(spoken[1] - spoken[0], abs=0.3)
    assert np.sqrt(np.mean(data[: int(0.3 * rate)] ** 2)) < 1e-3  # before the speech
    assert np.sqrt(np.mean(data[int((end + 0.2) * rate) :] ** 2)) < 1e-3  # after it
    # The level meter: loud during the speech, ~0 in silence.
    assert max(speech_levels) > 0.05
    assert max(silent_levels[2:]) < 0.005
    assert tail_level < 0.005
    # The in-memory copy is the file's content.
    samples, offset = rec.samples_since(0)
    assert offset == len(data)
    np.testing.assert_allclose(samples, data, atol=1 / 32768)


def test_pause_leaves_audio_out(mic: VirtualMic, tmp_path: Path) -> None:
    path = tmp_path / "paused.wav"
    rec = Recorder(path, mic.device)
    rec.start()
    _wait_elapsed(rec, 0.5)
    rec.pause()
    assert rec.paused
    paused_at = rec.elapsed_s
    mic.play(0.3 * np.sin(np.arange(16000) * 0.2))  # 1 s of tone
    paused_levels = []
    for _ in range(32):  # the tone, then the audio path's latency: all of it arrives
        paused_levels.append(rec.level)
        time.sleep(0.05)
    assert max(paused_levels) > 0.1  # the meter goes on while paused
    assert rec.level < 0.005
    assert rec.elapsed_s == pytest.approx(paused_at, abs=0.06)
    rec.resume()
    assert not rec.paused
    _wait_elapsed(rec, paused_at + 1.0)
    info = rec.stop()
    data, rate = sf.read(path, dtype="float32")
    assert info.duration_s == pytest.approx(paused_at + 1.0, abs=0.15)
    assert len(data) / rate == pytest.approx(info.duration_s, abs=1e-6)
    assert speech_span(data) is None, "audio from the pause is in the file"
    assert np.max(np.abs(data)) < 1e-3


def test_incremental_reading(mic: VirtualMic, speech: Path, tmp_path: Path) -> None:
    """samples_since / recent / subscribe, with a history shorter than the recording."""
    path = tmp_path / "incremental.wav"
    rec = Recorder(path, mic.device, history_s=0.5, header_interval_s=0.2)
    blocks: list[tuple[int, int]] = []
    unsubscribe = rec.subscribe(lambda block, offset: blocks.append((offset, len(block))))
    rec.start()
    mic.say(speech)
    pieces = []
    offset = 0
    while rec.elapsed_s < 2.0:
        time.sleep(0.3)
        chunk, offset = rec.samples_since(offset)
        pieces.append(chunk)
    recent = rec.recent(0.25)
    unsubscribe()
    rec.stop()
    mic.silence()
    chunk, offset = rec.samples_since(offset)
    pieces.append(chunk)
    data, _ = sf.read(path, dtype="float32")
    assert offset == len(data)
    np.testing.assert_allclose(np.concatenate(pieces), data, atol=1 / 32768)
    # Offset 0 is long gone from memory: read back from the file.
    everything, end = rec.samples_since(0)
    assert end == len(data)
    np.testing.assert_allclose(everything, data, atol=1 / 32768)
    assert len(recent) == 4000 and recent.dtype == np.float32
    # Subscribers saw contiguous blocks from offset 0.
    assert blocks and blocks[0][0] == 0
    for (o1, n1), (o2, _) in zip(blocks, blocks[1:], strict=False):
        assert o2 == o1 + n1


KILLED_RECORDER = textwrap.dedent(
    """
    import sys, time
    from tui.audio import Recorder
    rec = Recorder(sys.argv[1], sys.argv[2])
    rec.start()
    while True:
        print(f"{rec.elapsed_s:.3f}", flush=True)
        time.sleep(0.05)
    """
)


def test_killed_recording_is_playable(mic: VirtualMic, speech: Path, tmp_path: Path) -> None:
    path = tmp_path / "killed.wav"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_RECORDER, str(path), mic.device],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        mic.say(speech)
        elapsed = 0.0
        deadline = time.monotonic() + 20
        assert proc.stdout is not None
        while elapsed < 2.3:
            line = proc.stdout.readline()
            assert line, f"the recorder exited: {proc.stderr.read() if proc.stderr else ''}"
            elapsed = float(line)
            assert time.monotonic() < deadline
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        mic.silence()

    # Without any repair: a valid WAV with everything but the last < 1 s.
    info = sf.info(path)
    assert info.samplerate == 16000
    assert elapsed - 1.0 <= info.duration <= elapsed + 0.2
    data, _ = sf.read(path, dtype="float32")
    assert speech_span(data) is not None
    with wave.open(str(path), "rb") as w:
        assert w.getnframes() == len(data) and w.getsampwidth() == 2
        assert len(w.readframes(w.getnframes())) == 2 * len(data)
    with open(path, "rb") as f:
        header = f.read(44)
    assert struct.unpack("<I", header[4:8])[0] == 36 + struct.unpack("<I", header[40:44])[0]
    # Repair: the data that came after the last header update counts too.
    repaired = repair_wav(path)
    assert repaired >= info.duration
    assert not wav_needs_repair(path)
    assert sf.info(path).duration == pytest.approx(repaired, abs=1e-6)


def test_device_lost_mid_recording(speech: Path, tmp_path: Path) -> None:
    lost_mic = _start_mic()  # its own daemon: this test kills it
    try:
        path = tmp_path / "lost.wav"
        rec = Recorder(path, lost_mic.device)
        rec.start()
        lost_mic.say(speech)
        _wait_elapsed(rec, 1.5)
        lost_mic.kill_daemon()
        deadline = time.monotonic() + 10
        while rec.error is None or not rec.finished:
            assert time.monotonic() < deadline, "the recorder did not notice the lost device"
            time.sleep(0.05)
        assert "stopped" in rec.error
        t = time.monotonic()
        info = rec.stop()
        assert time.monotonic() - t < 2.0
        assert info.error == rec.error
        assert info.duration_s >= 1.5
        assert not wav_needs_repair(path)
        data, rate = sf.read(path, dtype="float32")
        assert len(data) / rate == pytest.approx(info.duration_s, abs=1e-6)
        assert speech_span(data) is not None
        assert rec.stop() == info  # a second stop is harmless
    finally:
        lost_mic.stop()


def test_frozen_sound_server_does_not_hang(speech: Path, tmp_path: Path) -> None:
    """The daemon stops answering (SIGSTOP): the stall is noticed and stop() returns."""
    frozen_mic = _start_mic()
    daemon = frozen_mic._daemon
    assert daemon is not None
    try:
        path = tmp_path / "frozen.wav"
        rec = Recorder(path, frozen_mic.device, stall_timeout_s=1.0)
        rec.start()
        frozen_mic.say(speech)
        _wait_elapsed(rec, 1.0)
        os.killpg(daemon.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while not rec.finished:
            assert time.monotonic() < deadline, "the recorder did not notice the stall"
            time.sleep(0.05)
        assert rec.error is not None and "stopped delivering audio" in rec.error
        t = time.monotonic()
        info = rec.stop()
        assert time.monotonic() - t < 3.0
        assert info.duration_s >= 1.0
        assert not wav_needs_repair(path)
        assert sf.info(path).duration == pytest.approx(info.duration_s, abs=1e-6)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(daemon.pid, signal.SIGCONT)
        frozen_mic.stop()


NO_DEVICE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from tui.audio import Recorder, RecorderError, default_input_device, list_input_devices
    out = {"devices": [d.name for d in list_input_devices()],
           "default": default_input_device() is not None, "errors": []}
    for device in ("no-such-microphone", None, "pulse"):
        try:
            Recorder(Path(sys.argv[1]) / "x.wav", device).start()
            out["errors"].append(None)
        except RecorderError as exc:
            out["errors"].append(str(exc))
    out["created"] = Path(sys.argv[1]).exists()
    print(json.dumps(out))
    """
)


def test_no_input_device(tmp_path: Path) -> None:
    """No sound server (and, in CI, no sound card): no devices and clear errors."""
    import json

    env = {**os.environ, "PULSE_SERVER": f"unix:{tmp_path}/nowhere/native"}
    env.pop("PULSE_SOURCE", None)
    target = tmp_path / "recordings"
    proc = subprocess.run(
        [sys.executable, "-c", NO_DEVICE, str(target)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "pulse" not in out["devices"]
    if not Path("/dev/snd").exists():  # a machine with sound cards still has those
        assert out["devices"] == []
        assert out["default"] is False
        assert out["errors"][1] == "no audio input device found"
    assert out["errors"][0].startswith("no audio input device 'no-such-microphone'")
    assert out["errors"][2].startswith("no audio input device 'pulse'")
    assert out["created"] is False


def test_a_recorder_records_once(mic: VirtualMic, tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "once.wav", mic.device)
    with pytest.raises(RecorderError, match="never started"):
        rec.stop()
    with rec:
        assert rec.recording
        with pytest.raises(RecorderError, match="records once"):
            rec.start()
    assert not rec.recording and rec.finished
    with pytest.raises(RecorderError, match="records once"):
        rec.start()


# --- WAV repair (no device needed) ---------------------------------------------------


def _crashed_wav(path: Path, samples: np.ndarray, declared: int, extra: bytes = b"") -> None:
    pcm = (samples * 32767).astype("<i2").tobytes()
    header = (
        b"RIFF"
        + struct.pack("<I", 36 + declared)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
        + b"data"
        + struct.pack("<I", declared)
    )
    path.write_bytes(header + pcm + extra)


def test_repair_wav_fixes_sizes(tmp_path: Path) -> None:
    path = tmp_path / "crash.wav"
    tone = 0.5 * np.sin(np.arange(24000) / 5).astype(np.float32)  # 1.5 s
    _crashed_wav(path, tone, declared=0, extra=b"\x01")  # + half a frame
    assert wav_needs_repair(path)
    assert repair_wav(path) == pytest.approx(1.5)
    assert not wav_needs_repair(path)
    data, rate = sf.read(path, dtype="float32")
    assert len(data) == 24000 and rate == 16000
    assert path.stat().st_size == 44 + 48000


def test_repair_wav_rejects_non_wav(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav file at all")
    with pytest.raises(ValueError, match="not a WAV file"):
        repair_wav(bad)
    assert not wav_needs_repair(bad)
    with pytest.raises(ValueError, match="cannot read"):
        repair_wav(tmp_path / "missing.wav")


def test_listen_modules_stay_light() -> None:
    """No Textual in the listen modules; PortAudio loads on first use, not on import."""
    code = (
        "import json, sys\n"
        "import tui.audio, tui.audiofile, tui.transcript, tui.vad\n"
        "print(json.dumps(sorted(m for m in sys.modules"
        " if m.split('.')[0] in ('textual', 'sounddevice', 'soundfile', 'soxr'))))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize(("device_rate", "channels"), [(44100, 1), (48000, 2)])
def test_device_rate_is_resampled(
    mic: VirtualMic, speech: Path, tmp_path: Path, device_rate: int, channels: int
) -> None:
    """A device that records at 44.1/48 kHz only: the file is still 16 kHz."""
    path = tmp_path / "resampled.wav"
    rec = Recorder(path, mic.device, channels=channels, device_samplerate=device_rate)
    rec.start()
    mic.say(speech)
    _wait_elapsed(rec, 1.5)
    info = rec.stop()
    mic.silence()
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    assert rate == 16000 and data.shape[1] == channels
    assert len(data) / rate == pytest.approx(info.duration_s, abs=1e-6)
    assert info.duration_s == pytest.approx(rec.elapsed_s, abs=0.06)
    assert speech_span(data.mean(axis=1)) is not None
    samples, _ = rec.samples_since(0)
    np.testing.assert_allclose(samples, data.mean(axis=1), atol=1 / 32768)
