"""End to end: the installed ``triptych`` command in a real terminal (tmux, 80x24).

Each test gets its own tmux server (``tmux -L <unique socket>``) and temporary
data and config directories, types into the app with ``send-keys``, and reads
the screen with ``capture-pane``. The model is the real SmolLM2 test model.

Linux only: processes are inspected through /proc.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tomli_w

from tests.conftest import FIXTURES, REPO
from tui.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

WIDTH, HEIGHT = 80, 24
SIDEBAR_EDGE = "▕"
"""The sidebar's right border: left of it is the conversation list, right the chat."""
PROMPT_EDGE = "▔"
"""The prompt's top border, which ends the message log."""
PLACEHOLDER = "Message (Enter sends"
EXITED = "TRIPTYCH-EXITED="
EXIT_LINE = re.compile(rf"{EXITED}(\d+)")
"""What the pane's shell prints when triptych has exited (after a kill -9 the app's
screen stays, so it lands wherever the cursor was)."""
TAG_VARIABLE = "E2E_TMUX_TAG"
"""Set in every pane, so that teardown finds all processes a test started."""

FRANCE = "Name the capital city of France."
GERMANY = "What is the capital of Germany?"
STORY = "Write a very long story about a dragon."

WORD = re.compile(r"[^\W_]+")


# --------------------------------------------------------------------------- processes


