"""End to end over the network: the TUI in tmux (80x24) as a client of a real
`triptych serve` on a loopback port, configured with `triptych servers add`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.test_e2e_tmux import (
    FRANCE,
    Tmux,
    _engine_workers,
    _reply_started,
    _reply_text,
    _status_line,
    _triptych,
    finished,
    make_dirs,
    open_store,
    ready,
    tmux,  # noqa: F401 - the fixture
)
from tests.test_serve import Server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

KEY = "sk-e2e-remote-51c0ffee"


def test_the_tui_chats_with_triptych_serve(
    tmux: Tmux,  # noqa: F811 - the fixture
    tmp_path: Path,
    chat_model: Path,
) -> None:
    env = make_dirs(tmp_path, chat_model)
    server = Server(
        "--model", str(chat_model), "--api-key-env", "SERVE_KEY", env={"SERVE_KEY": KEY}
    )
    try:
        added = subprocess.run(
            [_triptych(), "servers", "add", "box", server.base_url, "--api-key-stdin"],
            input=KEY + "\n",
            env={**tmux.env, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert added.returncode == 0, added.stderr
        pid = tmux.start("remote", env, ("--model", "server:box"))
        tmux.wait_for("remote", ready, 30, "the first frame (prompt placeholder)")
        tmux.type("remote", FRANCE)
        tmux.press("remote", "Enter")
        screen = tmux.wait_for(
            "remote",
            lambda s: _reply_started(s) and "Paris" in _reply_text(s),
            60,
            "Paris in the reply",
        )
        screen = tmux.wait_for("remote", finished, 60, "tok/s on the status line")
        assert "Paris" in _reply_text(screen), screen
        # The memory/engine status line, just above the footer, says remote.
        lines = screen.splitlines()
        footer = next(i for i, line in enumerate(lines) if "f2 Chat" in line)
        assert "tok/s" in _status_line(screen), screen
        assert "chat remote box" in lines[footer - 1], screen
        # The TUI ran no chat engine of its own: the model answered in the server.
        assert _engine_workers(pid) == [], "a local chat engine started for a remote model"
        tmux.quit("remote")
    finally:
        server.stop()
    with open_store(env) as store:
        [conversation] = store.list_conversations()
        reply = store.list_messages(conversation.id)[1]
        assert reply.state == "complete" and "Paris" in reply.content
        assert conversation.model.startswith("server:box"), conversation.model
