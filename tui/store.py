"""Conversations and messages, kept in one SQLite database.

The database runs in WAL mode and every public write is its own short
``BEGIN IMMEDIATE`` ... ``COMMIT`` transaction, so a write that returned has
survived a ``kill -9`` of this process, and a second Triptych process using
the same file waits its turn (``busy_timeout`` plus a few retries) instead of
losing messages.

Every sqlite3 failure leaves this module as :class:`StoreError` with a single
readable line (``could not save to PATH: database or disk is full``) that the
UI can show as it is.

This module uses the standard library only; it never imports textual.

Schema versions
---------------
``PRAGMA user_version`` holds the schema version of a database file.
:data:`MIGRATIONS` lists one function per version: ``MIGRATIONS[0]`` turns an
empty file into version 1, ``MIGRATIONS[1]`` turns version 1 into version 2,
and so on. To change the schema (images, recordings, ...), append a new
``_migrate_vN`` function to the list; never edit one that has shipped. Each
migration runs inside its own transaction together with the ``user_version``
bump, so a crash mid-migration leaves the previous version intact.
"""

from __future__ import annotations

import json
import os
import shlex
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from tui import locations

T = TypeVar("T")

ROLES = ("system", "user", "assistant", "error", "image")
"""Valid values of :attr:`Message.role`."""

STATES = ("complete", "streaming", "stopped", "error", "interrupted")
"""Valid values of :attr:`Message.state`."""

BUSY_TIMEOUT_MS = 10_000
"""How long SQLite itself waits for another connection's lock."""

LOCK_RETRIES = 5
"""Extra attempts, after busy_timeout ran out, when the database stays locked."""

MIN_FREE_BYTES = 1 << 20
""":meth:`Store.open_checked` refuses a disk with less free space than this: a
streaming reply needs room for the write-ahead log (up to ~4 MB before a
checkpoint), so starting on a full disk would only lose the next reply."""


class StoreError(Exception):
    """A database problem, described in one line fit to show to the user."""


@dataclass
class Conversation:
    id: int
    title: str
    created: float
    updated: float
    system_prompt: str
    model: str
    sampling: dict[str, Any]


@dataclass
class ImageRecord:
    id: int
    path: str
    prompt: str
    seed: int
    width: int
    height: int
    params: dict[str, Any]
    seconds: float
    created: float


@dataclass
class Recording:
    id: int
    path: str
    name: str
    device: str
    duration_s: float
    created: float
    transcript: list[dict[str, Any]]
    """Segments: {"start_s", "end_s", "text"}."""
    language: str
    model: str


@dataclass
class Draft:
    """Prompt text typed but not sent."""

    conversation_id: int | None
    """None: the new conversation, not saved yet."""
    text: str
    updated: float


@dataclass
class Message:
    id: int
    conversation_id: int
    role: str
    content: str
    state: str
    created: float
    updated: float
    stats: dict[str, Any] | None
    image_id: int | None = None
    """For role 'image': the gallery image shown here (None once it was deleted)."""


ATTACHMENT_KINDS = ("text", "code", "markdown", "pdf", "audio", "recording")


@dataclass
class Attachment:
    """A file's text sent with a user message (the file itself is not kept)."""

    id: int
    message_id: int
    name: str
    """The file name as the user saw it (untrusted: show it through safe_text)."""
    kind: str
    """One of ATTACHMENT_KINDS: how the text was obtained."""
    content: str
    """The text given to the model (extracted, transcribed, trimmed as noted)."""
    source: str
    """The path it was read from, or 'recording:ID'."""
    tokens: int
    """Tokens of ``content`` as the chat model counted them (0: not counted)."""
    note: str
    """What was done to fit it, e.g. 'trimmed to the first 900 of 4000 tokens' ('' if whole)."""
    created: float


# --------------------------------------------------------------------------
# Schema migrations: one function per version, applied in order.
# --------------------------------------------------------------------------


def _migrate_v1(conn: sqlite3.Connection) -> None:
    """Version 1: conversations and their messages."""
    # AUTOINCREMENT keeps ids from ever being reused, so a stale id held by a
    # worker (e.g. a reply still streaming after "regenerate" deleted it) can
    # never write into a newer row.
    conn.execute(
        """
        CREATE TABLE conversations (
            id            INTEGER PRIMARY KEY AUTOINCREMENT,
            title         TEXT    NOT NULL DEFAULT 'New chat',
            created       REAL    NOT NULL,
            updated       REAL    NOT NULL,
            system_prompt TEXT    NOT NULL DEFAULT '',
            model         TEXT    NOT NULL DEFAULT '',
            sampling      TEXT    NOT NULL DEFAULT '{}'
        )
        """
    )
    conn.execute(
        """
        CREATE TABLE messages (
            id              INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation_id INTEGER NOT NULL
                            REFERENCES conversations(id) ON DELETE CASCADE,
            role            TEXT    NOT NULL,
            content         TEXT    NOT NULL DEFAULT '',
            state           TEXT    NOT NULL DEFAULT 'complete',
            created         REAL    NOT NULL,
            updated         REAL    NOT NULL,
            stats           TEXT
        )
        """
    )
    conn.execute("CREATE INDEX messages_by_conversation ON messages(conversation_id, id)")
    conn.execute("CREATE INDEX conversations_by_updated ON conversations(updated)")
    conn.execute("CREATE INDEX messages_by_state ON messages(state)")


