"""Which accelerator the engine bindings are built for, and how to build them for it.

scripts/_setup.sh runs this as ``.venv/bin/python -m tui.accel COMMAND`` from the
repo root *before* the project is pip-installed, so it may import only the standard
library and tui.gpu (whose NVML binding, nvidia-ml-py, the setup installs first).

Commands (stdout is for the shell; every message is one line on stderr):

  detect                      "cuda 90", "vulkan", "metal" or "cpu"
  env BINDING [--kind --arch] KEY=VALUE lines (shell-quoted) to build BINDING with
  stamp-key --kind --arch     the install stamp: changes when the choice would
  pins                        "name==version" of each binding, from pyproject.toml
  build-wheels --kind --arch  builds the bindings for a GPU into our wheel cache and
                              prints the wheels' paths

Why our own wheel cache: pip caches a wheel built from an sdist under the sdist's URL,
not under CMAKE_ARGS, so a CPU wheel in pip's cache would silently be reused for a
CUDA build. GPU wheels are therefore built with --no-cache-dir into
``$XDG_CACHE_HOME/triptych/wheels/<kind>-<arch>/`` and kept there, and pip's own cache
keeps holding the CPU wheels only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tui import gpu

KINDS = ("cpu", "cuda", "vulkan", "metal")
BINDINGS = ("llama-cpp-python", "stable-diffusion-cpp-python", "pywhispercpp")
ACCEL_FILE = ".triptych-accel"
"""Written into the venv by scripts/_setup.sh: what the installed bindings were built for."""

# ggml's AMX kernels crash on some Xeons/VMs; -march=native would switch them on.
_NO_AMX = "-mno-amx-int8 -mno-amx-tile -mno-amx-bf16"
_CUDA_DOWNLOAD = "https://developer.nvidia.com/cuda-downloads"


class AccelError(Exception):
    """A setting or request that cannot be honoured (said as one line)."""


@dataclass(frozen=True)
class Accelerator:
    """What to build the bindings for, and why not a GPU when there is one."""

    kind: str
    """One of KINDS."""
    arch: str = ""
    """CMAKE_CUDA_ARCHITECTURES for cuda, e.g. "90" or "86;90"; "" otherwise."""
    toolkit: tuple[int, int] | None = None
    """The CUDA toolkit version (cuda only)."""
    nvcc: str | None = None
    """The nvcc that was found (cuda only)."""
    problem: str = ""
    """One line for the user: why this is not the GPU build they could have."""

    def line(self) -> str:
        """What `detect` prints: "cuda 90", "vulkan", "cpu"."""
        return f"{self.kind} {self.arch}" if self.arch else self.kind


@dataclass
class Probe:
    """The machine as detect() sees it; tests pass fakes instead of the real queries."""

    gpus: Callable[[], list[gpu.GpuInfo]] = gpu.gpus
    driver_cuda_version: Callable[[], tuple[int, int] | None] = gpu.driver_cuda_version
    find_nvcc: Callable[[Mapping[str, str]], str | None] = field(default_factory=lambda: find_nvcc)
    toolkit_version: Callable[[str], tuple[int, int] | None] = field(
        default_factory=lambda: toolkit_version
    )
    which: Callable[[str], str | None] = shutil.which
    system: str = field(default_factory=platform.system)
    machine: str = field(default_factory=platform.machine)


def parse_override(value: str | None) -> str | None:
    """TRIPTYCH_GPU as a kind, or None to detect (unset, empty or "auto").

    Raises AccelError for anything else, so that a typo never silently builds for the CPU.
    """
    text = (value or "").strip().lower()
    if text in ("", "auto"):
        return None
    if text in KINDS:
        return text
    raise AccelError(
        f"TRIPTYCH_GPU must be one of {', '.join(KINDS)} (or unset to detect), not {value!r}"
    )


def cuda_arch(gpus: Sequence[gpu.GpuInfo]) -> str:
    """CMAKE_CUDA_ARCHITECTURES for exactly these GPUs, e.g. "86;90" (oldest first).

    Building for only the GPUs that are there takes a fraction of the time of
    llama.cpp's default list of every architecture.
    """
    capabilities = sorted({g.compute_capability for g in gpus})
    return ";".join(f"{major}{minor}" for major, minor in capabilities)


def find_nvcc(env: Mapping[str, str]) -> str | None:
    """nvcc on PATH, else $CUDA_HOME/bin/nvcc, else /usr/local/cuda/bin/nvcc."""
    found = shutil.which("nvcc", path=env.get("PATH"))
    if found:
        return found
    candidates = []
    if env.get("CUDA_HOME"):
        candidates.append(Path(env["CUDA_HOME"]) / "bin" / "nvcc")
    candidates.append(Path("/usr/local/cuda/bin/nvcc"))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def parse_version_json(text: str) -> tuple[int, int] | None:
    """(major, minor) from a CUDA toolkit's version.json ({"cuda": {"version": "13.0.2"}})."""
    try:
        version = json.loads(text)["cuda"]["version"]
    except (ValueError, KeyError, TypeError):
        return None
    match = re.match(r"(\d+)\.(\d+)", str(version))
    return (int(match[1]), int(match[2])) if match else None