def _triptych() -> str:
    installed = REPO / ".venv" / "bin" / "triptych"
    if os.access(installed, os.X_OK):
        return str(installed)
    found = shutil.which("triptych")
    if found is None:
        pytest.fail("the triptych command is not installed: run scripts/test (pip install -e .)")
    return found


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _environ(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _children(pid: int) -> list[int]:
    return [child for child in _pids() if (stat := _stat(child)) and stat[1] == pid]


def _engine_workers(pid: int) -> list[int]:
    """The chat engine processes (``python -m tui.engines.worker chat ...``) of a UI."""
    return [
        child
        for child in _children(pid)
        if "tui.engines.worker" in _cmdline(child) and _alive(child)
    ]


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until none of pids runs (gone or a zombie); return those still running."""
    deadline = time.monotonic() + timeout
    running = [pid for pid in pids if _alive(pid)]
    while running and time.monotonic() < deadline:
        time.sleep(0.1)
        running = [pid for pid in running if _alive(pid)]
    return running


# --------------------------------------------------------------------------- screen


def _main_column(screen: str) -> list[str]:
    """The chat side of each row (right of the sidebar)."""
    return [line.split(SIDEBAR_EDGE, 1)[1] for line in screen.splitlines() if SIDEBAR_EDGE in line]


def _sidebar(screen: str) -> str:
    """The conversation list, wrapped rows joined into one line."""
    rows = [line.split(SIDEBAR_EDGE, 1)[0] for line in screen.splitlines() if SIDEBAR_EDGE in line]
    return " ".join(" ".join(rows).split())


def _log_rows(screen: str) -> list[str]:
    """The visible rows of the message log (between the header and the prompt)."""
    main = _main_column(screen)
    end = next((i for i, row in enumerate(main) if row.strip().startswith(PROMPT_EDGE)), len(main))
    return main[1:end]


def _reply_header(rows: list[str]) -> int | None:
    """The index of the last reply's header row ("Assistant …"), if it is visible."""
    found = None
    for index, row in enumerate(rows):
        if row.strip().startswith("Assistant"):
            found = index
    return found


def _reply_text(screen: str) -> str:
    """The visible text of the last assistant reply (all rows when its header scrolled off)."""
    rows = _log_rows(screen)
    header = _reply_header(rows)
    return "\n".join(rows if header is None else rows[header + 1 :])


def _reply_started(screen: str) -> bool:
    """The reply's header and some of its text are on the screen."""
    rows = _log_rows(screen)
    header = _reply_header(rows)
    return header is not None and bool(_words("\n".join(rows[header + 1 :])))


def _status_line(screen: str) -> str:
    """The chat's status row: above the engine line, which is above the footer ("f2 Chat")."""
    lines = screen.splitlines()
    footer = next((i for i, line in enumerate(lines) if "f2 Chat" in line), None)
    return lines[footer - 2] if footer else ""


def _words(text: str) -> list[str]:
    """Words only: the screen wraps lines and renders Markdown, the database has the source."""
    return WORD.findall(text)


def _contains_run(haystack: list[str], needle: list[str]) -> bool:
    size = len(needle)
    return any(haystack[i : i + size] == needle for i in range(len(haystack) - size + 1))


def _is_subsequence(needle: list[str], haystack: list[str]) -> bool:
    remaining = iter(haystack)
    return all(word in remaining for word in needle)


# --------------------------------------------------------------------------- tmux


class Tmux:
    """A private tmux server; every session in it runs one ``triptych``.

    A pane runs ``/bin/sh -c 'triptych; echo TRIPTYCH-EXITED=$?; exec sleep ...'``:
    the shell, not tmux, reports the exit status (tmux 3.3 may mark a pane dead
    before it has reaped its process, and was seen never to reap it at all).
    """

    def __init__(self, binary: str, root: Path) -> None:
        self.binary = binary
        self.socket = f"triptych-e2e-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.conf = root / "tmux.conf"
        self.conf.write_text(
            "set -g status off\n"
            "set -g default-shell /bin/sh\n"
            "set -g default-terminal xterm-256color\n"
        )
        self.env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("TRIPTYCH_", "TEXTUAL", "TMUX"))
        }
        self.env["TERM"] = "xterm-256color"
        self.pids: dict[str, int] = {}
        """Session name: the triptych process running in it."""
        self.socket_path: Path | None = None

    def run(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            [self.binary, "-L", self.socket, "-f", str(self.conf), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=15,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def start(self, name: str, env: dict[str, str], args: tuple[str, ...] = ()) -> int:
        """Run triptych (with ``args``) in a new 80x24 session; return its pid."""
        env = {**env, "TERM": "xterm-256color", TAG_VARIABLE: self.socket}
        options = [item for key, value in env.items() for item in ("-e", f"{key}={value}")]
        # The shell stays: when a pane's last process exits, tmux may lose its last output.
        line = shlex.join([_triptych(), *args])
        command = f'{line}; echo "{EXITED}$?"; exec sleep 3600'
        size = ("-x", str(WIDTH), "-y", str(HEIGHT))
        self.run("new-session", "-d", "-s", name, *size, *options, command)
        shell, socket_path = (
            self.run("display-message", "-p", "-t", name, "#{pane_pid} #{socket_path}")
            .strip()
            .split(" ", 1)
        )
        self.socket_path = Path(socket_path)
        deadline = time.monotonic() + 10
        while True:
            found = [
                pid
                for pid in _children(int(shell))
                if any(part.endswith("triptych") for part in _cmdline(pid))
            ]
            if found:
                self.pids[name] = found[0]
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"[{name}] triptych did not start:\n{self.screen(name)}")
            time.sleep(0.05)

    def type(self, name: str, text: str) -> None:
        self.run("send-keys", "-t", name, "-l", text)

    def press(self, name: str, *keys: str) -> None:
        self.run("send-keys", "-t", name, *keys)

    def screen(self, name: str) -> str:
        return self.run("capture-pane", "-p", "-t", name)

    def wait_for(
        self,
        name: str,
        condition: str | Callable[[str], object],
        timeout: float,
        what: str = "",
    ) -> str:
        """Poll the screen every 0.1 s until condition (text or predicate) holds; return it."""
        check = condition if callable(condition) else (lambda screen: condition in screen)
        what = what or repr(condition)
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen(name)
            if check(screen):
                return screen
            exited = EXIT_LINE.search(screen)
            if exited:
                raise AssertionError(
                    f"[{name}] triptych exited (status {exited[1]}) while waiting for {what}:\n"
                    f"{screen}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"[{name}] timed out after {timeout}s waiting for {what}:\n{screen}"
                )
            time.sleep(0.1)

    def wait_exit(self, name: str, timeout: float = 10.0) -> int:
        """Wait until triptych exited; return its exit status (128 + N: killed by signal N)."""
        screen = self.wait_for(name, EXIT_LINE.search, timeout, "triptych to exit")
        match = EXIT_LINE.search(screen)
        assert match is not None
        return int(match[1])

    def quit(self, name: str) -> None:
        """Ctrl+Q, then the process must exit with status 0."""
        self.press(name, "C-q")
        status = self.wait_exit(name)
        assert status == 0, f"[{name}] triptych exited with status {status}:\n{self.screen(name)}"

    def tagged(self) -> list[int]:
        """Running processes started by this server's panes (triptych and its engines)."""
        marker = f"{TAG_VARIABLE}={self.socket}"
        return [pid for pid in _pids() if marker in _environ(pid) and _alive(pid)]

    def close(self) -> None:
        """Kill the server and every process its panes started, whatever state they are in."""
        leftovers = set(self.tagged()) | {pid for pid in self.pids.values() if _alive(pid)}
        self.run("kill-server", check=False)
        for pid in _wait_gone(sorted(leftovers), timeout=3.0):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _wait_gone(sorted(leftovers), timeout=2.0)
        if self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)  # kill-server leaves it behind


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    binary = shutil.which("tmux") or (
        "/usr/bin/tmux" if os.access("/usr/bin/tmux", os.X_OK) else None
    )
    if binary is None:
        pytest.fail(
            "tmux is not installed: these tests drive triptych in tmux (scripts/test installs it)"
        )
    server = Tmux(binary, tmp_path)
    try:
        yield server
    finally:
        server.close()


