"""Export a conversation as Markdown or JSON, and import the JSON back.

Markdown is for reading: YAML front matter (title, times, model, system prompt,
sampling), one section per message, attachments as collapsed ``<details>``
blocks, images copied into a folder beside the file and linked. JSON is for
moving a conversation between machines: a versioned document that
:func:`import_conversation` turns back into a new conversation, its
attachments and its gallery images.

Names and text from the store or from an imported file are data: they never
choose a path (images are written under names made here, and an import reads
only files inside the JSON file's folder) and never break the document's
structure (front matter values are quoted, attachment text sits in a fence
longer than any backtick run in it, HTML that would swallow what follows is
escaped).

Blocking (reads the store, writes files): screens call these from a thread.
This module never imports textual.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tui import __version__
from tui.engines.protocol import Sampling
from tui.files import check_input_file
from tui.safe_text import one_line
from tui.store import (
    ATTACHMENT_KINDS,
    ROLES,
    STATES,
    Attachment,
    Conversation,
    ImageRecord,
    Message,
    Store,
    StoreError,
)

FORMAT = "triptych-conversation"
"""The ``format`` of an exported JSON document."""

VERSION = 1
"""The ``version`` of the JSON document this code writes (and the newest it reads)."""

FORMATS = ("md", "json")

MAX_IMPORT_BYTES = 256 << 20
"""Largest JSON document :func:`import_conversation` reads."""

MAX_IMAGE_BYTES = 64 << 20
"""Largest image file an import copies."""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

HEADINGS = {
    "system": "System",
    "user": "User",
    "assistant": "Assistant",
    "error": "Error",
    "image": "Image",
}


class ExchangeError(Exception):
    """An export or import problem, in one line fit to show to the user."""


@dataclass
class ExportResult:
    """Where an export went."""

    path: Path
    images: int = 0
    """Image files written beside it."""
    folder: Path | None = None
    """The folder holding them (None without images)."""
    missing: list[str] = field(default_factory=list)
    """One line per image that could not be copied (deleted from the gallery, file gone)."""


@dataclass
class ImportResult:
    """What an import created."""

    conversation: Conversation
    messages: int
    attachments: int
    images: int
    skipped: list[str] = field(default_factory=list)
    """One line per image left out (missing, not a PNG, outside the folder)."""


# --------------------------------------------------------------------------
# Names and paths
# --------------------------------------------------------------------------


def format_for(path: Path, fmt: str | None = None) -> str:
    """'md' or 'json': ``fmt`` when given, else from the file's extension (default md)."""
    if fmt:
        if fmt not in FORMATS:
            raise ExchangeError(f"unknown export format {fmt!r} (expected md or json)")
        return fmt
    return "json" if path.suffix.lower() == ".json" else "md"


def slug(title: str, limit: int = 40) -> str:
    """A file-name-safe form of a title: lower-case ASCII letters, digits and dashes."""
    text = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return text[:limit].rstrip("-") or "chat"


def default_export_path(
    conversation: Conversation, fmt: str = "md", folder: Path | None = None
) -> Path:
    """``~/triptych-<id>-<slug>.<fmt>`` (or in ``folder``)."""
    base = folder if folder is not None else Path.home()
    return base / f"triptych-{conversation.id}-{slug(conversation.title)}.{fmt}"


def files_folder(path: Path) -> Path:
    """The folder beside an export that holds its images: ``<stem>_files``."""
    return path.with_name(f"{path.stem}_files")


def _iso(timestamp: float) -> str:
    try:
        return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return ""


# --------------------------------------------------------------------------
# Reading a conversation out of the store
# --------------------------------------------------------------------------


@dataclass
class _Item:
    message: Message
    attachments: list[Attachment]
    image: ImageRecord | None
    file: str = ""
    """The image's path relative to the document ('' when it is not available)."""
    missing: str = ""
    """Why the image is not available ('' when it is)."""


@dataclass
class _Export:
    conversation: Conversation
    items: list[_Item]
    copies: list[tuple[Path, str]]
    """(gallery file, name in the files folder) for each image to write."""


