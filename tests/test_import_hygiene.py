"""The UI process never loads a native binding; the engine side never loads Textual.

Each check runs in a fresh interpreter so that modules imported by other tests
(or by pytest plugins) cannot hide or fake a leak.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

NATIVE_BINDINGS = ("llama_cpp", "stable_diffusion_cpp", "pywhispercpp")
FORMAT_MODULES = (
    "tui.formats",
    "tui.formats.ggml",
    "tui.formats.gguf",
    "tui.formats.image",
    "tui.formats.safetensors",
    "tui.formats.whisper",
)


def _loaded_after_import(modules: list[str], watched: tuple[str, ...]) -> list[str]:
    """Import `modules` in a new interpreter; return which of `watched` got loaded."""
    code = textwrap.dedent(
        f"""
        import importlib, json, sys
        for name in {modules!r}:
            importlib.import_module(name)
        watched = {watched!r}
        print(json.dumps(sorted(
            m for m in sys.modules if m.split(".")[0] in watched
        )))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_ui_side_never_imports_a_native_binding() -> None:
    ui_modules = [
        "tui.app",
        "tui.screens.chat",
        "tui.cli",
        "tui.engines.host",
        "tui.store",
        "tui.default_model",
        *FORMAT_MODULES,
        "tui.compat.textual",
        "tui.compat.textual_image",
        "tui.compat.sounddevice",
        "tui.compat.stable_diffusion_cpp",
        "tui.compat.llama_cpp",
        "tui.engines.decode",
        "tui.gpu",
        "tui.accel",
    ]
    assert _loaded_after_import(ui_modules, NATIVE_BINDINGS) == []


def test_engine_side_never_imports_textual() -> None:
    engine_modules = [
        "tui.engines.protocol",
        "tui.engines.host",
        "tui.engines.chat",
        "tui.engines.image",
        "tui.engines.worker",
        "tui.default_model",
        *FORMAT_MODULES,
        "tui.compat.sounddevice",
        "tui.compat.stable_diffusion_cpp",
        "tui.compat.llama_cpp",
        "tui.engines.decode",
        "tui.gpu",
        "tui.imaging",
        "tui.store",
        "tui.config",
    ]
    assert _loaded_after_import(engine_modules, ("textual",)) == []


def service_modules() -> list[str]:
    """Every module under tui/services, found on disk (a new one is covered at once)."""
    import tui.services

    return ["tui.services"] + [
        info.name for info in pkgutil.walk_packages(tui.services.__path__, prefix="tui.services.")
    ]


def backend_modules() -> list[str]:
    """Every module under tui/backends, found on disk."""
    import tui.backends

    return ["tui.backends"] + [
        info.name for info in pkgutil.walk_packages(tui.backends.__path__, prefix="tui.backends.")
    ]


def test_services_and_backends_never_import_textual() -> None:
    modules = service_modules() + backend_modules()
    assert "tui.services.settings" in modules and "tui.backends.remote" in modules
    for module in modules:
        # One interpreter per module: one that loads textual cannot hide behind another.
        assert _loaded_after_import([module], ("textual",)) == [], module


def test_the_check_itself_sees_imports() -> None:
    """Guard against a vacuous pass: a real import does show up."""
    assert _loaded_after_import(["tui.app"], ("textual",)) != []


def test_the_server_never_imports_textual_or_a_binding() -> None:
    """`triptych serve` runs headless: neither Textual nor a native binding in its process."""
    loaded = _loaded_after_import(["tui.serve"], ("textual", *NATIVE_BINDINGS))
    assert loaded == []
