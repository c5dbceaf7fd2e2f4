"""Odd input to the `triptych` command: every case ends as one line and a non-zero status.

Model specs with newlines, NULs, '..' or URL forms; inputs that are devices, pipes,
folders or sockets; thread counts beyond the machine; `--model` before the subcommand;
and an unexpected exception, which is logged rather than printed as a traceback.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sd_fixtures import fixture
from tui import cli, cpu, files, hub

TRIPTYCH = Path(sys.executable).with_name("triptych")
CPUS = cpu.available_cpus()


@pytest.fixture
def env(app_dirs: Path) -> dict[str, str]:
    values = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    values.update(HF_ENDPOINT="http://127.0.0.1:9", TRIPTYCH_THREADS="1")
    return values


def run(env: dict[str, str], *args: str, stdin: object = subprocess.DEVNULL, timeout=60):
    assert TRIPTYCH.is_file(), f"{TRIPTYCH} is missing: install the project into the venv"
    return subprocess.run(
        [str(TRIPTYCH), *args],
        env=env,
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_line(proc: subprocess.CompletedProcess[str], *words: str, status: int = 1) -> str:
    assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("triptych: ") and "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# --- (a) model specs -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, why",
    [
        ("acme/m/m.gguf\nrm -rf", "control character"),
        ("acme/m/m.gguf\x00", "control character"),
        ("acme/m/m\x1b[2J.gguf", "control character"),
        ("", "no model named"),
        ("   ", "no model named"),
        ("acme/../m.gguf", "not a Hub owner or repository name"),
        ("acme/m/../../etc/passwd", "not a usable file or folder name"),
        ("acme/m/./m.gguf", "not a usable file or folder name"),
        ("acme/m/", "expected OWNER/REPO/FILE"),
        ("acme//m/m.gguf", "expected OWNER/REPO/FILE"),
        ("acme/m/m.gguf@", "not a revision"),
        ("acme/m/m.gguf@ main", "not a revision"),
        ("ac me/m/m.gguf", "not a Hub owner"),
        ("-acme/m/m.gguf", "not a Hub owner"),
        ("acme/m--x/m.gguf", "not a Hub owner"),
        ("https://huggingface.co/acme/m", "resolve/REVISION/FILE"),
        ("https://huggingface.co/acme/m/tree/main", "resolve/REVISION/FILE"),
        ("https://huggingface.co/acme/m/resolve/main/", "resolve/REVISION/FILE"),
        ("https://huggingface.co/datasets/acme/d/resolve/main/x.bin", "are not models"),
        ("ftp://huggingface.co/acme/m/resolve/main/m.gguf", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("https://huggingface.co/acme/m/resolve/main/m%0A.gguf", "control character"),
        ("https://huggingface.co/acme/m/resolve/main/..%2Fx.gguf", "not a usable file"),
    ],
)
def test_bad_specs_are_one_readable_line(text: str, why: str) -> None:
    with pytest.raises(hub.DownloadError) as caught:
        hub.parse_spec(text)
    message = str(caught.value)
    assert why in message
    assert "\n" not in message and "\x00" not in message and "\x1b" not in message


@pytest.mark.parametrize(
    "text, repo, filename, revision",
    [
        ("acme/m/sub/m.gguf", "acme/m", "sub/m.gguf", "main"),
        ("acme/m/m.gguf@v1.0", "acme/m", "m.gguf", "v1.0"),
        ("acme/m/m.gguf@refs/pr/1", "acme/m", "m.gguf", "refs/pr/1"),
        (
            "https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF/resolve/main/q.gguf"
            "?download=true",
            "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
            "q.gguf",
            "main",
        ),
        ("huggingface.co/acme/m/blob/abc123/dir/m.gguf", "acme/m", "dir/m.gguf", "abc123"),
        ("HTTPS://hf.co/acme/m/resolve/main/my%20model.gguf#x", "acme/m", "my model.gguf", "main"),
    ],
)
def test_good_specs_and_urls_parse(text: str, repo: str, filename: str, revision: str) -> None:
    assert hub.parse_spec(text) == hub.FileSpec(repo, filename, revision)


@pytest.mark.parametrize(
    "args, words",
    [
        (["acme/m/m.gguf\nsecond line"], ["control character"]),
        ([""], ["no model named"]),
        (["acme/../m.gguf"], ["not a Hub owner"]),
        (["https://huggingface.co/acme/m"], ["resolve/REVISION/FILE"]),
        (["acme/m/m.gguf", "--sha256", "xyz"], ["--sha256", "64 hexadecimal"]),
    ],
)
def test_models_pull_with_odd_names_is_one_line(env, args: list[str], words: list[str]) -> None:
    one_line(run(env, "models", "pull", *args), *words)


def test_unexpected_exception_is_one_line_and_logged(
    app_dirs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(args: object) -> int:
        raise RuntimeError("bad\nthing \x1b[2J")

    monkeypatch.setattr(cli, "run_chat", broken)
    assert cli.main(["chat", "hi"]) == 1
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("triptych: unexpected error: RuntimeError: bad thing ␛[2J")
    log = app_dirs / "data" / "logs" / "cli.log"
    assert str(log) in lines[0]
    assert "Traceback" in log.read_text() and "RuntimeError: bad" in log.read_text()

    monkeypatch.setenv("TRIPTYCH_DEBUG", "1")
    assert cli.main(["chat", "hi"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err  # asked for: the whole story
    assert err.splitlines()[-1].startswith("triptych: unexpected error: RuntimeError")


def test_closed_output_pipe_ends_quietly(env) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written (`| head -0`)
    try:
        proc = subprocess.run(
            [str(TRIPTYCH), "models", "list"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr
    assert proc.stderr == ""


# --- (b) inputs that are not regular files -----------------------------------------------


@pytest.fixture
def odd_files(tmp_path: Path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock.wav"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    folder = tmp_path / "folder.wav"
    folder.mkdir()
    yield {
        "device": (Path("/dev/zero"), "a character device"),
        "fifo": (fifo, "a named pipe"),
        "socket": (sock_path, "a socket"),
        "folder": (folder, "a folder"),
    }
    server.close()


@pytest.mark.parametrize("kind", ["device", "fifo", "socket", "folder"])
def test_transcribe_refuses_what_is_not_a_regular_file(env, odd_files, kind: str) -> None:
    path, what = odd_files[kind]
    proc = run(env, "transcribe", str(path), "--model", "/nonexistent.bin", timeout=20)
    one_line(proc, f"not a regular file: {path} ({what})")


def test_transcribe_missing_file_is_still_not_found(env, tmp_path: Path) -> None:
    one_line(run(env, "transcribe", str(tmp_path / "nope.wav")), "audio file not found")


def test_transcribe_follows_a_link_to_a_device(env, tmp_path: Path) -> None:
    link = tmp_path / "talk.wav"
    link.symlink_to("/dev/zero")
    one_line(run(env, "transcribe", str(link)), "not a regular file", "character device")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_transcribe_unreadable_file(env, tmp_path: Path) -> None:
    audio = tmp_path / "locked.wav"
    audio.write_bytes(b"RIFF" + b"\0" * 100)
    audio.chmod(0)
    one_line(run(env, "transcribe", str(audio)), "cannot read", "Permission denied")


def test_unreadable_file_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The permission check (also as root, where every file is readable)."""
    audio = tmp_path / "locked.wav"
    audio.write_bytes(b"RIFF")
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(ValueError, match=r"cannot read .*locked\.wav \(Permission denied\)"):
        files.check_input_file(audio, "audio file")
    monkeypatch.undo()
    files.check_input_file(audio, "audio file")  # a readable regular file passes


