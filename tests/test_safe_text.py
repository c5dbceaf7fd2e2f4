"""tui.safe_text (control characters shown, never sent) and tui.terminal_guard."""

from __future__ import annotations

import io
import os
import pty

import pytest
from rich.console import Console
from rich.control import Control
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from tui import terminal_guard
from tui.compat.textual import strip_render_cache
from tui.safe_text import (
    StreamFilter,
    for_stream,
    has_controls,
    is_terminal,
    one_line,
    visible,
)

OSC52 = "\x1b]52;c;SGVsbG8=\x07"
OSC0 = "\x1b]0;PWNED\x07"
OSC8 = "\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\"
CLEAR = "\x1b[2J"
DCS_TMUX = "\x1bPtmux;\x1b\x1b]0;X\x07\x1b\\"
C1_CSI = "\x9b31m"
HOSTILE = "".join((OSC52, OSC0, OSC8, CLEAR, DCS_TMUX, C1_CSI, "\x00\x08\x7f\x85\r"))


def terminal_controls(text: str) -> list[str]:
    """Characters a terminal would act on: C0 except newline and tab, DEL, C1."""
    return [ch for ch in text if (ord(ch) < 0x20 and ch not in "\n\t") or 0x7F <= ord(ch) <= 0x9F]


# --------------------------------------------------------------------------- visible


def test_visible_shows_each_kind_of_control_character() -> None:
    assert visible(OSC52) == "␛]52;c;SGVsbG8=␇"
    assert visible(OSC0) == "␛]0;PWNED␇"
    assert visible(CLEAR) == "␛[2J"
    assert visible(DCS_TMUX) == "␛Ptmux;␛␛]0;X␇␛\\"
    assert visible(C1_CSI) == "<9B>31m"
    assert visible("\x00\x08\x1f") == "␀␈␟"
    assert visible("\x7f") == "␡"
    assert visible("\x80\x85\x9f") == "<80><85><9F>"


def test_visible_keeps_newlines_tabs_and_ordinary_text() -> None:
    text = "line one\n\tindented é ✓ 漢字 \u00a0nbsp 🙂"
    assert visible(text) == text


def test_visible_turns_crlf_into_newline_and_shows_a_lone_cr() -> None:
    assert visible("a\r\nb\r\n") == "a\nb\n"
    # A bare CR would move the cursor back over what was written: shown instead.
    assert visible("fake\rreal") == "fake␍real"


def test_visible_replaces_exactly_the_control_characters() -> None:
    for code in range(0x3000):
        ch = chr(code)
        shown = visible(ch)
        if terminal_controls(ch):
            assert shown and shown != ch and terminal_controls(shown) == [], hex(code)
        else:
            assert shown == ch, hex(code)


def test_visible_keeps_the_number_of_lines() -> None:
    text = f"one{OSC52}\ntwo\r\nthree{C1_CSI}\n"
    assert visible(text).count("\n") == text.replace("\r\n", "\n").count("\n")


def test_has_controls() -> None:
    assert has_controls(OSC52)
    assert has_controls("\r")
    assert has_controls("\x9b")
    assert has_controls("\x7f")
    assert not has_controls("plain\n\ttext é")


def test_one_line_folds_lines_and_shows_controls() -> None:
    assert one_line(f"  Title\n{OSC0}\tend  ") == "Title ␛]0;PWNED␇ end"
    assert one_line("") == ""
    assert "\n" not in one_line("a\r\nb\nc")


# --------------------------------------------------------------------------- streams


def test_stream_filter_joins_to_the_same_text_as_visible_whatever_the_split() -> None:
    text = f"Hi\r\n{OSC52}there\r\n{C1_CSI}\rend\r"
    for cut in range(len(text) + 1):
        for second in range(cut, len(text) + 1):
            stream = StreamFilter()
            pieces = [text[:cut], text[cut:second], text[second:]]
            out = "".join(stream.feed(piece) for piece in pieces) + stream.flush()
            assert out == visible(text), (cut, second)


def test_stream_filter_holds_back_only_a_trailing_cr() -> None:
    stream = StreamFilter()
    assert stream.feed("line\r") == "line"
    assert stream.feed("\nnext") == "\nnext"
    assert stream.feed("\x1b") == "␛"
    assert stream.feed("tail\r") == "tail"
    assert stream.flush() == "␍"
    assert stream.flush() == ""