def _collect(store: Store, conversation_id: int, folder_name: str) -> _Export:
    conversation = store.get_conversation(conversation_id)
    if conversation is None:
        raise ExchangeError(f"no conversation with id {conversation_id}")
    messages = store.list_messages(conversation_id)
    attachments = store.attachments_for(m.id for m in messages)
    items: list[_Item] = []
    copies: list[tuple[Path, str]] = []
    for message in messages:
        item = _Item(message, attachments.get(message.id, []), None)
        if message.role == "image":
            record = store.get_image(message.image_id) if message.image_id is not None else None
            item.image = record
            if record is None:
                item.missing = "deleted from the gallery"
            elif not Path(record.path).is_file():
                item.missing = f"file missing: {record.path}"
            else:
                name = f"image-{len(copies) + 1:03d}.png"
                item.file = f"{folder_name}/{name}"
                copies.append((Path(record.path), name))
        items.append(item)
    return _Export(conversation, items, copies)


# --------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------

_YAML_UNPRINTABLE = re.compile(
    "[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)


def yaml_string(text: str) -> str:
    """``text`` as a double-quoted YAML scalar on one line (JSON escapes are YAML's)."""
    quoted = json.dumps(text, ensure_ascii=False)
    return _YAML_UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", quoted)


def _yaml_number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return yaml_string(str(value))
    if isinstance(value, float) and not math.isfinite(value):
        return yaml_string(str(value))
    return json.dumps(value)


def _front_matter(conversation: Conversation, model: str, sampling: Sampling, count: int) -> str:
    lines = [
        "---",
        f"title: {yaml_string(conversation.title)}",
        f"created: {yaml_string(_iso(conversation.created))}",
        f"updated: {yaml_string(_iso(conversation.updated))}",
        f"model: {yaml_string(model)}",
        f"system_prompt: {yaml_string(conversation.system_prompt)}",
        "sampling:",
        *(f"  {key}: {_yaml_number(value)}" for key, value in asdict(sampling).items()),
        f"messages: {count}",
        f"exported_by: {yaml_string(f'triptych {__version__}')}",
        "---",
    ]
    return "\n".join(lines)


_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
# Tags that reach past the message in the HTML a viewer makes of it: details blocks,
# and raw-text elements (a <script> or <textarea> left open takes the rest of the page).
_TAG = re.compile(
    r"<(/?)(details|summary|script|style|textarea|title|xmp|iframe|noscript|plaintext|noembed)\b",
    re.IGNORECASE,
)
_CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)")
# HTML blocks that run until a closing marker rather than a blank line (CommonMark
# types 1-5): opened in a message, they would swallow the sections after it.
_LONG_HTML_BLOCK = re.compile(
    r"^( {0,3})<(?=script\b|pre\b|style\b|textarea\b|!--|\?|![A-Za-z]|!\[CDATA\[)",
    re.IGNORECASE,
)


def contained_markdown(text: str) -> str:
    """Message text as it is, except what could reach past the message.

    A code fence left open is closed; ``<details>``/``<summary>`` tags and the
    openers of HTML blocks that end only at a closing marker are escaped
    outside code fences. Everything else (the Markdown the model wrote) stays.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    fence = ""
    for line in lines:
        match = _FENCE_OPEN.match(line)
        if fence:
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
                if not match.group(2).strip():
                    fence = ""
            out.append(line)
            continue
        if match and not (match.group(1)[0] == "`" and "`" in match.group(2)):
            fence = match.group(1)
            out.append(line)
            continue
        line = _LONG_HTML_BLOCK.sub(r"\1&lt;", line)
        out.append(_escape_tags(line))
    if fence:
        out.append(fence)
    return "\n".join(out).strip("\n")


def _escape_tags(line: str) -> str:
    """_TAG escaped in a line, except inside inline code spans (shown literally there)."""
    pieces: list[str] = []
    end = 0
    for span in _CODE_SPAN.finditer(line):
        pieces += [_TAG.sub(r"&lt;\1\2", line[end : span.start()]), span.group()]
        end = span.end()
    pieces.append(_TAG.sub(r"&lt;\1\2", line[end:]))
    return "".join(pieces)


def fenced(text: str, language: str = "") -> str:
    """``text`` in a backtick fence longer than any backtick run inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    body = text.replace("\r\n", "\n")
    if not body.endswith("\n"):
        body += "\n"
    return f"{fence}{language}\n{body}{fence}"


