"""``triptych export`` and ``triptych import``: conversations as Markdown or JSON files.

The work is done by :mod:`tui.services.exchange`; this module reads the
arguments, opens the database and prints the results (titles and paths through
safe_text: they are data).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from tui.cli_support import CliError, load_settings
from tui.safe_text import for_stream, one_line


def add_parsers(sub: Any) -> None:
    """The ``export`` and ``import`` commands (``sub``: what add_subparsers returned)."""
    export = sub.add_parser(
        "export",
        help="write a conversation as Markdown or JSON (images beside it)",
        description="Write a conversation as Markdown (for reading: front matter with the"
        " model and sampling, attachments collapsed, images linked) or JSON (for"
        " 'triptych import'). Images are copied into a folder named after the file with"
        " _files. Prints the path written.",
    )
    export.add_argument(
        "id", nargs="?", type=int, metavar="ID", help="conversation id (default: the most recent)"
    )
    export.add_argument(
        "--format", choices=("md", "json"), default=None, help="default: from -o's extension, md"
    )
    export.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="file to write ('-': standard output, without images); default:"
        " triptych-ID-TITLE.md in the current folder",
    )
    export.add_argument("--force", action="store_true", help="replace an existing file")
    export.add_argument(
        "--list", action="store_true", help="list the conversations: id, updated, title"
    )
    imported = sub.add_parser(
        "import",
        help="add a conversation from a JSON export; prints its id and title",
        description="Add the conversation of a 'triptych export --format json' file as a new"
        " conversation, with its attachments, and its images in the gallery. Nothing"
        " existing is changed.",
    )
    imported.add_argument("file", type=Path, metavar="FILE.json")


def _open_store() -> Any:
    from tui.store import Store, StoreError

    try:
        return Store()
    except StoreError as error:
        raise CliError(str(error)) from error


def run_export(args: argparse.Namespace) -> int:
    from tui.services.exchange import (
        ExchangeError,
        default_export_path,
        export_conversation,
        format_for,
        render_export,
    )
    from tui.store import StoreError

    store = _open_store()
    try:
        if args.list:
            for conversation in store.list_conversations():
                updated = time.strftime("%Y-%m-%d %H:%M", time.localtime(conversation.updated))
                print(f"{conversation.id}  {updated}  {one_line(conversation.title)}")
            return 0
        if args.id is None:
            latest = store.list_conversations(limit=1)
            if not latest:
                raise CliError("there are no conversations to export")
            conversation = latest[0]
        else:
            conversation = store.get_conversation(args.id)
            if conversation is None:
                raise CliError(
                    f"no conversation with id {args.id} ('triptych export --list' lists them)"
                )
        settings = load_settings().current
        defaults: dict[str, Any] = {
            "default_model": settings.chat_model,
            "default_sampling": settings.sampling.sampling(),
        }
        if args.output == "-":
            text, images = render_export(
                store, conversation.id, args.format or "md", folder_name="files", **defaults
            )
            if images:
                raise CliError("the conversation has images: write it to a file with -o PATH")
            sys.stdout.write(for_stream(text, sys.stdout))
            return 0
        fmt = args.format or (format_for(Path(args.output)) if args.output else "md")
        if args.output:
            path = Path(args.output).expanduser()
        else:
            path = default_export_path(conversation, fmt, Path.cwd())
        result = export_conversation(
            store, conversation.id, path, fmt=fmt, overwrite=args.force, **defaults
        )
    except (ExchangeError, StoreError) as error:
        raise CliError(str(error)) from error
    finally:
        store.close()
    for line in result.missing:
        print(f"triptych: note: image left out: {one_line(line)}", file=sys.stderr)
    if result.folder is not None:
        print(
            f"triptych: note: {result.images} image{'' if result.images == 1 else 's'} in"
            f" {one_line(str(result.folder))}",
            file=sys.stderr,
        )
    print(for_stream(str(result.path), sys.stdout))
    return 0


def run_import(args: argparse.Namespace) -> int:
    from tui.services.exchange import ExchangeError, import_conversation

    store = _open_store()
    try:
        result = import_conversation(store, args.file)
    except ExchangeError as error:
        raise CliError(str(error)) from error
    finally:
        store.close()
    for line in result.skipped:
        print(f"triptych: note: left out {one_line(line)}", file=sys.stderr)
    conversation = result.conversation
    print(f"{conversation.id}  {one_line(conversation.title)}")
    return 0