def test_for_stream_makes_text_visible_only_for_a_terminal(tmp_path) -> None:
    master, slave = pty.openpty()
    try:
        with open(slave, "w", closefd=False) as tty, open(tmp_path / "out.txt", "w") as file:
            assert is_terminal(tty)
            assert not is_terminal(file)
            assert for_stream(OSC52, tty) == visible(OSC52)
            assert for_stream(OSC52, file) == OSC52
        read_end, write_end = os.pipe()
        with open(write_end, "w") as pipe:
            assert not is_terminal(pipe)
            assert for_stream(OSC52, pipe) == OSC52
        os.close(read_end)
    finally:
        os.close(master)
        os.close(slave)


def test_is_terminal_is_false_for_closed_and_odd_streams() -> None:
    closed = io.StringIO()
    closed.close()
    assert not is_terminal(closed)
    assert not is_terminal(io.StringIO())
    assert not is_terminal(object())  # type: ignore[arg-type]


# --------------------------------------------------------------------------- terminal guard


@pytest.fixture
def console() -> Console:
    return Console(file=io.StringIO(), color_system="truecolor", force_terminal=True)


def render(segments: list[Segment], console: Console) -> str:
    terminal_guard.install()
    return Strip(segments).render(console)


def test_guard_shows_control_characters_of_text_and_keeps_styles(console: Console) -> None:
    out = render([Segment(f"a{OSC52}b{C1_CSI}", Style(bold=True))], console)
    assert "\x1b]52" not in out
    assert "\x9b" not in out
    assert "\x07" not in out
    assert "a␛]52;c;SGVsbG8=␇b<9B>31m" in out
    # The style is still rendered by Textual, as SGR codes around the text.
    assert out.startswith("\x1b[1m")


def test_guard_only_touches_segments_with_control_characters(console: Console) -> None:
    clean = [Segment("plain ", Style(italic=True)), Segment("text", None)]
    assert terminal_guard.safe_segments(clean) is None
    mixed = [Segment("ok", None), Segment(CLEAR, Style(bold=True))]
    safe = terminal_guard.safe_segments(mixed)
    assert safe is not None
    assert safe[0] is mixed[0]
    assert safe[1] == Segment("␛[2J", Style(bold=True))


def test_guard_passes_deliberate_sequences_unchanged(console: Console) -> None:
    # What textual-image's sixel widget yields: a cursor move, the image data as a
    # control segment, a cursor move (tui/widgets/image_view.py shows images with it).
    move = Control.move_to(4, 2).segment.text
    sixel = "\x1bPq#0;2;0;0;0#0!10~-\x1b\\"
    segments = [
        Segment(move, Style()),
        Segment(sixel, Style(), control=((1, 0),)),  # type: ignore[arg-type]
        Segment(Control.move_to(9, 5).segment.text, Style()),
    ]
    out = render(segments, console)
    assert move in out
    assert sixel in out
    assert "\x1b[6;10H" in out
    assert "␛" not in out


def test_guard_does_not_pass_a_cursor_move_mixed_with_text(console: Console) -> None:
    out = render([Segment("\x1b[1;1Hfake prompt$ ", Style())], console)
    assert "\x1b[1;1H" not in out
    assert "␛[1;1Hfake prompt$ " in out


def test_guard_installs_once_and_wraps_textual_strip_render() -> None:
    terminal_guard.install()
    wrapped = Strip.render
    terminal_guard.install()
    assert terminal_guard.installed()
    assert Strip.render is wrapped
    # The internal it relies on exists in the pinned Textual (more in test_compat.py).
    strip = Strip([Segment("x")])
    assert strip_render_cache(strip) is None
    assert list(strip) == [Segment("x")]


def test_guarded_render_is_cached_like_textuals(console: Console) -> None:
    strip = Strip([Segment(f"x{OSC0}", Style(bold=True))])
    terminal_guard.install()
    first = strip.render(console)
    assert strip_render_cache(strip) == first
    assert strip.render(console) == first
    assert "\x1b]0;" not in first


@pytest.mark.parametrize(
    "text",
    ["a[?1;2cb", "[b]bold?[/b]", "x[/b]", "[$name]", "[@click=app.quit]", "dir\\", "a\\[b]c"],
)
def test_escape_markup_shows_the_text_exactly_inside_markup(text: str) -> None:
    from textual.markup import to_content

    from tui.safe_text import escape_markup

    content = to_content(f"[b]{escape_markup(text)}[/b] after")
    assert content.plain.replace("\u2060", "") == text + " after"
    assert all(span.style == "b" for span in content.spans)
