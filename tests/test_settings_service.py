"""The settings owner: bad settings files are named and never lost, and changes reach
the open panels.

Each bad file is run through the real app under Pilot: the app starts, the user
is told (the file, and the line or error), a setting is changed (the theme) and
the app exits. A file that could not be used is then byte-for-byte unchanged; a
valid file with bad values or unknown keys has only the changed key changed.
The same files go through ``triptych models default``, run as a user would.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sd_fixtures import fixture
from tests.speech_fixtures import whisper_model
from tui import locations
from tui.app import TriptychApp
from tui.config import Sampling, Settings, load_layers
from tui.gpu import GPU_LAYERS_HELP
from tui.screens.imagine import ImagineScreen
from tui.screens.listen import ListenScreen
from tui.services.settings import SettingsChanged, SettingsProblem, SettingsService
from tui.store import Store

SIZE = (80, 24)
TRIPTYCH = Path(sys.executable).with_name("triptych")

BROKEN = """\
# my settings
system_prompt = "You are a pirate."
theme = "triptych-light"
model_dirs = ["/srv/models", "/home/me/models"
threads = 2
"""
"""The issue's example: a custom system prompt and theme, and a list missing its ']'."""

BAD_VALUES = """\
# my settings
theme = "triptych-dark"   # the theme
threads = "many"
gpu_layers = true
system_prompt = "You are a pirate."

[sampling]
# cooler replies
temperature = 0.2
top_k = "lots"
"""

UNKNOWN_KEYS = """\
# written by a newer Triptych
theme = "triptych-dark"
colour_scheme = "solarized"   # not known here
system_prompt = "You are a pirate."

[sampling]
temperature = 0.3
mirostat = 2

[plugins]
enabled = ["clock"]
"""


def config_path() -> Path:
    path = locations.config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def notifications(app: TriptychApp) -> list[str]:
    return [n.message for n in app._notifications]


async def run_app_changing_theme(chat_model: Path) -> list[str]:
    """Start the app, switch the theme (which saves), exit; what the user was told."""
    app = TriptychApp(chat_model=str(chat_model), store=Store())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.theme = "textual-dark" if app.theme != "textual-dark" else "triptych-dark"
        await pilot.pause()
        told = notifications(app)
    return told


def replace_line(text: str, start: str, new: str) -> str:
    lines = text.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.startswith(start)]
    assert len(hits) == 1, (start, text)
    lines[hits[0]] = new
    return "".join(lines)


# --- bad files through the app ---------------------------------------------------------


async def test_broken_toml_is_never_overwritten(app_dirs, chat_model):
    path = config_path()
    path.write_text(BROKEN)
    before = path.read_bytes()
    told = await run_app_changing_theme(chat_model)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.toml"]  # no stray file
    first = told[0]
    assert str(path) in first and "line 5" in first and "left as it is" in first
    assert any(f"settings not saved: {path}" in line for line in told), told


async def test_wrong_types_are_named_and_only_the_change_is_written(app_dirs, chat_model):
    path = config_path()
    path.write_text(BAD_VALUES)
    told = await run_app_changing_theme(chat_model)
    for name in ("threads = 'many'", "gpu_layers = True", "sampling.top_k = 'lots'"):
        assert any(str(path) in line and name in line for line in told), (name, told)
    assert path.read_text() == replace_line(
        BAD_VALUES, "theme =", 'theme = "textual-dark"   # the theme\n'
    )


async def test_unknown_keys_and_comments_are_kept(app_dirs, chat_model):
    path = config_path()
    path.write_text(UNKNOWN_KEYS)
    told = await run_app_changing_theme(chat_model)
    assert any("unknown setting 'colour_scheme'" in line for line in told), told
    assert any("unknown setting 'sampling.mirostat'" in line for line in told), told
    assert path.read_text() == replace_line(UNKNOWN_KEYS, "theme =", 'theme = "textual-dark"\n')


async def test_a_read_only_file_is_left_alone(app_dirs, chat_model):
    path = config_path()
    path.write_text(UNKNOWN_KEYS)
    path.chmod(0o444)  # root may still write it: the service checks the mode itself
    before = path.read_bytes()
    told = await run_app_changing_theme(chat_model)
    assert path.read_bytes() == before
    assert any(f"settings not saved: {path} is read-only" in line for line in told), told


