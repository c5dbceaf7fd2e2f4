"""The installed `triptych` command, run as a user would: a real process, the real model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TRIPTYCH = Path(sys.executable).parent / "triptych"
PARIS = ["Name the capital city of France.", "--temperature", "0", "--max-tokens", "32"]


@pytest.fixture
def cli_env(app_dirs: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Temporary data and config folders, the fixture models folder."""
    # One engine thread: ggml's spinning threads crawl when the test machine's two
    # cores are shared with anything else (the setting is still read from the env).
    monkeypatch.setenv("TRIPTYCH_THREADS", "1")
    return dict(os.environ)


def triptych(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    assert TRIPTYCH.is_file(), f"{TRIPTYCH} is missing: install the project into the venv"
    return subprocess.run(
        [str(TRIPTYCH), *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("triptych: "), line
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in line
    assert proc.stdout == ""
    return line


def test_chat_answers_and_prints_stats(cli_env: dict[str, str]) -> None:
    proc = triptych(cli_env, "chat", *PARIS, "--stats")
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout
    stats = json.loads(proc.stderr.strip().splitlines()[-1])
    assert {"tokens", "ttft_s", "tokens_per_s"} <= stats.keys()
    for key in ("tokens", "ttft_s", "tokens_per_s"):
        assert isinstance(stats[key], int | float) and not isinstance(stats[key], bool), stats
    assert stats["tokens"] > 0
    assert stats["ttft_s"] > 0
    assert stats["tokens_per_s"] > 0


def test_chat_reads_the_prompt_from_stdin(cli_env: dict[str, str]) -> None:
    # `echo ... | triptych chat -`: the trailing newline must not change the answer.
    proc = triptych(cli_env, "chat", "-", *PARIS[1:], stdin=PARIS[0] + "\n")
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout
    assert proc.stderr == ""


def test_without_stats_stderr_stays_empty(cli_env: dict[str, str]) -> None:
    proc = triptych(cli_env, "chat", *PARIS)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.endswith("\n")


# --------------------------------------------------------------------------- errors


def _truncated_model(tmp_path: Path) -> Path:
    model = REPO / ".fixtures" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    path = tmp_path / "truncated.gguf"
    with model.open("rb") as src, path.open("wb") as dst:
        dst.write(src.read(int(model.stat().st_size * 0.6)))
    return path


def _text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.gguf"
    path.write_text("These are my notes, not a model.\n")
    return path


def test_missing_model_is_one_line(cli_env: dict[str, str]) -> None:
    proc = triptych(cli_env, "chat", "hi", "--model", "/nonexistent.gguf")
    assert_one_line_error(proc, "not found", "/nonexistent.gguf")


def test_text_file_as_model_is_one_line(cli_env: dict[str, str], tmp_path: Path) -> None:
    path = _text_file(tmp_path)
    proc = triptych(cli_env, "chat", "hi", "--model", str(path))
    assert_one_line_error(proc, "not a GGUF", str(path))


def test_truncated_model_is_one_line(cli_env: dict[str, str], tmp_path: Path) -> None:
    path = _truncated_model(tmp_path)
    proc = triptych(cli_env, "chat", "hi", "--model", str(path))
    assert_one_line_error(proc, "truncated", str(path))


def test_model_that_llama_cpp_rejects_is_one_line(
    cli_env: dict[str, str], tmp_path: Path, chat_model: Path
) -> None:
    """A sound GGUF header naming an unknown architecture: the engine itself refuses it."""
    path = tmp_path / "unknown-arch.gguf"
    shutil.copyfile(chat_model, path)
    with path.open("r+b") as f:
        head = f.read(4096)
        f.seek(head.index(b"llama", head.index(b"general.architecture")))
        f.write(b"xyzzy")
    proc = triptych(cli_env, "chat", "hi", "--model", str(path))
    assert_one_line_error(proc, "could not load", str(path))


def test_negative_temperature_is_one_line(cli_env: dict[str, str]) -> None:
    proc = triptych(cli_env, "chat", "hi", "--temperature", "-1")
    assert_one_line_error(proc, "temperature")


@pytest.mark.parametrize("prompt, stdin", [("", None), ("   ", None), ("-", ""), ("-", "\n\n")])
def test_empty_prompt_is_one_line(cli_env: dict[str, str], prompt: str, stdin: str | None) -> None:
    proc = triptych(cli_env, "chat", prompt, stdin=stdin)
    assert_one_line_error(proc, "prompt is empty")


def test_prompt_longer_than_the_context_is_one_line(cli_env: dict[str, str]) -> None:
    words = " ".join(f"word{i % 50}" for i in range(2000))
    proc = triptych(cli_env, "chat", words, "--ctx", "256")
    assert_one_line_error(proc, "context")


def test_zero_max_tokens_is_an_argparse_error(cli_env: dict[str, str]) -> None:
    proc = triptych(cli_env, "chat", "hi", "--max-tokens", "0")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("usage: triptych chat")
    assert "--max-tokens" in proc.stderr.splitlines()[-1]
    assert proc.stdout == ""
