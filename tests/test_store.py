"""Tests for tui.store: schema, CRUD, search, paging, crash and concurrency safety."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tui import store as store_module
from tui.store import SCHEMA_VERSION, Store, StoreError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "triptych.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    with Store(db_path) as s:
        yield s


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


# -- schema -------------------------------------------------------------------


def test_creates_parent_dirs_and_sets_schema_version(db_path: Path) -> None:
    with Store(db_path) as s:
        assert db_path.exists()
        assert s.schema_version() == SCHEMA_VERSION == len(store_module.MIGRATIONS)
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"conversations", "messages"} <= tables
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert "messages_by_conversation" in indexes
    finally:
        conn.close()


def test_connection_pragmas(store: Store) -> None:
    conn = store._conn
    assert conn is not None
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_default_path_comes_from_locations(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "env" / "chosen.db"
    monkeypatch.setenv("TRIPTYCH_DB", str(target))
    with Store() as s:
        assert s.path == target
    assert target.exists()


def test_reopen_is_idempotent_and_keeps_data(db_path: Path) -> None:
    with Store(db_path) as s:
        conv = s.create_conversation("kept")
        s.add_message(conv.id, "user", "hello")
    for _ in range(3):
        with Store(db_path) as s:
            assert s.schema_version() == SCHEMA_VERSION
            assert [c.title for c in s.list_conversations()] == ["kept"]
            assert [m.content for m in s.list_messages(conv.id)] == ["hello"]


def test_migrations_run_in_order_and_only_once(db_path: Path, monkeypatch) -> None:
    calls: list[int] = []

    def v2(conn: sqlite3.Connection) -> None:
        calls.append(2)
        conn.execute("CREATE TABLE test_extra (id INTEGER PRIMARY KEY, path TEXT)")

    with Store(db_path):
        pass
    monkeypatch.setattr(store_module, "MIGRATIONS", [*store_module.MIGRATIONS, v2])
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", len(store_module.MIGRATIONS))
    with Store(db_path) as s:
        assert s.schema_version() == SCHEMA_VERSION + 1
    with Store(db_path) as s:
        assert s.schema_version() == SCHEMA_VERSION + 1
    assert calls == [2]


def test_failed_migration_leaves_previous_version(db_path: Path, monkeypatch) -> None:
    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (id INTEGER)")
        raise sqlite3.OperationalError("boom")

    with Store(db_path):
        pass
    monkeypatch.setattr(store_module, "MIGRATIONS", [*store_module.MIGRATIONS, broken])
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match="boom"):
        Store(db_path)
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "half_done" not in names
    finally:
        conn.close()


def test_newer_schema_is_refused(db_path: Path) -> None:
    with Store(db_path):
        pass
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.close()
    with pytest.raises(StoreError) as info:
        Store(db_path)
    message = str(info.value)
    assert "newer Triptych" in message
    assert f"schema {SCHEMA_VERSION + 5}" in message
    assert str(db_path) in message


def test_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is certainly not an SQLite file\n" * 200)
    with pytest.raises(StoreError) as info:
        Store(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert "not a" in message
    # The file was left alone.
    assert path.read_bytes().startswith(b"this is certainly")


def test_directory_in_place_of_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a-directory.db"
    path.mkdir()
    with pytest.raises(StoreError) as info:
        Store(path)
    assert "\n" not in str(info.value)


def test_closed_store_raises_store_error(db_path: Path) -> None:
    s = Store(db_path)
    s.close()
    s.close()  # twice is fine
    assert s.closed
    with pytest.raises(StoreError, match="closed"):
        s.list_conversations()


# -- conversations ---------------------------------------------------------------


def test_conversation_crud(store: Store) -> None:
    conv = store.create_conversation(
        "Trip", system_prompt="be brief", model="qwen.gguf", sampling={"temperature": 0.2}
    )
    assert conv.id > 0
    fetched = store.get_conversation(conv.id)
    assert fetched == conv
    assert fetched.sampling == {"temperature": 0.2}

    default = store.create_conversation()
    assert default.title == "New chat"
    assert default.sampling == {}
    assert default.system_prompt == "" and default.model == ""

    store.rename_conversation(conv.id, "Renamed")
    store.update_conversation(conv.id, model="other.gguf")
    got = store.get_conversation(conv.id)
    assert got is not None
    assert got.title == "Renamed"
    assert got.model == "other.gguf"
    assert got.system_prompt == "be brief"  # untouched
    assert got.sampling == {"temperature": 0.2}  # untouched

    store.update_conversation(conv.id, system_prompt="", sampling={"top_k": 5})
    got = store.get_conversation(conv.id)
    assert got is not None
    assert got.system_prompt == ""
    assert got.sampling == {"top_k": 5}
    assert got.model == "other.gguf"

    store.delete_conversation(conv.id)
    assert store.get_conversation(conv.id) is None
    assert [c.id for c in store.list_conversations()] == [default.id]
    assert store.get_conversation(12345) is None


def test_list_conversations_most_recent_first(store: Store) -> None:
    a = store.create_conversation("a")
    b = store.create_conversation("b")
    c = store.create_conversation("c")
    assert [x.title for x in store.list_conversations()] == ["c", "b", "a"]
    time.sleep(0.01)
    store.add_message(a.id, "user", "bump a")
    assert [x.title for x in store.list_conversations()] == ["a", "c", "b"]
    time.sleep(0.01)
    m = store.list_messages(a.id)[0]
    store.add_message(b.id, "user", "bump b")
    time.sleep(0.01)
    store.update_message(m.id, content="edited")
    assert [x.title for x in store.list_conversations()] == ["a", "b", "c"]
    # Renaming does not reorder.
    store.rename_conversation(c.id, "c2")
    assert [x.title for x in store.list_conversations()] == ["a", "b", "c2"]


def test_ids_are_never_reused(store: Store) -> None:
    conv = store.create_conversation()
    first = store.add_message(conv.id, "assistant", "old reply")
    store.delete_messages_from(conv.id, first.id)
    second = store.add_message(conv.id, "assistant", "new reply")
    assert second.id > first.id
    # A stale writer still holding the old id cannot touch the new row.
    store.update_message(first.id, content="stale")
    assert store.get_message(second.id).content == "new reply"

    store.delete_conversation(conv.id)
    assert store.create_conversation().id > conv.id


# -- search -----------------------------------------------------------------------


def test_search_title_and_content_case_insensitive(store: Store) -> None:
    pasta = store.create_conversation("Pasta recipes")
    rust = store.create_conversation("Code help")
    store.add_message(rust.id, "user", "How do I borrow in RUST?")
    store.add_message(rust.id, "assistant", "Use references.")
    store.create_conversation("Empty")

    assert [c.id for c in store.list_conversations("pasta")] == [pasta.id]
    assert [c.id for c in store.list_conversations("PASTA")] == [pasta.id]
    assert [c.id for c in store.list_conversations("rust")] == [rust.id]
    assert [c.id for c in store.list_conversations("REFERENCES")] == [rust.id]
    assert store.list_conversations("nothing like this") == []
    assert len(store.list_conversations("")) == 3
    # A conversation matching in several messages is listed once.
    found = [c.id for c in store.list_conversations("ES")]
    assert set(found) == {pasta.id, rust.id}
    assert len(found) == 2


def test_search_escapes_like_wildcards(store: Store) -> None:
    percent = store.create_conversation("100% done")
    underscore = store.create_conversation("snake_case")
    plain = store.create_conversation("100 points, snakeXcase")
    backslash = store.create_conversation("path")
    store.add_message(backslash.id, "user", r"C:\temp\file")

    assert [c.id for c in store.list_conversations("%")] == [percent.id]
    assert [c.id for c in store.list_conversations("100%")] == [percent.id]
    assert [c.id for c in store.list_conversations("_")] == [underscore.id]
    assert [c.id for c in store.list_conversations("e_c")] == [underscore.id]
    assert [c.id for c in store.list_conversations("\\temp")] == [backslash.id]
    assert {c.id for c in store.list_conversations("100")} == {percent.id, plain.id}


def test_search_folds_non_ascii_case(store: Store) -> None:
    conv = store.create_conversation("Notizen")
    store.add_message(conv.id, "user", "ÄRGER mit Übersetzung")
    other = store.create_conversation("Ärmel")
    assert [c.id for c in store.list_conversations("ärger")] == [conv.id]
    assert [c.id for c in store.list_conversations("übersetzung")] == [conv.id]
    assert [c.id for c in store.list_conversations("ärmel")] == [other.id]


# -- messages -------------------------------------------------------------------


def test_message_crud(store: Store) -> None:
    conv = store.create_conversation()
    msg = store.add_message(conv.id, "user", "hi")
    assert msg.state == "complete" and msg.stats is None
    assert store.get_message(msg.id) == msg

    reply = store.add_message(conv.id, "assistant", "", state="streaming")
    store.update_message(reply.id, content="Hello")
    got = store.get_message(reply.id)
    assert got.content == "Hello" and got.state == "streaming"
    assert got.updated >= reply.updated

    store.update_message(reply.id, state="complete", stats={"tokens": 3, "tps": 12.5})
    got = store.get_message(reply.id)
    assert got.content == "Hello"
    assert got.state == "complete"
    assert got.stats == {"tokens": 3, "tps": 12.5}

    store.update_message(reply.id)  # nothing to change: no error
    store.update_message(99999, content="gone")  # missing message: ignored
    assert store.get_message(99999) is None
    assert store.count_messages(conv.id) == 2


def test_invalid_role_and_state_rejected(store: Store) -> None:
    conv = store.create_conversation()
    with pytest.raises(ValueError):
        store.add_message(conv.id, "robot", "x")
    with pytest.raises(ValueError):
        store.add_message(conv.id, "user", "x", state="weird")
    msg = store.add_message(conv.id, "user", "x")
    with pytest.raises(ValueError):
        store.update_message(msg.id, state="weird")


def test_add_message_to_missing_conversation(store: Store) -> None:
    with pytest.raises(StoreError, match="no longer exists"):
        store.add_message(424242, "user", "orphan")


def test_list_messages_windows(store: Store) -> None:
    conv = store.create_conversation()
    other = store.create_conversation()
    ids = []
    for i in range(10):
        ids.append(store.add_message(conv.id, "user", f"m{i}").id)
        store.add_message(other.id, "user", f"other{i}")

    def contents(messages) -> list[str]:
        return [m.content for m in messages]

    assert contents(store.list_messages(conv.id)) == [f"m{i}" for i in range(10)]
    assert contents(store.list_messages(conv.id, limit=3)) == ["m7", "m8", "m9"]
    assert contents(store.list_messages(conv.id, limit=3, before_id=ids[7])) == ["m4", "m5", "m6"]
    assert contents(store.list_messages(conv.id, limit=3, before_id=ids[2])) == ["m0", "m1"]
    assert contents(store.list_messages(conv.id, before_id=ids[3])) == ["m0", "m1", "m2"]
    assert store.list_messages(conv.id, limit=3, before_id=ids[0]) == []
    assert store.list_messages(conv.id, limit=0) == []
    assert contents(store.list_messages(conv.id, limit=100)) == [f"m{i}" for i in range(10)]
    assert store.count_messages(conv.id) == 10

    # Paging backwards covers everything exactly once.
    seen: list[str] = []
    before = None
    while page := store.list_messages(conv.id, limit=4, before_id=before):
        seen = contents(page) + seen
        before = page[0].id
    assert seen == [f"m{i}" for i in range(10)]


def test_delete_conversation_cascades(store: Store) -> None:
    conv = store.create_conversation()
    keep = store.create_conversation()
    msgs = [store.add_message(conv.id, "user", str(i)) for i in range(5)]
    kept = store.add_message(keep.id, "user", "stays")
    store.delete_conversation(conv.id)
    assert store.count_messages(conv.id) == 0
    assert all(store.get_message(m.id) is None for m in msgs)
    assert store.get_message(kept.id) == kept
    raw = store._conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    assert raw == 1


def test_delete_messages_from(store: Store) -> None:
    conv = store.create_conversation()
    other = store.create_conversation()
    msgs = [store.add_message(conv.id, "user", f"m{i}") for i in range(6)]
    other_msg = store.add_message(other.id, "user", "elsewhere")
    before = store.get_conversation(conv.id).updated
    time.sleep(0.01)
    assert store.delete_messages_from(conv.id, msgs[3].id) == 3
    assert [m.content for m in store.list_messages(conv.id)] == ["m0", "m1", "m2"]
    assert store.get_message(other_msg.id) is not None
    assert store.get_conversation(conv.id).updated > before
    assert store.delete_messages_from(conv.id, msgs[0].id) == 3
    assert store.count_messages(conv.id) == 0
    assert store.count_messages(other.id) == 1


def test_mark_interrupted(store: Store) -> None:
    conv = store.create_conversation()
    stale = store.add_message(conv.id, "assistant", "half a rep", state="streaming")
    live = store.add_message(conv.id, "assistant", "still going", state="streaming")
    done = store.add_message(conv.id, "assistant", "done")
    old = time.time() - 60
    store._conn.execute("UPDATE messages SET updated = ? WHERE id = ?", (old, stale.id))

    assert store.mark_interrupted() == 1
    assert store.get_message(stale.id).state == "interrupted"
    assert store.get_message(stale.id).content == "half a rep"
    assert store.get_message(live.id).state == "streaming"
    assert store.get_message(done.id).state == "complete"
    assert store.mark_interrupted() == 0
    assert store.mark_interrupted(older_than_s=0) == 1
    assert store.get_message(live.id).state == "interrupted"


# -- errors ---------------------------------------------------------------------------


def test_disk_full_becomes_readable_store_error(store: Store) -> None:
    conv = store.create_conversation()
    conn = store._conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StoreError) as info:
        store.add_message(conv.id, "user", "x" * 1_000_000)
    message = str(info.value)
    assert message == f"could not save to {store.path}: database or disk is full"
    # The store still works for reads and (once space is back) writes.
    assert store.count_messages(conv.id) == 0
    conn.execute("PRAGMA max_page_count = 1073741823")
    store.add_message(conv.id, "user", "fits now")
    assert store.count_messages(conv.id) == 1


def test_readonly_becomes_store_error(store: Store) -> None:
    store._conn.execute("PRAGMA query_only = ON")
    with pytest.raises(StoreError) as info:
        store.create_conversation()
    assert str(info.value).startswith(f"could not save to {store.path}: ")
    assert "readonly" in str(info.value)
    assert "\n" not in str(info.value)


# -- threads, processes, crashes --------------------------------------------------------


def test_worker_thread_can_use_the_store(store: Store) -> None:
    conv = store.create_conversation()
    errors: list[BaseException] = []

    def work(tag: str) -> None:
        try:
            for i in range(100):
                store.add_message(conv.id, "user", f"{tag}{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in "ab"]
    for t in threads:
        t.start()
    for i in range(100):
        store.add_message(conv.id, "user", f"main{i}")
    for t in threads:
        t.join()
    assert errors == []
    assert store.count_messages(conv.id) == 300


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from tui.store import Store

    db, title, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    while not go.exists():
        time.sleep(0.005)
    store = Store(Path(db))
    conv = store.create_conversation(title)
    for i in range(200):
        store.add_message(conv.id, "user", f"{title} {i}")
    store.close()
    print(conv.id)
    """
)


