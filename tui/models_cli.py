"""``triptych models list|pull|import|rm|default|fetch-default|info``: the Models panel
without the TUI."""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from pathlib import Path

from tui import catalog, gpu, library, locations
from tui.cli_support import CliError, load_settings
from tui.config import Settings
from tui.default_model import ensure_default_chat_model
from tui.formats import ModelFileError, human_size
from tui.formats.gguf import GGUFInfo, read_gguf_info
from tui.formats.image import check_image_model
from tui.formats.safetensors import SafetensorsInfo, read_safetensors_info
from tui.hub import DownloadError, download, parse_spec
from tui.library import LocalModel
from tui.safe_text import for_stream, one_line
from tui.services.settings import SettingsProblem, SettingsService

# File names, paths and header fields are data: listings and messages show them as one
# line with control characters made visible (tui.safe_text); --json escapes them anyway.


def run_models(args: argparse.Namespace) -> int:
    # These two read no settings: scripts/run and scripts/test install the default
    # model with fetch-default before anything else.
    if args.models_command == "fetch-default":
        return _fetch_default(args.dir, args.quiet)
    if args.models_command == "info":
        return _info(args.path)
    service = load_settings()
    settings = service.current
    command = args.models_command
    try:
        if command == "list":
            return _list(settings, args.modality, args.json)
        if command == "pull":
            return _pull(service, args.spec, args.sha256, args.default)
        if command == "import":
            model = library.import_model(Path(args.path))
            print(
                one_line(f"imported {model.modality} model ({model.identity.detail}): {model.path}")
            )
            if args.default:
                _set_default(service, model.path)
            return 0
        if command == "rm":
            return _remove(service, args.model, args.yes)
        if command == "default":
            if args.model:
                _set_default(service, _resolve(settings, args.model).path)
            else:
                for modality, kind in library.DEFAULT_FIELDS:
                    path = library.default_path(settings, modality, kind)
                    label = modality if kind == "model" else f"{modality} {kind}"
                    print(f"{label:12} {one_line(str(path)) if path else '-'}")
            return 0
    except (ModelFileError, DownloadError) as error:
        raise CliError(str(error)) from None
    raise CliError(f"unknown models action {command!r}")


def _fetch_default(models_dir: Path | None, quiet: bool) -> int:
    """Install the embedded default chat model if it is missing; print "chat-model PATH"."""
    try:
        path = ensure_default_chat_model(models_dir, quiet=quiet)
    except ModelFileError as error:
        raise CliError(str(error)) from None
    print(for_stream(f"chat-model {path}", sys.stdout))
    return 0


def _info(path: Path) -> int:
    """Check a GGUF or safetensors file and print what its header says, as JSON."""
    try:
        if check_image_model(path) == "gguf":
            header: GGUFInfo | SafetensorsInfo = read_gguf_info(path)
        else:
            header = read_safetensors_info(path)
    except ModelFileError as error:
        raise CliError(str(error)) from None
    print(json.dumps(header.to_json(), indent=2))
    return 0


def _list(settings: Settings, modality: str | None, as_json: bool) -> int:
    found = library.scan(settings)
    ram = catalog.total_ram()
    gpus = gpu.gpus()
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
            # "gpu": fits the GPU's memory, "ram": only the RAM, "none": neither;
            # "fits" (older readers) is whether it fits at all.
            fits_on = catalog.fits_on(entry, gpus, ram)
            if match is None and fits_on == "none":
                status = "available (needs more RAM than this machine has)"
            if as_json:
                print(json.dumps({
                    "modality": mod, "id": entry.id, "name": entry.name, "repo": entry.repo,
                    "file": entry.file, "revision": entry.revision, "size": entry.size,
                    "sha256": entry.sha256, "licence": entry.licence, "ram": entry.ram,
                    "fits": fits_on != "none", "fits_on": fits_on, "status": status,
                    "path": str(match.path) if match else None,
                }))  # fmt: skip
            else:
                name = one_line(entry.name)[:36]
                fit = catalog.FIT_LABELS[fits_on]
                print(f"  {entry.id:20} {name:36} {human_size(entry.size):>10}  {fit:7}  {status}")
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
                print(f"  {'-':20} {name:36} {human_size(model.size):>10}  {'':7}  {status}")
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


def _save(service: SettingsService, **changes: str) -> None:
    """Change settings and write them, or raise CliError (the file is left as it was)."""
    if not service.writable:
        raise CliError(f"not changing the settings: {service.path} must be fixed first")
    problems: list[str] = []
    unsubscribe = service.subscribe(
        lambda event: problems.append(event.message) if isinstance(event, SettingsProblem) else None
    )
    try:
        service.update(**changes)
    finally:
        unsubscribe()
    if problems:
        raise CliError(problems[0])


def _set_default(service: SettingsService, path: Path) -> None:
    name, value, model = library.default_setting(path)
    _save(service, **{name: value})
    kind = "" if model.kind == "model" else f" {model.kind}"
    print(one_line(f"default {model.modality}{kind} model: {path}"))


def _remove(service: SettingsService, text: str, yes: bool) -> int:
    settings = service.current
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
    cleared = library.remove(settings, model)
    print(one_line(f"deleted {model.path}"))
    if cleared and service.writable:
        service.update(**cleared)  # a save problem here is one note; the file is gone anyway
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


def _pull(service: SettingsService, text: str, sha256: str | None, make_default: bool) -> int:
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
        _set_default(service, path)
    return 0
