"""tui/accel.py: which accelerator scripts/run builds for, and the flags per binding.

These run on any machine: the GPUs, nvcc and the versions are fakes passed in through
accel.Probe, so the pure logic is what is tested. The last tests run the real
`python -m tui.accel` on this machine.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tui import accel
from tui.gpu import GpuInfo

REPO = Path(__file__).resolve().parent.parent
NO_AMX = "-mno-amx-int8 -mno-amx-tile -mno-amx-bf16"


def fake_gpu(major: int, minor: int, index: int = 0) -> GpuInfo:
    return GpuInfo(index, f"Fake GPU {major}.{minor}", 80 * 2**30, 70 * 2**30, (major, minor))


def fake_probe(
    gpus: list[GpuInfo] | None = None,
    *,
    nvcc: str | None = "/fake/cuda/bin/nvcc",
    toolkit: tuple[int, int] | None = (12, 4),
    driver: tuple[int, int] | None = (12, 4),
    glslc: bool = False,
    system: str = "Linux",
    machine: str = "x86_64",
) -> accel.Probe:
    """A machine with these GPUs, this nvcc (or none), these toolkit/driver versions."""
    return accel.Probe(
        gpus=lambda: list(gpus or []),
        driver_cuda_version=lambda: driver,
        find_nvcc=lambda env: nvcc,
        toolkit_version=lambda path: toolkit,
        which=lambda name: "/fake/bin/glslc" if glslc and name == "glslc" else None,
        system=system,
        machine=machine,
    )


# --- TRIPTYCH_GPU


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("auto", None), ("cpu", "cpu"), ("CUDA", "cuda"),
     (" vulkan ", "vulkan"), ("metal", "metal")],
)  # fmt: skip
def test_override_values(value: str | None, expected: str | None) -> None:
    assert accel.parse_override(value) == expected


@pytest.mark.parametrize("value", ["bogus", "gpu", "rocm", "cuda12"])
def test_an_unknown_override_is_an_error(value: str) -> None:
    with pytest.raises(accel.AccelError, match="TRIPTYCH_GPU must be one of cpu, cuda"):
        accel.parse_override(value)


def test_override_cpu_wins_over_a_gpu() -> None:
    found = accel.detect({"TRIPTYCH_GPU": "cpu"}, fake_probe([fake_gpu(9, 0)]))
    assert found == accel.Accelerator("cpu")


def test_override_vulkan_needs_glslc() -> None:
    assert accel.detect({"TRIPTYCH_GPU": "vulkan"}, fake_probe(glslc=True)).kind == "vulkan"
    found = accel.detect({"TRIPTYCH_GPU": "vulkan"}, fake_probe(glslc=False))
    assert found.kind == "cpu" and "glslc" in found.problem


def test_override_metal_needs_macos() -> None:
    assert accel.detect({"TRIPTYCH_GPU": "metal"}, fake_probe(system="Darwin")).kind == "metal"
    found = accel.detect({"TRIPTYCH_GPU": "metal"}, fake_probe(system="Linux"))
    assert found.kind == "cpu" and "macOS" in found.problem


def test_override_cuda_without_a_visible_gpu_builds_for_the_default_archs() -> None:
    found = accel.detect({"TRIPTYCH_GPU": "cuda"}, fake_probe([], driver=None))
    assert (found.kind, found.arch, found.problem) == ("cuda", "", "")


# --- detection


def test_one_gpu_of_compute_capability_9_0_is_cuda_90() -> None:
    found = accel.detect({}, fake_probe([fake_gpu(9, 0)]))
    assert found.kind == "cuda" and found.arch == "90" and found.problem == ""
    assert found.line() == "cuda 90"
    assert found.nvcc == "/fake/cuda/bin/nvcc" and found.toolkit == (12, 4)


def test_two_different_gpus_build_for_both_archs() -> None:
    found = accel.detect({}, fake_probe([fake_gpu(9, 0, 0), fake_gpu(8, 6, 1), fake_gpu(9, 0, 2)]))
    assert found.line() == "cuda 86;90"


def test_no_gpu_is_cpu_without_a_word() -> None:
    found = accel.detect({}, fake_probe([]))
    assert found == accel.Accelerator("cpu")
    assert found.line() == "cpu"


def test_apple_silicon_is_metal() -> None:
    assert accel.detect({}, fake_probe(system="Darwin", machine="arm64")).kind == "metal"


def test_a_gpu_without_nvcc_is_cpu_with_one_line_naming_the_toolkit() -> None:
    found = accel.detect({}, fake_probe([fake_gpu(9, 0)], nvcc=None))
    assert found.kind == "cpu"
    assert "CUDA toolkit" in found.problem and "install" in found.problem
    assert "\n" not in found.problem


def test_a_toolkit_newer_than_the_driver_is_cpu_with_a_mismatch_line() -> None:
    found = accel.detect({}, fake_probe([fake_gpu(9, 0)], toolkit=(13, 0), driver=(12, 4)))
    assert found.kind == "cpu"
    assert "13.0" in found.problem and "12.4" in found.problem
    assert "update the NVIDIA driver" in found.problem and "\n" not in found.problem


def test_an_older_toolkit_than_the_driver_is_fine() -> None:
    found = accel.detect({}, fake_probe([fake_gpu(9, 0)], toolkit=(12, 4), driver=(13, 0)))
    assert found.line() == "cuda 90"


def test_a_newer_minor_toolkit_runs_on_the_driver() -> None:
    # CUDA's minor version compatibility: only a newer major version needs a newer driver.
    found = accel.detect({}, fake_probe([fake_gpu(8, 6)], toolkit=(12, 6), driver=(12, 4)))
    assert found.line() == "cuda 86" and not found.problem


def test_version_parsers() -> None:
    assert accel.parse_version_json('{"cuda": {"name": "CUDA SDK", "version": "13.0.2"}}') == (
        13,
        0,
    )
    assert accel.parse_version_json("not json") is None
    assert accel.parse_version_json('{"nvcc": {"version": "1.0"}}') is None
    nvcc_output = "Cuda compilation tools, release 13.0, V13.0.88\nBuild cuda_13.0.r13.0"
    assert accel.parse_nvcc_version(nvcc_output) == (13, 0)
    assert accel.parse_nvcc_version("something else") is None


def test_find_nvcc_prefers_path_then_cuda_home(tmp_path: Path) -> None:
    on_path = tmp_path / "path"
    home = tmp_path / "home"
    for folder in (on_path, home / "bin"):
        folder.mkdir(parents=True)
        nvcc = folder / "nvcc"
        nvcc.write_text("#!/bin/sh\n")
        nvcc.chmod(0o755)
    env = {"PATH": str(on_path), "CUDA_HOME": str(home)}
    assert accel.find_nvcc(env) == str(on_path / "nvcc")
    env["PATH"] = str(tmp_path / "nowhere")
    assert accel.find_nvcc(env) == str(home / "bin" / "nvcc")


def test_toolkit_version_reads_version_json_next_to_nvcc(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    nvcc = tmp_path / "bin" / "nvcc"
    nvcc.write_text("#!/bin/sh\necho 'release 11.8'\n")  # not run: version.json answers
    nvcc.chmod(0o755)
    (tmp_path / "version.json").write_text('{"cuda": {"version": "12.6.3"}}')
    assert accel.toolkit_version(str(nvcc)) == (12, 6)
    (tmp_path / "version.json").unlink()
    assert accel.toolkit_version(str(nvcc)) == (11, 8)


# --- flags per binding


def cmake_args(env: dict[str, str]) -> list[str]:
    """CMAKE_ARGS split the way scikit-build-core splits it."""
    return shlex.split(env["CMAKE_ARGS"])


def test_llama_cpu_keeps_llava_off_and_no_amx_on_x86_64() -> None:
    env = accel.build_env("cpu", "", "llama-cpp-python", env={}, system="Linux", machine="x86_64")
    assert cmake_args(env) == [
        "-DLLAVA_BUILD=OFF",
        f"-DCMAKE_C_FLAGS={NO_AMX}",
        f"-DCMAKE_CXX_FLAGS={NO_AMX}",
    ]
    arm = accel.build_env("cpu", "", "llama-cpp-python", env={}, system="Linux", machine="aarch64")
    assert cmake_args(arm) == ["-DLLAVA_BUILD=OFF"]


def test_the_users_cmake_args_come_first() -> None:
    env = accel.build_env(
        "cpu", "", "llama-cpp-python", env={"CMAKE_ARGS": "-DFOO=1"}, machine="aarch64"
    )
    assert cmake_args(env)[:2] == ["-DFOO=1", "-DLLAVA_BUILD=OFF"]


def test_cuda_flags_per_binding() -> None:
    kwargs = {"nvcc": "/fake/nvcc", "env": {}, "system": "Linux", "machine": "x86_64"}
    llama = accel.build_env("cuda", "86;90", "llama-cpp-python", **kwargs)
    assert cmake_args(llama) == [
        "-DLLAVA_BUILD=OFF",
        f"-DCMAKE_C_FLAGS={NO_AMX}",
        f"-DCMAKE_CXX_FLAGS={NO_AMX}",
        "-DGGML_CUDA=on",
        "-DCMAKE_CUDA_ARCHITECTURES=86;90",
    ]
    assert llama["CUDACXX"] == "/fake/nvcc"
    sd = accel.build_env("cuda", "90", "stable-diffusion-cpp-python", **kwargs)
    assert "-DSD_CUDA=ON" in cmake_args(sd)
    assert "-DCMAKE_CUDA_ARCHITECTURES=90" in cmake_args(sd)
    assert "-DLLAVA_BUILD=OFF" not in cmake_args(sd)
    whisper = accel.build_env("cuda", "90", "pywhispercpp", **kwargs)
    # pywhispercpp splits CMAKE_ARGS on spaces; its flags are plain variables instead.
    assert "CMAKE_ARGS" not in whisper
    assert whisper["GGML_CUDA"] == "1" and whisper["CMAKE_CUDA_ARCHITECTURES"] == "90"
    # Beside the extension, not in the deleted build folder (setup.py only does this for -e).
    assert whisper["CMAKE_INSTALL_RPATH"] == "$ORIGIN"
    assert whisper["CMAKE_BUILD_WITH_INSTALL_RPATH"] == "ON"
    assert whisper["CMAKE_C_FLAGS"] == NO_AMX


def test_vulkan_flags_per_binding() -> None:
    kwargs = {"env": {}, "system": "Linux", "machine": "aarch64"}
    llama = accel.build_env("vulkan", "", "llama-cpp-python", **kwargs)
    assert cmake_args(llama) == ["-DLLAVA_BUILD=OFF", "-DGGML_VULKAN=on"]
    sd = accel.build_env("vulkan", "", "stable-diffusion-cpp-python", **kwargs)
    assert cmake_args(sd) == ["-DSD_VULKAN=ON"]
    whisper = accel.build_env("vulkan", "", "pywhispercpp", **kwargs)
    assert whisper["GGML_VULKAN"] == "1" and whisper["CMAKE_INSTALL_RPATH"] == "$ORIGIN"


def test_metal_flags_per_binding() -> None:
    kwargs = {"env": {}, "system": "Darwin", "machine": "arm64"}
    assert "-DGGML_METAL=on" in cmake_args(
        accel.build_env("metal", "", "llama-cpp-python", **kwargs)
    )
    assert cmake_args(accel.build_env("metal", "", "stable-diffusion-cpp-python", **kwargs)) == [
        "-DSD_METAL=ON"
    ]
    whisper = accel.build_env("metal", "", "pywhispercpp", **kwargs)
    assert whisper["GGML_METAL"] == "1" and whisper["CMAKE_INSTALL_RPATH"] == "@loader_path"
    # On macOS llama.cpp builds Metal unless told not to: cpu means the CPU.
    cpu = accel.build_env("cpu", "", "llama-cpp-python", **kwargs)
    assert "-DGGML_METAL=off" in cmake_args(cpu)


def test_cpu_flags_name_no_gpu_backend() -> None:
    for binding in accel.BINDINGS:
        env = accel.build_env("cpu", "", binding, env={}, system="Linux", machine="x86_64")
        text = " ".join(env.values())
        for backend in ("CUDA", "VULKAN", "METAL"):
            assert backend not in text, (binding, env)


def test_unknown_kind_or_binding_is_an_error() -> None:
    with pytest.raises(accel.AccelError):
        accel.build_env("rocm", "", "llama-cpp-python")
    with pytest.raises(accel.AccelError):
        accel.build_env("cpu", "", "whisper")


# --- stamp, pins, wheel cache


def test_pins_come_from_the_engines_extra() -> None:
    pins = accel.pins(REPO / "pyproject.toml")
    assert set(pins) == set(accel.BINDINGS)
    assert all(version[0].isdigit() for version in pins.values())


def test_the_stamp_key_differs_between_cpu_and_cuda() -> None:
    pyproject = REPO / "pyproject.toml"
    cpu = accel.stamp_key("cpu", "", pyproject=pyproject)
    assert cpu == accel.stamp_key("cpu", "", pyproject=pyproject)
    cuda_90 = accel.stamp_key("cuda", "90", pyproject=pyproject)
    assert cuda_90 != cpu
    assert accel.stamp_key("cuda", "86;90", pyproject=pyproject) != cuda_90
    assert accel.stamp_key("vulkan", "", pyproject=pyproject) not in (cpu, cuda_90)


def test_wheel_folders_are_per_accelerator_arch_and_toolkit(tmp_path: Path) -> None:
    assert accel.wheel_dir("cuda", "90", (13, 0), tmp_path) == tmp_path / "cuda13.0-90"
    assert accel.wheel_dir("cuda", "86;90", (12, 4), tmp_path) == tmp_path / "cuda12.4-86_90"
    assert accel.wheel_dir("vulkan", "", None, tmp_path) == tmp_path / "vulkan"


def test_a_cached_wheel_is_found_only_for_a_compatible_python(tmp_path: Path) -> None:
    here = f"cp{sys.version_info.major}{sys.version_info.minor}"
    (tmp_path / "pywhispercpp-1.5.1-cp39-cp39-linux_x86_64.whl").touch()
    assert accel._usable_wheel(tmp_path, "pywhispercpp", "1.5.1") is None
    wheel = tmp_path / f"pywhispercpp-1.5.1-{here}-{here}-linux_x86_64.whl"
    wheel.touch()
    assert accel._usable_wheel(tmp_path, "pywhispercpp", "1.5.1") == wheel
    llama = tmp_path / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
    llama.touch()
    assert accel._usable_wheel(tmp_path, "llama-cpp-python", "0.3.36") == llama
    assert accel._usable_wheel(tmp_path, "llama-cpp-python", "0.3.35") is None


def test_build_wheels_is_not_for_the_cpu() -> None:
    with pytest.raises(accel.AccelError):
        accel.build_wheels("cpu", "")


# --- the real command, on this machine


def run_accel(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "TRIPTYCH_GPU"}
    return subprocess.run(
        [sys.executable, "-m", "tui.accel", *args],
        cwd=REPO,
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_detect_on_this_machine_answers_one_line() -> None:
    """On a machine without an NVIDIA GPU (the test machines) this is "cpu", silently."""
    proc = run_accel("detect")
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert line.split()[0] in accel.KINDS and "\n" not in line
    if not accel.gpu.gpus():
        assert line == "cpu" and proc.stderr == ""


def test_detect_with_a_bogus_override_fails_with_one_line() -> None:
    proc = run_accel("detect", TRIPTYCH_GPU="bogus")
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "TRIPTYCH_GPU" in proc.stderr and "bogus" in proc.stderr


def test_env_prints_shell_quoted_lines() -> None:
    proc = run_accel("env", "llama-cpp-python", "--kind", "cpu")
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.splitlines()
    key, _, value = line.partition("=")
    assert key == "CMAKE_ARGS"
    assert "-DLLAVA_BUILD=OFF" in shlex.split(shlex.split(value)[0])


def test_the_module_imports_nothing_heavy() -> None:
    code = (
        "import sys, tui.accel; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('textual', 'llama_cpp', 'stable_diffusion_cpp', 'pywhispercpp', 'numpy')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_build_wheels_builds_each_binding_once_with_its_own_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fake pip (it writes an empty wheel) records each build's command and flags."""
    calls: list[tuple[list[str], dict[str, str]]] = []
    here = f"cp{sys.version_info.major}{sys.version_info.minor}"

    def fake_pip_run(command: list[str], env: dict[str, str], **kwargs: object) -> object:
        calls.append((command, env))
        name, version = command[-3].split("==")
        stem = name.replace("-", "_")
        folder = Path(command[-1])
        (folder / f"{stem}-{version}-{here}-{here}-linux_x86_64.whl").touch()
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(accel.subprocess, "run", fake_pip_run)
    monkeypatch.setattr(accel, "find_nvcc", lambda env: "/fake/cuda/bin/nvcc")
    monkeypatch.setattr(accel, "toolkit_version", lambda nvcc: (13, 0))
    monkeypatch.delenv("CMAKE_BUILD_PARALLEL_LEVEL", raising=False)
    monkeypatch.delenv("CMAKE_ARGS", raising=False)
    wheels = accel.build_wheels("cuda", "90", root=tmp_path, pyproject=REPO / "pyproject.toml")
    assert [w.parent for w in wheels] == [tmp_path / "cuda13.0-90"] * 3
    assert [c[0][-3].split("==")[0] for c in calls] == list(accel.BINDINGS)
    for command, env in calls:
        assert "--no-cache-dir" in command and "--no-deps" in command
        assert command[command.index("--no-binary") + 1] == command[-3].split("==")[0]
        assert env["CMAKE_BUILD_PARALLEL_LEVEL"].isdigit()
    assert "-DGGML_CUDA=on" in calls[0][1]["CMAKE_ARGS"]
    assert "-DSD_CUDA=ON" in calls[1][1]["CMAKE_ARGS"]
    assert calls[2][1]["GGML_CUDA"] == "1" and "CMAKE_ARGS" not in calls[2][1]
    # Cached now: a second run builds nothing.
    calls.clear()
    again = accel.build_wheels("cuda", "90", root=tmp_path, pyproject=REPO / "pyproject.toml")
    assert again == wheels and calls == []


def test_a_failed_build_names_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_failing_pip(command: list[str], **kwargs: object) -> object:
        return subprocess.CompletedProcess(command, 1)

    monkeypatch.setattr(accel.subprocess, "run", fake_failing_pip)
    with pytest.raises(accel.AccelError) as failure:
        accel.build_wheels("vulkan", "", root=tmp_path, pyproject=REPO / "pyproject.toml")
    message = str(failure.value)
    version = accel.pins(REPO / "pyproject.toml")["llama-cpp-python"]
    log = tmp_path / "vulkan" / f"llama-cpp-python-{version}.log"
    assert f"log: {log}" in message and "using the CPU build" in message
    assert log.is_file() and "GGML_VULKAN" in log.read_text()


def test_triptych_gpu_prints_what_it_found(capsys: pytest.CaptureFixture[str]) -> None:
    from tui.cli import main

    assert main(["gpu"]) == 0
    out = capsys.readouterr().out
    assert "scripts/run builds for:" in out and "installed bindings built for:" in out
    assert ("NVIDIA GPUs: none found" in out) == (not accel.gpu.gpus())