@pytest.fixture
def read_only_mount(app_dirs: Path) -> Iterator[Path]:
    """The config folder bind-mounted read-only over itself (needs CAP_SYS_ADMIN)."""
    path = config_path()
    path.write_text(UNKNOWN_KEYS)
    folder = str(path.parent)
    bind = subprocess.run(["mount", "--bind", folder, folder], capture_output=True, check=False)
    if bind.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {bind.stderr.decode().strip()}")
    try:
        remount = subprocess.run(
            ["mount", "-o", "remount,ro,bind", folder], capture_output=True, check=False
        )
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only: {remount.stderr.decode().strip()}")
        yield path
    finally:
        subprocess.run(["umount", folder], check=True)


async def test_a_read_only_file_system_is_left_alone(read_only_mount, chat_model):
    path = read_only_mount
    before = path.read_bytes()
    told = await run_app_changing_theme(chat_model)
    assert path.read_bytes() == before
    expected = f"settings not saved to {path}: Read-only file system"
    assert any(expected in line for line in told), told


async def test_a_folder_in_place_of_the_file(app_dirs, chat_model):
    path = config_path()
    path.mkdir()
    (path / "inside.txt").write_text("mine")
    told = await run_app_changing_theme(chat_model)
    assert path.is_dir() and [p.name for p in path.iterdir()] == ["inside.txt"]
    assert (path / "inside.txt").read_text() == "mine"
    assert told[0] == f"{path} is a folder, not a settings file; using the defaults"
    assert any(f"settings not saved: {path}" in line for line in told), told


async def test_environment_overrides_are_never_written(app_dirs, chat_model, monkeypatch):
    path = config_path()
    path.write_text("# mine\nthreads = 1\n")
    monkeypatch.setenv("TRIPTYCH_GPU_LAYERS", "7")
    monkeypatch.setenv("TRIPTYCH_THREADS", "3")
    app = TriptychApp(chat_model=str(chat_model), store=Store())
    async with app.run_test(size=SIZE) as pilot:
        assert app.settings.gpu_layers == 7 and app.settings.threads == 3
        app.theme = "textual-dark"
        await pilot.pause()
    assert path.read_text() == '# mine\nthreads = 1\ntheme = "textual-dark"\n'


# --- the CLI ------------------------------------------------------------------------


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPTYCH_")}
    env.update(
        TRIPTYCH_DATA_DIR=str(tmp_path / "data"),
        TRIPTYCH_CONFIG_DIR=str(tmp_path / "config"),
        TRIPTYCH_MODELS_DIR=str(tmp_path / "models"),
        **extra,
    )
    return env


def models_default(env: dict[str, str], model: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TRIPTYCH), "models", "default", str(model)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_refuses_to_change_a_broken_file(tmp_path):
    path = tmp_path / "config" / "config.toml"
    path.parent.mkdir()
    path.write_text(BROKEN)
    before = path.read_bytes()
    done = models_default(cli_env(tmp_path, TRIPTYCH_GPU_LAYERS="7"), whisper_model())
    assert done.returncode == 1
    assert path.read_bytes() == before
    note, refusal = done.stderr.splitlines()
    assert note.startswith(f"triptych: note: {path}: ") and "line 5" in note
    assert refusal == f"triptych: not changing the settings: {path} must be fixed first"
    assert done.stdout == ""


def test_cli_writes_only_the_default_and_never_the_environment(tmp_path):
    path = tmp_path / "config" / "config.toml"
    path.parent.mkdir()
    path.write_text(BAD_VALUES)
    done = models_default(cli_env(tmp_path, TRIPTYCH_GPU_LAYERS="7"), whisper_model())
    assert done.returncode == 0, done.stderr
    # One note per problem, and the command still ran.
    notes = done.stderr.splitlines()
    assert len(notes) == 3 and all(n.startswith(f"triptych: note: {path}: ") for n in notes)
    # A new top-level key goes before the first table (after it, it would be in the table).
    added = f'speech_model = "{whisper_model().absolute()}"\n'
    assert path.read_text() == BAD_VALUES.replace('pirate."\n', 'pirate."\n' + added)


# --- the service itself -------------------------------------------------------------


