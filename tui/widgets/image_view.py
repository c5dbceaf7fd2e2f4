"""Inline images through textual-image: kitty graphics, sixel or unicode half cells."""

from __future__ import annotations

from textual.widget import Widget

PROTOCOLS = ("auto", "kitty", "sixel", "halfcell", "unicode")


def image_widget_class(protocol: str = "auto") -> type[Widget]:
    """The textual-image widget class for a protocol name ('auto' asks the terminal)."""
    from textual_image import widget as image_widgets

    return {
        "kitty": image_widgets.TGPImage,
        "sixel": image_widgets.SixelImage,
        "halfcell": image_widgets.HalfcellImage,
        "unicode": image_widgets.UnicodeImage,
    }.get(protocol, image_widgets.Image)
