"""Files attached to a chat message: reading them as text and fitting them in the context.

:func:`read_path` turns a path into a :class:`Candidate` (name, kind, text, where it
came from, a note) or raises :class:`AttachmentError` with one line fit to show:
folders, pipes, devices, binary and oversized files are refused before anything is
read that could block or flood memory. Text is decoded as UTF-8 (with or without a
BOM), UTF-16 with a BOM, else Windows-1252 / Latin-1 (the note says which); PDF
text is extracted with pypdf; audio is transcribed by the ``transcribe`` callable
the caller passes (the speech engine, through the same request ``triptych
transcribe`` builds). :func:`fit` trims a candidate to the room left in the
context, or refuses it, always with a notice. :func:`file_block` is how an
attachment is shown to the model.

Names and contents are untrusted: show them through :mod:`tui.safe_text`.
Textual-free.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tui.files import check_input_file
from tui.safe_text import one_line

MAX_FILE_BYTES = 64 << 20
"""Files larger than this are refused before they are read."""

MIN_USEFUL_TOKENS = 256
"""An attachment that does not fit is trimmed when at least this many tokens fit."""

SAMPLE_CHARS_PER_TOKEN = 32
"""A text longer than this many characters per token of room is counted from a sample
(its start) and its total extrapolated: no tokenizer packs that much into a token."""

SNIFF_BYTES = 8192
"""How much of a file's start decides whether it is text."""

RECORDING_PREFIX = "recording:"
"""``recording:ID`` names a recording of the Listen panel instead of a path."""

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3"})
MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})
CODE_SUFFIXES = frozenset(
    {
        ".py", ".pyi", ".c", ".h", ".cc", ".cpp", ".cxx", ".hpp", ".hh", ".cs", ".java",
        ".kt", ".kts", ".scala", ".go", ".rs", ".swift", ".m", ".mm", ".js", ".mjs", ".cjs",
        ".jsx", ".ts", ".tsx", ".rb", ".php", ".pl", ".pm", ".lua", ".r", ".jl", ".sh",
        ".bash", ".zsh", ".fish", ".ps1", ".sql", ".html", ".htm", ".css", ".scss", ".xml",
        ".json", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".tcss", ".hs", ".ml", ".ex",
        ".exs", ".erl", ".clj", ".dart", ".zig", ".nim", ".v", ".vhd", ".f90", ".asm", ".s",
        ".cmake", ".mk", ".gradle", ".vue", ".svelte",
    }
)  # fmt: skip
CODE_NAMES = frozenset({"Makefile", "Dockerfile", "CMakeLists.txt", "Justfile"})