def _language(name: str, kind: str) -> str:
    """The fence's info string: the file's extension for code, if it is a plain word."""
    if kind == "markdown":
        return "markdown"
    if kind != "code":
        return "text"
    suffix = Path(one_line(name)).suffix.lstrip(".").lower()
    return suffix if re.fullmatch(r"[a-z0-9+#-]{1,16}", suffix) else ""


def _details(attachment: Attachment) -> str:
    tokens = f", {attachment.tokens} tokens" if attachment.tokens else ""
    summary = html.escape(f"{one_line(attachment.name)} ({attachment.kind}{tokens})")
    parts = ["<details>", f"<summary>{summary}</summary>", ""]
    if attachment.note:
        parts += [f"Note: {html.escape(one_line(attachment.note))}", ""]
    parts += [fenced(attachment.content, _language(attachment.name, attachment.kind)), ""]
    parts.append("</details>")
    return "\n".join(parts)


_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+\-.!<>|~&])")


def escape_markdown(text: str) -> str:
    """One line of plain text with every Markdown punctuation character escaped."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", one_line(text))


def _image_section(item: _Item) -> str:
    prompt = item.message.content
    parts: list[str] = []
    alt = escape_markdown(prompt[:120]) or "image"
    if item.file:
        parts += [f"![{alt}]({quote(item.file, safe='/')})", ""]
    else:
        parts += [f"*Image not available ({html.escape(one_line(item.missing))}).*", ""]
    parts += ["Prompt:", "", fenced(prompt, "text"), ""]
    record = item.image
    if record is not None:
        params = record.params
        details = [
            ("seed", record.seed),
            ("size", f"{record.width}x{record.height}"),
            ("steps", params.get("steps")),
            ("CFG scale", params.get("cfg_scale")),
            ("sampler", params.get("sampler")),
            ("scheduler", params.get("scheduler")),
            ("negative prompt", params.get("negative_prompt")),
            ("model", Path(str(params.get("model", ""))).name),
        ]
        for label, value in details:
            if value not in (None, ""):
                parts.append(f"- {label}: {escape_markdown(str(value))}")
        parts.append("")
    return "\n".join(parts).rstrip("\n")


def _markdown(export: _Export, model: str, sampling: Sampling) -> str:
    conversation = export.conversation
    parts = [
        _front_matter(conversation, model, sampling, len(export.items)),
        "",
        f"# {escape_markdown(conversation.title) or 'Untitled'}",
        "",
    ]
    if conversation.system_prompt:
        # Instructions, not Markdown: shown exactly as they are sent.
        parts += ["## System prompt", "", fenced(conversation.system_prompt, "text"), ""]
    for item in export.items:
        message = item.message
        heading = HEADINGS.get(message.role, message.role.capitalize())
        if message.state != "complete" and message.state != message.role:
            heading += f" ({message.state})"
        parts += [f"## {heading}", ""]
        if message.role == "image":
            parts += [_image_section(item), ""]
            continue
        body = contained_markdown(message.content)
        if body:
            parts += [body, ""]
        for attachment in item.attachments:
            parts += [_details(attachment), ""]
    return "\n".join(parts).rstrip("\n") + "\n"


# --------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------


def _document(export: _Export) -> dict[str, Any]:
    conversation = export.conversation
    messages: list[dict[str, Any]] = []
    for item in export.items:
        message = item.message
        entry: dict[str, Any] = {
            "role": message.role,
            "content": message.content,
            "state": message.state,
            "created": message.created,
            "updated": message.updated,
            "stats": message.stats,
            "attachments": [
                {
                    "name": a.name,
                    "kind": a.kind,
                    "content": a.content,
                    "source": a.source,
                    "tokens": a.tokens,
                    "note": a.note,
                    "created": a.created,
                }
                for a in item.attachments
            ],
            "image": None,
        }
        if item.image is not None and item.file:
            record = item.image
            entry["image"] = {
                "file": item.file,
                "prompt": record.prompt,
                "seed": record.seed,
                "width": record.width,
                "height": record.height,
                "params": record.params,
                "seconds": record.seconds,
                "created": record.created,
            }
        messages.append(entry)
    return {
        "format": FORMAT,
        "version": VERSION,
        "exported_by": f"triptych {__version__}",
        "title": conversation.title,
        "created": conversation.created,
        "updated": conversation.updated,
        "system_prompt": conversation.system_prompt,
        "model": conversation.model,
        "sampling": conversation.sampling,
        "messages": messages,
    }


# --------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------


def render_export(
    store: Store,
    conversation_id: int,
    fmt: str,
    *,
    folder_name: str = "files",
    default_model: str = "",
    default_sampling: Sampling | None = None,
) -> tuple[str, list[tuple[Path, str]]]:
    """The document's text and the images to write beside it: (gallery file, name).

    ``folder_name`` is the image folder's name as the document links it;
    ``default_model`` and ``default_sampling`` are what the conversation uses
    where it stores nothing of its own (the settings').
    """
    export = _collect(store, conversation_id, folder_name)
    if format_for(Path(), fmt) == "json":
        text = json.dumps(_document(export), ensure_ascii=False, indent=2) + "\n"
    else:
        conversation = export.conversation
        base = asdict(default_sampling or Sampling())
        sampling = Sampling.from_dict({**base, **conversation.sampling})
        text = _markdown(export, conversation.model or default_model, sampling)
    return text, export.copies


def export_conversation(
    store: Store,
    conversation_id: int,
    path: Path,
    *,
    fmt: str | None = None,
    default_model: str = "",
    default_sampling: Sampling | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Write the conversation to ``path`` (images into ``<stem>_files`` beside it).

    The format is ``fmt`` or the extension's (.json: JSON, else Markdown). An
    existing file is refused unless ``overwrite``. Raises ExchangeError.
    """
    path = path.expanduser()
    fmt = format_for(path, fmt)
    if path.is_dir():
        raise ExchangeError(f"{path} is a folder: give a file name")
    if not overwrite and path.exists():
        raise ExchangeError(f"{path} already exists: choose another name")
    folder = files_folder(path)
    try:
        text, copies = render_export(
            store,
            conversation_id,
            fmt,
            folder_name=folder.name,
            default_model=default_model,
            default_sampling=default_sampling,
        )
    except StoreError as error:
        raise ExchangeError(str(error)) from error
    result = ExportResult(path)
    try:
        if copies:
            folder.mkdir(parents=True, exist_ok=True)
            result.folder = folder
        for source, name in copies:
            try:
                data = source.read_bytes()
            except OSError as error:
                result.missing.append(f"{source}: {error.strerror or error}")
                continue
            _write_file(folder / name, data, overwrite=overwrite)
            result.images += 1
        _write_file(path, text.encode("utf-8"), overwrite=overwrite)
    except OSError as error:
        raise ExchangeError(
            f"could not write {error.filename or path}: {error.strerror or error}"
        ) from error
    return result


def _write_file(path: Path, data: bytes, *, overwrite: bool) -> None:
    """Write ``data`` atomically; without ``overwrite`` an existing file is an error,
    unless it holds ``data`` already (an image written by the other format's export)."""
    if not overwrite and path.exists():
        if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
            return
        raise FileExistsError(17, "already exists", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails instead of replacing a file made meanwhile
            os.unlink(tmp)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------


class _Invalid(Exception):
    """A problem in the document: where it is and what is wrong."""


def _field(
    data: dict[str, Any], key: str, kinds: type | tuple[type, ...], where: str, default: Any = ...
) -> Any:
    if key not in data:
        if default is ...:
            raise _Invalid(f"{where}: missing field '{key}'")
        return default
    value = data[key]
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise _Invalid(f"{where}.{key}: expected {_kind_name(kinds)}, got true/false")
    if not isinstance(value, kinds):
        raise _Invalid(f"{where}.{key}: expected {_kind_name(kinds)}, got {type(value).__name__}")
    return value


def _kind_name(kinds: type | tuple[type, ...]) -> str:
    names = {
        str: "text",
        int: "a whole number",
        float: "a number",
        dict: "an object",
        list: "a list",
    }
    options = kinds if isinstance(kinds, tuple) else (kinds,)
    return " or ".join(names.get(k, k.__name__) for k in options if k is not type(None)) + (
        " or null" if type(None) in options else ""
    )


def _one_of(value: str, allowed: tuple[str, ...], where: str) -> str:
    if value not in allowed:
        raise _Invalid(f"{where}: {one_line(value)[:40]!r} is not one of {', '.join(allowed)}")
    return value


def _read_document(path: Path) -> dict[str, Any]:
    try:
        check_input_file(path, "file")
    except ValueError as error:
        raise ExchangeError(str(error)) from None
    try:
        size = path.stat().st_size
        if size > MAX_IMPORT_BYTES:
            raise ExchangeError(f"{path} is larger than {MAX_IMPORT_BYTES >> 20} MB: not an export")
        data = path.read_bytes()
    except OSError as error:
        raise ExchangeError(f"cannot read {path} ({error.strerror or error})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ExchangeError(f"{path} is not a JSON export (not UTF-8 text)") from None
    try:
        document = json.loads(text)
    except ValueError as error:
        detail = one_line(str(error))
        raise ExchangeError(f"{path} is not JSON ({detail})") from None
    if not isinstance(document, dict):
        raise ExchangeError(f"{path} is not a Triptych conversation (not a JSON object)")
    if document.get("format") != FORMAT:
        raise ExchangeError(
            f"{path} is not a Triptych conversation export (format is not {FORMAT!r})"
        )
    version = document.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ExchangeError(f"{path}: version must be a whole number from 1")
    if version > VERSION:
        raise ExchangeError(
            f"{path} is version {version}; this Triptych reads version {VERSION} at most: upgrade"
        )
    return document


@dataclass
class _PlannedImage:
    index: int
    """The message's place in the list."""
    source: Path
    record: ImageRecord


def _parse(
    document: dict[str, Any], base: Path, skipped: list[str]
) -> tuple[
    Conversation, list[tuple[Message, list[Attachment], ImageRecord | None]], list[_PlannedImage]
]:
    """The conversation, its messages and the images to copy; problems raise _Invalid.

    An image whose file cannot be used is left out with a line in ``skipped``.
    """
    number = (int, float)
    now = datetime.now().timestamp()
    created = float(_field(document, "created", number, "document", now))
    conversation = Conversation(
        id=0,
        title=_field(document, "title", str, "document"),
        created=created,
        updated=float(_field(document, "updated", number, "document", created)),
        system_prompt=_field(document, "system_prompt", str, "document", ""),
        model=_field(document, "model", str, "document", ""),
        sampling=_field(document, "sampling", dict, "document", {}),
    )
    try:
        Sampling.from_dict(conversation.sampling).validate()
    except (TypeError, ValueError) as error:
        raise _Invalid(f"document.sampling: {one_line(str(error))}") from None
    entries = _field(document, "messages", list, "document")
    messages: list[tuple[Message, list[Attachment], ImageRecord | None]] = []
    images: list[_PlannedImage] = []
    for index, entry in enumerate(entries):
        where = f"messages[{index}]"
        if not isinstance(entry, dict):
            raise _Invalid(f"{where}: expected an object")
        role = _one_of(_field(entry, "role", str, where), ROLES, f"{where}.role")
        state = _one_of(_field(entry, "state", str, where, "complete"), STATES, f"{where}.state")
        made = float(_field(entry, "created", number, where, conversation.created))
        message = Message(
            id=0,
            conversation_id=0,
            role=role,
            content=_field(entry, "content", str, where),
            state=state,
            created=made,
            updated=float(_field(entry, "updated", number, where, made)),
            stats=_field(entry, "stats", (dict, type(None)), where, None),
        )
        attachments: list[Attachment] = []
        for number_in, item in enumerate(_field(entry, "attachments", list, where, [])):
            at = f"{where}.attachments[{number_in}]"
            if not isinstance(item, dict):
                raise _Invalid(f"{at}: expected an object")
            tokens = _field(item, "tokens", int, at, 0)
            if tokens < 0:
                raise _Invalid(f"{at}.tokens: must not be negative")
            attachments.append(
                Attachment(
                    id=0,
                    message_id=0,
                    name=_field(item, "name", str, at),
                    kind=_one_of(_field(item, "kind", str, at), ATTACHMENT_KINDS, f"{at}.kind"),
                    content=_field(item, "content", str, at),
                    source=_field(item, "source", str, at, ""),
                    tokens=tokens,
                    note=_field(item, "note", str, at, ""),
                    created=float(_field(item, "created", number, at, made)),
                )
            )
        image = _field(entry, "image", (dict, type(None)), where, None)
        if image is not None and role != "image":
            raise _Invalid(f"{where}.image: only a message with role 'image' has an image")
        record = None
        if image is not None:
            record, source, problem = _image_record(image, base, f"{where}.image", made)
            if problem:
                prompt = one_line(message.content)[:40]
                skipped.append(f"the image of message {index + 1} ({prompt}): {problem}")
                record = None
            else:
                images.append(_PlannedImage(index, source, record))
        messages.append((message, attachments, record))
    return conversation, messages, images


def _image_record(
    image: dict[str, Any], base: Path, where: str, made: float
) -> tuple[ImageRecord, Path, str]:
    """The gallery row for an image entry, its file, and why it cannot be used ('' if it can)."""
    number = (int, float)
    name = _field(image, "file", str, where)
    params = _field(image, "params", dict, where, {})
    record = ImageRecord(
        id=0,
        path="",
        prompt=_field(image, "prompt", str, where, str(params.get("prompt", ""))),
        seed=_field(image, "seed", int, where, -1),
        width=_field(image, "width", int, where, 0),
        height=_field(image, "height", int, where, 0),
        params=params,
        seconds=float(_field(image, "seconds", number, where, 0.0)),
        created=float(_field(image, "created", number, where, made)),
    )
    shown = one_line(name)[:80]
    relative = Path(name)
    if not name or "\x00" in name or relative.is_absolute() or ".." in relative.parts:
        return record, Path(), f"{shown!r} is not a file name inside the export's folder"
    source = base / relative
    try:
        inside = source.resolve().is_relative_to(base.resolve())
    except (OSError, ValueError):
        inside = False
    if not inside:
        return record, source, f"{shown!r} is outside the export's folder"
    try:
        check_input_file(source, "image file")
    except ValueError:
        return record, source, f"{shown} is missing"
    try:
        if source.stat().st_size > MAX_IMAGE_BYTES:
            return record, source, f"{shown} is too large for an image"
        with source.open("rb") as handle:
            head = handle.read(len(PNG_SIGNATURE))
    except OSError as error:
        return record, source, f"cannot read {shown} ({error.strerror or error})"
    if head != PNG_SIGNATURE or not _is_png(source):
        return record, source, f"{shown} is not a PNG image"
    return record, source, ""


def _is_png(path: Path) -> bool:
    """Whether PIL reads the whole file as a PNG."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.format != "PNG":
                return False
            image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return False
    return True


def _copy_new(source: Path, folder: Path, stem: str) -> Path:
    """Copy ``source`` into ``folder`` under a new name (never replacing a file)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = source.read_bytes()
    for attempt in range(1000):
        target = folder / (f"{stem}.png" if attempt == 0 else f"{stem}-{attempt}.png")
        try:
            with target.open("xb") as handle:
                handle.write(data)
        except FileExistsError:
            continue
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return target
    raise FileExistsError(17, "no free file name", str(folder / stem))


def import_conversation(
    store: Store, path: Path, *, images_folder: Path | None = None
) -> ImportResult:
    """Create a new conversation from an exported JSON document.

    Images are copied into ``images_folder`` (default: where Imagine saves) under
    new names and added to the gallery; one that is missing or not a PNG is
    left out and named in :attr:`ImportResult.skipped`. Every other problem
    raises ExchangeError (one line) and creates nothing.
    """
    path = path.expanduser()
    document = _read_document(path)
    skipped: list[str] = []
    try:
        conversation, messages, images = _parse(document, path.parent, skipped)
    except _Invalid as error:
        raise ExchangeError(f"{path}: {error}") from None
    if images_folder is None:
        from tui.services.imagine import images_dir

        images_folder = images_dir()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    copied: list[Path] = []
    try:
        for number_in, planned in enumerate(images, start=1):
            target = _copy_new(planned.source, images_folder, f"imported-{stamp}-{number_in}")
            copied.append(target)
            planned.record.path = str(target)
    except OSError as error:
        _remove(copied)
        raise ExchangeError(
            f"could not copy the images into {images_folder}: {error.strerror or error}"
        ) from error
    try:
        stored = store.insert_conversation(conversation, messages)
    except (StoreError, ValueError) as error:
        _remove(copied)
        raise ExchangeError(str(error)) from error
    return ImportResult(
        conversation=stored,
        messages=len(messages),
        attachments=sum(len(attachments) for _, attachments, _ in messages),
        images=len(images),
        skipped=skipped,
    )


def _remove(paths: list[Path]) -> None:
    for path in paths:
        try:
            path.unlink()
        except OSError:
            pass
