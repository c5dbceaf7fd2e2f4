"""End to end: SIGTERM and SIGHUP to the real ``triptych`` in tmux, mid-reply.

They must end it as Ctrl+Q does: the terminal's modes restored (read back from
tmux), the reply and the unsent prompt text saved, the engine stopped. Uses
the tmux driver of ``tests/test_e2e_tmux.py``. Linux only (/proc).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_e2e_tmux import (
    STORY,
    Tmux,
    _alive,
    _engine_workers,
    _reply_started,
    _wait_gone,
    make_dirs,
    open_store,
    ready,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

MODES = (
    "alternate_on",
    "cursor_flag",
    "mouse_standard_flag",
    "mouse_button_flag",
    "mouse_any_flag",
    "mouse_all_flag",
    "mouse_sgr_flag",
    "mouse_utf8_flag",
)
"""tmux's pane flags for the modes Textual sets (see ``man tmux``, FORMATS)."""

RESTORED = {"alternate_on": 0, "cursor_flag": 1} | {m: 0 for m in MODES if m.startswith("mouse")}
"""A terminal as a shell expects it: main screen, cursor shown, no mouse reporting."""

DRAFT = "And then what happened"


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    binary = shutil.which("tmux")
    if binary is None:
        pytest.fail("tmux is not installed: these tests drive triptych in tmux")
    server = Tmux(binary, tmp_path)
    try:
        yield server
    finally:
        server.close()


def modes(tmux: Tmux, name: str) -> dict[str, int]:
    fields = " ".join(f"#{{{mode}}}" for mode in MODES)
    values = tmux.run("display-message", "-p", "-t", name, fields).split()
    return {mode: int(value) for mode, value in zip(MODES, values, strict=True)}


def start_reply_with_draft(tmux: Tmux, name: str, env: dict[str, str]) -> tuple[int, list[int]]:
    """Start triptych, ask for a long story, type a draft while it streams.

    Returns the app's pid and its engine processes.
    """
    pid = tmux.start(name, env)
    tmux.wait_for(name, ready, 30, "the first frame (prompt placeholder)")
    tmux.type(name, STORY)
    tmux.press(name, "Enter")
    tmux.wait_for(name, _reply_started, 60, "the reply to start")
    tmux.type(name, DRAFT)
    tmux.wait_for(name, DRAFT, 10, "the draft in the prompt")
    workers = _engine_workers(pid)
    assert workers, "no chat engine process under triptych"
    return pid, workers


def assert_saved(env: dict[str, str]) -> int:
    """The reply was saved as stopped and the draft kept; return the conversation id."""
    with open_store(env) as store:
        [conversation] = store.list_conversations()
        messages = store.list_messages(conversation.id)
        assert [m.role for m in messages] == ["user", "assistant"], messages
        reply = messages[1]
        assert reply.state == "stopped", reply
        assert reply.content.strip(), reply
        draft = store.get_draft(conversation.id)
        assert draft is not None and draft.text == DRAFT, draft
        return conversation.id


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
def test_signal_mid_reply_restores_the_terminal_and_saves(
    tmux: Tmux, tmp_path: Path, chat_model: Path, signum: int
) -> None:
    env = make_dirs(tmp_path, chat_model, temperature=0.8, max_tokens=2000, seed=7)
    pid, workers = start_reply_with_draft(tmux, "app", env)
    running = modes(tmux, "app")
    assert running["alternate_on"] == 1 and running["cursor_flag"] == 0, running
    assert running["mouse_any_flag"] or running["mouse_all_flag"], running

    os.kill(pid, signum)
    assert tmux.wait_exit("app", 15.0) == 128 + signum, tmux.screen("app")
    assert modes(tmux, "app") == RESTORED
    # The engine was stopped by the app before it exited, not left to notice later.
    still = _wait_gone(workers, 0.5)
    assert not still, f"engine processes {still} outlived triptych"
    assert not _alive(pid)
    assert_saved(env)

    # The draft is back in the prompt after a restart.
    tmux.start("again", env)
    tmux.wait_for("again", lambda s: DRAFT in s and STORY in s, 30, "the draft after a restart")
    tmux.quit("again")


def test_closed_terminal_mid_reply_saves_and_stops_the_engine(
    tmux: Tmux, tmp_path: Path, chat_model: Path
) -> None:
    """The terminal goes away (tmux kills the pane): SIGHUP with nowhere to write."""
    env = make_dirs(tmp_path, chat_model, temperature=0.8, max_tokens=2000, seed=7)
    pid, workers = start_reply_with_draft(tmux, "app", env)
    tmux.run("kill-session", "-t", "app")
    deadline = time.monotonic() + 20
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), "triptych still runs 20 s after its terminal closed"
    still = _wait_gone(workers, 5.0)
    assert not still, f"engine processes {still} outlived triptych"
    assert_saved(env)