@pytest.mark.timeout(120)
def test_two_processes_write_concurrently(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"  # fresh: both processes also race to create the schema
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), name, str(go)],
            env=_child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("alpha", "beta")
    ]
    time.sleep(0.3)  # let both interpreters start and wait on the go file
    go.touch()
    ids = []
    for proc in procs:
        out, err = proc.communicate(timeout=100)
        assert proc.returncode == 0, err
        ids.append(int(out.strip()))

    with Store(db) as s:
        titles = sorted(c.title for c in s.list_conversations())
        assert titles == ["alpha", "beta"]
        for conv_id in ids:
            conv = s.get_conversation(conv_id)
            messages = s.list_messages(conv_id)
            assert len(messages) == 200
            assert [m.content for m in messages] == [f"{conv.title} {i}" for i in range(200)]


STREAMER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from tui.store import Store

    store = Store(Path(sys.argv[1]))
    conv = store.create_conversation("crash")
    msg = store.add_message(conv.id, "assistant", "", state="streaming")
    print(msg.id, flush=True)
    i = 0
    while True:
        i += 1
        store.update_message(msg.id, content="tok " * i)
        print(i, flush=True)
        time.sleep(0.1)
    """
)


@pytest.mark.timeout(60)
def test_writes_survive_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", STREAMER, str(db)],
        env=_child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        message_id = int(proc.stdout.readline())
        last = 0
        while last < 15:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            last = int(line)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()

    with Store(db) as s:
        msg = s.get_message(message_id)
        assert msg is not None
        written = msg.content.count("tok ")
        # Every update reported as done is there; at most a second (10 updates)
        # may have happened after the last report we read.
        assert last <= written <= last + 10
        assert msg.state == "streaming"
        assert s.mark_interrupted(older_than_s=0) == 1
        assert s.get_message(message_id).state == "interrupted"


def test_images_are_indexed_newest_first(db_path: Path) -> None:
    with Store(db_path) as s:
        first = s.add_image("/tmp/a.png", {"prompt": "a red fox"}, seed=1, width=64, height=64)
        second = s.add_image(
            "/tmp/b.png", {"prompt": "A blue 100% whale"}, seed=2, width=128, height=64
        )
        assert [i.id for i in s.list_images()] == [second.id, first.id]
        assert [i.id for i in s.list_images("FOX")] == [first.id]
        assert [i.id for i in s.list_images("100%")] == [second.id]
        third = s.add_image("/tmp/c.png", {"prompt": "ÄRGER im Büro"}, seed=3, width=64, height=64)
        assert [i.id for i in s.list_images("ärger")] == [third.id]
        assert [i.id for i in s.list_images("fox", limit=1)] == [first.id]
        assert s.get_image(second.id).params == {"prompt": "A blue 100% whale"}
        s.delete_image(first.id)
        assert s.get_image(first.id) is None


def test_version_1_database_gains_the_gallery(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db_path)
    store_module._migrate_v1(conn)
    conn.execute("INSERT INTO conversations (title, created, updated) VALUES ('old', 1, 1)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with Store(db_path) as s:
        assert s.schema_version() == SCHEMA_VERSION
        assert [c.title for c in s.list_conversations()] == ["old"]
        assert s.list_images() == []


def test_recordings_round_trip(db_path: Path) -> None:
    with Store(db_path) as s:
        rec = s.add_recording("/tmp/r.wav", "Standup", device="pulse", duration_s=1.5)
        s.update_recording(
            rec.id,
            name="Daily standup",
            duration_s=61.25,
            transcript=[{"start_s": 0.0, "end_s": 1.2, "text": "hello"}],
            language="en",
            model="ggml-tiny.en.bin",
        )
        got = s.get_recording(rec.id)
        assert got.name == "Daily standup" and got.duration_s == 61.25
        assert got.transcript[0]["text"] == "hello" and got.language == "en"
        assert [r.id for r in s.list_recordings()] == [rec.id]
        s.delete_recording(rec.id)
        assert s.get_recording(rec.id) is None


def test_attachments_and_image_messages_round_trip(tmp_path: Path) -> None:
    with Store(tmp_path / "t.db") as s:
        conv = s.create_conversation()
        user = s.add_message(conv.id, "user", "Summarise these")
        first = s.add_attachment(
            user.id, "notes.txt", "text", "hello", source="/tmp/notes.txt", tokens=2
        )
        s.add_attachment(user.id, "r.pdf", "pdf", "page one", tokens=3, note="trimmed")
        image = s.add_image("/tmp/x.png", {"prompt": "a red fox"}, seed=1, width=64, height=64)
        shown = s.add_message(conv.id, "image", "a red fox", image_id=image.id)
        assert s.get_message(shown.id).image_id == image.id
        found = s.attachments_for([user.id, shown.id])
        assert [a.name for a in found[user.id]] == ["notes.txt", "r.pdf"]
        assert found[user.id][0] == first and shown.id not in found
        with pytest.raises(ValueError, match="unknown attachment kind"):
            s.add_attachment(user.id, "x", "video", "")
        # Deleting the gallery image keeps the message, without its image.
        s.delete_image(image.id)
        assert s.get_message(shown.id).image_id is None
        # Deleting the message takes its attachments with it.
        s.delete_messages_from(conv.id, user.id)
        assert s.attachments_for([user.id]) == {}
