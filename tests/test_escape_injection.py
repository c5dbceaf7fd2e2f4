"""Terminal escape injection: data never reaches the terminal as control characters.

Stored messages and titles, model output, file names and engine errors may hold
OSC 52 (clipboard), OSC 0 (window title), OSC 8 (links), CSI (clear screen), DCS
(tmux passthrough) and C1 bytes. The slow tests run the installed ``triptych`` in
a pseudo-terminal and read every byte it writes: none of the data's sequences may
be there, and their visible stand-ins (``␛]52;c;``) must be.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from rich.console import Console

from tests.conftest import CHAT_MODEL
from tui.engines import protocol as p
from tui.safe_text import visible

REPO = Path(__file__).resolve().parent.parent
TRIPTYCH = Path(sys.executable).parent / "triptych"

OSC52 = "\x1b]52;c;SGVsbG8=\x07"
TITLE = "T0 \x1b]0;PWNED-TITLE\x07"
MODEL_NAME = "evil\x1b]0;MODEL-PWNED\x07.gguf"
MESSAGES = [
    ("user", f"M52 {OSC52} end"),
    ("assistant", "M8 \x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\ end"),
    ("user", "MCLR \x1b[2J end"),
    ("assistant", "MDCS \x1bPtmux;\x1b\x1b]0;X\x07\x1b\\ end"),
    ("user", "MC1 \x9b31m end"),
]

FORBIDDEN = [
    b"\x1b]52;c;SGVsbG8",
    b"\x1b]0;PWNED",
    b"\x1b]0;MODEL-PWNED",
    b"\x1b]8;;http://evil",
    b"\x1b[2J end",
    b"\x1bPtmux;",
    b"\x1b]0;X",
    "\x9b31m".encode(),
]
"""The data's sequences as a terminal would receive them (Textual's own output, e.g.
its alternate-screen switch, is not data and is not looked for)."""


def assert_neutralised(out: bytes, *shown: str) -> None:
    for raw in FORBIDDEN:
        assert raw not in out, f"{raw!r} reached the terminal"
    for text in shown:
        assert text.encode() in out, f"{text!r} was not shown"


# --------------------------------------------------------------------------- a pty


class Pty:
    """A command in an 80x24 pseudo-terminal; every byte it writes is kept."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        # Rows, columns and a pixel size (so nothing asks the terminal for its cell size).
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 480, 800))
        env = {**env, "TERM": "xterm-256color", "COLUMNS": "80", "LINES": "24"}
        self.process = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=REPO,
            start_new_session=True,
        )
        os.close(slave)
        self.out = b""

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the command has exited and the pty is closed
            return False
        self.out += chunk
        return bool(chunk)

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        needle = text.encode()
        deadline = time.monotonic() + timeout
        while needle not in self.out:
            if time.monotonic() > deadline or not self._read(0.1):
                tail = self.out[-3000:].decode(errors="replace")
                raise AssertionError(f"{text!r} did not appear; the output ends:\n{tail!r}")

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def finish(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            self._read(0.1)
        while self._read(0.2):
            pass
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
            raise AssertionError("the command did not exit")
        return self.process.returncode

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        os.close(self.master)


@pytest.fixture
def hostile_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, app_dirs: Path) -> Path:
    """A models folder holding a real GGUF under a name with an OSC title sequence."""
    if not CHAT_MODEL.is_file():
        pytest.fail(f"{CHAT_MODEL} is missing: run scripts/test (it fetches the test model)")
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / MODEL_NAME).symlink_to(CHAT_MODEL)
    monkeypatch.setenv("TRIPTYCH_MODELS_DIR", str(folder))
    # No Hugging Face cache of the machine's own in the listing.
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("TRIPTYCH_THREADS", "1")
    return folder / MODEL_NAME


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("TEXTUAL", "TMUX"))}


def _triptych() -> str:
    assert TRIPTYCH.is_file(), f"{TRIPTYCH} is missing: install the project into the venv"
    return str(TRIPTYCH)


