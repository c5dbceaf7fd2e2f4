"""scripts/make-fixtures: random-weight Stable Diffusion files that stable-diffusion.cpp loads.

The models are only ever loaded in a subprocess: stable-diffusion.cpp segfaults on a bad
file, and that must fail one test, not kill the test run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "make-fixtures"
FIXTURES = REPO / ".fixtures"  # shared with scripts/test, which runs the script first
ROLES = ["image-model", "taesd", "vae"]
ALL_ROLES = [*ROLES, "whisper-model"]  # the Whisper model: tests/test_whisper_fixture.py


def run_script(*args: str) -> list[tuple[str, Path]]:
    proc = subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=240, check=False
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line.split(" ", 1) for line in proc.stdout.splitlines()]
    assert all(len(parts) == 2 for parts in lines), proc.stdout
    return [(role, Path(path)) for role, path in lines]


@pytest.fixture(scope="module")
def fixture_files() -> dict[str, Path]:
    files = dict(run_script(str(FIXTURES)))
    assert list(files) == ALL_ROLES
    return {role: files[role] for role in ROLES}


def read_header(path: Path) -> dict:
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        assert 0 < size < 10_000_000
        return json.loads(f.read(size))


def test_prints_one_line_per_role(fixture_files: dict[str, Path]) -> None:
    assert list(fixture_files) == ROLES
    for path in fixture_files.values():
        assert path.is_absolute()
        assert path.is_file()
        assert path.suffix == ".safetensors"
        assert path.parent == (FIXTURES / "sd").resolve()


def test_second_run_uses_the_cache(fixture_files: dict[str, Path]) -> None:
    mtimes = {role: path.stat().st_mtime_ns for role, path in fixture_files.items()}
    start = time.perf_counter()
    again = dict(run_script(str(FIXTURES)))
    elapsed = time.perf_counter() - start
    again = {role: path for role, path in again.items() if role in ROLES}
    assert again == fixture_files
    assert {role: path.stat().st_mtime_ns for role, path in again.items()} == mtimes
    assert elapsed < 10  # ~0.15 s; generous for a busy machine


def test_runs_with_a_python_without_numpy(fixture_files: dict[str, Path]) -> None:
    # python -S skips site-packages, so numpy is missing and the script re-runs itself
    # with .venv/bin/python.
    env = {k: v for k, v in os.environ.items() if k != "TRIPTYCH_MAKE_FIXTURES_REEXEC"}
    proc = subprocess.run(
        [sys.executable, "-S", str(SCRIPT), str(FIXTURES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert [line.split(" ")[0] for line in proc.stdout.splitlines()] == ALL_ROLES


def test_safetensors_headers_parse(fixture_files: dict[str, Path]) -> None:
    for role, path in fixture_files.items():
        header = read_header(path)
        meta = header.pop("__metadata__")
        assert meta["role"] == role
        end = 0
        for name, info in sorted(header.items(), key=lambda item: item[1]["data_offsets"]):
            assert info["dtype"] == "F16", name
            begin, stop = info["data_offsets"]
            assert begin == end, name
            count = 1
            for dim in info["shape"]:
                count *= dim
            assert stop - begin == 2 * count, name
            end = stop
        with open(path, "rb") as f:
            data_start = 8 + int.from_bytes(f.read(8), "little")
        assert path.stat().st_size == data_start + end


def test_tensor_layout(fixture_files: dict[str, Path]) -> None:
    def shapes(role: str) -> dict[str, list[int]]:
        header = read_header(fixture_files[role])
        return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}

    model = shapes("image-model")
    clip = "cond_stage_model.transformer.text_model."
    assert model[clip + "embeddings.token_embedding.weight"] == [49408, 768]
    assert model["model.diffusion_model.input_blocks.0.0.weight"] == [320, 4, 3, 3]
    # Tiny UNet: no middle block, attention at the full-resolution output block.
    assert not any(k.startswith("model.diffusion_model.middle_block.") for k in model)
    assert "model.diffusion_model.output_blocks.7.1.proj_out.weight" in model
    assert model["first_stage_model.decoder.conv_in.weight"] == [128, 4, 3, 3]
    assert model["first_stage_model.encoder.conv_in.weight"] == [128, 3, 3, 3]

    tae = shapes("taesd")
    assert tae["decoder.layers.0.weight"] == [64, 4, 3, 3]
    assert tae["encoder.layers.14.weight"] == [4, 64, 3, 3]
    assert len(tae) == 134

    vae = shapes("vae")
    assert vae["decoder.conv_out.weight"] == [3, 32, 3, 3]
    assert vae["quant_conv.weight"] == [8, 8, 1, 1]


GENERATE = r"""
import json, sys
import numpy as np
from PIL import Image
import stable_diffusion_cpp as sdc
from stable_diffusion_cpp import StableDiffusion

model, taesd, vae = sys.argv[1:4]
out = {}
# One thread: ggml's threads spin at each barrier, so with 2 threads on a 2-core machine
# that is busy with anything else, a generation can take 5-10x longer.
THREADS = 1

def gen(sd, seed, **kw):
    images = sd.generate_image(
        prompt="a lighthouse", width=64, height=64, sample_steps=2, cfg_scale=1.0,
        seed=seed, **kw)
    return np.asarray(images[0].convert("RGB"))

def init(seed):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))

sd = StableDiffusion(model_path=model, n_threads=THREADS, verbose=False)
a, b, c = gen(sd, 1), gen(sd, 1), gen(sd, 2)
out["shape"] = list(a.shape)
out["std"] = float(a.std())
out["same_seed_identical"] = bool((a == b).all())
out["other_seed_differs"] = bool((a != c).any())
steps = []
gen(sd, 1, progress_callback=lambda step, n, t: steps.append([step, n]))
# The binding leaves its (soon freed) ctypes callback registered in sd.cpp: a later call
# without a callback would jump to freed memory. Unregister it.
sdc.sd_set_progress_callback(None, None)
out["progress"] = steps
# With 2 steps, strength < 0.5 starts from the last, nearly noise-free sigma, so the
# result follows the init image.
i1 = gen(sd, 1, init_image=init(1), strength=0.3)
i2 = gen(sd, 1, init_image=init(2), strength=0.3)
out["img2img_follows_init"] = bool(np.abs(i1.astype(int) - i2).mean() > 1)
sd.close()

sd = StableDiffusion(model_path=model, taesd_path=taesd, n_threads=THREADS, verbose=False)
out["taesd_changes_decode"] = bool((gen(sd, 1) != a).any())
sd.close()

sd = StableDiffusion(model_path=model, vae_path=vae, n_threads=THREADS, verbose=False)
out["vae_changes_decode"] = bool((gen(sd, 1) != a).any())
sd.close()
print("RESULT " + json.dumps(out))
"""


def test_generates_with_stable_diffusion_cpp(fixture_files: dict[str, Path]) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", GENERATE, *(str(fixture_files[r]) for r in ROLES)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr}"
    result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert result, proc.stdout[-3000:]
    out = json.loads(result[-1].removeprefix("RESULT "))
    assert out["shape"] == [64, 64, 3]
    assert out["std"] > 2  # not a constant image
    assert out["same_seed_identical"]
    assert out["other_seed_differs"]
    assert out["progress"][-1] == [2, 2]
    assert out["img2img_follows_init"]
    assert out["taesd_changes_decode"]
    assert out["vae_changes_decode"]