def _migrate_v2(conn: sqlite3.Connection) -> None:
    """Version 2: the image gallery (files on disk, parameters here and in the PNG)."""
    conn.execute(
        """
        CREATE TABLE images (
            id       INTEGER PRIMARY KEY AUTOINCREMENT,
            path     TEXT    NOT NULL,
            prompt   TEXT    NOT NULL DEFAULT '',
            seed     INTEGER NOT NULL DEFAULT -1,
            width    INTEGER NOT NULL DEFAULT 0,
            height   INTEGER NOT NULL DEFAULT 0,
            params   TEXT    NOT NULL DEFAULT '{}',
            seconds  REAL    NOT NULL DEFAULT 0,
            created  REAL    NOT NULL
        )
        """
    )
    conn.execute("CREATE INDEX images_by_created ON images(created)")


def _migrate_v3(conn: sqlite3.Connection) -> None:
    """Version 3: recordings and their transcripts."""
    conn.execute(
        """
        CREATE TABLE recordings (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            path       TEXT    NOT NULL,
            name       TEXT    NOT NULL DEFAULT '',
            device     TEXT    NOT NULL DEFAULT '',
            duration_s REAL    NOT NULL DEFAULT 0,
            created    REAL    NOT NULL,
            transcript TEXT    NOT NULL DEFAULT '[]',
            language   TEXT    NOT NULL DEFAULT '',
            model      TEXT    NOT NULL DEFAULT ''
        )
        """
    )


def _migrate_v4(conn: sqlite3.Connection) -> None:
    """Version 4: unsent prompt text, one draft per conversation.

    ``conversation_id`` 0 is the new conversation that has no row yet. No
    foreign key (0 has no row to point at): a trigger drops a deleted
    conversation's draft instead.
    """
    conn.execute(
        """
        CREATE TABLE drafts (
            conversation_id INTEGER PRIMARY KEY,
            text            TEXT    NOT NULL,
            updated         REAL    NOT NULL
        )
        """
    )
    conn.execute(
        """
        CREATE TRIGGER drafts_of_deleted_conversations AFTER DELETE ON conversations
        BEGIN
            DELETE FROM drafts WHERE conversation_id = old.id;
        END
        """
    )


def _migrate_v5(conn: sqlite3.Connection) -> None:
    """Version 5: files attached to messages, and images that are part of a conversation.

    An image in a conversation is a message with role 'image' whose content is
    its prompt and whose ``image_id`` points at the gallery row (NULL once the
    image is deleted from the gallery).
    """
    conn.execute(
        """
        CREATE TABLE attachments (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            name       TEXT    NOT NULL,
            kind       TEXT    NOT NULL DEFAULT 'text',
            content    TEXT    NOT NULL DEFAULT '',
            source     TEXT    NOT NULL DEFAULT '',
            tokens     INTEGER NOT NULL DEFAULT 0,
            note       TEXT    NOT NULL DEFAULT '',
            created    REAL    NOT NULL
        )
        """
    )
    conn.execute("CREATE INDEX attachments_by_message ON attachments(message_id, id)")
    conn.execute(
        "ALTER TABLE messages ADD COLUMN image_id INTEGER REFERENCES images(id) ON DELETE SET NULL"
    )


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _migrate_v1,
    _migrate_v2,
    _migrate_v3,
    _migrate_v4,
    _migrate_v5,
    # append new versions here, never edit old ones
]

SCHEMA_VERSION = len(MIGRATIONS)
"""The schema version this code writes."""


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _move_aside(path: Path) -> str:
    """The shell command that moves a database out of the way (kept for rescue)."""
    return f"mv {shlex.quote(str(path))} {shlex.quote(str(path) + '.broken')}"


def _free_bytes(folder: Path) -> int | None:
    """Bytes still free for ordinary writers on folder's file system (None: unknown)."""
    try:
        stat = os.statvfs(folder)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


def _is_read_only(folder: Path) -> bool:
    """True when the file system holding folder is mounted read-only."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


ELSEWHERE = "or point TRIPTYCH_DATA_DIR (or TRIPTYCH_DB) at another folder"


def _is_locked(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _escape_like(text: str) -> str:
    """Escape LIKE wildcards so ``text`` matches literally (with ESCAPE '\\')."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _casefold_contains(haystack: str | None, needle: str | None) -> int:
    """SQL function for searches that SQLite's ASCII-only LIKE cannot fold."""
    if haystack is None or needle is None:
        return 0
    return int(needle.casefold() in haystack.casefold())


def _contains(column: str, search: str) -> tuple[str, str]:
    """SQL predicate (using parameter ?1) and its value: column contains search, any case.

    LIKE folds ASCII case and is the fast path for the common case; it folds no
    other letters, so a non-ASCII search goes through Python ("Ä" matches "ä").
    """
    if search.isascii():
        return f"{column} LIKE ?1 ESCAPE '\\'", f"%{_escape_like(search)}%"
    return f"triptych_contains({column}, ?1)", search


