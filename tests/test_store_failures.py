"""A database Triptych cannot use, and a disk that fills up.

Every unusable database is checked through the installed `triptych` command, as a
user meets it: one line on stderr naming the file and what to do, exit status 1,
and the file byte-for-byte as it was. The checks run before Textual starts, so
the TUI can be run here without a terminal.

Full and read-only disks are real: small tmpfs mounts (the tests run as root;
where mounting is not permitted they are skipped and say why).
"""

from __future__ import annotations

import errno
import hashlib
import inspect
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import wait_until
from tui import store as store_module
from tui.app import TriptychApp
from tui.config import Settings
from tui.engines.host import EngineHost
from tui.screens.chat import ChatScreen
from tui.store import SCHEMA_VERSION, Store, StoreError
from tui.widgets.message_log import MessageLog, MessageView
from tui.widgets.prompt_input import PromptInput

REPO = Path(__file__).resolve().parent.parent
TRIPTYCH = Path(sys.executable).parent / "triptych"
PAGE = 4096


# --------------------------------------------------------------------------- helpers


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_database(path: Path) -> Path:
    """A real Triptych database of a few dozen pages, closed (no -wal left)."""
    with Store(path) as store:
        for i in range(16):
            conversation = store.create_conversation(title=f"conversation {i}")
            for j in range(6):
                store.add_message(conversation.id, "user", f"question {i}.{j} " + "words " * 250)
    assert path.stat().st_size >= 30 * PAGE
    assert not Path(f"{path}-wal").exists()
    return path


def quick_check(path: Path) -> str:
    """PRAGMA quick_check of a copy (so the original is not even opened)."""
    copy = path.with_name(path.name + ".check")
    shutil.copyfile(path, copy)
    conn = sqlite3.connect(copy)
    try:
        return str(conn.execute("PRAGMA quick_check").fetchone()[0])
    except sqlite3.DatabaseError as error:
        return str(error)
    finally:
        conn.close()
        for side in (copy, Path(f"{copy}-wal"), Path(f"{copy}-shm")):
            side.unlink(missing_ok=True)


