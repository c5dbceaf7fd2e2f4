"""The conversation log.

Long chats stay fast because (1) each message is ONE widget rendering a Rich
Markdown renderable, not a tree of Markdown block widgets, (2) only a window of
the most recent messages is mounted (older ones load on request), and (3) a
streaming reply re-renders at most ``REFRESH_HZ`` times a second no matter how
fast tokens arrive.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.markdown import Markdown
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Static

from tui.safe_text import one_line, visible
from tui.widgets.chat_image import ChatImage

REFRESH_HZ = 10
"""Re-renders of a streaming reply per second. Each one reflows the log and redraws
the screen: at 20 a second that took about half a core, which on a 2-core machine
slowed a CPU engine's decoding by a third (scripts/_bench_gpu_front.py: TUI decode
0.63-0.66 of raw at 20 Hz, 0.75-0.85 at 8 Hz). The first text still shows at once."""
WINDOW = 40
"""Messages mounted at once; older ones are loaded when the user asks for them."""

CODE_BLOCK = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def code_blocks(markdown: str) -> list[str]:
    """The fenced code blocks of a Markdown text, in order (an unclosed one counts)."""
    return [block.rstrip("\n") for block in CODE_BLOCK.findall(markdown) if block.strip()]


EXPANDED_LINES = 200
"""Most lines of an attachment's text shown when a message's attachments are expanded."""


@dataclass
class AttachmentData:
    """A file sent with a user message, as the log shows it (store-independent)."""

    name: str
    kind: str
    content: str
    tokens: int
    note: str = ""

    def line(self) -> str:
        """The collapsed line: ``📎 name — kind, N tokens[, note]`` (made visible)."""
        note = f", {self.note}" if self.note else ""
        return one_line(f"📎 {self.name} — {self.kind}, {self.tokens:,} tokens{note}")


@dataclass
class MessageData:
    """What the log needs to show one message (store-independent)."""

    id: int
    role: str
    content: str
    state: str = "complete"
    stats: dict[str, Any] | None = field(default=None)
    unsaved: str = ""
    """Shown as a warning under the message: which part the database does not hold."""
    image_id: int | None = None
    """For role 'image': the gallery image (None once deleted from the gallery)."""
    attachments: list[AttachmentData] = field(default_factory=list)
    """Files sent with a user message (one collapsed line each)."""
    expanded: bool = False
    """Whether the attachments' text is shown (``o`` toggles)."""


ROLE_LABELS = {
    "user": "You",
    "assistant": "Assistant",
    "system": "System",
    "error": "Error",
    "image": "Image",
}


def format_stats(stats: dict[str, Any] | None) -> str:
    """One line of reply statistics (stored with the message, so shown made visible)."""
    if not stats:
        return ""
    parts = [f"{stats.get('tokens', 0)} tokens"]
    if stats.get("tokens_per_s"):
        parts.append(f"{stats['tokens_per_s']:.1f} tok/s")
    if "ttft_s" in stats:
        parts.append(f"first token {stats['ttft_s']:.2f}s")
    if stats.get("seed", -1) >= 0:
        parts.append(f"seed {stats['seed']}")
    return visible(" · ".join(parts))