def parse_nvcc_version(text: str) -> tuple[int, int] | None:
    """(major, minor) from `nvcc --version` ("... release 13.0, V13.0.88")."""
    match = re.search(r"release (\d+)\.(\d+)", text)
    return (int(match[1]), int(match[2])) if match else None


def toolkit_version(nvcc: str) -> tuple[int, int] | None:
    """The CUDA toolkit version of this nvcc: its version.json, else `nvcc --version`.

    version.json needs no process; nvcc may be a wrapper script outside the toolkit
    (then there is no version.json next to it and nvcc itself answers).
    """
    version_json = Path(nvcc).resolve().parent.parent / "version.json"
    try:
        parsed = parse_version_json(version_json.read_text(encoding="utf-8"))
    except OSError:
        parsed = None
    if parsed:
        return parsed
    try:
        proc = subprocess.run(
            [nvcc, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_nvcc_version(proc.stdout)


def _version(version: tuple[int, int] | None) -> str:
    return f"{version[0]}.{version[1]}" if version else "unknown"


def _cuda(probe: Probe, env: Mapping[str, str], forced: bool) -> Accelerator:
    """The CUDA build if the toolkit is there and the driver can run what it builds."""
    found = probe.gpus()
    arch = cuda_arch(found)
    nvcc = probe.find_nvcc(env)
    if nvcc is None:
        what = "TRIPTYCH_GPU=cuda is set" if forced else "an NVIDIA GPU is here"
        return Accelerator(
            "cpu",
            problem=f"{what} but no CUDA toolkit (nvcc) was found: install the CUDA toolkit"
            f" ({_CUDA_DOWNLOAD}) or set CUDA_HOME, then run again; building for the CPU"
            " (TRIPTYCH_GPU=cpu silences this)",
        )
    toolkit = probe.toolkit_version(nvcc)
    driver = probe.driver_cuda_version()
    # CUDA's minor version compatibility: a 12.6 toolkit's SASS runs on a driver for 12.4;
    # only a newer major version needs a newer driver.
    if toolkit and driver and toolkit[0] > driver[0]:
        return Accelerator(
            "cpu",
            problem=f"the CUDA toolkit is {_version(toolkit)} but the NVIDIA driver supports"
            f" CUDA up to {_version(driver)}: update the NVIDIA driver (or install CUDA toolkit"
            f" {_version(driver)}); building for the CPU (TRIPTYCH_GPU=cpu silences this)",
        )
    return Accelerator("cuda", arch=arch, toolkit=toolkit, nvcc=nvcc)


def detect(env: Mapping[str, str] | None = None, probe: Probe | None = None) -> Accelerator:
    """What scripts/run should build the bindings for on this machine.

    TRIPTYCH_GPU in env overrides the detection. Otherwise: an NVIDIA GPU (seen by NVML)
    means CUDA when a usable toolkit is installed, Apple Silicon means Metal, and
    anything else the CPU. Raises AccelError for a TRIPTYCH_GPU that is not a kind.
    """
    env = os.environ if env is None else env
    probe = probe or Probe()
    forced = parse_override(env.get("TRIPTYCH_GPU"))
    if forced == "cpu":
        return Accelerator("cpu")
    if forced == "cuda":
        return _cuda(probe, env, forced=True)
    if forced == "vulkan":
        if probe.which("glslc") is None:
            return Accelerator(
                "cpu",
                problem="TRIPTYCH_GPU=vulkan needs the Vulkan SDK, but glslc was not found"
                " (Debian/Ubuntu: apt-get install libvulkan-dev glslc); building for the CPU",
            )
        return Accelerator("vulkan")
    if forced == "metal":
        if probe.system != "Darwin":
            return Accelerator(
                "cpu", problem="TRIPTYCH_GPU=metal needs macOS; building for the CPU"
            )
        return Accelerator("metal")
    if probe.gpus():
        return _cuda(probe, env, forced=False)
    if probe.system == "Darwin" and probe.machine == "arm64":
        return Accelerator("metal")
    return Accelerator("cpu")


def _cmake_args(*args: str) -> str:
    """CMAKE_ARGS as scikit-build-core splits it (shlex): a flag list stays one value."""
    return " ".join(f'"{arg}"' if re.search(r"[\s;]", arg) else arg for arg in args if arg)


def build_env(
    kind: str,
    arch: str,
    binding: str,
    *,
    nvcc: str | None = None,
    env: Mapping[str, str] | None = None,
    system: str | None = None,
    machine: str | None = None,
) -> dict[str, str]:
    """The environment variables that build `binding` for `kind` (added to os.environ).

    llama-cpp-python and stable-diffusion-cpp-python read CMAKE_ARGS (shlex-split); the
    user's own CMAKE_ARGS comes first. pywhispercpp's setup.py splits CMAKE_ARGS on
    spaces (so a quoted flag list would break) but turns every environment variable
    into a -DKEY=VALUE define, so its flags are plain variables instead.
    """
    if kind not in KINDS:
        raise AccelError(f"unknown accelerator {kind!r} (one of {', '.join(KINDS)})")
    if binding not in BINDINGS:
        raise AccelError(f"unknown binding {binding!r} (one of {', '.join(BINDINGS)})")
    env = os.environ if env is None else env
    system = system or platform.system()
    machine = machine or platform.machine()
    x86 = machine in ("x86_64", "AMD64")
    no_amx = [f"-DCMAKE_C_FLAGS={_NO_AMX}", f"-DCMAKE_CXX_FLAGS={_NO_AMX}"] if x86 else []
    arch_flag = [f"-DCMAKE_CUDA_ARCHITECTURES={arch}"] if kind == "cuda" and arch else []
    out: dict[str, str] = {}
    if kind == "cuda" and nvcc:
        out["CUDACXX"] = nvcc  # CMake's CUDA compiler, also when nvcc is not on PATH
    if binding == "pywhispercpp":
        # Its setup.py sets these only for editable installs; without them the extension
        # looks for libwhisper/libggml in the deleted build folder instead of beside itself.
        out["CMAKE_INSTALL_RPATH"] = "@loader_path" if system == "Darwin" else "$ORIGIN"
        out["CMAKE_BUILD_WITH_INSTALL_RPATH"] = "ON"
        if x86:
            out["CMAKE_C_FLAGS"] = out["CMAKE_CXX_FLAGS"] = _NO_AMX
        if kind == "cuda":
            out["GGML_CUDA"] = "1"
            if arch:
                out["CMAKE_CUDA_ARCHITECTURES"] = arch
        elif kind == "vulkan":
            out["GGML_VULKAN"] = "1"
        elif kind == "metal":
            out["GGML_METAL"] = "1"
        elif system == "Darwin":
            out["GGML_METAL"] = "0"
        return out
    if binding == "llama-cpp-python":
        flags = ["-DLLAVA_BUILD=OFF", *no_amx]
        flags += {
            "cuda": ["-DGGML_CUDA=on", *arch_flag],
            "vulkan": ["-DGGML_VULKAN=on"],
            "metal": ["-DGGML_METAL=on"],
            # llama.cpp switches Metal on by default on macOS; cpu means the CPU.
            "cpu": ["-DGGML_METAL=off"] if system == "Darwin" else [],
        }[kind]
    else:
        flags = [*no_amx]
        flags += {
            "cuda": ["-DSD_CUDA=ON", *arch_flag],
            "vulkan": ["-DSD_VULKAN=ON"],
            "metal": ["-DSD_METAL=ON"],
            "cpu": [],
        }[kind]
    user = env.get("CMAKE_ARGS", "")
    out["CMAKE_ARGS"] = (user + " " if user else "") + _cmake_args(*flags)
    return out


def pins(pyproject: Path = Path("pyproject.toml")) -> dict[str, str]:
    """{binding: version} from the engines extra, so the versions live in one place."""
    with pyproject.open("rb") as file:
        engines = tomllib.load(file)["project"]["optional-dependencies"]["engines"]
    found: dict[str, str] = {}
    for requirement in engines:
        match = re.match(r"\s*([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*==\s*([^\s;,]+)", requirement)
        if match:
            found[match[1].lower()] = match[2]
    missing = [b for b in BINDINGS if b not in found]
    if missing:
        raise AccelError(f"pyproject.toml's engines extra pins no version of {', '.join(missing)}")
    return found


def stamp_key(kind: str, arch: str, *, pyproject: Path = Path("pyproject.toml")) -> str:
    """The install stamp: changes with pyproject.toml, the accelerator, its arch, the
    CUDA toolkit version and every build flag, so any of them changing rebuilds once."""
    digest = hashlib.sha256(pyproject.read_bytes())
    toolkit = None
    nvcc = find_nvcc(os.environ) if kind == "cuda" else None
    if nvcc:
        toolkit = toolkit_version(nvcc)
    digest.update(f"\n{kind} {arch} {_version(toolkit) if toolkit else ''}\n".encode())
    for binding in BINDINGS:
        for key, value in sorted(build_env(kind, arch, binding, nvcc=nvcc).items()):
            digest.update(f"{binding} {key}={value}\n".encode())
    return digest.hexdigest()


def wheel_cache() -> Path:
    """Our own cache of GPU wheels (see the module docstring for why not pip's)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "triptych" / "wheels"


def wheel_dir(kind: str, arch: str, toolkit: tuple[int, int] | None, root: Path) -> Path:
    """One folder per accelerator, arch and CUDA toolkit: a wheel built against CUDA 12
    needs CUDA 12's runtime, so a toolkit upgrade must not reuse it."""
    name = kind + (_version(toolkit) if kind == "cuda" and toolkit else "")
    if arch:
        name += "-" + arch.replace(";", "_")
    return root / name


def _usable_wheel(folder: Path, binding: str, version: str) -> Path | None:
    """A wheel of binding==version in folder that this Python can install, if any."""
    stem = re.sub(r"[-_.]+", "_", binding).lower()
    python_tags = {"py3", f"cp{sys.version_info.major}{sys.version_info.minor}"}
    for wheel in sorted(folder.glob(f"{stem}-{version}-*.whl")):
        tags = wheel.name[:-4].split("-")
        if len(tags) >= 5 and set(tags[-3].split(".")) & python_tags:
            return wheel
    return None


def _parallel_env() -> dict[str, str]:
    if os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL"):
        return {}
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        cores = os.cpu_count() or 1
    return {"CMAKE_BUILD_PARALLEL_LEVEL": str(cores)}


def build_wheels(
    kind: str, arch: str, *, root: Path | None = None, pyproject: Path = Path("pyproject.toml")
) -> list[Path]:
    """Build each binding's wheel for kind/arch unless it is cached; their paths.

    One binding after another, each with its own flags and its own log. The first
    failure stops (the caller falls back to the CPU build) with AccelError naming the log.
    """
    if kind == "cpu":
        raise AccelError("build-wheels is for a GPU accelerator; the CPU build uses pip's cache")
    nvcc = find_nvcc(os.environ) if kind == "cuda" else None
    toolkit = toolkit_version(nvcc) if nvcc else None
    folder = wheel_dir(kind, arch, toolkit, root or wheel_cache())
    folder.mkdir(parents=True, exist_ok=True)
    label = f"{kind.upper() if kind == 'cuda' else kind.capitalize()}"
    label += f" (arch {arch})" if arch else ""
    wheels: list[Path] = []
    for binding, version in pins(pyproject).items():
        if binding not in BINDINGS:
            continue
        cached = _usable_wheel(folder, binding, version)
        if cached:
            wheels.append(cached)
            continue
        log = folder / f"{binding}-{version}.log"
        _say(f"building {binding} {version} for {label}; this takes a few minutes; log: {log}")
        flags = build_env(kind, arch, binding, nvcc=nvcc)
        env = {**os.environ, **_parallel_env(), **flags}
        command = [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-cache-dir",
            "--no-binary",
            binding,
            f"{binding}=={version}",
            "-w",
            str(folder),
        ]
        with log.open("w", encoding="utf-8") as out:
            out.write(f"$ {shlex.join(command)}\n")
            out.write("".join(f"{k}={shlex.quote(v)}\n" for k, v in flags.items()))
            out.flush()
            proc = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        built = _usable_wheel(folder, binding, version)
        if proc.returncode != 0 or built is None:
            raise AccelError(
                f"the {label} build of {binding} failed (log: {log}); using the CPU build"
            )
        wheels.append(built)
    return wheels


def _say(message: str) -> None:
    """One line on stderr, in the voice of scripts/_setup.sh."""
    print(f"triptych: {message}", file=sys.stderr, flush=True)


def _installed_accel(prefix: Path) -> str:
    """What scripts/_setup.sh last installed the bindings for ("" when it never said)."""
    try:
        return (prefix / ACCEL_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def _llama_offload(python: str) -> str:
    """Whether the installed llama.cpp can offload to a GPU, asked in a child process
    (the binding must never load into the UI process)."""
    code = "import llama_cpp; print(bool(llama_cpp.llama_supports_gpu_offload()))"
    try:
        proc = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "could not ask"
    answer = proc.stdout.strip().splitlines()[-1:] if proc.returncode == 0 else []
    if answer == ["True"]:
        return "yes"
    if answer == ["False"]:
        return "no"
    return "not installed" if "ModuleNotFoundError" in proc.stderr else "could not ask"


def report(env: Mapping[str, str] | None = None) -> list[str]:
    """The lines of `triptych gpu`: GPUs, driver, toolkit, the build choice and the bindings."""
    env = os.environ if env is None else env
    lines: list[str] = []
    found = gpu.gpus()
    for g in found:
        lines.append(
            f"GPU {g.index}: {g.name}, {g.free_bytes / 2**30:.1f} GiB free of"
            f" {g.total_bytes / 2**30:.1f} GiB, compute capability"
            f" {g.compute_capability[0]}.{g.compute_capability[1]} (arch {g.cuda_arch})"
        )
    if not found:
        why = gpu.nvml_problem()
        lines.append("NVIDIA GPUs: none found" + (f" ({why})" if why else ""))
    driver = gpu.driver_cuda_version()
    if driver:
        lines.append(f"NVIDIA driver: supports CUDA up to {_version(driver)}")
    nvcc = find_nvcc(env)
    if nvcc:
        lines.append(f"CUDA toolkit: {_version(toolkit_version(nvcc))} ({nvcc})")
    else:
        lines.append("CUDA toolkit: not found (no nvcc)")
    try:
        choice = detect(env)
        lines.append(f"scripts/run builds for: {choice.line()}")
        if choice.problem:
            lines.append(f"problem: {choice.problem}")
    except AccelError as error:
        lines.append(f"problem: {error}")
    installed = _installed_accel(Path(sys.prefix))
    lines.append(
        f"installed bindings built for: {installed or 'unknown (not set up by scripts/run)'}"
    )
    lines.append(f"llama.cpp GPU offload: {_llama_offload(sys.executable)}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """The commands scripts/_setup.sh runs (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m tui.accel")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("detect", help="print the accelerator to build for")
    env_cmd = sub.add_parser("env", help="print KEY=VALUE lines to build BINDING with")
    env_cmd.add_argument("binding", choices=BINDINGS)
    stamp = sub.add_parser("stamp-key", help="print the install stamp key")
    sub.add_parser("pins", help="print name==version of each binding")
    build = sub.add_parser("build-wheels", help="build the GPU wheels, print their paths")
    build.add_argument("--dir", type=Path, default=None, help="cache root (default: ours)")
    for command in (env_cmd, stamp, build):
        command.add_argument("--kind", choices=KINDS, default=None, help="default: detect")
        command.add_argument("--arch", default=None, help="CMAKE_CUDA_ARCHITECTURES")
    args = parser.parse_args(argv)
    try:
        if args.command == "detect":
            choice = detect()
            if choice.problem:
                _say(choice.problem)
            print(choice.line())
            return 0
        if args.command == "pins":
            for binding, version in pins().items():
                print(f"{binding}=={version}")
            return 0
        kind, arch, nvcc = args.kind, args.arch, None
        if kind is None:
            choice = detect()
            kind, arch, nvcc = choice.kind, arch if arch is not None else choice.arch, choice.nvcc
        arch = arch or ""
        if args.command == "env":
            if kind == "cuda" and nvcc is None:
                nvcc = find_nvcc(os.environ)
            for key, value in build_env(kind, arch, args.binding, nvcc=nvcc).items():
                print(f"{key}={shlex.quote(value)}")
        elif args.command == "stamp-key":
            print(stamp_key(kind, arch))
        else:
            for wheel in build_wheels(kind, arch, root=args.dir):
                print(wheel)
        return 0
    except AccelError as error:
        _say(str(error))
        return 2 if args.command != "build-wheels" else 1


if __name__ == "__main__":
    raise SystemExit(main())
