"""A virtual microphone for tests: a private PulseAudio daemon fed from a FIFO.

    mic = VirtualMic().start()      # daemon up, os.environ points libpulse at it
    mic.say("speech.wav")           # queued; played in real time, silence otherwise
    Recorder(path, mic.device)      # PortAudio -> ALSA "pulse" plugin -> virtmic
    mic.stop()                      # daemon gone, os.environ restored

How it works: ``pulseaudio -n`` (no default.pa) loads only three modules: the native
protocol on a private unix socket with anonymous auth, ``module-pipe-source`` named
``virtmic`` reading s16le 16 kHz mono from a FIFO it creates, and a null sink. A feeder
thread writes the FIFO in real time (20 ms chunks): queued clips, else zeros. The pipe
source only produces what is written, so it must never starve, and it must be paced:
written faster it would deliver audio faster than real time.

The test process reaches the daemon through the environment libpulse reads whenever a
stream opens: PULSE_SERVER (the socket), PULSE_SOURCE (virtmic) and PULSE_CLIENTCONFIG
(autospawn off, so a killed daemon is never replaced by a system one). PortAudio sees
it as the ALSA devices "pulse" and "default" (alsa-plugins' pulse plugin).

Works as root (the daemon only warns without --system), without a login session, D-Bus,
/dev/snd or a terminal. Debian packages: pulseaudio, libasound2-plugins, libportaudio2,
espeak-ng (speech for the tests), sox and lame (format conversions in the tests).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

RATE = 16_000
CHUNK_S = 0.02
APT_PACKAGES = "pulseaudio libasound2-plugins libportaudio2 espeak-ng sox lame"


class VirtualMicError(RuntimeError):
    pass


def make_speech(path: Path, text: str, *, voice: str = "en", speed: int = 160) -> Path:
    """Speak `text` into a WAV file with espeak-ng (22,050 Hz mono)."""
    if shutil.which("espeak-ng") is None:
        raise VirtualMicError(f"espeak-ng is missing (apt-get install {APT_PACKAGES})")
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    return path


def speech_span(samples: np.ndarray, rate: int = RATE, threshold_db: float = -45.0):
    """(first, last) second of 20 ms frames above threshold_db, or None for silence."""
    frame = int(rate * 0.02)
    n = len(samples) // frame
    if n == 0:
        return None
    frames = np.asarray(samples[: n * frame], dtype=np.float64).reshape(n, frame)
    energy = 10 * np.log10(np.mean(frames * frames, axis=1) + 1e-12)
    loud = np.flatnonzero(energy > threshold_db)
    if loud.size == 0:
        return None
    return loud[0] * frame / rate, (loud[-1] + 1) * frame / rate


class VirtualMic:
    device = "pulse"
    """The PortAudio device to record from."""

    def __init__(self) -> None:
        self.dir: Path | None = None
        self.env: dict[str, str] = {}
        self._daemon: subprocess.Popen[bytes] | None = None
        self._feeder: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pending: deque[bytes] = deque()
        self._saved_env: dict[str, str | None] = {}
        self.samples_written = 0
        self.feeder_error: BaseException | None = None

    # --- lifecycle -------------------------------------------------------------

    def start(self, *, activate: bool = True, timeout: float = 10.0) -> VirtualMic:
        exe = shutil.which("pulseaudio")
        if exe is None:
            raise VirtualMicError(f"pulseaudio is missing (apt-get install {APT_PACKAGES})")
        self.dir = Path(tempfile.mkdtemp(prefix="triptych-vmic-"))
        d = self.dir
        for sub in ("run", "state", "xdg", "config"):
            (d / sub).mkdir(mode=0o700)
        (d / "client.conf").write_text("autospawn = no\n")
        socket_path = d / "native"
        fifo = d / "virtmic.fifo"  # module-pipe-source creates it (and fails if it exists)
        daemon_env = {
            **os.environ,
            "HOME": str(d),
            "XDG_RUNTIME_DIR": str(d / "xdg"),
            "XDG_CONFIG_HOME": str(d / "config"),
            "PULSE_RUNTIME_PATH": str(d / "run"),
            "PULSE_STATE_PATH": str(d / "state"),
            "PULSE_CLIENTCONFIG": str(d / "client.conf"),
        }
        for name in ("PULSE_SERVER", "PULSE_SOURCE", "PULSE_SINK", "DBUS_SESSION_BUS_ADDRESS"):
            daemon_env.pop(name, None)
        args = [
            exe,
            "--daemonize=no",
            "-n",
            "--exit-idle-time=-1",
            "--disallow-exit",
            "--use-pid-file=false",
            "--disable-shm=true",
            "--realtime=false",
            "--high-priority=false",
            "--log-target=stderr",
            "--log-level=warning",
            f"--load=module-native-protocol-unix auth-anonymous=1 socket={socket_path}",
            f"--load=module-pipe-source source_name=virtmic file={fifo} "
            f"format=s16le rate={RATE} channels=1",
            "--load=module-null-sink sink_name=nullsink",
        ]
        setpriv = shutil.which("setpriv")
        if setpriv:  # util-linux: the daemon dies with this process, even on SIGKILL
            args = [setpriv, "--pdeathsig", "KILL", *args]
        log = open(d / "pulseaudio.log", "wb")  # noqa: SIM115 - the daemon owns it
        self._daemon = subprocess.Popen(
            args,
            env=daemon_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        self.env = {
            "PULSE_SERVER": f"unix:{socket_path}",
            "PULSE_SOURCE": "virtmic",
            "PULSE_CLIENTCONFIG": str(d / "client.conf"),
        }
        try:
            self._wait_ready(socket_path, fifo, timeout)
        except BaseException:
            self.stop()
            raise
        self._stop.clear()
        self._feeder = threading.Thread(target=self._feed, args=(fifo,), daemon=True)
        self._feeder.start()
        if activate:
            self.activate()
        return self

    def activate(self) -> None:
        """Point this process's libpulse (and its children's) at this daemon."""
        for name, value in self.env.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    def deactivate(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()

    def kill_daemon(self) -> None:
        """SIGKILL the PulseAudio daemon: the device disappears under its clients."""
        if self._daemon is not None and self._daemon.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._daemon.pid, signal.SIGKILL)
            self._daemon.wait(timeout=10)

    def stop(self) -> None:
        self._stop.set()
        self.kill_daemon()
        if self._feeder is not None:
            self._feeder.join(timeout=5)
            self._feeder = None
        self.deactivate()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> VirtualMic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def log(self) -> str:
        try:
            return (self.dir / "pulseaudio.log").read_text(errors="replace") if self.dir else ""
        except OSError:
            return ""

    # --- audio -----------------------------------------------------------------

    def say(self, wav_path: str | Path, *, gain: float = 1.0, wait: bool = False) -> float:
        """Queue a sound file (any rate, converted to 16 kHz mono); return its duration."""
        from tui.audiofile import load_audio_16k

        return self.play(load_audio_16k(wav_path) * gain, wait=wait)

    def play(self, samples: np.ndarray, *, wait: bool = False) -> float:
        """Queue 16 kHz mono float32 samples; return their duration in seconds."""
        pcm = (np.clip(np.asarray(samples, dtype=np.float32), -1, 1) * 32767).astype("<i2")
        with self._lock:
            self._pending.append(pcm.tobytes())
        if wait:
            self.wait_idle(timeout=len(pcm) / RATE + 10)
        return len(pcm) / RATE

    def silence(self) -> None:
        """Drop whatever is queued: from now on the microphone hears silence."""
        with self._lock:
            self._pending.clear()

    @property
    def busy(self) -> bool:
        with self._lock:
            return bool(self._pending)

    def wait_idle(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.busy:
            if time.monotonic() > deadline:
                raise VirtualMicError("the virtual microphone is still playing")
            time.sleep(0.01)

    # --- internals -------------------------------------------------------------

    def _wait_ready(self, socket_path: Path, fifo: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._daemon is not None and self._daemon.poll() is not None:
                raise VirtualMicError(f"pulseaudio exited at start:\n{self.log}")
            if socket_path.exists() and fifo.exists():
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    try:
                        s.connect(str(socket_path))
                        return
                    except OSError:
                        pass
            time.sleep(0.02)
        raise VirtualMicError(f"pulseaudio did not come up in {timeout:.0f} s:\n{self.log}")

    def _next_chunk(self, size: int) -> bytes:
        out = bytearray()
        with self._lock:
            while self._pending and len(out) < size:
                head = self._pending[0]
                take = size - len(out)
                out += head[:take]
                if len(head) > take:
                    self._pending[0] = head[take:]
                else:
                    self._pending.popleft()
        if len(out) < size:
            out += bytes(size - len(out))
        return bytes(out)

    def _feed(self, fifo: Path) -> None:
        chunk_samples = int(RATE * CHUNK_S)
        try:
            # The daemon holds the FIFO open for reading, so this open does not block.
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.set_blocking(fd, True)
        except OSError as exc:
            self.feeder_error = exc
            return
        try:
            t0 = time.monotonic()
            n = 0
            while not self._stop.is_set():
                os.write(fd, self._next_chunk(chunk_samples * 2))
                n += 1
                self.samples_written += chunk_samples
                delay = t0 + n * CHUNK_S - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -1.0:  # fell far behind (a stalled machine): do not burst
                    t0, n = time.monotonic(), 0
        except OSError as exc:  # EPIPE once the daemon is gone
            if not self._stop.is_set():
                self.feeder_error = exc
        finally:
            os.close(fd)
