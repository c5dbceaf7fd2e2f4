"""``triptych servers list|add|rm|models``: the remote servers in the settings.

Entries are written through the settings owner (SettingsService). An API key is
either read from the environment variable ``--api-key-env`` names, or typed once
(``--api-key`` prompts, ``--api-key-stdin`` reads a line) and kept in a 0600 file
under the config folder (tui/backends/keys.py); it is never written to config.toml.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Any

from tui.backends.keys import KeyFileError, delete_key, key_file, store_key
from tui.backends.servers import IMAGE_APIS, BackendError, server_config
from tui.cli_support import CliError, load_settings
from tui.config import Settings
from tui.safe_text import for_stream


def add_parser(sub: Any) -> None:
    """The ``servers`` command and its actions (``sub``: what add_subparsers returned)."""
    servers = sub.add_parser(
        "servers",
        help="list, add and remove remote OpenAI-compatible chat servers",
        description="Remote servers (llama-server, vLLM, Ollama, ...) answer chat as"
        " 'triptych chat --server NAME' or with the model spec server:NAME[/MODEL].",
    )
    ssub = servers.add_subparsers(dest="servers_command", metavar="ACTION", required=True)
    ssub.add_parser("list", help="the configured servers")
    add = ssub.add_parser("add", help="add a server, or replace the one of that name")
    add.add_argument("name", metavar="NAME")
    add.add_argument("url", metavar="URL", help="base URL of the API, e.g. http://gpu-box:8080/v1")
    add.add_argument("--model", default="", help="model id (default: the first one it lists)")
    add.add_argument(
        "--api-key-env", default="", metavar="VAR", help="environment variable holding the key"
    )
    typed = add.add_mutually_exclusive_group()
    typed.add_argument(
        "--api-key",
        action="store_true",
        help="type the key once (asked without echo); it is kept in a 0600 file",
    )
    typed.add_argument(
        "--api-key-stdin", action="store_true", help="read the key from one line of stdin"
    )
    add.add_argument("--timeout", type=float, default=None, metavar="S", help="seconds")
    add.add_argument(
        "--image-api",
        choices=IMAGE_APIS,
        default="auto",
        help="image API: sdcpp (stable-diffusion.cpp's job API, with progress and Stop),"
        " openai (/v1/images/*), or auto (ask the server; default)",
    )
    rm = ssub.add_parser("rm", help="remove a server")
    rm.add_argument("name", metavar="NAME")
    models = ssub.add_parser("models", help="the models a server offers (GET /v1/models)")
    models.add_argument("name", metavar="NAME")


def run_servers(args: argparse.Namespace) -> int:
    from tui.models_cli import _save

    service = load_settings()
    servers = service.current.servers
    command = args.servers_command
    if command == "list":
        for name in sorted(servers):
            entry = servers[name]
            parts = [name, str(entry.get("url", ""))]
            if entry.get("model"):
                parts.append(f"model={entry['model']}")
            if entry.get("api_key_env"):
                parts.append(f"key=${entry['api_key_env']}")
            if entry.get("api_key_file"):
                parts.append(f"key file={entry['api_key_file']}")
            if entry.get("image_api"):
                parts.append(f"image api={entry['image_api']}")
            print(for_stream("  ".join(parts), sys.stdout))
        return 0
    if command == "add":
        entry: dict[str, Any] = {"url": args.url.strip()}
        if args.model:
            entry["model"] = args.model
        if args.api_key_env:
            entry["api_key_env"] = args.api_key_env
        if args.timeout is not None:
            entry["timeout_s"] = args.timeout
        if args.image_api != "auto":
            entry["image_api"] = args.image_api
        typed_key = _typed_key(args) if args.api_key or args.api_key_stdin else ""
        if typed_key:
            try:
                entry["api_key_file"] = str(key_file(args.name))
            except KeyFileError as error:
                raise CliError(str(error)) from error
        changed = {**servers, args.name: entry}
        try:
            # Checked before it is written: a bad URL or timeout never reaches the file.
            server_config(args.name, _with_servers(service.current, changed))
        except BackendError as error:
            raise CliError(str(error)) from error
        try:
            if typed_key:
                store_key(args.name, typed_key)
            else:
                # Replacing a server without a typed key drops the old one.
                delete_key(args.name)
        except (KeyFileError, OSError) as error:
            raise CliError(f"cannot keep the API key: {error}") from error
        _save(service, servers=changed)
        print(for_stream(f"added server {args.name}", sys.stdout))
        return 0
    if command == "rm":
        if args.name not in servers:
            raise CliError(f"no server named {args.name!r}")
        _save(service, servers={k: v for k, v in servers.items() if k != args.name})
        delete_key(args.name)
        print(for_stream(f"removed server {args.name}", sys.stdout))
        return 0
    # models
    from tui.backends.remote import RemoteChatBackend

    try:
        backend = RemoteChatBackend(server_config(args.name, service.current))
    except BackendError as error:
        raise CliError(str(error)) from error
    try:
        offered = backend.models()
    except BackendError as error:
        raise CliError(str(error)) from error
    finally:
        backend.shutdown()
    for model in offered:
        print(for_stream(model, sys.stdout))
    return 0


def _typed_key(args: argparse.Namespace) -> str:
    """The key typed at a prompt (--api-key) or read from one line of stdin."""
    if args.api_key_stdin:
        key = sys.stdin.readline().strip()
    elif sys.stdin.isatty():
        import getpass

        try:
            key = getpass.getpass(f"API key for {args.name}: ").strip()
        except (EOFError, KeyboardInterrupt):
            raise CliError("no API key typed") from None
    else:
        raise CliError("--api-key asks at a terminal; pipe the key with --api-key-stdin instead")
    if not key:
        raise CliError("the API key is empty")
    return key


def _with_servers(settings: Settings, servers: dict[str, dict[str, Any]]) -> Settings:
    return replace(settings, servers=servers)
