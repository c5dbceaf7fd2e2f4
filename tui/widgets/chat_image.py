"""An image inside the conversation: the picture (or its live preview) and its prompt.

Pictures are read once and kept as small thumbnails (:func:`thumbnail`), so a
long conversation with many images scrolls and reloads without decoding
full-size PNGs again; the picture is loaded only when the widget is mounted.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from pathlib import Path
from threading import Lock

from PIL import Image as PILImage
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from tui.safe_text import one_line
from tui.widgets.image_view import ImageView

THUMBNAIL_PX = 256
"""Longest side of a cached picture: more than the cells of a chat column can show."""

CACHE_SIZE = 64
IMAGE_ROWS = 10
"""Terminal rows of a picture in the log (fits a 24-row terminal with its caption)."""

_cache: OrderedDict[tuple[str, int], PILImage.Image] = OrderedDict()
_cache_lock = Lock()


def thumbnail(path: str) -> PILImage.Image | None:
    """The picture at ``path`` shrunk to THUMBNAIL_PX (cached); None when it cannot be read."""
    try:
        stamp = Path(path).stat().st_mtime_ns
    except OSError:
        return None
    key = (path, stamp)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    try:
        with PILImage.open(path) as opened:
            image = opened.convert("RGB")
    except (OSError, ValueError):
        return None
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    with _cache_lock:
        _cache[key] = image
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return image


class ChatImage(Vertical):
    """The picture of an image message (or the preview of one being made) and a caption."""

    DEFAULT_CSS = f"""
    ChatImage {{ height: 1fr; }}
    ChatImage > ImageView {{ height: {IMAGE_ROWS}; width: 1fr; align: left top; }}
    ChatImage > .-caption {{
        color: $text-muted; height: 1; text-wrap: nowrap; text-overflow: ellipsis;
    }}
    """

    ROWS_WITH_CAPTION = IMAGE_ROWS + 1
    """The rows it takes: the picture and a one-line caption (cut with an ellipsis)."""

    def __init__(self, protocol: str = "auto") -> None:
        super().__init__()
        self.protocol = protocol
        self.path = ""
        """The file shown ('' while there is none: a preview, or a missing image)."""

    def compose(self) -> ComposeResult:
        yield ImageView(self.protocol)
        yield Static("", classes="-caption")

    def set_caption(self, text: str) -> None:
        """Show ``text`` (written by the model or the user: shown made visible) under it."""
        self.query_one(".-caption", Static).update(Text(one_line(text)))

    def show_file(self, path: str, prompt: str) -> bool:
        """Show the picture at ``path`` with ``prompt`` as caption; False when it is missing."""
        image = thumbnail(path) if path else None
        view = self.query_one(ImageView)
        if image is None:
            self.path = ""
            view.display = False
            self.set_caption(f"[image missing: {prompt}]")
            return False
        self.path = path
        view.display = True
        view.show(image)
        self.set_caption(prompt)
        return True

    def show_preview(self, png: bytes) -> None:
        """Show a preview of the image being made (PNG bytes; unreadable ones are skipped)."""
        try:
            image = PILImage.open(io.BytesIO(png))
            image.load()
        except (OSError, ValueError):
            return
        view = self.query_one(ImageView)
        view.display = True
        view.show(image)