def run_triptych(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed command with this process's environment; stdin is not a terminal."""
    assert TRIPTYCH.is_file(), f"{TRIPTYCH} is missing: install the project into the venv"
    return subprocess.run(
        [str(TRIPTYCH), *args],
        input="",
        capture_output=True,
        text=True,
        env=dict(os.environ),
        cwd=REPO,
        timeout=120,
        check=False,
    )


def assert_refused(proc: subprocess.CompletedProcess[str], path: Path, *words: str) -> str:
    """Exit status 1 and exactly one line on stderr that names path."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("triptych: "), line
    assert str(path) in line, line
    for word in words:
        assert word in line, line
    assert proc.stdout == ""
    return line


@pytest.fixture
def data_dir(app_dirs: Path) -> Path:
    path = app_dirs / "data"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def tmpfs() -> Iterator[Callable[[Path, str], Path]]:
    """mount(path, size): a fresh tmpfs of that size at path, unmounted afterwards."""
    mounted: list[Path] = []

    def mount(path: Path, size: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        if shutil.which("mount") is None:
            pytest.skip("no mount command: a full or read-only disk needs a tmpfs mount")
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            pytest.skip(
                f"mounting a tmpfs is not permitted here ({proc.stderr.strip()}): a full or "
                "read-only disk cannot be made without one (run the tests as root)"
            )
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        # Lazy: a test's app may still hold the database open.
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount_read_only(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)


def fill(folder: Path) -> Path:
    """Write a filler file until the disk holding folder has no byte left."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    chunk = b"\0" * (1 << 20)
    try:
        while True:
            try:
                if os.write(fd, chunk) == 0:
                    break
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
                break
    finally:
        os.close(fd)
    assert shutil.disk_usage(folder).free == 0
    return filler


# --------------------------------------------------------------------------- unusable databases


def test_random_bytes(data_dir: Path) -> None:
    db = data_dir / "triptych.db"
    db.write_bytes(random.Random(9).randbytes(64 * 1024))
    before = sha256(db)
    line = assert_refused(run_triptych(), db, "not a Triptych database", "mv ")
    assert f"{db}.broken" in line
    assert sha256(db) == before


def test_file_cut_in_half(data_dir: Path) -> None:
    db = make_database(data_dir / "triptych.db")
    os.truncate(db, db.stat().st_size // 2)
    before = sha256(db)
    assert_refused(run_triptych(), db, "is damaged", "mv ")
    assert sha256(db) == before


def test_directory_in_place_of_the_database(data_dir: Path) -> None:
    db = data_dir / "triptych.db"
    db.mkdir()
    (db / "keep.txt").write_text("mine")
    assert_refused(run_triptych(), db, "is a folder", "mv ")
    assert sorted(p.name for p in db.iterdir()) == ["keep.txt"]
    assert (db / "keep.txt").read_text() == "mine"


def test_corrupt_page_in_the_middle(data_dir: Path) -> None:
    db = make_database(data_dir / "triptych.db")
    pages = db.stat().st_size // PAGE
    with db.open("r+b") as f:
        f.seek(PAGE * (pages // 2))
        f.write(random.Random(3).randbytes(PAGE))
    # The premise: the damage is in the middle, where opening alone would not see it.
    assert quick_check(db) != "ok"
    with Store(db):
        pass
    before = sha256(db)
    assert_refused(run_triptych(), db, "is damaged", "quick_check", "mv ")
    assert sha256(db) == before


def test_damage_is_found_before_a_migration_writes(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older database with a bad page is refused untouched, not migrated first."""
    db = make_database(data_dir / "triptych.db")
    pages = db.stat().st_size // PAGE
    with db.open("r+b") as f:
        f.seek(PAGE * (pages // 2))
        f.write(b"\xff" * PAGE)
    before = sha256(db)
    ran: list[int] = []
    monkeypatch.setattr(
        store_module, "MIGRATIONS", [*store_module.MIGRATIONS, lambda conn: ran.append(1)]
    )
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(StoreError) as info:
        Store.open_checked(db)
    assert "is damaged" in str(info.value)
    assert ran == []
    assert sha256(db) == before


def test_a_healthy_database_opens_checked(data_dir: Path) -> None:
    db = make_database(data_dir / "triptych.db")
    with Store(db) as store:
        conversation = store.list_conversations()[0]
        crashed = store.add_message(conversation.id, "assistant", "half a", state="streaming")
    with Store.open_checked(db) as store:
        # A reply a crash left streaming is marked (after the 5 s grace for other
        # instances), and the checks found nothing.
        assert store.get_message(crashed.id).state == "streaming"
        store.verify()
        store.check_space(min_free=0)


# ----------------------------------------------------------------- read-only and full disks


@pytest.mark.parametrize("with_database", [True, False])
def test_read_only_data_dir(data_dir: Path, tmpfs, with_database: bool) -> None:
    tmpfs(data_dir, "8m")
    db = data_dir / "triptych.db"
    if with_database:
        make_database(db)
        before = sha256(db)
    remount_read_only(data_dir)
    assert_refused(run_triptych(), db, "read-only")
    if with_database:
        assert sha256(db) == before
    else:
        assert not db.exists()


def test_full_disk_at_start(data_dir: Path, tmpfs) -> None:
    tmpfs(data_dir, "8m")
    db = make_database(data_dir / "triptych.db")
    before = sha256(db)
    fill(data_dir)
    assert_refused(run_triptych(), db, "is full", "free some space")
    assert sha256(db) == before
    assert sorted(p.name for p in data_dir.iterdir() if not p.name.endswith(("-wal", "-shm"))) == [
        "filler",
        "triptych.db",
    ]


def test_full_disk_before_the_first_start(data_dir: Path, tmpfs) -> None:
    tmpfs(data_dir, "256k")
    fill(data_dir)
    db = data_dir / "triptych.db"
    assert_refused(run_triptych(), db, "is full")
    # No empty database (or journal) is left behind to confuse the next start.
    assert [p.name for p in data_dir.iterdir()] == ["filler"]


def test_nearly_full_disk_is_refused_too(data_dir: Path, tmpfs) -> None:
    """Less free space than a reply needs: refused at start, not halfway through a reply."""
    tmpfs(data_dir, "8m")
    db = make_database(data_dir / "triptych.db")
    filler = fill(data_dir)
    os.truncate(filler, filler.stat().st_size - store_module.MIN_FREE_BYTES // 2)
    assert 0 < shutil.disk_usage(data_dir).free < store_module.MIN_FREE_BYTES
    before = sha256(db)
    assert_refused(run_triptych(), db, "is full")
    assert sha256(db) == before


def test_engine_runs_without_a_writable_log_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the logs folder would go")
    host = EngineHost("chat", log_dir=blocker / "logs")
    log = host._open_log()
    assert log is subprocess.DEVNULL
    assert str(blocker / "logs") in host.log_problem


# --------------------------------------------------------------------------- with the real model


@pytest.mark.slow
def test_chat_answers_with_a_read_only_data_dir(
    data_dir: Path, tmpfs, chat_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmpfs(data_dir, "1m")
    remount_read_only(data_dir)
    monkeypatch.setenv("TRIPTYCH_THREADS", "1")
    proc = run_triptych(
        "chat", "Name the capital city of France.", "--temperature", "0", "--max-tokens", "32"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip(), "no answer"
    assert "Traceback" not in proc.stderr
    assert list(data_dir.iterdir()) == []


def _chat(app: TriptychApp) -> ChatScreen:
    screen = app.screen
    assert isinstance(screen, ChatScreen)
    return screen


def _reply_view(app: TriptychApp) -> MessageView:
    views = [v for v in app.screen.query_one(MessageLog).views if v.data.role == "assistant"]
    assert views, "no reply on screen"
    return views[-1]


INTERRUPT_GRACE_S = (
    inspect.signature(Store.mark_interrupted).parameters["older_than_s"].default + 0.5
)
"""How long after its last write a streaming reply is left alone by the next start."""


def _screen_text(view: MessageView) -> str:
    """What the widget shows, line by line."""
    return "\n".join(
        "".join(segment.text for segment in view.render_line(y)) for y in range(view.size.height)
    )


def _app(chat_model: Path, max_tokens: int) -> TriptychApp:
    settings = Settings()
    settings.sampling.temperature = 0.8
    settings.sampling.max_tokens = max_tokens
    settings.sampling.n_ctx = 2048
    settings.threads = 1
    return TriptychApp(chat_model=str(chat_model), settings=settings)


@pytest.mark.slow
async def test_disk_fills_up_while_a_reply_streams(data_dir: Path, tmpfs, chat_model: Path) -> None:
    tmpfs(data_dir, "8m")
    db = data_dir / "triptych.db"
    app = _app(chat_model, max_tokens=2000)
    async with app.run_test(size=(100, 30)) as pilot:
        prompt = app.screen.query_one(PromptInput)
        prompt.focus()
        prompt.text = "Write a very long story about a dragon and a knight."
        await pilot.press("enter")
        screen = _chat(app)
        await wait_until(pilot, lambda: screen._saved_len > 20, 60, "a first save")
        filler = fill(data_dir)
        filled_at = time.time()
        await wait_until(pilot, lambda: bool(screen._save_error), 30, "a failed save")
        await wait_until(pilot, lambda: len(screen.reply_text) > screen._saved_len + 20, 30)
        await pilot.press("escape")
        await wait_until(pilot, lambda: not screen.generating, 10, "the stop")
        view = _reply_view(app)
        on_screen = view.data.content
        notice = view.data.unsaved
        # The whole reply stays on screen, and the screen says which part is not saved.
        assert on_screen == screen.reply_text and on_screen
        assert notice.startswith("Not saved: "), notice
        assert str(db) in notice and "full" in notice, notice
        with Store(db) as store:
            stored = store.get_message(view.data.id)
        assert stored is not None and stored.state == "streaming"
        assert on_screen.startswith(stored.content) and len(stored.content) < len(on_screen)
        missing = len(on_screen) - len(stored.content)
        assert f"the last {missing} characters" in notice, (missing, notice)
        assert "⚠ Not saved: the last" in _screen_text(view)
        status = str(app.screen.query_one("#status").render())
        assert "Not saved in full" in status

    # The next start on the still-full disk: one line, exit 1, nothing changed.
    app.store.close()  # as `triptych` does when the TUI ends
    before = sha256(db)
    assert_refused(run_triptych(), db, "is full")
    assert sha256(db) == before

    # With space again, the next start works and shows the saved part as interrupted
    # (after the grace that protects a reply another instance may still be streaming).
    filler.unlink()
    time.sleep(max(0.0, filled_at + INTERRUPT_GRACE_S - time.time()))
    with Store.open_checked(db) as store:
        assert store.get_message(view.data.id).state == "interrupted"
    app = _app(chat_model, max_tokens=8)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: bool(app.screen.query_one(MessageLog).views), 10)
        shown = _reply_view(app).data
        assert shown.state == "interrupted" and shown.content == stored.content