class MessageView(Static):
    """One message: a header line and its Markdown body."""

    DEFAULT_CSS = """
    MessageView {
        padding: 0 1;
        margin: 0 0 1 0;
    }
    MessageView.-user { background: $boost; }
    MessageView.-error { color: $error; }
    MessageView.-selected { background: $primary 20%; }
    """

    def __init__(self, data: MessageData) -> None:
        self.data = data
        self._dirty = False
        self._last_render = 0.0
        super().__init__(self._renderable(), classes=f"-{data.role}")

    def _renderable(self) -> RenderableType:
        # Content is model output or stored text: its control characters are shown,
        # never sent (data.content itself stays exact, for copying and resending).
        data = self.data
        header = Text(visible(ROLE_LABELS.get(data.role, data.role)), style="bold")
        note = {
            "streaming": " …",
            "stopped": " (stopped)",
            "interrupted": " (interrupted)",
            "error": " (failed)",
        }.get(data.state, "")
        if note:
            header.append(note, style="italic")
        if data.role == "error":
            return Group(header, Text(visible(data.content)))
        body = visible(data.content) if data.content else ("…" if data.state == "streaming" else "")
        parts: list[RenderableType] = [
            header,
            Markdown(body, code_theme="monokai", hyperlinks=False),
        ]
        for attachment in data.attachments:
            parts.append(Text(attachment.line(), style="dim"))
            if data.expanded:
                parts.append(_attachment_text(attachment.content))
        if data.unsaved:
            parts.append(Text(f"⚠ {visible(data.unsaved)}", style="bold red"))
        stats = format_stats(data.stats)
        if stats:
            parts.append(Text(stats, style="dim"))
        return Group(*parts)

    def set_data(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self.data, key, value)
        self._dirty = False
        self.update(self._renderable())

    def append(self, text: str) -> None:
        """Add streamed text; the re-render is throttled to REFRESH_HZ."""
        self.data.content += text
        if self._dirty:
            return
        self._dirty = True
        wait = self._last_render + 1 / REFRESH_HZ - time.monotonic()
        if wait > 0:
            self.set_timer(wait, self._flush)
        else:
            self.call_later(self._flush)

    def _flush(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        self._last_render = time.monotonic()
        self.update(self._renderable())


def _attachment_text(content: str) -> Text:
    """An attachment's text as shown expanded: made visible, at most EXPANDED_LINES lines."""
    lines = content.splitlines()
    shown = "\n".join(lines[:EXPANDED_LINES])
    if len(lines) > EXPANDED_LINES:
        shown += f"\n… {len(lines) - EXPANDED_LINES:,} more lines"
    return Text(visible(shown), style="italic")


class ImageMessageView(MessageView):
    """A message of role 'image': its picture, loaded when mounted, and its prompt.

    While the image is being made (state 'streaming') it shows the step progress
    and the live preview instead.
    """

    DEFAULT_CSS = """
    ImageMessageView { layout: vertical; }
    ImageMessageView > .-header { text-style: bold; }
    """

    def __init__(self, data: MessageData) -> None:
        super().__init__(data)
        self.progress = ""
        # A fixed height: the log need not measure the picture's rows on every layout.
        self.styles.height = 1 + ChatImage.ROWS_WITH_CAPTION

    def _renderable(self) -> RenderableType:
        return Text("")  # the children below draw it

    def compose(self) -> ComposeResult:
        yield Static(self._header(), classes="-header")
        yield ChatImage(self._log().image_protocol if self._log() else "auto")

    def _log(self) -> MessageLog | None:
        parent = self.parent
        return parent if isinstance(parent, MessageLog) else None

    def _header(self) -> Text:
        header = Text(ROLE_LABELS["image"], style="bold")
        if self.data.state == "streaming":
            header.append(f" … {self.progress}" if self.progress else " …", style="italic")
        elif self.data.state in ("stopped", "error"):
            header.append(f" ({self.data.state})", style="italic")
        return header

    def on_mount(self) -> None:
        self._show()

    def _show(self) -> None:
        self.query_one(".-header", Static).update(self._header())
        picture = self.query_one(ChatImage)
        if self.data.state == "streaming":
            picture.set_caption(self.data.content)
            return
        log = self._log()
        path = log.image_path(self.data.image_id) if log is not None else ""
        shown = picture.show_file(path, self.data.content)
        self.styles.height = 1 + (ChatImage.ROWS_WITH_CAPTION if shown else 1)

    def set_data(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self.data, key, value)
        if self.is_mounted:
            self._show()

    def set_progress(self, text: str) -> None:
        """The progress line shown in the header while the image is being made."""
        self.progress = text
        self.query_one(".-header", Static).update(self._header())

    def show_preview(self, png: bytes) -> None:
        self.query_one(ChatImage).show_preview(png)

    def append(self, text: str) -> None:
        self.set_data(content=self.data.content + text)


def message_view(data: MessageData) -> MessageView:
    """The widget that shows one message (an image message shows its picture)."""
    return ImageMessageView(data) if data.role == "image" else MessageView(data)


class MessageLog(VerticalScroll, can_focus=True):
    """Scrollable list of MessageViews with a selection for copying and editing."""

    BINDINGS = [
        Binding("up,k", "select(-1)", "Previous message", id="log.previous", show=False),
        Binding("down,j", "select(1)", "Next message", id="log.next", show=False),
        Binding("y", "copy_message", "Copy message", id="log.copy", tooltip="Copy the message"),
        Binding(
            "c",
            "copy_code",
            "Copy code",
            id="log.copy_code",
            tooltip="Copy a code block of the message (again: the next block)",
        ),
        Binding(
            "home",
            "load_earlier",
            "Earlier messages",
            id="log.earlier",
            tooltip="Load earlier messages of a long conversation",
        ),
        Binding("end", "scroll_end", "Last message", id="log.end", show=False),
        Binding(
            "o",
            "toggle_attachments",
            "Open attachments",
            id="log.attachments",
            tooltip="Show or hide the text of the selected message's attached files",
        ),
    ]

    DEFAULT_CSS = """
    MessageLog { height: 1fr; scrollbar-size-vertical: 1; }
    MessageLog > #earlier { color: $text-muted; padding: 0 1; }
    MessageLog:focus { background-tint: $foreground 3%; }
    """

    class EarlierRequested(Message):
        """The user wants older messages than those mounted."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.hidden_before = 0
        self.selected: int | None = None
        self._code_cursor = 0
        self.image_protocol = "auto"
        """How pictures of image messages are drawn (tui.widgets.image_view.PROTOCOLS)."""
        self.image_path: Callable[[int | None], str] = lambda image_id: ""
        """The file of a gallery image ('' when it is gone); set by the screen."""
        self.attachments_for: Callable[[list[int]], dict[int, list[AttachmentData]]] = (
            lambda message_ids: {}
        )
        """The attachments of these messages, by message id; set by the screen."""

    @property
    def is_near_bottom(self) -> bool:
        return self.scroll_y >= self.max_scroll_y - 2

    @property
    def views(self) -> list[MessageView]:
        return list(self.query_children(MessageView))

    def _earlier_label(self) -> Static:
        return Static(f"↑ {self.hidden_before} earlier messages — Home loads more", id="earlier")

    async def show(self, messages: list[MessageData], hidden_before: int = 0) -> None:
        """Replace the content with these messages (the newest window)."""
        self.selected = None
        self.hidden_before = hidden_before
        await self.remove_children()
        self._with_attachments(messages)
        widgets: list[Static] = [message_view(m) for m in messages]
        if hidden_before:
            widgets.insert(0, self._earlier_label())
        await self.mount_all(widgets)
        self.scroll_end(animate=False)

    async def prepend(self, messages: list[MessageData], hidden_before: int) -> None:
        """Insert older messages at the top."""
        earlier = self.query("#earlier")
        await earlier.remove()
        self.hidden_before = hidden_before
        views = self.views
        self._with_attachments(messages)
        widgets: list[Static] = [message_view(m) for m in messages]
        if hidden_before:
            widgets.insert(0, self._earlier_label())
        if views:
            await self.mount_all(widgets, before=views[0])
        else:
            await self.mount_all(widgets)
        if self.selected is not None:
            self.selected += len(messages)

    def on_mount(self) -> None:
        # Follow new text at the bottom until the user scrolls up (Textual re-anchors
        # when they scroll back down).
        self.anchor()

    def _with_attachments(self, messages: list[MessageData]) -> None:
        """Fill in the attachments of the user messages (from ``attachments_for``)."""
        ids = [m.id for m in messages if m.role == "user" and m.id and not m.attachments]
        if not ids:
            return
        try:
            found = self.attachments_for(ids)
        except Exception:  # noqa: BLE001 - a store failure must not keep the messages hidden
            return
        for message in messages:
            message.attachments = found.get(message.id, message.attachments)

    async def add(self, message: MessageData) -> MessageView:
        self._with_attachments([message])
        view = message_view(message)
        await self.mount(view)
        # Keep the widget count bounded in a long session.
        views = self.views
        excess = len(views) - WINDOW * 2
        if excess > 0 and self.selected is None:
            await self.remove_children(views[:excess])
            self.hidden_before += excess
            if not self.query("#earlier"):
                await self.mount(self._earlier_label(), before=self.views[0])
            else:
                self.query_one("#earlier", Static).update(
                    f"↑ {self.hidden_before} earlier messages — Home loads more"
                )
        return view

    def view_for(self, message_id: int) -> MessageView | None:
        for view in self.views:
            if view.data.id == message_id:
                return view
        return None

    async def remove_from(self, message_id: int) -> None:
        """Remove this message's view and all after it."""
        views = self.views
        for index, view in enumerate(views):
            if view.data.id == message_id:
                await self.remove_children(views[index:])
                break
        self.selected = None

    # --- selection and copying ------------------------------------------------

    def _apply_selection(self) -> None:
        for index, view in enumerate(self.views):
            view.set_class(index == self.selected, "-selected")
        if self.selected is not None:
            self.views[self.selected].scroll_visible(animate=False)

    def action_select(self, delta: int) -> None:
        views = self.views
        if not views:
            return
        if self.selected is None:
            self.selected = len(views) - 1
        else:
            if delta < 0 and self.selected == 0 and self.hidden_before:
                self.post_message(self.EarlierRequested())
                return
            self.selected = max(0, min(len(views) - 1, self.selected + delta))
        self._code_cursor = 0
        self._apply_selection()

    def select_message(self, message_id: int) -> bool:
        """Select the shown message with this id (e.g. a search hit); False if it is not shown."""
        for index, view in enumerate(self.views):
            if view.data.id == message_id:
                self.selected = index
                self._code_cursor = 0
                self._apply_selection()
                return True
        return False

    def selected_message(self) -> MessageData | None:
        views = self.views
        if self.selected is not None and self.selected < len(views):
            return views[self.selected].data
        for view in reversed(views):
            if view.data.role == "assistant":
                return view.data
        return views[-1].data if views else None

    def action_copy_message(self) -> None:
        message = self.selected_message()
        if message is None or not message.content:
            self.notify("Nothing to copy", severity="warning")
            return
        self.app.copy_to_clipboard(message.content)
        self.notify(f"Copied the message ({len(message.content)} characters)")

    def action_copy_code(self) -> None:
        message = self.selected_message()
        blocks = code_blocks(message.content) if message else []
        if not blocks:
            self.notify("No code block in this message", severity="warning")
            return
        index = self._code_cursor % len(blocks)
        self._code_cursor += 1
        self.app.copy_to_clipboard(blocks[index])
        self.notify(f"Copied code block {index + 1} of {len(blocks)}")

    def action_toggle_attachments(self) -> None:
        views = self.views
        selected = self.selected
        view = views[selected] if selected is not None and selected < len(views) else None
        if view is None:
            view = next((v for v in reversed(views) if v.data.attachments), None)
        if view is None or not view.data.attachments:
            self.notify("No attached files in this message", severity="warning")
            return
        view.set_data(expanded=not view.data.expanded)

    def action_load_earlier(self) -> None:
        if self.hidden_before:
            self.post_message(self.EarlierRequested())
        else:
            self.scroll_home(animate=False)

    def on_blur(self) -> None:
        self.selected = None
        self._apply_selection()
