"""`triptych imagine`, run as a user would: a real process, the real binding, random weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests import sd_fixtures

REPO = Path(__file__).resolve().parent.parent
TRIPTYCH = Path(sys.executable).parent / "triptych"
THREADS = "1"
SMALL = ["--width", "64", "--height", "64", "--steps", "1", "--cfg", "1", "--threads", THREADS]


@pytest.fixture(scope="module")
def image_model() -> Path:
    return sd_fixtures.fixture("image-model")


@pytest.fixture(scope="module")
def truncated_model(image_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("sd") / "truncated.safetensors"
    return sd_fixtures.truncated_copy(image_model, dest)


@pytest.fixture
def cli_env(app_dirs: Path) -> dict[str, str]:
    """Temporary data and config folders (no saved image model)."""
    return dict(os.environ)


def triptych(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    assert TRIPTYCH.is_file(), f"{TRIPTYCH} is missing: install the project into the venv"
    return subprocess.run(
        [str(TRIPTYCH), *args],
        input="",
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def imagine(env: dict[str, str], model: Path, out: Path, *args: str):
    return triptych(env, "imagine", "a lighthouse at dusk", "--model", str(model), "-o", str(out),
                    *SMALL, *args)  # fmt: skip


def pixels(path: Path) -> tuple[tuple[int, int], bytes]:
    with Image.open(path) as image:
        return image.size, image.convert("RGB").tobytes()


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("triptych: "), line
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in line, line
    assert proc.stdout == ""
    return line


# --------------------------------------------------------------------------- success


def test_writes_a_png_with_its_parameters(
    cli_env: dict[str, str], image_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "lighthouse.png"
    # CFG 7 (after SMALL's 1, so it wins): the negative prompt is used, in its own pass.
    args = ["--width", "128", "--seed", "5", "--sampler", "euler", "--negative", "fog"]
    args += ["--cfg", "7"]
    proc = imagine(cli_env, image_model, out, *args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [str(out)]
    assert proc.stderr == ""  # not a terminal: no progress line

    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size == (128, 64)
        text = dict(image.info)
    assert text["prompt"] == "a lighthouse at dusk"
    assert text["negative_prompt"] == "fog"
    assert text["seed"] == "5"
    assert text["steps"] == "1"
    assert text["cfg_scale"] == "7.0"
    assert text["sampler"] == "euler"
    assert text["size"] == "128x64"
    assert text["model"] == str(image_model)
    assert "Seed: 5" in text["parameters"]
    saved = json.loads(text["triptych"])
    assert saved["seed"] == 5
    assert (saved["width"], saved["height"], saved["steps"]) == (128, 64, 1)

    # The same command again (a new process, a new engine): the same pixels.
    again = tmp_path / "again.png"
    proc = imagine(cli_env, image_model, again, *args)
    assert proc.returncode == 0, proc.stderr
    assert pixels(again) == pixels(out)


def test_batches_are_numbered_with_their_own_seeds(
    cli_env: dict[str, str], image_model: Path, tmp_path: Path
) -> None:
    batch = tmp_path / "batch.png"
    proc = imagine(cli_env, image_model, batch, "--seed", "5", "--batch", "2")
    assert proc.returncode == 0, proc.stderr
    paths = [tmp_path / "batch-1.png", tmp_path / "batch-2.png"]
    assert proc.stdout.splitlines() == [str(p) for p in paths]
    assert not batch.exists()
    assert pixels(paths[0]) != pixels(paths[1])
    seeds = []
    for path in paths:
        with Image.open(path) as image:
            seeds.append(json.loads(image.info["triptych"])["seed"])
    # Each file records the seed that made it (the engine tests check that image 2 is
    # exactly what seed 6 alone makes).
    assert seeds == [5, 6]


def test_random_seed_is_recorded_and_image_to_image_runs(
    cli_env: dict[str, str], image_model: Path, tmp_path: Path
) -> None:
    source = tmp_path / "source.png"
    proc = imagine(cli_env, image_model, source)  # no --seed: a random one
    assert proc.returncode == 0, proc.stderr
    with Image.open(source) as image:
        seed = int(image.info["seed"])
    assert seed >= 0

    out = tmp_path / "variation.png"
    proc = imagine(cli_env, image_model, out, "--init", str(source), "--strength", "0.5",
                   "--steps", "2", "--seed", str(seed))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [str(out)]
    size, data = pixels(out)
    assert size == (64, 64)
    assert data != pixels(source)[1]
    with Image.open(out) as image:
        assert image.info["strength"] == "0.5"
        assert json.loads(image.info["triptych"])["init_image"] == str(source)


# --------------------------------------------------------------------------- errors


def _text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.safetensors"
    path.write_text("These are my notes, not a model.\n")
    return path


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--width", "100"], ["width", "multiple of 64"]),
        (["--steps", "0"], ["steps must be from 1"]),
        (["--steps", "100000"], ["steps must be from 1"]),
        (["--strength", "2", "--init", "README.md"], ["strength"]),
        (["--sampler", "warp_drive"], ["unknown sampler 'warp_drive'", "euler_a"]),
        (["--scheduler", "someday"], ["unknown scheduler"]),
        (["--batch", "0"], ["batch count"]),
        (["--init", "README.md"], ["not an image", "README.md"]),
        (["--init", "/nonexistent.png"], ["init image not found"]),
        (["--cfg", "-1"], ["CFG scale"]),
    ],
    ids=[
        "width",
        "steps-0",
        "steps-huge",
        "strength",
        "sampler",
        "scheduler",
        "batch",
        "init-text",
        "init-missing",
        "cfg",
    ],  # fmt: skip
)
def test_bad_parameters_are_one_line(
    cli_env: dict[str, str], image_model: Path, tmp_path: Path, args: list[str], words: list[str]
) -> None:
    out = tmp_path / "out.png"
    proc = triptych(cli_env, "imagine", "a cat", "--model", str(image_model), "-o", str(out),
                    "--threads", THREADS, *args)  # fmt: skip
    assert_one_line_error(proc, *words)
    assert not out.exists()


def test_bad_model_files_are_one_line(
    cli_env: dict[str, str], truncated_model: Path, tmp_path: Path
) -> None:
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    cases = [
        (Path("/nonexistent.safetensors"), ["not found"]),
        (truncated_model, ["truncated safetensors model"]),
        (_text_file(tmp_path), ["not a safetensors model"]),
        (ckpt, ["pickle", ".safetensors"]),
        (REPO / "README.md", ["not an image model"]),
    ]
    for model, words in cases:
        out = tmp_path / "out.png"
        proc = triptych(cli_env, "imagine", "a cat", "--model", str(model), "-o", str(out))
        assert_one_line_error(proc, str(model), *words)
        assert not out.exists()


def test_model_that_sd_cpp_refuses_is_one_line(cli_env: dict[str, str], tmp_path: Path) -> None:
    taesd = sd_fixtures.fixture("taesd")  # sound safetensors, but no SD model
    out = tmp_path / "out.png"
    proc = triptych(cli_env, "imagine", "a cat", "--model", str(taesd), "-o", str(out),
                    "--threads", THREADS)  # fmt: skip
    assert_one_line_error(proc, "could not load", str(taesd), "not recognise")
    assert not out.exists()


def test_bad_taesd_is_one_line(cli_env: dict[str, str], image_model: Path, tmp_path: Path) -> None:
    bad = _text_file(tmp_path)
    proc = triptych(cli_env, "imagine", "a cat", "--model", str(image_model), "--taesd", str(bad),
                    "-o", str(tmp_path / "out.png"))  # fmt: skip
    assert_one_line_error(proc, "not a safetensors model", str(bad))


def test_no_model_and_empty_prompt_are_one_line(cli_env: dict[str, str], tmp_path: Path) -> None:
    proc = triptych(cli_env, "imagine", "a cat", "-o", str(tmp_path / "out.png"))
    assert_one_line_error(proc, "--model")
    proc = triptych(cli_env, "imagine", "  ", "--model", "x.safetensors", "-o", "out.png")
    assert_one_line_error(proc, "prompt is empty")


def test_help_documents_batch_names(cli_env: dict[str, str]) -> None:
    proc = triptych(cli_env, "imagine", "--help")
    assert proc.returncode == 0
    assert "OUT-1.png" in proc.stdout