def test_load_layers_names_each_problem(tmp_path, monkeypatch):
    path = tmp_path / "config.toml"
    path.write_text(BAD_VALUES)
    monkeypatch.setenv("TRIPTYCH_IDLE_UNLOAD_MINUTES", "soon")
    monkeypatch.setenv("TRIPTYCH_GPU_LAYERS", "7")
    layers = load_layers(path)
    assert layers.file_ok
    assert layers.settings.threads == 0 and layers.settings.gpu_layers == 7
    assert layers.settings.system_prompt == "You are a pirate."
    assert layers.settings.sampling.temperature == 0.2 and layers.settings.sampling.top_k == 40
    assert layers.env_fields == ["gpu_layers"]
    assert layers.problems == [
        f"{path}: threads = 'many' is not a whole number; using 0",
        f"{path}: gpu_layers = True is not {GPU_LAYERS_HELP}; using 'auto'",
        f"{path}: sampling.top_k = 'lots' is not a whole number; using 40",
        "TRIPTYCH_IDLE_UNLOAD_MINUTES='soon' is not a whole number; ignored",
    ]


def test_load_layers_on_a_broken_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(BROKEN)
    layers = load_layers(path)
    assert not layers.file_ok and layers.settings == Settings()
    (problem,) = layers.problems
    assert problem.startswith(f"{path}: ") and "(at line 5, column 1)" in problem


def test_update_announces_and_keeps_the_rest_of_the_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(UNKNOWN_KEYS)
    service = SettingsService(path)
    events: list[object] = []
    service.subscribe(events.append)
    service.update(sampling=Sampling(temperature=0.3, top_k=20), theme="triptych-dark")
    # theme did not change: only sampling is announced, and only top_k is written.
    assert events == [SettingsChanged(frozenset({"sampling"}))]
    assert path.read_text() == UNKNOWN_KEYS.replace("mirostat = 2\n", "mirostat = 2\ntop_k = 20\n")
    service.update(theme="triptych-dark")
    assert len(events) == 1  # no change, no event, no write
    with pytest.raises(ValueError, match="unknown setting: colour"):
        service.update(colour="red")


def test_a_failed_save_is_told_and_written_with_the_next(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("# mine\n")
    service = SettingsService(path)
    events: list[object] = []
    service.subscribe(events.append)
    path.chmod(0o444)
    service.update(threads=2)
    assert events == [
        SettingsChanged(frozenset({"threads"})),
        SettingsProblem(f"settings not saved: {path} is read-only"),
    ]
    assert service.current.threads == 2 and path.read_text() == "# mine\n"
    path.chmod(0o600)
    service.update(gpu_layers=4)
    assert path.read_text() == "# mine\nthreads = 2\ngpu_layers = 4\n"
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)  # the file's mode is kept


def test_a_symlinked_file_is_edited_where_it_lives(tmp_path):
    real = tmp_path / "dotfiles" / "triptych.toml"
    real.parent.mkdir()
    real.write_text("threads = 1\n")
    link = tmp_path / "config.toml"
    link.symlink_to(real)
    SettingsService(link).update(threads=3)
    assert link.is_symlink() and real.read_text() == "threads = 3\n"


def test_given_settings_are_current_and_saved_to_the_file(tmp_path):
    path = tmp_path / "config.toml"
    given = Settings(threads=5)
    service = SettingsService(path, settings=given)
    assert service.current is given
    service.update(theme="textual-dark")
    assert path.read_text() == 'theme = "textual-dark"\n'


# --- open panels follow the settings ---------------------------------------------------


async def test_open_panels_show_new_defaults(app_dirs, chat_model):
    app = TriptychApp(chat_model=str(chat_model), store=Store())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        await pilot.pause()
        imagine = app.screen
        assert isinstance(imagine, ImagineScreen)
        await pilot.press("f4")
        await pilot.pause()
        listen = app.screen
        assert isinstance(listen, ListenScreen)
        await pilot.press("f2")
        # From a worker thread, as the Models panel does it.
        speech, taesd = str(whisper_model()), str(fixture("taesd"))
        await asyncio.to_thread(app.settings_service.update, speech_model=speech)
        app.settings_service.update(image_taesd=taesd)
        await pilot.pause()
        await pilot.pause()
        assert listen.query_one("#speech-model").value == speech
        assert imagine.query_one("#taesd").value == taesd
        assert imagine.query_one("#model").value == ""
    assert Settings.load().speech_model == speech
