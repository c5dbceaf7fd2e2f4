"""The gallery: every generated image, newest first, read a page at a time."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from tui.safe_text import escape_markup as escape
from tui.safe_text import one_line, visible
from tui.screens.dialogs import ConfirmScreen
from tui.services.imagine import GALLERY_PAGE, ImagineService
from tui.store import ImageRecord, StoreError
from tui.widgets.engine_status import EngineStatus
from tui.widgets.image_view import ImageView
from tui.widgets.panel_footer import PanelFooter

if TYPE_CHECKING:
    from tui.app import TriptychApp

GalleryResult = tuple[str, ImageRecord] | None
"""('same' | 'vary' | 'init' | 'show', image), or None when closed."""


class GalleryScreen(Screen[GalleryResult]):
    """Browse images; act on the highlighted one."""

    CSS_PATH = "gallery.tcss"

    BINDINGS = [
        Binding("escape", "close", "Back", id="gallery.close"),
        Binding("enter", "choose('show')", "Open", id="gallery.open", show=False,
                tooltip="Load the image and its parameters into Imagine"),
        Binding("v", "view", "View", id="gallery.view",
                tooltip="Full-screen at the terminal's resolution"),
        Binding("a", "choose('same')", "Same again", id="gallery.same",
                tooltip="Generate again with identical parameters (identical pixels)"),
        Binding("s", "choose('vary')", "Vary seed", id="gallery.vary",
                tooltip="Same parameters with a new random seed"),
        Binding("i", "choose('init')", "Use as init", id="gallery.init",
                tooltip="Use as the image-to-image source"),
        Binding("y", "copy_path", "Copy path", id="gallery.copy", tooltip="Copy the file path"),
        Binding("delete,d", "delete", "Delete", id="gallery.delete",
                tooltip="Delete the image file (asks first)"),
        Binding("slash", "search", "Search", id="gallery.search", show=False,
                tooltip="Filter by prompt"),
    ]  # fmt: skip

    def __init__(
        self, service: ImagineService | None = None, *, select_id: int | None = None
    ) -> None:
        """``select_id``: the image to highlight when it opens (pages are read up to it)."""
        super().__init__()
        self.records: list[ImageRecord] = []
        """The images read so far (pages of GALLERY_PAGE, more as the cursor nears the end)."""
        self._more = False
        self._service = service
        self._select_id = select_id

    @property
    def tapp(self) -> TriptychApp:
        return self.app  # type: ignore[return-value]

    @property
    def service(self) -> ImagineService:
        if self._service is None:
            self._service = ImagineService(
                self.tapp.image_host, self.tapp.store, self.tapp.settings_service
            )
        return self._service

    def compose(self) -> ComposeResult:
        with Horizontal():
            with Vertical(id="gallery-list"):
                yield Input(placeholder="Search prompts (/)", id="gallery-search", compact=True)
                yield OptionList(id="images")
            with Vertical(id="gallery-preview"):
                yield ImageView(self.tapp.settings.image_protocol, id="gallery-image")
                yield Static("", id="gallery-info")
        yield EngineStatus()
        yield PanelFooter(compact=True)

    def on_mount(self) -> None:
        self.reload()
        self.query_one("#images", OptionList).focus()

    def reload(self) -> None:
        """Read the first page again (after a search or a delete)."""
        self.records = []
        listing = self.query_one("#images", OptionList)
        listing.clear_options()
        self._load_page()
        index = self._index_to_select()
        if self.records:
            listing.highlighted = index
            self._preview(self.records[index])
        else:
            self.query_one("#gallery-info", Static).update(
                "No images yet: generate one in Imagine (Ctrl+G)"
            )

    def _index_to_select(self) -> int:
        """Where the image asked for at opening is (read up to it), once; else 0."""
        wanted, self._select_id = self._select_id, None
        if wanted is None:
            return 0
        while True:
            for index, record in enumerate(self.records):
                if record.id == wanted:
                    return index
            if not self._more:
                return 0
            self._load_page()

    def _load_page(self) -> None:
        """Append the next page of images to the list (one indexed query)."""
        search = self.query_one("#gallery-search", Input).value
        page = self.service.gallery_page(search, offset=len(self.records))
        self._more = len(page) == GALLERY_PAGE
        self.records.extend(page)
        self.query_one("#images", OptionList).add_options(
            # Prompts and paths are stored data: controls shown, brackets not markup.
            Option(
                f"{r.width}x{r.height} {r.seed}  {escape(one_line(r.prompt)[:60])}", id=str(r.id)
            )
            for r in page
        )

    def selected(self) -> ImageRecord | None:
        listing = self.query_one("#images", OptionList)
        if listing.highlighted is None or not self.records:
            return None
        return self.records[listing.highlighted]

    @on(OptionList.OptionHighlighted, "#images")
    def _highlighted(self) -> None:
        listing = self.query_one("#images", OptionList)
        if self._more and (listing.highlighted or 0) >= len(self.records) - 10:
            self._load_page()
        record = self.selected()
        if record is not None:
            self._preview(record)

    @on(OptionList.OptionSelected, "#images")
    def _selected(self) -> None:
        self.action_choose("show")

    def _preview(self, record: ImageRecord) -> None:
        info = self.query_one("#gallery-info", Static)
        params = record.params
        details = one_line(
            f"seed {record.seed} · {record.width}x{record.height} · "
            f"{params.get('steps')} steps · CFG {params.get('cfg_scale')} · "
            f"{params.get('sampler')} · {Path(str(params.get('model', ''))).name}"
        )
        text = f"{escape(visible(record.prompt))}\n{escape(details)}"
        if not Path(record.path).is_file():
            info.update(f"[b red]missing file[/] {escape(one_line(record.path))}\n{text}")
            return
        self.query_one("#gallery-image", ImageView).show(record.path)
        info.update(text)

    @on(Input.Changed, "#gallery-search")
    def _search(self) -> None:
        self.reload()

    @on(Input.Submitted, "#gallery-search")
    def _search_done(self) -> None:
        self.query_one("#images", OptionList).focus()

    def action_search(self) -> None:
        self.query_one("#gallery-search", Input).focus()

    def action_close(self) -> None:
        if self.query_one("#gallery-search", Input).has_focus:
            self.query_one("#images", OptionList).focus()
            return
        self.dismiss(None)

    def action_choose(self, action: str) -> None:
        record = self.selected()
        if record is None:
            self.notify("No image selected", severity="warning")
            return
        if action in ("init", "show") and not Path(record.path).is_file():
            self.notify(f"image file is missing: {record.path}", severity="error")
            return
        self.dismiss((action, record))

    def action_view(self) -> None:
        record = self.selected()
        if record is not None:
            from tui.screens.fullscreen import show_fullscreen

            show_fullscreen(self.app, Path(record.path))

    def action_copy_path(self) -> None:
        record = self.selected()
        if record is not None:
            self.app.copy_to_clipboard(record.path)
            self.notify(f"Copied {record.path}")

    @work(exclusive=True, group="dialog")
    async def action_delete(self) -> None:
        record = self.selected()
        if record is None:
            return
        confirmed = await self.app.push_screen_wait(
            ConfirmScreen(f"Delete {Path(record.path).name}?")
        )
        if not confirmed:
            return
        try:
            await asyncio.to_thread(self.service.delete_image, record)
        except (OSError, StoreError) as error:
            self.notify(f"could not delete the image: {error}", severity="error")
            return
        self.notify(f"Deleted {Path(record.path).name}")
        self.reload()
