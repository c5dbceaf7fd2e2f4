"""API keys typed once: kept in a 0600 file, never in config.toml or a log, and
accepted by a real `triptych serve` that requires them."""

from __future__ import annotations

import os
import pty
import select
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.test_serve import REPO, TRIPTYCH, Server
from tui import locations
from tui.backends.keys import KeyFileError, key_file, read_key, store_key
from tui.backends.remote import RemoteChatBackend
from tui.backends.servers import BackendError, ServerConfig, server_config
from tui.config import Settings

KEY = "sk-typed-once-7f3a9c2e5b"


def triptych(*args: str, stdin: str | None = None, env: dict[str, str] | None = None):
    return subprocess.run(
        [*TRIPTYCH, *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_stored_key_is_0600_in_a_0700_folder(app_dirs: Path) -> None:
    path = store_key("box", f"  {KEY}\n")
    assert path == locations.config_dir() / "keys" / "box"
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert read_key(path) == KEY
    # Replaced atomically: no temporary file is left beside it.
    store_key("box", KEY + "2")
    assert read_key(path) == KEY + "2"
    assert [p.name for p in path.parent.iterdir()] == ["box"]


def test_a_key_file_others_can_read_is_refused(app_dirs: Path) -> None:
    path = store_key("box", KEY)
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600") as caught:
        read_key(path)
    assert KEY not in str(caught.value)


@pytest.mark.parametrize("name", ["../evil", ".hidden", "a/b", ""])
def test_a_server_name_cannot_escape_the_keys_folder(app_dirs: Path, name: str) -> None:
    with pytest.raises(KeyFileError, match="cannot name a key file"):
        key_file(name)


def test_the_environment_variable_wins_over_the_file(
    app_dirs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = store_key("box", KEY)
    entry = {"url": "http://127.0.0.1:1/v1", "api_key_env": "BOX_KEY", "api_key_file": str(path)}
    config = server_config("box", Settings(servers={"box": entry}))
    monkeypatch.delenv("BOX_KEY", raising=False)
    assert config.api_key() == KEY
    monkeypatch.setenv("BOX_KEY", "from-env")
    assert config.api_key() == "from-env"
    path.unlink()
    monkeypatch.delenv("BOX_KEY")
    with pytest.raises(BackendError, match="server box: key file .* is missing"):
        config.api_key()
    bare = ServerConfig("plain", "http://127.0.0.1:1/v1")
    assert bare.api_key() == ""


def test_cli_refuses_to_prompt_without_a_terminal(app_dirs: Path) -> None:
    proc = triptych("servers", "add", "box", "http://127.0.0.1:1/v1", "--api-key")
    assert proc.returncode == 1 and "--api-key-stdin" in proc.stderr
    empty = triptych(
        "servers", "add", "box", "http://127.0.0.1:1/v1", "--api-key-stdin", stdin="\n"
    )
    assert empty.returncode == 1 and "empty" in empty.stderr
    assert not (locations.config_dir() / "keys" / "box").exists()


@pytest.mark.slow
def test_a_typed_key_opens_triptych_serve_and_is_written_nowhere_else(
    app_dirs: Path, chat_model: Path
) -> None:
    server = Server(
        "--model", str(chat_model), "--api-key-env", "SERVE_KEY", env={"SERVE_KEY": KEY}
    )
    try:
        added = triptych(
            "servers", "add", "box", server.base_url, "--api-key-stdin", stdin=KEY + "\n"
        )
        assert added.returncode == 0, added.stderr
        path = locations.config_dir() / "keys" / "box"
        assert mode(path) == 0o600 and mode(path.parent) == 0o700
        config_text = locations.config_file().read_text()
        assert KEY not in config_text and f'api_key_file = "{path}"' in config_text
        listed = triptych("servers", "list")
        assert KEY not in listed.stdout and "key file=" in listed.stdout
        # The client's environment has no key: it comes from the file.
        models = triptych("servers", "models", "box")
        assert models.returncode == 0, models.stderr
        assert models.stdout.strip().endswith(chat_model.name)
        chat = triptych(
            "chat", "--server", "box", "--temperature", "0", "Name the capital city of France."
        )
        assert chat.returncode == 0 and "Paris" in chat.stdout, chat.stderr
        # A wrong key in the file is refused by the server, in one line naming the file.
        store_key("box", "sk-wrong")
        backend = RemoteChatBackend(server_config("box", Settings.load()))
        with pytest.raises(BackendError) as refused:
            backend.models()
        assert "refused the API key (HTTP 401; sent the key in" in str(refused.value)
        assert "sk-wrong" not in str(refused.value)
        removed = triptych("servers", "rm", "box")
        assert removed.returncode == 0 and not path.exists()
    finally:
        server.stop()
    # Nothing Triptych wrote besides the key file holds the key: config, database, logs.
    for written in (app_dirs / "config", app_dirs / "data"):
        for file in written.rglob("*"):
            if file.is_file():
                assert KEY.encode() not in file.read_bytes(), file
    assert server.process.stderr is not None
    assert KEY not in server.process.stderr.read()


def test_cli_asks_for_the_key_at_a_terminal_without_echo(app_dirs: Path) -> None:
    """--api-key in a real pseudo-terminal: getpass prompts, the key is not echoed."""
    command = [*TRIPTYCH, "servers", "add", "box", "http://127.0.0.1:1/v1", "--api-key"]
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI, on the pty
        os.chdir(REPO)
        os.execv(command[0], command)
    seen = b""

    def read_until(marker: bytes, timeout: float = 30) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while marker not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(fd, 4096)
                except OSError:
                    break

    try:
        read_until(b"API key for box: ")
        assert b"API key for box: " in seen, seen
        os.write(fd, KEY.encode() + b"\n")
        read_until(b"added server box")
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, seen
    assert b"added server box" in seen and KEY.encode() not in seen, seen
    path = locations.config_dir() / "keys" / "box"
    assert read_key(path) == KEY and mode(path) == 0o600
    assert KEY not in locations.config_file().read_text()
