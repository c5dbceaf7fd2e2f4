"""tui/compat against the installed (pinned) dependencies, and that nothing else uses privates.

Each adapter wraps a dependency's private name. These tests run it against the
version installed here, so an upgrade that removes or changes that name fails
here, naming the adapter, instead of somewhere in the app.
"""

from __future__ import annotations

import ast
import ctypes
import io
from pathlib import Path
from types import ModuleType

import pytest
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from tui.compat.sounddevice import reinitialize_portaudio
from tui.compat.stable_diffusion_cpp import drop_unloaded_context
from tui.compat.textual import set_strip_render_cache, strip_render_cache
from tui.compat.textual_image import terminal_cell_size

TUI = Path(__file__).resolve().parent.parent / "tui"

# --------------------------------------------------------------------------- textual


def test_strip_render_cache_is_what_render_returns() -> None:
    console = Console(file=io.StringIO(), color_system="truecolor", force_terminal=True)
    strip = Strip([Segment("x", Style(bold=True))])
    assert strip_render_cache(strip) is None
    rendered = strip.render(console)
    assert "x" in rendered and rendered != "x"  # styled: escape sequences around it
    assert strip_render_cache(strip) == rendered

    other = Strip([Segment("y", Style(bold=True))])
    set_strip_render_cache(other, "prepared")
    assert other.render(console) == "prepared"


# --------------------------------------------------------------------------- textual-image


def test_terminal_cell_size_comes_from_textual_image() -> None:
    from textual_image._terminal import get_cell_size

    cell = get_cell_size()
    width, height = terminal_cell_size()
    assert (width, height) == (cell.width, cell.height)
    assert isinstance(width, int) and isinstance(height, int)
    assert width > 0 and height > 0


# --------------------------------------------------------------------------- sounddevice


def _sounddevice() -> ModuleType:
    try:
        import sounddevice
    except OSError as error:  # PortAudio itself is missing: nothing to check against
        pytest.skip(f"PortAudio not available: {error}")
    return sounddevice


def test_portaudio_reinitialises_and_stays_usable() -> None:
    sd = _sounddevice()
    before = sd._initialized
    assert reinitialize_portaudio(sd) is True
    assert sd._initialized == before  # one terminate, one initialise
    sd.query_devices()  # PortAudio answers after it


def test_portaudio_left_alone_without_the_private_functions() -> None:
    assert reinitialize_portaudio(ModuleType("sounddevice")) is False


# --------------------------------------------------------------------------- stable-diffusion-cpp


def test_a_null_sd_context_is_forgotten_before_close() -> None:
    sd_cpp = pytest.importorskip("stable_diffusion_cpp")
    sd = sd_cpp.StableDiffusion()  # no model path: nothing is loaded
    try:
        assert sd._model.model is None
        assert drop_unloaded_context(sd) is False

        # What a failed load leaves behind: a NULL pointer object, not None.
        null = sd_cpp.new_sd_ctx.restype()
        assert null is not None and not null
        sd._model.model = null
        assert drop_unloaded_context(sd) is False
        assert sd._model.model is None  # so close() frees nothing

        context = sd_cpp.new_sd_ctx.restype._type_()
        sd._model.model = ctypes.pointer(context)
        assert drop_unloaded_context(sd) is True
        sd._model.model = None  # not a real context: never free it
    finally:
        sd.close()


# --------------------------------------------------------------------------- containment

# Standard-library names that start with an underscore but are documented or type-only.
ALLOWED = {"os._exit", "hashlib._Hash"}


def _own_private_names(trees: list[ast.Module]) -> set[str]:
    """Every private name tui defines itself (functions, classes, attributes, variables)."""
    names: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.alias) and node.name.startswith("tui"):
                names.add(node.asname or node.name)
    return {name for name in names if name.startswith("_")}


def _private_uses(path: Path, tree: ast.Module, own: set[str]) -> list[str]:
    found = []

    def private(name: str) -> bool:
        return name.startswith("_") and not name.startswith("__")

    for node in ast.walk(tree):
        where = f"{path.relative_to(TUI.parent)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if not node.module.startswith("tui") and (
                any(private(part) for part in node.module.split("."))
                or any(private(alias.name) for alias in node.names)
            ):
                found.append(f"{where}: from {node.module} import ...")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if any(private(part) for part in alias.name.split(".")[1:]):
                    found.append(f"{where}: import {alias.name}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and private(node.args[1].value)
            and node.args[1].value not in own
        ):
            found.append(f"{where}: {node.func.id}(..., {node.args[1].value!r})")
        elif isinstance(node, ast.Attribute):
            name = node.attr
            if not private(name) or name in own:
                continue
            owner = node.value.id if isinstance(node.value, ast.Name) else "?"
            if f"{owner}.{name}" not in ALLOWED:
                found.append(f"{where}: {owner}.{name}")
    return found


def test_only_compat_touches_private_names_of_dependencies() -> None:
    files = sorted(TUI.rglob("*.py"))
    trees = {path: ast.parse(path.read_text(), str(path)) for path in files}
    own = _own_private_names(list(trees.values()))
    found = [
        use
        for path, tree in trees.items()
        if "compat" not in path.relative_to(TUI).parts
        for use in _private_uses(path, tree, own)
    ]
    assert found == []


def test_the_containment_check_sees_a_private_use(tmp_path: Path) -> None:
    """Guard against a vacuous pass: each kind of private use is reported."""
    source = (
        "from textual_image._terminal import get_cell_size\n"
        "import textual._context\n"
        "def f(app, llm, sd):\n"
        "    return app._screen_stacks, llm._input_ids, getattr(sd, '_terminate')\n"
    )
    path = TUI / "example.py"
    tree = ast.parse(source)
    uses = _private_uses(path, tree, _own_private_names([tree]))
    assert [use.split(": ", 1)[1] for use in uses] == [
        "from textual_image._terminal import ...",
        "import textual._context",
        "app._screen_stacks",
        "llm._input_ids",
        "getattr(..., '_terminate')",
    ]
