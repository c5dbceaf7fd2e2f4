"""`triptych models list|pull|import|rm|default`, run as a user would (installed script)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hub_server import HubServer
from tests.speech_fixtures import whisper_model

TRIPTYCH = Path(sys.executable).with_name("triptych")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    values = {k: v for k, v in os.environ.items() if not k.startswith(("TRIPTYCH_", "HF_"))}
    values.update(
        TRIPTYCH_DATA_DIR=str(tmp_path / "data"),
        TRIPTYCH_CONFIG_DIR=str(tmp_path / "config"),
        TRIPTYCH_MODELS_DIR=str(tmp_path / "models"),
        HF_HUB_CACHE=str(tmp_path / "hf-cache"),
        HF_HOME=str(tmp_path / "hf-home"),
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    return values


def triptych(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TRIPTYCH), "models", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("triptych: ")
    return lines[0]


def test_pull_import_default_rm(env: dict[str, str], tmp_path: Path, chat_model: Path):
    with HubServer() as server:
        env["HF_ENDPOINT"] = server.endpoint
        server.hub.add("acme/whisper", "ggml-tiny.en.bin", whisper_model().read_bytes())
        pulled = triptych("pull", "acme/whisper/ggml-tiny.en.bin", "--default", env=env)
    assert pulled.returncode == 0, pulled.stderr
    dest = tmp_path / "models" / "ggml-tiny.en.bin"
    assert pulled.stdout.splitlines() == [str(dest), f"default speech model: {dest}"]
    assert pulled.stderr == ""  # a quick download into a pipe prints no progress

    imported = triptych("import", str(chat_model), env=env)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith("imported chat model (llama")

    listed = triptych("list", "--json", env=env)
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    by_id = {row["id"]: row for row in rows}
    assert by_id["whisper-tiny.en"]["status"] == "default, installed"
    assert by_id["smollm2-135m"]["status"] == "default, installed"
    assert by_id["qwen2.5-1.5b"]["status"].startswith("available")
    for row in rows:  # the catalog's rows say where they fit; "fits" is kept for older readers
        if row["id"] is not None:
            assert row["fits_on"] in ("gpu", "ram", "none")
            assert row["fits"] == (row["fits_on"] != "none")
    assert by_id["qwen2.5-1.5b"]["sha256"] == (
        "6a1a2eb6d15622bf3c96857206351ba97e1af16c30d7a74ee38970e434e9407e"
    )

    shown = triptych("default", env=env)
    assert f"speech       {dest}" in shown.stdout.splitlines()

    refused = triptych("rm", "whisper-tiny.en", env=env)
    assert "without --yes" in one_error_line(refused)
    assert dest.exists()
    removed = triptych("rm", "whisper-tiny.en", "--yes", env=env)
    assert removed.returncode == 0 and not dest.exists()
    assert "speech       -" in triptych("default", env=env).stdout.splitlines()


def test_pull_errors_are_one_line(env: dict[str, str]):
    with HubServer() as server:
        env["HF_ENDPOINT"] = server.endpoint
        server.hub.add("acme/m", "m.gguf", b"not really a model")
        missing = one_error_line(triptych("pull", "acme/m/other.gguf", env=env))
        assert "no file 'other.gguf' in acme/m" in missing
        private = one_error_line(triptych("pull", "acme/private/m.gguf", env=env))
        assert "not found, or it is private (set HF_TOKEN)" in private
        junk = one_error_line(triptych("pull", "acme/m/m.gguf", env=env))
        assert "is not usable: not a model Triptych can use" in junk
    assert "not a Hub file" in one_error_line(triptych("pull", "just-a-name", env=env))
    # No server at all: a clear line, not a traceback.
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"
    assert "cannot reach http://127.0.0.1:9" in one_error_line(
        triptych("pull", "acme/m/m.gguf", env=env)
    )


def test_import_errors_are_one_line(env: dict[str, str], tmp_path: Path, chat_model: Path):
    text = tmp_path / "model.gguf"
    text.write_text("hello\n")
    assert "not a model Triptych can use" in one_error_line(triptych("import", str(text), env=env))
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(chat_model.read_bytes()[:1_000_000])
    assert "truncated GGUF model" in one_error_line(triptych("import", str(cut), env=env))
    missing = one_error_line(triptych("import", str(tmp_path / "nope.gguf"), env=env))
    assert "model file not found" in missing
    outside = one_error_line(triptych("rm", str(chat_model), "--yes", env=env))
    assert "outside Triptych's models folder" in outside
    assert chat_model.exists()


def test_list_says_where_each_model_fits(
    app_dirs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    """In-process, with a fake 2 GiB GPU and 3 GiB of RAM: GPU, RAM and too big."""
    from tui import catalog, gpu, models_cli
    from tui.config import Settings
    from tui.gpu import GpuInfo

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(gpu, "gpus", lambda: [GpuInfo(0, "Fake GPU", 2 << 30, 2 << 30, (8, 9))])
    monkeypatch.setattr(catalog, "total_ram", lambda: 3 << 30)
    assert models_cli._list(Settings(), "chat", as_json=True) == 0
    rows = {row["id"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["qwen2.5-1.5b"]["fits_on"] == "gpu"  # 1.5 GiB <= 90% of 2 GiB
    assert rows["smollm2-1.7b"]["fits_on"] == "ram"  # 2.1 GiB <= 80% of 3 GiB
    assert rows["llama3.2-3b"]["fits_on"] == "none" and rows["llama3.2-3b"]["fits"] is False
    assert rows["llama3.2-3b"]["status"] == "available (needs more RAM than this machine has)"
    assert rows["smollm2-1.7b"]["fits"] is True
    assert models_cli._list(Settings(), "chat", as_json=False) == 0
    lines = capsys.readouterr().out.splitlines()
    line = next(line for line in lines if "qwen2.5-1.5b" in line)
    assert line.split()[-2:] == ["GPU", "available"]
    line = next(line for line in lines if "llama3.2-3b" in line)
    assert "  too big  available (needs more RAM" in line