def make_dirs(root: Path, chat_model: Path, **sampling: float | int) -> dict[str, str]:
    """Data and config directories with a config.toml; return the environment pointing at them."""
    data, config = root / "data", root / "config"
    data.mkdir()
    config.mkdir()
    (data / "first-start.json").write_text("{}\n")  # no first-start model tip
    settings = {"temperature": 0.0, "max_tokens": 48, "n_ctx": 2048, **sampling}
    # One engine thread: llama.cpp threads spin, so two engines (or a busy machine)
    # with a thread per core each slow down far more than they should.
    (config / "config.toml").write_text(
        tomli_w.dumps({"chat_model": str(chat_model), "threads": 1, "sampling": settings})
    )
    return {
        "TRIPTYCH_DATA_DIR": str(data),
        "TRIPTYCH_CONFIG_DIR": str(config),
        "TRIPTYCH_MODELS_DIR": str(FIXTURES / "models"),
    }


def open_store(env: dict[str, str]) -> Store:
    return Store(Path(env["TRIPTYCH_DATA_DIR"]) / "triptych.db")


def ready(screen: str) -> bool:
    return PLACEHOLDER in screen


def finished(screen: str) -> bool:
    return "tok/s" in _status_line(screen)


# --------------------------------------------------------------------------- tests


def test_chat_round_trip_and_restart(tmux: Tmux, tmp_path: Path, chat_model: Path) -> None:
    env = make_dirs(tmp_path, chat_model)

    pid = tmux.start("first", env)
    assert "TERM=xterm-256color" in _environ(pid)
    tmux.wait_for("first", ready, 30, "the first frame (prompt placeholder)")
    tmux.type("first", FRANCE)
    tmux.press("first", "Enter")
    screen = tmux.wait_for(
        "first",
        lambda s: _reply_started(s) and "Paris" in _reply_text(s),
        60,
        "Paris in the reply",
    )
    assert "You" in "\n".join(_log_rows(screen)), screen
    screen = tmux.wait_for("first", finished, 60, "tok/s on the status line")
    assert "Paris" in _reply_text(screen), screen
    workers = _engine_workers(pid)
    assert workers, "no chat engine process under triptych"
    tmux.quit("first")
    assert not _wait_gone(workers, 5.0), "the chat engine outlived triptych's quit"

    with open_store(env) as store:
        [conversation] = store.list_conversations()
        assert conversation.title == FRANCE
        messages = store.list_messages(conversation.id)
        assert [(m.role, m.state) for m in messages] == [
            ("user", "complete"),
            ("assistant", "complete"),
        ]
        assert "Paris" in messages[1].content

    tmux.start("again", env)
    screen = tmux.wait_for(
        "again",
        lambda s: ready(s) and "Paris" in _reply_text(s) and "Name the capital" in _sidebar(s),
        30,
        "the saved conversation after a restart",
    )
    assert FRANCE in _sidebar(screen), screen
    assert FRANCE in "\n".join(_log_rows(screen)), screen
    tmux.quit("again")