@pytest.mark.parametrize("kind", ["device", "fifo", "folder"])
def test_imagine_init_refuses_what_is_not_a_regular_file(env, odd_files, tmp_path, kind) -> None:
    path, what = odd_files[kind]
    proc = run(
        env,
        "imagine",
        "a boat",
        "-o",
        str(tmp_path / "out.png"),
        "--model",
        str(fixture("image-model")),
        "--init",
        str(path),
        timeout=20,
    )
    one_line(proc, f"not a regular file: {path} ({what})")


def test_chat_stdin_is_bounded_and_must_be_text(env) -> None:
    with open("/dev/zero", "rb") as zero:
        one_line(run(env, "chat", "-", stdin=zero, timeout=20), "longer than")
    proc = subprocess.run(
        [str(TRIPTYCH), "chat", "-"],
        env=env,
        input=b"\xff\xfe not text",
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.decode().splitlines() == [
        "triptych: the prompt on standard input is not UTF-8 text"
    ]


# --- (c) threads beyond the machine ----------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["chat", "hi"],
        ["imagine", "a boat", "-o", "/tmp/never.png"],
        ["transcribe", "/dev/null"],
    ],
)
def test_threads_beyond_the_cpus_are_refused(env, args: list[str]) -> None:
    proc = run(env, *args, "--threads", "100000")
    one_line(proc, f"--threads 100000 is more than the {CPUS} CPUs")


def test_threads_that_are_not_a_number_are_an_argparse_error(env) -> None:
    proc = run(env, "chat", "hi", "--threads", "many")
    assert proc.returncode == 2 and "not a whole number: 'many'" in proc.stderr


@pytest.mark.slow
def test_threads_setting_beyond_the_cpus_is_bounded_with_a_note(env) -> None:
    env["TRIPTYCH_THREADS"] = "100000"
    proc = run(
        env, "chat", "Name the capital city of France.", "--temperature", "0", "--max-tokens", "8"
    )
    assert proc.returncode == 0, proc.stderr  # the engine ran, on every CPU, no crash
    assert proc.stdout.strip()
    assert proc.stderr.splitlines() == [
        f"triptych: note: threads = 100000 in the settings is more than the {CPUS} CPUs"
        f" available; using {CPUS}"
    ]


# --- (d) the top-level --model ------------------------------------------------------------


def test_top_level_model_is_used_by_chat(env, tmp_path: Path) -> None:
    notes = tmp_path / "notes.gguf"
    notes.write_text("not a model\n")
    one_line(run(env, "--model", str(notes), "chat", "hi"), "not a GGUF", str(notes))


def test_subcommand_model_wins_over_the_top_level_one(env, tmp_path: Path) -> None:
    notes = tmp_path / "notes.gguf"
    notes.write_text("not a model\n")
    proc = run(env, "--model", str(notes), "chat", "hi", "--model", "/nonexistent.gguf")
    one_line(proc, "not found", "/nonexistent.gguf")
