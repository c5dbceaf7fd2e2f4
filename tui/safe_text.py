"""Untrusted text made safe for a terminal: control characters shown, never sent.

Text that Triptych did not write itself (model output, stored messages,
titles, file names, imported files, server replies, engine errors) may hold
terminal control sequences: OSC 52 writes the clipboard, OSC 0 the window
title, CSI clears the screen, DCS passes through tmux. None of it may reach a
terminal as control characters, so every such text goes through
:func:`visible` before it is shown in the TUI or printed by the CLI.

C0 controls (except newline and tab), DEL and ESC become their Unicode
"control pictures" (``ESC`` shows as ``␛``); C1 controls (U+0080-U+009F,
e.g. the one-byte CSI 0x9B) show as ``<9B>``. A CRLF line end becomes a plain
newline. The result has the same lines as the input and no character a
terminal would act on.

This module uses the standard library only; it never imports textual.
"""

from __future__ import annotations

import re
from typing import TextIO

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _picture(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20:
        return chr(0x2400 + code)  # ␀ .. ␟ (ESC is ␛)
    if code == 0x7F:
        return "\u2421"  # ␡
    return f"<{code:02X}>"


def visible(text: str) -> str:
    """``text`` with every terminal control character replaced by a visible stand-in."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(_picture, text.replace("\r\n", "\n"))


def has_controls(text: str) -> bool:
    """Whether ``text`` holds a character :func:`visible` would replace."""
    return _CONTROL.search(text) is not None


def one_line(text: str) -> str:
    """``text`` made visible and folded to one line (for titles, names, table cells)."""
    return " ".join(visible(text).split())


def escape_markup(text: str) -> str:
    """``text`` for a Textual markup string, shown exactly as it is.

    ``textual.markup.escape`` leaves ``[?1;2c`` and ``[$x]`` alone, and Textual then
    reads them as markup: a title holding a terminal reply ate the closing ``[/b]``
    after it, a ``$name`` in brackets vanished. Every ``[`` is escaped here; a
    backslash at the very end would escape the markup that follows, so a word
    joiner (invisible) goes after it.
    """
    text = text.replace("[", "\\[")
    return text + "\u2060" if text.endswith("\\") else text


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` writes to a terminal (False for files, pipes and closed streams)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def for_stream(text: str, stream: TextIO) -> str:
    """``text`` made visible when ``stream`` is a terminal; unchanged for files and pipes.

    For what a command prints as its result (a reply, a transcript, a path): a
    terminal never receives its control characters, while ``> file`` and ``| tool``
    get it byte for byte. Messages, listings and error lines use :func:`visible`
    or :func:`one_line` whatever the stream.
    """
    return visible(text) if is_terminal(stream) else text


class StreamFilter:
    """:func:`visible` for text that arrives in pieces (tokens), CRLF split across pieces too.

    ``feed`` returns what can be written now; ``flush`` what is left at the end.
    """

    def __init__(self) -> None:
        self._held_cr = False

    def feed(self, piece: str) -> str:
        if self._held_cr:
            piece = "\r" + piece
            self._held_cr = False
        if piece.endswith("\r"):
            piece = piece[:-1]
            self._held_cr = True
        return visible(piece)

    def flush(self) -> str:
        if self._held_cr:
            self._held_cr = False
            return visible("\r")
        return ""
