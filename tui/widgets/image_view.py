"""Inline images through textual-image: kitty graphics, sixel or unicode half cells."""

from __future__ import annotations

from pathlib import Path

from PIL import Image as PILImage
from textual.app import ComposeResult
from textual.containers import Container
from textual.widget import Widget

# textual-image asks the terminal what it supports (graphics protocols, cell size) when
# it is imported. That must happen before Textual owns the terminal: a query sent later
# races Textual's input thread for the answer and swallows the user's key presses.
from textual_image import widget as image_widgets

from tui.compat.textual_image import terminal_cell_size

PROTOCOLS = ("auto", "kitty", "sixel", "halfcell", "unicode")


def image_widget_class(protocol: str = "auto") -> type[Widget]:
    """The textual-image widget class for a protocol name ('auto' asks the terminal)."""
    return {
        "kitty": image_widgets.TGPImage,
        "sixel": image_widgets.SixelImage,
        "halfcell": image_widgets.HalfcellImage,
        "unicode": image_widgets.UnicodeImage,
    }.get(protocol, image_widgets.Image)


def cell_aspect() -> float:
    """Height of a terminal cell divided by its width (2 when unknown)."""
    try:
        width, height = terminal_cell_size()
        return height / width if width else 2.0
    except Exception:  # noqa: BLE001 - any terminal query problem: assume the usual 1:2
        return 2.0


class ImageView(Container):
    """An image fitted into the available cells, keeping its aspect ratio, centred."""

    DEFAULT_CSS = """
    ImageView { align: center middle; }
    """

    def __init__(self, protocol: str = "auto", *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.protocol = protocol
        self._pixels: tuple[int, int] | None = None
        self.source: str | PILImage.Image | None = None

    def compose(self) -> ComposeResult:
        widget = image_widget_class(self.protocol)()
        widget.styles.width = 1
        widget.styles.height = 1
        yield widget

    @property
    def inner(self) -> Widget:
        return self.query_one("*")

    def show(self, image: str | Path | PILImage.Image | None) -> None:
        """Display an image file or a PIL image (None clears)."""
        if image is None:
            self._pixels = None
            self.source = None
            self.inner.image = None
            return
        if isinstance(image, Path):
            image = str(image)
        if isinstance(image, str):
            with PILImage.open(image) as opened:
                self._pixels = opened.size
        else:
            self._pixels = image.size
        self.source = image
        self._fit()
        self.inner.image = image

    def on_resize(self) -> None:
        self._fit()

    def _fit(self) -> None:
        if self._pixels is None:
            return
        width, height = self.content_size
        if width <= 0 or height <= 0:
            return
        pixel_w, pixel_h = self._pixels
        aspect = cell_aspect()
        cols = min(width, max(1, round(height * pixel_w / pixel_h * aspect)))
        rows = min(height, max(1, round(cols * pixel_h / pixel_w / aspect)))
        self.inner.styles.width = cols
        self.inner.styles.height = rows
