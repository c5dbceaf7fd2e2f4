"""Export and import conversations from the TUI: the path dialogs and what follows.

The files are written and read by :mod:`tui.services.exchange`, in a thread;
these flows ask for the path, confirm replacing a file, and report the result
in one notification.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from tui.screens.dialogs import ConfirmScreen, TextPromptScreen
from tui.services.exchange import (
    ExchangeError,
    default_export_path,
    export_conversation,
    import_conversation,
)

if TYPE_CHECKING:
    from tui.app import TriptychApp


async def export_flow(app: TriptychApp, conversation_id: int) -> Path | None:
    """Ask where to export a conversation, write it there and say where it went.

    Runs in a worker (it waits for dialogs). Returns the path written, or None.
    """
    conversation = app.store.get_conversation(conversation_id)
    if conversation is None:
        app.notify("That conversation no longer exists", severity="warning")
        return None
    answer = await app.push_screen_wait(
        TextPromptScreen(
            "Export to (.md: Markdown to read, .json: to import elsewhere)",
            str(default_export_path(conversation)),
            paths=True,
        )
    )
    if not answer:
        return None
    path = Path(answer).expanduser()
    overwrite = False
    if path.exists() and not path.is_dir():
        overwrite = await app.push_screen_wait(
            ConfirmScreen(f"{path} exists. Replace it?", confirm_label="Replace")
        )
        if not overwrite:
            return None
    try:
        result = await asyncio.to_thread(
            export_conversation,
            app.store,
            conversation.id,
            path,
            default_model=app.chat_model_override or app.settings.chat_model,
            default_sampling=app.settings.sampling.sampling(),
            overwrite=overwrite,
        )
    except ExchangeError as error:
        app.notify(str(error), title="Export", severity="error", timeout=10)
        return None
    images = ""
    if result.folder is not None:
        plural = "" if result.images == 1 else "s"
        images = f" ({result.images} image{plural} in {result.folder.name})"
    app.notify(f"Exported to {result.path}{images}", title="Export")
    for line in result.missing:
        app.notify(f"Image left out: {line}", title="Export", severity="warning", timeout=10)
    return result.path


async def import_flow(app: TriptychApp) -> int | None:
    """Ask for a JSON export, import it and open the new conversation in the Chat panel.

    Runs in a worker (it waits for a dialog). Returns the new conversation's id, or None.
    """
    answer = await app.push_screen_wait(
        TextPromptScreen(
            "Import a conversation from a JSON export",
            placeholder="~/triptych-1-chat.json",
            paths=True,
        )
    )
    if not answer:
        return None
    try:
        result = await asyncio.to_thread(import_conversation, app.store, Path(answer).expanduser())
    except ExchangeError as error:
        app.notify(str(error), title="Import", severity="error", timeout=10)
        return None
    conversation = result.conversation
    app.notify(
        f"Imported “{conversation.title}”: {result.messages} messages, "
        f"{result.attachments} attachments, {result.images} images",
        title="Import",
    )
    for line in result.skipped:
        app.notify(f"Left out {line}", title="Import", severity="warning", timeout=10)
    from tui.screens.chat import ChatScreen

    await app.switch_mode("chat")
    screen = app.screen
    if isinstance(screen, ChatScreen):
        await screen.open_conversation(conversation.id)
        screen.refresh_list()
    return conversation.id