# --------------------------------------------------------------------------- the TUI


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_tui_shows_hostile_titles_messages_and_file_names_without_sending_them(
    hostile_models: Path,
) -> None:
    from tui.store import Store

    store = Store()
    try:
        conversation = store.create_conversation(title=TITLE, model=str(hostile_models))
        for role, content in MESSAGES:
            store.add_message(conversation.id, role, content)
    finally:
        store.close()

    term = Pty([_triptych()], _env())
    try:
        # The newest conversation opens by itself: its title in the header, every message.
        term.wait_for("MC1 <9B>31m end")
        term.wait_for("␛]0;PWNED-TITLE␇")
        term.send(b"\x1b[15~")  # F5: the Models panel lists the hostile file name
        term.wait_for("evil␛]0;MODEL-PWNED␇.gguf")
        term.send(b"\x11")  # Ctrl+Q
        assert term.finish() == 0
    finally:
        term.close()
    assert_neutralised(
        term.out,
        "M52 ␛]52;c;SGVsbG8=␇ end",
        "M8 ␛]8;;http://evil.example/",
        "MCLR ␛[2J end",
        "MDCS ␛Ptmux;␛␛]0;X␇␛\\ end",
        "MC1 <9B>31m end",
        "␛]0;PWNED-TITLE␇",
        "evil␛]0;MODEL-PWNED␇",
    )
    # Textual still drew the screen: the alternate screen was entered and left.
    assert b"\x1b[?1049h" in term.out and b"\x1b[?1049l" in term.out


# --------------------------------------------------------------------------- the CLI


@pytest.mark.slow
def test_models_list_shows_a_hostile_file_name_on_a_terminal_and_in_a_pipe(
    hostile_models: Path,
) -> None:
    term = Pty([_triptych(), "models", "list", "--modality", "chat"], _env())
    try:
        assert term.finish() == 0
    finally:
        term.close()
    assert_neutralised(term.out, "evil␛]0;MODEL-PWNED␇.gguf")

    piped = subprocess.run(
        [_triptych(), "models", "list", "--modality", "chat"],
        capture_output=True,
        env=_env(),
        timeout=60,
    )
    assert piped.returncode == 0, piped.stderr
    assert_neutralised(piped.stdout, "evil␛]0;MODEL-PWNED␇.gguf")
    assert b"\x1b" not in piped.stdout + piped.stderr


@pytest.mark.slow
def test_models_list_json_keeps_the_exact_name_escaped(hostile_models: Path) -> None:
    piped = subprocess.run(
        [_triptych(), "models", "list", "--modality", "chat", "--json"],
        capture_output=True,
        env=_env(),
        timeout=60,
    )
    assert piped.returncode == 0, piped.stderr
    assert b"\x1b" not in piped.stdout
    names = [json.loads(line)["name"] for line in piped.stdout.decode().splitlines()]
    assert MODEL_NAME in names


@pytest.mark.slow
def test_cli_error_line_shows_a_hostile_path(app_dirs: Path) -> None:
    path = "/tmp/x\x1b]0;T-PWNED\x07.gguf"
    argv = [_triptych(), "chat", "--model", path, "hi"]
    term = Pty(argv, _env())
    try:
        assert term.finish() == 1
    finally:
        term.close()
    assert b"\x1b]0;T-PWNED" not in term.out
    assert b"triptych: " in term.out
    assert "x␛]0;T-PWNED␇.gguf".encode() in term.out

    piped = subprocess.run(argv, capture_output=True, env=_env(), timeout=60)
    assert piped.returncode == 1
    assert b"\x1b" not in piped.stderr
    assert "x␛]0;T-PWNED␇.gguf".encode() in piped.stderr


# --------------------------------------------------------------------------- CLI streams


class TerminalText(io.StringIO):
    """Standard output as a terminal: isatty() is True."""

    def isatty(self) -> bool:
        return True


def _fake_host(events: list[object]) -> type:
    class FakeHost:
        """Stands in for the engine process: yields the given events."""

        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def submit(self, request: object):
            yield from events

        def shutdown(self) -> None:
            pass

    return FakeHost