def test_two_instances_share_one_database(tmux: Tmux, tmp_path: Path, chat_model: Path) -> None:
    env = make_dirs(tmp_path, chat_model)
    questions = {"france": FRANCE, "germany": GERMANY}
    for name in questions:
        tmux.start(name, env)
    for name in questions:
        tmux.wait_for(name, ready, 30, "the first frame (prompt placeholder)")
    for name, question in questions.items():
        tmux.type(name, question)
    for name in questions:
        tmux.press(name, "Enter")
    for name in questions:
        tmux.wait_for(name, finished, 90, "the reply to finish (tok/s on the status line)")
    for name in questions:
        tmux.quit(name)

    with open_store(env) as store:
        conversations = store.list_conversations()
        assert sorted(c.title for c in conversations) == sorted(questions.values())
        replies = {}
        for conversation in conversations:
            messages = store.list_messages(conversation.id)
            assert [m.role for m in messages] == ["user", "assistant"], messages
            question, reply = messages
            assert question.content == conversation.title
            assert reply.state == "complete", reply
            assert reply.content.strip(), reply
            assert reply.stats and reply.stats.get("tokens", 0) > 0, reply
            replies[question.content] = reply.content
    assert "Paris" in replies[FRANCE], replies
    assert "Berlin" in replies[GERMANY], replies


def test_kill_9_during_a_reply_keeps_it(tmux: Tmux, tmp_path: Path, chat_model: Path) -> None:
    env = make_dirs(tmp_path, chat_model, temperature=0.8, max_tokens=2000, seed=7)
    pid = tmux.start("victim", env)
    tmux.wait_for("victim", ready, 30, "the first frame (prompt placeholder)")
    tmux.type("victim", STORY)
    tmux.press("victim", "Enter")
    tmux.wait_for("victim", _reply_started, 60, "the reply to start")
    started = time.monotonic()
    workers = _engine_workers(pid)
    assert workers, "no chat engine process under triptych"

    # A good amount of text: 2 s of streaming and at least 15 words (a busy machine
    # takes longer). That screen is what the user saw a second before the kill.
    earlier = tmux.wait_for(
        "victim",
        lambda s: time.monotonic() - started >= 2.0 and len(_words(_reply_text(s))) >= 15,
        30,
        "15 words of the reply",
    )
    time.sleep(1.0)
    last = tmux.screen("victim")
    os.kill(pid, signal.SIGKILL)
    assert not finished(last), f"the reply ended before the kill; make it longer:\n{last}"
    assert tmux.wait_exit("victim", 5.0) == 128 + signal.SIGKILL

    # The engine notices that its UI is gone and exits by itself.
    still = _wait_gone(workers, 5.0)
    assert not still, f"engine processes {still} still run 5 s after triptych was killed"

    # Compare on words: the screen wraps lines and renders the Markdown.
    shown = _words(_reply_text(earlier))[:-1]  # the last word may still have been growing
    assert len(shown) >= 14, earlier
    with open_store(env) as store:
        [conversation] = store.list_conversations()
        messages = store.list_messages(conversation.id)
        assert [m.role for m in messages] == ["user", "assistant"], messages
        reply = messages[1]
        assert reply.state in ("streaming", "interrupted"), reply
    stored = _words(reply.content)
    assert _contains_run(stored, shown[:8]), (shown, reply.content)
    assert _is_subsequence(shown, stored), (shown, reply.content)
    assert len(" ".join(stored)) >= len(" ".join(shown)), (shown, reply.content)

    # A new start marks replies not written for 5 s as interrupted and shows them so.
    time.sleep(max(0.0, reply.updated + 5.5 - time.time()))
    tmux.start("after", env)
    tmux.wait_for("after", ready, 30, "the first frame (prompt placeholder)")
    tmux.press("after", "BTab")  # from the prompt to the message log
    tmux.press("after", "Home")  # the top of the conversation: the reply's header
    screen = tmux.wait_for(
        "after",
        lambda s: any(row.strip().startswith("Assistant (interrupted)") for row in _log_rows(s)),
        10,
        "the reply marked (interrupted)",
    )
    assert _contains_run(_words("\n".join(_log_rows(screen))), stored[:5]), screen
    tmux.quit("after")
    with open_store(env) as store:
        assert store.get_message(reply.id).state == "interrupted"