def _load_json(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _conversation(row: sqlite3.Row) -> Conversation:
    return Conversation(
        id=row["id"],
        title=row["title"],
        created=row["created"],
        updated=row["updated"],
        system_prompt=row["system_prompt"],
        model=row["model"],
        sampling=_load_json(row["sampling"]) or {},
    )


def _message(row: sqlite3.Row) -> Message:
    return Message(
        id=row["id"],
        conversation_id=row["conversation_id"],
        role=row["role"],
        content=row["content"],
        state=row["state"],
        created=row["created"],
        updated=row["updated"],
        stats=_load_json(row["stats"]),
        image_id=row["image_id"],
    )


def _attachment(row: sqlite3.Row) -> Attachment:
    # The columns are the dataclass's fields, by name.
    return Attachment(**{f.name: row[f.name] for f in fields(Attachment)})


def _image(row: sqlite3.Row) -> ImageRecord:
    return ImageRecord(
        id=row["id"],
        path=row["path"],
        prompt=row["prompt"],
        seed=row["seed"],
        width=row["width"],
        height=row["height"],
        params=_load_json(row["params"]) or {},
        seconds=row["seconds"],
        created=row["created"],
    )


def _recording(row: sqlite3.Row) -> Recording:
    try:
        segments = json.loads(row["transcript"] or "[]")
    except ValueError:
        segments = []
    return Recording(
        id=row["id"],
        path=row["path"],
        name=row["name"],
        device=row["device"],
        duration_s=row["duration_s"],
        created=row["created"],
        transcript=segments if isinstance(segments, list) else [],
        language=row["language"],
        model=row["model"],
    )


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"unknown message role {role!r} (expected one of {', '.join(ROLES)})")


def _check_state(state: str) -> None:
    if state not in STATES:
        raise ValueError(f"unknown message state {state!r} (expected one of {', '.join(STATES)})")


# --------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------