_BINARY_MAGIC = (
    b"\x89PNG",
    b"\xff\xd8\xff",  # JPEG
    b"GIF8",
    b"PK\x03\x04",  # zip, docx, xlsx, jar, ...
    b"\x7fELF",
    b"MZ",  # Windows executables
    b"\x1f\x8b",  # gzip
    b"BZh",
    b"\xfd7zXZ\x00",
    b"7z\xbc\xaf",
    b"Rar!",
    b"SQLite format 3\x00",
    b"GGUF",
    b"\xca\xfe\xba\xbe",
    b"\xcf\xfa\xed\xfe",
    b"%!PS",
    b"wOFF",
)
_AUDIO_MAGIC = (b"RIFF", b"fLaC", b"OggS", b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2")
_TEXT_CONTROLS = frozenset(b"\t\n\r\f\b\x1b")
_CLOSING_TAG = re.compile(r"</(file)\s*>", re.IGNORECASE)

Transcriber = Callable[[Path], str]
"""Transcribes an audio file; ValueError (one line) when it cannot."""

Counter = Callable[[Sequence[str]], list[int]]
"""Counts the tokens of each text (the chat model's tokenizer, or an estimate)."""


class AttachmentError(ValueError):
    """Why a file cannot be attached, in one line fit to show to the user."""


@dataclass(frozen=True)
class Candidate:
    """A file's text, ready to be counted and attached."""

    name: str
    """The file name (untrusted: show it through safe_text)."""
    kind: str
    """One of tui.store.ATTACHMENT_KINDS."""
    content: str
    source: str
    """The absolute path, or ``recording:ID``."""
    note: str = ""
    """How the text was obtained when that is worth saying (an encoding, a trim)."""
    tokens: int = 0
    """Tokens of the attachment as the model sees it (its :func:`file_block`); 0 uncounted."""


# --- reading -------------------------------------------------------------------------


def read_path(path: str | Path, transcribe: Transcriber | None = None) -> Candidate:
    """The text of the file at ``path`` as an attachment; AttachmentError when refused.

    ``transcribe`` turns an audio file into text; without it audio is refused.
    Blocks (reading, PDF extraction, transcription): run it off the event loop.
    """
    raw = str(path).strip()
    if not raw:
        raise AttachmentError("type the path of a file to attach")
    file = Path(raw).expanduser()
    name = one_line(file.name) or raw
    try:
        check_input_file(file, "file")
        size = file.stat().st_size
    except ValueError as error:
        raise AttachmentError(str(error)) from None
    except OSError as error:
        raise AttachmentError(f"cannot read {file} ({error.strerror or error})") from None
    if size > MAX_FILE_BYTES:
        raise AttachmentError(
            f"{name} is {size / (1 << 20):.0f} MB; attachments may be at most "
            f"{MAX_FILE_BYTES >> 20} MB"
        )
    if size == 0:
        raise AttachmentError(f"{name} is empty: nothing to attach")
    source = str(file.resolve())
    try:
        with file.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError as error:
        raise AttachmentError(f"cannot read {file} ({error.strerror or error})") from None
    suffix = file.suffix.lower()
    if head.startswith(b"%PDF"):
        return Candidate(name, "pdf", _pdf_text(file, name), source)
    if suffix in AUDIO_SUFFIXES or (head.startswith(_AUDIO_MAGIC) and _is_binary(head)):
        return Candidate(name, "audio", _transcript(file, name, transcribe), source)
    if head.startswith(_BINARY_MAGIC) or _is_binary(head):
        raise AttachmentError(
            f"{name} is a binary file; attach text, source code, Markdown, PDF or audio"
        )
    try:
        data = file.read_bytes()
    except OSError as error:
        raise AttachmentError(f"cannot read {file} ({error.strerror or error})") from None
    content, encoding = decode_text(data)
    note = f"decoded as {encoding} (not UTF-8)" if encoding else ""
    return Candidate(name, kind_for(file), content, source, note)


def kind_for(path: Path) -> str:
    """'markdown', 'code' or 'text', by the file's name."""
    suffix = path.suffix.lower()
    if suffix in MARKDOWN_SUFFIXES:
        return "markdown"
    if suffix in CODE_SUFFIXES or path.name in CODE_NAMES:
        return "code"
    return "text"


def _is_binary(head: bytes) -> bool:
    """NUL bytes, or mostly control bytes, in a start without a UTF-16 BOM."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return False
    if b"\x00" in head:
        return True
    controls = sum(1 for byte in head if byte < 0x20 and byte not in _TEXT_CONTROLS)
    return controls > len(head) * 0.1


def decode_text(data: bytes) -> tuple[str, str]:
    """The text of ``data`` and the encoding used when it was not UTF-8 ('' for UTF-8).

    UTF-8 (a BOM is dropped), UTF-16 with a BOM, else Windows-1252 where it
    decodes, else Latin-1 (which decodes any byte).
    """
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16"), "UTF-16"
        except UnicodeDecodeError:
            raise AttachmentError("the file is not valid UTF-16 despite its BOM") from None
    try:
        return data.decode("utf-8"), ""
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "Latin-1 (Windows-1252)"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "Latin-1"


def _pdf_text(path: Path, name: str) -> str:
    """The text of every page of a PDF, pages separated by a blank line."""
    import pypdf
    from pypdf.errors import PdfReadError

    try:
        reader = pypdf.PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise AttachmentError(f"{name} is an encrypted PDF; attach a copy without a password")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except AttachmentError:
        raise
    except (PdfReadError, OSError, ValueError, KeyError, TypeError) as error:
        raise AttachmentError(f"{name} is not a readable PDF ({one_line(str(error))})") from None
    text = "\n\n".join(page for page in pages if page)
    if not text.strip():
        raise AttachmentError(f"{name} has no text to extract (a scanned PDF?)")
    return text + "\n"


def _transcript(path: Path, name: str, transcribe: Transcriber | None) -> str:
    if transcribe is None:
        raise AttachmentError(f"{name} is audio, and no speech model is at hand to transcribe it")
    try:
        text = transcribe(path)
    except ValueError as error:
        raise AttachmentError(f"{name}: {one_line(str(error))}") from None
    if not text.strip():
        raise AttachmentError(f"{name}: no speech found in the audio")
    return text


def recording_id(text: str) -> int | None:
    """The id in ``recording:ID`` (None when ``text`` is not that)."""
    raw = text.strip()
    if not raw.lower().startswith(RECORDING_PREFIX):
        return None
    rest = raw[len(RECORDING_PREFIX) :].strip().split(" ", 1)[0]
    return int(rest) if rest.isdigit() else None


def from_recording(record: Any, transcribe: Transcriber | None = None) -> Candidate:
    """A recording of the Listen panel (tui.store.Recording) as an attachment.

    Its stored transcript when it has one, else its audio transcribed.
    """
    from tui import transcript

    name = one_line(record.name) or f"recording {record.id}"
    source = f"{RECORDING_PREFIX}{record.id}"
    if record.transcript:
        text = transcript.to_txt([transcript.Segment(**s) for s in record.transcript])
        return Candidate(name, "recording", text, source)
    path = Path(record.path)
    try:
        check_input_file(path, "recording audio")
    except ValueError as error:
        raise AttachmentError(str(error)) from None
    return Candidate(name, "recording", _transcript(path, name, transcribe), source)


# --- how the model sees it -------------------------------------------------------------


def file_block(name: str, content: str) -> str:
    """``content`` between ``<file name="...">`` and ``</file>`` lines.

    A closing tag inside the content is neutralised (``<\\/file>``), so a file
    cannot end its own block early and pass the rest off as the user's words.
    """
    label = one_line(name).replace('"', "'")
    body = _CLOSING_TAG.sub(r"<\\/\1>", content)
    if not body.endswith("\n"):
        body += "\n"
    return f'<file name="{label}">\n{body}</file>'


def with_attachments(text: str, attachments: Sequence[Any]) -> str:
    """A user message's text followed by the blocks of its attachments (name, content)."""
    if not attachments:
        return text
    blocks = [file_block(a.name, a.content) for a in attachments]
    return "\n\n".join([text, *blocks]) if text else "\n\n".join(blocks)


# --- fitting ---------------------------------------------------------------------------


def fit(candidate: Candidate, room: int, count: Counter, n_ctx: int) -> Candidate:
    """``candidate`` with its tokens counted, trimmed to ``room`` tokens if it must be.

    Trimming keeps the start and cuts at a line end, and says so in the note;
    when fewer than MIN_USEFUL_TOKENS would be left, AttachmentError (one line)
    refuses it. ``n_ctx`` is the context size named in the refusal. A text far
    larger than the room is counted from its start and its total estimated ("about").
    """
    content = candidate.content
    about = ""
    sample_len = max(room, MIN_USEFUL_TOKENS) * SAMPLE_CHARS_PER_TOKEN
    tokens = 0
    if len(content) > sample_len:
        sample = _cut_at_line(content, sample_len)
        tokens = count([file_block(candidate.name, sample)])[0]
        if tokens > room:
            total = round(tokens * len(content) / max(len(sample), 1))
            content, about = sample, "about "
    if not about:
        tokens = total = count([file_block(candidate.name, content)])[0]
        if total <= room:
            return replace(candidate, tokens=total)
    if room < MIN_USEFUL_TOKENS:
        raise AttachmentError(
            f"{candidate.name} is {about}{total:,} tokens; only {max(room, 0):,} are left in "
            f"this conversation's context (size {n_ctx:,}): raise the context size (Ctrl+O) "
            "or attach less"
        )
    for _ in range(8):
        # Shrink in proportion to the overshoot (a little more, for the cut at a line).
        keep = int(len(content) * room / tokens * 0.97)
        content = _cut_at_line(content, keep)
        tokens = count([file_block(candidate.name, content)])[0]
        if tokens <= room:
            break
    else:
        raise AttachmentError(f"{candidate.name} could not be trimmed to {room:,} tokens")
    note = f"trimmed to the first {tokens:,} of {about}{total:,} tokens"
    if candidate.note:
        note = f"{candidate.note}; {note}"
    return replace(candidate, content=content, tokens=tokens, note=note)


def _cut_at_line(text: str, keep: int) -> str:
    """The first ``keep`` characters of ``text``, ending at a line end when one is near."""
    if keep >= len(text):
        return text
    head = text[:keep]
    end = head.rfind("\n")
    return head[: end + 1] if end > keep // 2 else head


# --- completing what the user types ----------------------------------------------------------

MAX_LISTED = 2000
"""Entries of a folder looked at when completing a path (a huge folder is cut short)."""


def complete_path(typed: str, recordings: Sequence[str] = ()) -> str:
    """``typed`` completed as far as it is unambiguous ('' when nothing matches).

    A path (``~`` expanded when looking, kept in the answer) is completed with the
    entries of its folder, a folder gaining its ``/``; ``recording:...`` with the
    ``recording:ID`` names in ``recordings``. The answer starts with ``typed``.
    """
    if not typed:
        return ""
    if typed.lower().startswith(RECORDING_PREFIX):
        return _common_prefix([name for name in recordings if name.startswith(typed)])
    found = _complete_file(typed)
    if not found and RECORDING_PREFIX.startswith(typed):
        return _common_prefix([name for name in recordings if name.startswith(typed)])
    return found


def _complete_file(typed: str) -> str:
    """``typed`` completed with the entries of its folder ('' when none match)."""
    expanded = Path(typed).expanduser()
    folder, stem = (expanded, "") if typed.endswith("/") else (expanded.parent, expanded.name)
    names: list[str] = []
    try:
        with os.scandir(folder) as entries:
            for count, entry in enumerate(entries):
                if count >= MAX_LISTED:
                    break
                if not entry.name.startswith(stem) or (entry.name.startswith(".") and not stem):
                    continue
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                names.append(entry.name + ("/" if is_dir else ""))
    except (OSError, ValueError):
        return ""
    if not names:
        return ""
    return typed + _common_prefix(names)[len(stem) :]


def _common_prefix(names: Sequence[str]) -> str:
    return os.path.commonprefix(list(names)) if names else ""