REPLY_TOKENS = ["Sure", f" {OSC52}", "\x1b]0;", "T\x07 line\r", "\nnext \x9b2J", " done"]


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "pipe"])
def test_chat_reply_is_made_visible_on_a_terminal_and_exact_into_a_pipe(
    app_dirs: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, terminal: bool
) -> None:
    from tui import cli
    from tui.engines import host
    from tui.formats import gguf

    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    monkeypatch.setattr(gguf, "read_gguf_info", lambda path: None)
    events = [p.TokenGenerated(token) for token in REPLY_TOKENS]
    events.append(p.GenerationFinished("stop"))
    monkeypatch.setattr(host, "EngineHost", _fake_host(events))
    out = TerminalText() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    assert cli.main(["chat", "--model", str(model), "hi"]) == 0
    reply = "".join(REPLY_TOKENS)
    if terminal:
        assert out.getvalue() == visible(reply) + "\n"
        assert out.getvalue() == "Sure ␛]52;c;SGVsbG8=␇␛]0;T␇ line\nnext <9B>2J done\n"
    else:
        assert out.getvalue() == reply + "\n"


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "pipe"])
def test_transcript_is_made_visible_on_a_terminal_and_exact_into_a_pipe(
    app_dirs: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, terminal: bool
) -> None:
    from tui import cli
    from tui.engines import host
    from tui.formats import whisper

    audio = tmp_path / "a.wav"
    audio.write_bytes(b"RIFF....WAVE")
    model = tmp_path / "ggml-tiny.bin"
    model.write_bytes(b"lmgg")
    monkeypatch.setattr(whisper, "read_whisper_info", lambda path: None)
    spoken = f"hello {OSC52} there \x9b2J"
    events = [p.AudioLoaded(1.0), p.SegmentTranscribed(0.0, 1.0, spoken)]
    events.append(p.GenerationFinished("stop"))
    monkeypatch.setattr(host, "EngineHost", _fake_host(events))
    out = TerminalText() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    assert cli.main(["transcribe", str(audio), "--model", str(model), "--format", "txt"]) == 0
    if terminal:
        assert "\x1b" not in out.getvalue() and "\x9b" not in out.getvalue()
        assert "hello ␛]52;c;SGVsbG8=␇ there <9B>2J" in out.getvalue()
    else:
        assert spoken in out.getvalue()


# --------------------------------------------------------------------------- widgets


def _plain(renderable: object) -> str:
    console = Console(file=io.StringIO(), width=80, color_system=None, force_terminal=False)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


@pytest.mark.parametrize("role", ["assistant", "user", "error"])
def test_message_view_renders_controls_visibly_and_keeps_the_content(role: str) -> None:
    from tui.widgets.message_log import MessageData, MessageView

    content = "\n\n".join(text for _, text in MESSAGES)
    view = MessageView(MessageData(1, role, content, stats={"tokens": 3}))
    shown = _plain(view._renderable())
    assert "\x1b" not in shown and "\x9b" not in shown and "\x07" not in shown
    assert "M52 ␛]52;c;SGVsbG8=␇ end" in shown
    assert "MC1 <9B>31m end" in shown
    # What is copied (Ctrl+Y) and resent is the stored text, unchanged.
    assert view.data.content == content


async def test_prompt_shows_pasted_and_loaded_controls_as_visible_text() -> None:
    from textual import events
    from textual.app import App, ComposeResult

    from tui.widgets.prompt_input import PromptInput

    class PromptApp(App[None]):
        def compose(self) -> ComposeResult:
            yield PromptInput(id="prompt")

    async with PromptApp().run_test() as pilot:
        prompt = pilot.app.query_one(PromptInput)
        prompt.focus()
        # As from the terminal: the app receives the paste and forwards it to the focus.
        pilot.app.post_message(events.Paste(f"pasted {OSC52}\r\nline"))
        await pilot.pause()
        assert prompt.text == "pasted ␛]52;c;SGVsbG8=␇\nline"
        prompt.text = "loaded \x1b[2J"
        assert prompt.text == "loaded ␛[2J"
        prompt.move_cursor(prompt.document.end)
        prompt.insert(" dictated \x9b")
        assert prompt.text.endswith(" dictated <9B>")
        await pilot.press("x")
        assert prompt.text.endswith("x")


async def test_notifications_show_controls_visibly(app_dirs: Path) -> None:
    from tui.app import TriptychApp

    app = TriptychApp()
    async with app.run_test(size=(80, 24)) as pilot:
        app.notify(f"could not load /m/{MODEL_NAME}", title=TITLE, severity="error")
        await pilot.pause()
        notification = list(app._notifications)[-1]
        assert notification.message == "could not load /m/evil␛]0;MODEL-PWNED␇.gguf"
        assert notification.title == "T0 ␛]0;PWNED-TITLE␇"