class Store:
    """Conversations and messages in one SQLite file.

    One connection, shared by the UI thread and any worker thread; an RLock
    serialises its use. Other processes may open the same file at the same
    time.
    """

    def __init__(self, path: Path | None = None, *, verify: bool = False) -> None:
        """Open (creating and migrating as needed) the database; StoreError if it cannot be.

        With ``verify``, before anything is written, every page is read (see
        :meth:`verify`) and the disk must take writes (see :meth:`check_space`).
        """
        self.path = Path(path) if path is not None else locations.database_file()
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        if self.path.is_dir():
            raise StoreError(
                f"{self.path} is a folder, not a database file: move it aside "
                f"({_move_aside(self.path)}) {ELSEWHERE}"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = exc.strerror or _one_line(exc)
            raise StoreError(
                f"could not create the folder {self.path.parent} for {self.path} ({reason}): "
                f"make it possible, {ELSEWHERE}"
            ) from exc
        if verify:
            # Before the read-write connection exists: a refused file is not written
            # at all (not even by the checkpoint that closing that connection runs).
            if self.path.exists():
                self._verify_read_only()
            self.check_space()
        # Files this attempt creates; when it creates the database itself they are
        # removed again if opening fails, so a failed first start (full disk, ...)
        # leaves no empty database behind. An existing database is never touched.
        created = (
            [
                side
                for side in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"))
                if not side.exists()
            ]
            if not self.path.exists()
            else []
        )
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            self._remove_if_empty(created)
            raise self._open_error(exc) from exc
        try:
            self._setup(conn)
        except StoreError:
            conn.close()
            self._remove_if_empty(created)
            raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            self._remove_if_empty(created)
            raise self._open_error(exc) from exc
        self._conn = conn

    @classmethod
    def open_checked(cls, path: Path | None = None) -> Store:
        """Open the database for the TUI, refusing anything that would fail later.

        Besides what the constructor checks, every page is read before anything
        is written (a damaged page in the middle of the file shows now, not
        mid-conversation, and is not made worse by a migration), the disk
        must be writable and not full, and replies a crash left 'streaming'
        become 'interrupted'. Every problem is a one-line :class:`StoreError`
        naming the file and what to do; the file itself is left as it was.
        """
        store = cls(path, verify=True)
        try:
            store.mark_interrupted()
        except StoreError:
            store.close()
            raise
        return store

    def verify(self) -> None:
        """Read every page (``PRAGMA quick_check``); raise StoreError if any is damaged.

        It costs a read of the whole file: about 0.3 s for 280 MB of messages.
        """
        with self._lock:
            conn = self._connection()
            try:
                self._quick_check(conn)
            except sqlite3.DatabaseError as exc:
                raise self._open_error(exc) from exc

    def _verify_read_only(self) -> None:
        """The checks of :meth:`verify` (and the schema version) through a read-only connection."""
        uri = f"{self.path.absolute().as_uri()}?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
        except sqlite3.Error as exc:
            raise self._open_error(exc) from exc
        try:
            version = self._retry(lambda: conn.execute("PRAGMA user_version").fetchone()[0])
            self._refuse_newer(version)
            self._quick_check(conn)
        except sqlite3.DatabaseError as exc:
            raise self._open_error(exc) from exc
        finally:
            conn.close()

    def _quick_check(self, conn: sqlite3.Connection) -> None:
        rows = self._retry(lambda: conn.execute("PRAGMA quick_check(1)").fetchall())
        result = " ".join(str(rows[0][0]).split()) if rows else "ok"
        if result != "ok":
            raise StoreError(self._damaged(f"quick_check: {result}"))

    def check_space(self, min_free: int = MIN_FREE_BYTES) -> None:
        """Raise StoreError when the database cannot be written: read-only or (nearly) full."""
        problem = self._space_problem(min_free)
        if problem:
            raise StoreError(problem)

    # -- explaining failures ---------------------------------------------------

    def _damaged(self, detail: str) -> str:
        return (
            f"{self.path} is damaged ({detail}); to start fresh, move it aside "
            f"(it keeps what can be rescued): {_move_aside(self.path)}"
        )

    def _space_problem(self, min_free: int) -> str | None:
        """Why the database's folder cannot take writes, or None when it can."""
        folder = self.path.parent
        if _is_read_only(folder):
            return (
                f"cannot write {self.path}: {folder} is on a read-only file system; "
                f"remount it read-write {ELSEWHERE}"
            )
        if not os.access(folder, os.W_OK) or (
            self.path.exists() and not os.access(self.path, os.W_OK)
        ):
            return (
                f"cannot write {self.path}: permission denied; make it and {folder} writable "
                f"{ELSEWHERE}"
            )
        free = _free_bytes(folder)
        if free is not None and free < min_free:
            return self._full()
        return None

    def _full(self) -> str:
        free = _free_bytes(self.path.parent)
        amount = f" ({free // 1024} KiB free)" if free is not None else ""
        return (
            f"the disk holding {self.path} is full{amount}: free some space and start again, "
            f"{ELSEWHERE}"
        )

    def _open_error(self, exc: BaseException) -> StoreError:
        """The one line for a database that could not be opened or read at start."""
        message = _one_line(exc)
        lowered = message.lower()
        if "not a database" in lowered:
            return StoreError(
                f"{self.path} is not a Triptych database ({message}); to start fresh, "
                f"move it aside: {_move_aside(self.path)}"
            )
        if "malformed" in lowered or "corrupt" in lowered:
            return StoreError(self._damaged(message))
        if "full" in lowered:
            return StoreError(self._full())
        if "i/o error" in lowered or "unable to open" in lowered or "readonly" in lowered:
            problem = self._space_problem(MIN_FREE_BYTES)
            if problem:
                return StoreError(problem)
        return StoreError(f"could not open {self.path}: {message}")

    @staticmethod
    def _remove_if_empty(created: list[Path]) -> None:
        """Remove the files a failed first open created, if the new database is empty."""
        if not created:
            return
        try:
            if created[0].stat().st_size:
                return
        except OSError:
            pass
        for path in created:
            try:
                path.unlink()
            except OSError:
                pass

    # -- opening and migrating ---------------------------------------------

    def _setup(self, conn: sqlite3.Connection) -> None:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # Reading the version first also reads the file header, so a file that
        # is not a database fails here before anything is written to it.
        version = self._retry(lambda: conn.execute("PRAGMA user_version").fetchone()[0])
        self._refuse_newer(version)
        self._retry(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.create_function("triptych_contains", 2, _casefold_contains, deterministic=True)
        self._migrate(conn)

    def _refuse_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"database {self.path} was written by a newer Triptych (schema {version}); "
                f"this version understands schema {SCHEMA_VERSION} at most. "
                "Upgrade Triptych or point TRIPTYCH_DB at another file."
            )

    def _migrate(self, conn: sqlite3.Connection) -> None:
        for target, migration in enumerate(MIGRATIONS, start=1):

            def step(
                conn: sqlite3.Connection,
                target: int = target,
                migration: Callable[[sqlite3.Connection], None] = migration,
            ) -> None:
                # Re-read inside the write lock: another process may have
                # migrated the file while we waited.
                current = conn.execute("PRAGMA user_version").fetchone()[0]
                self._refuse_newer(current)
                if current < target:
                    migration(conn)
                    conn.execute(f"PRAGMA user_version = {target}")

            current = conn.execute("PRAGMA user_version").fetchone()[0]
            if current < target:
                self._transaction(conn, step)

    # -- plumbing ------------------------------------------------------------

    def _retry(self, fn: Callable[[], T]) -> T:
        """Run ``fn``, retrying a few times while the database stays locked."""
        for attempt in range(LOCK_RETRIES + 1):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_locked(exc) or attempt == LOCK_RETRIES:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def _transaction(self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` inside BEGIN IMMEDIATE ... COMMIT, retrying while locked."""

        def attempt() -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise
            return result

        return self._retry(attempt)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"the database {self.path} is closed")
        return self._conn

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            conn = self._connection()
            try:
                return self._transaction(conn, fn)
            except sqlite3.Error as exc:
                raise StoreError(f"could not save to {self.path}: {_one_line(exc)}") from exc

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            conn = self._connection()
            try:
                return self._retry(lambda: fn(conn))
            except sqlite3.Error as exc:
                raise StoreError(f"could not read {self.path}: {_one_line(exc)}") from exc

    # -- lifetime ------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None

    @property
    def closed(self) -> bool:
        return self._conn is None

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def schema_version(self) -> int:
        """The ``user_version`` of the open database."""
        return self._read(lambda c: c.execute("PRAGMA user_version").fetchone()[0])

    # -- conversations -------------------------------------------------------

    def create_conversation(
        self,
        title: str = "New chat",
        system_prompt: str = "",
        model: str = "",
        sampling: dict[str, Any] | None = None,
    ) -> Conversation:
        sampling = dict(sampling or {})
        now = time.time()

        def insert(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "INSERT INTO conversations"
                " (title, created, updated, system_prompt, model, sampling)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (title, now, now, system_prompt, model, json.dumps(sampling)),
            )
            return int(cursor.lastrowid or 0)

        new_id = self._write(insert)
        return Conversation(new_id, title, now, now, system_prompt, model, sampling)

    def get_conversation(self, conversation_id: int) -> Conversation | None:
        row = self._read(
            lambda c: c.execute(
                "SELECT * FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
        )
        return _conversation(row) if row is not None else None

    def list_conversations(
        self, search: str = "", *, limit: int | None = None, after: Conversation | None = None
    ) -> list[Conversation]:
        """Most recently updated first.

        A non-empty ``search`` keeps conversations whose title or any message
        contains it, ignoring case; ``%`` and ``_`` match literally. ``limit``
        returns one page; ``after`` (the last conversation of the previous page)
        starts the next one where that page ended: keyset paging, so a row added
        meanwhile does not shift the pages (nothing is listed twice).
        """
        where: list[str] = []
        params: list[Any] = []
        if search:
            title, param = _contains("c.title", search)
            content, _ = _contains("m.content", search)
            where.append(
                f"({title} OR EXISTS (SELECT 1 FROM messages AS m"
                f" WHERE m.conversation_id = c.id AND {content}))"
            )
            params.append(param)
        if after is not None:
            number = len(params) + 1
            where.append(f"(c.updated, c.id) < (?{number}, ?{number + 1})")
            params += [after.updated, after.id]
        sql = "SELECT * FROM conversations AS c"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY c.updated DESC, c.id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self._read(lambda c: c.execute(sql, params).fetchall())
        return [_conversation(row) for row in rows]

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        """Change the title (does not move the conversation up the list)."""
        self._write(
            lambda c: c.execute(
                "UPDATE conversations SET title = ? WHERE id = ?", (title, conversation_id)
            )
        )

    def _update_columns(self, table: str, row_id: int, changes: dict[str, Any]) -> None:
        """Set the columns whose new value is not None; dicts and lists are stored as JSON."""
        values = {
            column: json.dumps(value) if isinstance(value, dict | list) else value
            for column, value in changes.items()
            if value is not None
        }
        if not values:
            return
        assignments = ", ".join(f"{column} = ?" for column in values)
        self._write(
            lambda c: c.execute(
                f"UPDATE {table} SET {assignments} WHERE id = ?", (*values.values(), row_id)
            )
        )

    def update_conversation(
        self,
        conversation_id: int,
        *,
        system_prompt: str | None = None,
        model: str | None = None,
        sampling: dict[str, Any] | None = None,
    ) -> None:
        """Change only the given fields (does not move it up the list)."""
        self._update_columns(
            "conversations",
            conversation_id,
            {"system_prompt": system_prompt, "model": model, "sampling": sampling},
        )

    def delete_conversation(self, conversation_id: int) -> None:
        """Delete the conversation and (by cascade) its messages."""
        self._write(
            lambda c: c.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
        )

    # -- messages --------------------------------------------------------------

    def add_message(
        self,
        conversation_id: int,
        role: str,
        content: str,
        state: str = "complete",
        stats: dict[str, Any] | None = None,
        *,
        image_id: int | None = None,
    ) -> Message:
        _check_role(role)
        _check_state(state)
        stats_json = json.dumps(stats) if stats is not None else None
        now = time.time()

        def insert(conn: sqlite3.Connection) -> int:
            touched = conn.execute(
                "UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation_id)
            ).rowcount
            if not touched:
                raise StoreError(
                    f"could not save to {self.path}: conversation {conversation_id} "
                    "no longer exists"
                )
            cursor = conn.execute(
                "INSERT INTO messages"
                " (conversation_id, role, content, state, created, updated, stats, image_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, role, content, state, now, now, stats_json, image_id),
            )
            return int(cursor.lastrowid or 0)

        new_id = self._write(insert)
        return Message(new_id, conversation_id, role, content, state, now, now, stats, image_id)

    def update_message(
        self,
        message_id: int,
        content: str | None = None,
        state: str | None = None,
        stats: dict[str, Any] | None = None,
    ) -> None:
        """Change the given fields; a message that no longer exists is ignored."""
        changes: dict[str, Any] = {}
        if content is not None:
            changes["content"] = content
        if state is not None:
            _check_state(state)
            changes["state"] = state
        if stats is not None:
            changes["stats"] = json.dumps(stats)
        if not changes:
            return
        now = time.time()
        changes["updated"] = now
        assignments = ", ".join(f"{column} = ?" for column in changes)

        def update(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "SELECT conversation_id FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
            if row is None:
                return
            conn.execute(
                f"UPDATE messages SET {assignments} WHERE id = ?",
                (*changes.values(), message_id),
            )
            conn.execute(
                "UPDATE conversations SET updated = ? WHERE id = ?",
                (now, row["conversation_id"]),
            )

        self._write(update)

    def get_message(self, message_id: int) -> Message | None:
        row = self._read(
            lambda c: c.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
        )
        return _message(row) if row is not None else None

    def list_messages(
        self,
        conversation_id: int,
        limit: int | None = None,
        before_id: int | None = None,
    ) -> list[Message]:
        """Messages in chronological order.

        With ``before_id`` only messages older than that id; with ``limit``
        only the last ``limit`` of those (for paging backwards through history).
        """
        where = "conversation_id = ?"
        params: list[Any] = [conversation_id]
        if before_id is not None:
            where += " AND id < ?"
            params.append(before_id)
        if limit is None:
            sql = f"SELECT * FROM messages WHERE {where} ORDER BY id"
        else:
            sql = (
                f"SELECT * FROM (SELECT * FROM messages WHERE {where} ORDER BY id DESC LIMIT ?)"
                " ORDER BY id"
            )
            params.append(max(0, limit))
        rows = self._read(lambda c: c.execute(sql, params).fetchall())
        return [_message(row) for row in rows]

    def count_messages(self, conversation_id: int) -> int:
        return self._read(
            lambda c: c.execute(
                "SELECT COUNT(*) FROM messages WHERE conversation_id = ?", (conversation_id,)
            ).fetchone()[0]
        )

    def delete_messages_from(self, conversation_id: int, message_id: int) -> int:
        """Delete ``message_id`` and every later message of the conversation.

        Returns how many messages went.
        """
        now = time.time()

        def delete(conn: sqlite3.Connection) -> int:
            count = conn.execute(
                "DELETE FROM messages WHERE conversation_id = ? AND id >= ?",
                (conversation_id, message_id),
            ).rowcount
            if count:
                conn.execute(
                    "UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation_id)
                )
            return count

        return self._write(delete)

    def mark_interrupted(self, older_than_s: float = 5.0) -> int:
        """Turn replies left 'streaming' by a crash into 'interrupted'.

        Only messages not written for ``older_than_s`` seconds are touched, so
        a reply another running instance is still streaming (it writes every
        half second or so) keeps going. Their ``updated`` time stays that of
        the last real write. Returns how many messages changed.
        """
        cutoff = time.time() - older_than_s
        return self._write(
            lambda c: (
                c.execute(
                    "UPDATE messages SET state = 'interrupted'"
                    " WHERE state = 'streaming' AND updated <= ?",
                    (cutoff,),
                ).rowcount
            )
        )

    # -- attachments -----------------------------------------------------------

    def add_attachment(
        self,
        message_id: int,
        name: str,
        kind: str,
        content: str,
        *,
        source: str = "",
        tokens: int = 0,
        note: str = "",
    ) -> Attachment:
        """Keep a file's text with the message it was sent with."""
        if kind not in ATTACHMENT_KINDS:
            raise ValueError(
                f"unknown attachment kind {kind!r} (expected one of {', '.join(ATTACHMENT_KINDS)})"
            )
        now = time.time()

        def insert(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "INSERT INTO attachments"
                " (message_id, name, kind, content, source, tokens, note, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (message_id, name, kind, content, source, tokens, note, now),
            )
            return int(cursor.lastrowid or 0)

        new_id = self._write(insert)
        return Attachment(new_id, message_id, name, kind, content, source, tokens, note, now)

    def attachments_for(self, message_ids: Iterable[int]) -> dict[int, list[Attachment]]:
        """The attachments of each of ``message_ids`` that has any, in the order added."""
        ids = sorted(set(message_ids))
        found: dict[int, list[Attachment]] = {}
        # SQLite limits bound parameters; a long history is asked for in chunks.
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            rows = self._read(
                lambda c, chunk=chunk, marks=marks: c.execute(
                    f"SELECT * FROM attachments WHERE message_id IN ({marks}) ORDER BY id",
                    chunk,
                ).fetchall()
            )
            for row in rows:
                found.setdefault(row["message_id"], []).append(_attachment(row))
        return found

    # -- images ----------------------------------------------------------------

    def add_image(
        self,
        path: str,
        params: dict[str, Any],
        *,
        seed: int,
        width: int,
        height: int,
        seconds: float = 0.0,
    ) -> ImageRecord:
        """Index a generated image (its PNG also carries the parameters)."""
        now = time.time()
        prompt = str(params.get("prompt", ""))
        params_json = json.dumps(params)

        def insert(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "INSERT INTO images (path, prompt, seed, width, height, params, seconds, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (path, prompt, seed, width, height, params_json, seconds, now),
            )
            return int(cursor.lastrowid or 0)

        new_id = self._write(insert)
        return ImageRecord(new_id, path, prompt, seed, width, height, params, seconds, now)

    def list_images(
        self, search: str = "", limit: int | None = None, offset: int = 0
    ) -> list[ImageRecord]:
        """Newest first, ``limit`` from ``offset``; a search matches the prompt (any case)."""
        sql = "SELECT * FROM images"
        args: list[Any] = []
        if search:
            predicate, param = _contains("prompt", search)
            sql += f" WHERE {predicate}"
            args.append(param)
        sql += " ORDER BY created DESC, id DESC"
        if limit is not None or offset:
            sql += " LIMIT ? OFFSET ?"
            args += [-1 if limit is None else limit, offset]
        rows = self._read(lambda c: c.execute(sql, args).fetchall())
        return [_image(row) for row in rows]

    def get_image(self, image_id: int) -> ImageRecord | None:
        row = self._read(
            lambda c: c.execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()
        )
        return _image(row) if row else None

    def delete_image(self, image_id: int) -> None:
        """Forget the image (the caller removes the file)."""
        self._write(lambda c: c.execute("DELETE FROM images WHERE id = ?", (image_id,)))

    # -- recordings ------------------------------------------------------------

    def add_recording(
        self, path: str, name: str, device: str = "", duration_s: float = 0.0
    ) -> Recording:
        now = time.time()

        def insert(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "INSERT INTO recordings (path, name, device, duration_s, created)"
                " VALUES (?, ?, ?, ?, ?)",
                (path, name, device, duration_s, now),
            )
            return int(cursor.lastrowid or 0)

        new_id = self._write(insert)
        return Recording(new_id, path, name, device, duration_s, now, [], "", "")

    def update_recording(
        self,
        recording_id: int,
        *,
        name: str | None = None,
        duration_s: float | None = None,
        transcript: list[dict[str, Any]] | None = None,
        language: str | None = None,
        model: str | None = None,
    ) -> None:
        self._update_columns(
            "recordings",
            recording_id,
            {
                "name": name,
                "duration_s": duration_s,
                "transcript": transcript,
                "language": language,
                "model": model,
            },
        )

    def list_recordings(self, *, limit: int | None = None, offset: int = 0) -> list[Recording]:
        """Newest first; ``limit`` rows from ``offset`` on (a page of the Listen list)."""
        sql = "SELECT * FROM recordings ORDER BY created DESC, id DESC"
        args: list[Any] = []
        if limit is not None or offset:
            sql += " LIMIT ? OFFSET ?"
            args += [-1 if limit is None else limit, offset]
        rows = self._read(lambda c: c.execute(sql, args).fetchall())
        return [_recording(row) for row in rows]

    def list_unmeasured_recordings(self) -> list[Recording]:
        """Recordings without a duration: those a crash cut short, waiting for repair."""
        rows = self._read(
            lambda c: c.execute(
                "SELECT * FROM recordings WHERE duration_s <= 0 ORDER BY created DESC, id DESC"
            ).fetchall()
        )
        return [_recording(row) for row in rows]

    def get_recording(self, recording_id: int) -> Recording | None:
        row = self._read(
            lambda c: c.execute("SELECT * FROM recordings WHERE id = ?", (recording_id,)).fetchone()
        )
        return _recording(row) if row else None

    def delete_recording(self, recording_id: int) -> None:
        """Forget the recording (the caller removes the file)."""
        self._write(lambda c: c.execute("DELETE FROM recordings WHERE id = ?", (recording_id,)))

    # -- drafts ----------------------------------------------------------------

    def get_draft(self, conversation_id: int | None) -> Draft | None:
        """The unsent prompt text of a conversation (None: the new conversation)."""
        key = conversation_id or 0
        row = self._read(
            lambda c: c.execute(
                "SELECT text, updated FROM drafts WHERE conversation_id = ?", (key,)
            ).fetchone()
        )
        return Draft(conversation_id, row["text"], row["updated"]) if row else None

    def save_draft(self, conversation_id: int | None, text: str) -> None:
        """Keep text as the conversation's draft; blank text removes the draft.

        A draft for a conversation that no longer exists (deleted here or by
        another instance) is not written.
        """
        key = conversation_id or 0
        if not text.strip():
            self._write(lambda c: c.execute("DELETE FROM drafts WHERE conversation_id = ?", (key,)))
            return
        self._write(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO drafts (conversation_id, text, updated)"
                " SELECT ?, ?, ? WHERE ? = 0"
                " OR EXISTS (SELECT 1 FROM conversations WHERE id = ?)",
                (key, text, time.time(), key, key),
            )
        )

    # -- search everything -----------------------------------------------------

    def search(self, query: str, *, limit: int = 50) -> list[SearchHit]:
        """Everything that contains ``query`` (any case; ``%`` and ``_`` literal), newest first.

        Looks at conversation titles, message text, attachment names and text,
        recording names and transcripts, and image prompts; at most ``limit`` hits.
        """
        query = query.strip()
        if not query or limit <= 0:
            return []
        title, param = _contains("c.title", query)
        content, _ = _contains("m.content", query)
        name, _ = _contains("a.name", query)
        text, _ = _contains("a.content", query)
        prompt, _ = _contains("i.prompt", query)
        bound = int(limit)
        queries = {
            "conversation": (
                f"SELECT c.id AS id, c.id AS conversation_id, NULL AS message_id, c.title AS title,"
                f" c.title AS text, c.updated AS time FROM conversations AS c WHERE {title}"
                f" ORDER BY c.updated DESC LIMIT {bound}"
            ),
            "message": (
                "SELECT m.id AS id, m.conversation_id AS conversation_id, m.id AS message_id,"
                " c.title AS title, m.content AS text, m.updated AS time"
                " FROM messages AS m JOIN conversations AS c ON c.id = m.conversation_id"
                f" WHERE {content} ORDER BY m.updated DESC LIMIT {bound}"
            ),
            "attachment": (
                "SELECT a.id AS id, m.conversation_id AS conversation_id, a.message_id AS"
                f" message_id, a.name AS title, CASE WHEN {name} THEN a.name ELSE a.content END"
                " AS text, a.created AS time FROM attachments AS a"
                f" JOIN messages AS m ON m.id = a.message_id WHERE {name} OR {text}"
                f" ORDER BY a.created DESC LIMIT {bound}"
            ),
            "image": (
                "SELECT i.id AS id, NULL AS conversation_id, NULL AS message_id, i.prompt AS"
                f" title, i.prompt AS text, i.created AS time FROM images AS i WHERE {prompt}"
                f" ORDER BY i.created DESC LIMIT {bound}"
            ),
        }
        hits: list[SearchHit] = []
        for kind, sql in queries.items():
            rows = self._read(lambda c, sql=sql: c.execute(sql, (param,)).fetchall())
            hits += [
                SearchHit(
                    kind=kind,
                    id=row["id"],
                    conversation_id=row["conversation_id"],
                    message_id=row["message_id"],
                    title=row["title"] or "",
                    snippet=search_snippet(row["text"] or "", query),
                    time=row["time"],
                )
                for row in rows
            ]
        hits += self._search_recordings(query, bound)
        hits.sort(key=lambda hit: hit.time, reverse=True)
        return hits[:bound]

    def _search_recordings(self, query: str, limit: int) -> list[SearchHit]:
        """Recordings whose name or transcript text contains ``query``.

        The transcript is stored as JSON (non-ASCII escaped), so SQL only narrows
        the candidates for a plain ASCII query; the match itself is decided on
        the segments' text.
        """
        sql = "SELECT * FROM recordings"
        args: list[Any] = []
        if query.isascii() and '"' not in query and "\\" not in query:
            name, param = _contains("name", query)
            words, _ = _contains("transcript", query)
            sql += f" WHERE {name} OR {words}"
            args.append(param)
        sql += " ORDER BY created DESC, id DESC"
        needle = query.casefold()
        hits: list[SearchHit] = []
        for row in self._read(lambda c: c.execute(sql, args).fetchall()):
            record = _recording(row)
            spoken = " ".join(
                str(s.get("text", "")).strip() for s in record.transcript if isinstance(s, dict)
            )
            where = record.name if needle in record.name.casefold() else spoken
            if needle not in where.casefold():
                continue
            hits.append(
                SearchHit(
                    kind="recording",
                    id=record.id,
                    conversation_id=None,
                    message_id=None,
                    title=record.name,
                    snippet=search_snippet(where, query),
                    time=record.created,
                )
            )
            if len(hits) >= limit:
                break
        return hits

    # -- importing a whole conversation ----------------------------------------

    def insert_conversation(
        self,
        conversation: Conversation,
        messages: list[tuple[Message, list[Attachment], ImageRecord | None]],
    ) -> Conversation:
        """Add a conversation with its messages, attachments and images in one transaction.

        For an import: the times and fields are kept as given, every id is new
        (the ids in the arguments are ignored), and the image of a message (its
        file already in place) gets a new gallery row linked to it. Nothing is
        written when any part fails (StoreError, or ValueError for an unknown
        role, state or attachment kind).
        """
        for message, attachments, _image_record in messages:
            _check_role(message.role)
            _check_state(message.state)
            for attachment in attachments:
                if attachment.kind not in ATTACHMENT_KINDS:
                    raise ValueError(f"unknown attachment kind {attachment.kind!r}")

        def insert(conn: sqlite3.Connection) -> int:
            conversation_id = int(
                conn.execute(
                    "INSERT INTO conversations"
                    " (title, created, updated, system_prompt, model, sampling)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        conversation.title,
                        conversation.created,
                        conversation.updated,
                        conversation.system_prompt,
                        conversation.model,
                        json.dumps(conversation.sampling),
                    ),
                ).lastrowid
                or 0
            )
            for message, attachments, image in messages:
                image_id = None
                if image is not None:
                    image_id = conn.execute(
                        "INSERT INTO images"
                        " (path, prompt, seed, width, height, params, seconds, created)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            image.path,
                            image.prompt,
                            image.seed,
                            image.width,
                            image.height,
                            json.dumps(image.params),
                            image.seconds,
                            image.created,
                        ),
                    ).lastrowid
                message_id = conn.execute(
                    "INSERT INTO messages"
                    " (conversation_id, role, content, state, created, updated, stats, image_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        conversation_id,
                        message.role,
                        message.content,
                        message.state,
                        message.created,
                        message.updated,
                        json.dumps(message.stats) if message.stats is not None else None,
                        image_id,
                    ),
                ).lastrowid
                conn.executemany(
                    "INSERT INTO attachments"
                    " (message_id, name, kind, content, source, tokens, note, created)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            message_id,
                            a.name,
                            a.kind,
                            a.content,
                            a.source,
                            a.tokens,
                            a.note,
                            a.created,
                        )
                        for a in attachments
                    ],
                )
            return conversation_id

        new_id = self._write(insert)
        stored = self.get_conversation(new_id)
        if stored is None:
            raise StoreError(f"could not save to {self.path}: the imported conversation is gone")
        return stored


# --------------------------------------------------------------------------
# Search everything
# --------------------------------------------------------------------------

SEARCH_KINDS = ("conversation", "message", "attachment", "recording", "image")
"""Valid values of :attr:`SearchHit.kind`."""


@dataclass
class SearchHit:
    """One thing :meth:`Store.search` found."""

    kind: str
    """One of SEARCH_KINDS."""
    id: int
    """The row of that kind (conversation, message, attachment, recording or image)."""
    conversation_id: int | None
    """The conversation it belongs to (None for recordings and gallery images)."""
    message_id: int | None
    """The message it is or belongs to (messages and attachments)."""
    title: str
    """Conversation title, attachment or recording name, image prompt (untrusted)."""
    snippet: str
    """One line around the first match (untrusted: show it through safe_text)."""
    time: float


SNIPPET_BEFORE = 30
SNIPPET_AFTER = 60


def search_snippet(text: str, query: str) -> str:
    """One line of ``text`` around the first place it contains ``query`` (any case)."""
    flat = " ".join(text.split())
    at = flat.casefold().find(query.casefold())
    if at < 0 or len(flat) != len(flat.casefold()):
        at = flat.lower().find(query.lower())
    if at < 0:
        return flat[: SNIPPET_BEFORE + SNIPPET_AFTER] + ("…" if len(flat) > 90 else "")
    start = max(0, at - SNIPPET_BEFORE)
    end = min(len(flat), at + len(query) + SNIPPET_AFTER)
    return ("…" if start else "") + flat[start:end] + ("…" if end < len(flat) else "")
