"""``triptych models list|pull|import|rm|default``: the Models panel without the TUI."""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from pathlib import Path

from tui import catalog, library, locations
from tui.cli import CliError
from tui.config import Settings
from tui.hub import DownloadError, download, parse_spec
from tui.library import LocalModel
from tui.models import ModelFileError, ensure_default_chat_model, human_size
from tui.safe_text import for_stream, one_line

# File names, paths and header fields are data: listings and messages show them as one
# line with control characters made visible (tui.safe_text); --json escapes them anyway.


def run_models(args: argparse.Namespace) -> int:
    settings = Settings.load()
    command = args.models_command
    try:
        if command == "list":
            return _list(settings, args.modality, args.json)
        if command == "pull":
            return _pull(settings, args.spec, args.sha256, args.default)
        if command == "import":
            model = library.import_model(Path(args.path))
            print(
                one_line(f"imported {model.modality} model ({model.identity.detail}): {model.path}")
            )
            if args.default:
                _set_default(settings, model.path)
            return 0
        if command == "rm":
            return _remove(settings, args.model, args.yes)
        if command == "default":
            if args.model:
                _set_default(settings, _resolve(settings, args.model).path)
            else:
                for modality, kind in library.DEFAULT_FIELDS:
                    path = library.default_path(settings, modality, kind)
                    label = modality if kind == "model" else f"{modality} {kind}"
                    print(f"{label:12} {one_line(str(path)) if path else '-'}")
            return 0
    except (ModelFileError, DownloadError) as error:
        raise CliError(str(error)) from None
    raise CliError(f"unknown models action {command!r}")


def _list(settings: Settings, modality: str | None, as_json: bool) -> int:
    found = library.scan(settings)
    ram = catalog.total_ram()
    for mod in [modality] if modality else list(library.MODALITIES):
        local = [m for m in found if m.modality == mod]
        claimed: set[Path] = set()
        if not as_json:
            print(f"{library.MODALITY_TITLES[mod]} models")
        for entry in catalog.entries(mod):
            names = {entry.filename, Path(entry.file).name}
            match = library.installed_copy(entry.dest(), names, entry.size, local)
            if match is not None:
                claimed.add(match.path)
            status = _status(settings, match) if match else "available"
            if match is None and not catalog.fits(entry, ram):
                status = "available (needs more RAM than this machine has)"
            if as_json:
                print(json.dumps({
                    "modality": mod, "id": entry.id, "name": entry.name, "repo": entry.repo,
                    "file": entry.file, "revision": entry.revision, "size": entry.size,
                    "sha256": entry.sha256, "licence": entry.licence, "ram": entry.ram,
                    "fits": catalog.fits(entry, ram), "status": status,
                    "path": str(match.path) if match else None,
                }))  # fmt: skip
            else:
                name = one_line(entry.name)[:36]
                print(f"  {entry.id:20} {name:36} {human_size(entry.size):>10}  {status}")
        for model in local:
            if model.path in claimed:
                continue
            status = _status(settings, model)
            if as_json:
                print(json.dumps({
                    "modality": mod, "id": None, "name": model.name, "kind": model.kind,
                    "size": model.size, "detail": model.identity.detail, "status": status,
                    "path": str(model.path),
                }))  # fmt: skip
            else:
                name = one_line(model.name)[:36]
                print(f"  {'-':20} {name:36} {human_size(model.size):>10}  {status}")
                print(f"  {'':20} {one_line(str(model.path))}")
    return 0


def _status(settings: Settings, model: LocalModel) -> str:
    where = {"models": "installed", "folder": "found", "hf-cache": "in the HF cache"}
    text = where.get(model.source, model.source)
    if library.is_default(settings, model):
        text = "default, " + text
    return text


def _resolve(settings: Settings, text: str) -> LocalModel:
    """A model by catalog id, by file name among the models found, or by path."""
    entry = catalog.find(text)
    found = library.scan(settings)
    if entry is not None:
        for model in found:
            if model.path == entry.dest():
                return model
        raise ModelFileError(f"{entry.id} is not installed (triptych models pull {entry.id})")
    path = Path(text).expanduser()
    if path.exists():
        identity = library.identify(path)
        source = "models" if library.in_models_folder(path) else "folder"
        return LocalModel(path, identity, path.stat().st_size, source)
    matches = [m for m in found if m.name == text]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ModelFileError(f"several models are named {text}; give the path")
    raise ModelFileError(f"no model {text!r}: give a catalog id, a file name or a path")


def _set_default(settings: Settings, path: Path) -> None:
    model = library.set_default(settings, path)
    try:
        settings.save()
    except OSError as error:
        raise CliError(f"could not save settings ({error.strerror or error})") from None
    kind = "" if model.kind == "model" else f" {model.kind}"
    print(one_line(f"default {model.modality}{kind} model: {path}"))


def _remove(settings: Settings, text: str, yes: bool) -> int:
    model = _resolve(settings, text)
    if not library.in_models_folder(model.path):
        raise CliError(f"{model.path} is outside Triptych's models folder; delete it yourself")
    if not yes:
        if not sys.stdin.isatty():
            raise CliError(f"not deleting {model.path} without --yes")
        answer = input(one_line(f"Delete {model.path} ({human_size(model.size)})?") + " [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("kept", file=sys.stderr)
            return 1
    if library.remove(settings, model):
        try:
            settings.save()
        except OSError:
            pass
    print(one_line(f"deleted {model.path}"))
    return 0


class _Progress:
    """One line on stderr: rewritten in place on a terminal; into a log or pipe, a
    line every 10 s (a quick download prints nothing)."""

    def __init__(self, name: str) -> None:
        self.name = one_line(name)
        self.tty = sys.stderr.isatty()
        self.last = time.monotonic()

    def __call__(self, done: int, total: int | None, speed: float) -> None:
        now = time.monotonic()
        finished = total is not None and done >= total
        if not self.tty and now - self.last < 10.0:
            return
        self.last = now
        share = f"{100 * done // total}% of {human_size(total)}" if total else human_size(done)
        eta = ""
        if total and speed > 0:
            minutes, seconds = divmod(int((total - done) / speed + 0.5), 60)
            eta = f", {minutes}:{seconds:02d} left"
        line = f"{self.name}: {share} at {human_size(int(speed))}/s{eta}"
        if self.tty:
            print(f"\r{line}\033[K", end="" if not finished else "\n", file=sys.stderr)
        else:
            print(line, file=sys.stderr)


def _pull(settings: Settings, text: str, sha256: str | None, make_default: bool) -> int:
    if sha256 is not None:
        sha256 = sha256.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise CliError("--sha256 takes the file's sha256: 64 hexadecimal digits")
    entry = catalog.find(text)
    if entry is not None and entry.embedded:
        path = ensure_default_chat_model()
    else:
        if entry is not None:
            spec, dest, expected = entry.spec, entry.dest(), sha256 or entry.sha256
            modality: str | None = entry.modality
        else:
            spec = parse_spec(text)
            dest = locations.models_dir() / Path(spec.filename).name
            expected, modality = sha256, None
        if dest.exists():
            print(one_line(f"already installed: {dest}"), file=sys.stderr)
            path = dest
        else:
            cancel = threading.Event()
            try:
                path = download(
                    spec,
                    dest,
                    sha256=expected,
                    progress=_Progress(dest.name),
                    cancel=cancel,
                    validate=library.expect_modality(modality),
                )
            except KeyboardInterrupt:
                print("\ninterrupted: run the same command again to resume", file=sys.stderr)
                return 130
    print(for_stream(str(path), sys.stdout))
    if make_default:
        _set_default(settings, path)
    return 0
