"""What the machine's GPUs are and hold, through NVML (the nvidia-ml-py binding).

No Textual here, and nothing that needs a GPU: on a machine without an NVIDIA
driver (or without nvidia-ml-py) every query answers "no GPU" instead of failing.
NVML is loaded once per process and kept; each query is a few microseconds.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tui.formats import human_size

_lock = threading.Lock()
_nvml: Any = None
_nvml_tried = False
_nvml_problem = ""
T = TypeVar("T")


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as NVML reports it."""

    index: int
    name: str
    total_bytes: int
    free_bytes: int
    compute_capability: tuple[int, int]
    """(major, minor), e.g. (9, 0) for an H100/H200: CUDA architecture "90"."""

    @property
    def cuda_arch(self) -> str:
        """The value for CMAKE_CUDA_ARCHITECTURES, e.g. "90"."""
        return f"{self.compute_capability[0]}{self.compute_capability[1]}"


def _load_nvml() -> Any:
    """The initialised pynvml module, or None (the reason is kept in nvml_problem())."""
    global _nvml, _nvml_tried, _nvml_problem
    with _lock:
        if _nvml_tried:
            return _nvml
        _nvml_tried = True
        try:
            import pynvml
        except ImportError:
            _nvml_problem = "nvidia-ml-py is not installed"
            return None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as error:
            # No driver (NVML_ERROR_LIBRARY_NOT_FOUND), no device, or a driver/library mismatch.
            _nvml_problem = f"NVML: {error}"
            return None
        _nvml = pynvml
        return _nvml


def nvml_problem() -> str:
    """Why NVML gave no answer ("" when it works or was not asked yet)."""
    _load_nvml()
    return _nvml_problem


def gpus() -> list[GpuInfo]:
    """The NVIDIA GPUs of this machine ([] when there is none or no driver)."""
    nvml = _load_nvml()
    if nvml is None:
        return []
    found: list[GpuInfo] = []
    try:
        count = nvml.nvmlDeviceGetCount()
    except nvml.NVMLError:
        return []
    for index in range(count):
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(handle)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
        except nvml.NVMLError:
            continue
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        found.append(GpuInfo(index, str(name), int(memory.total), int(memory.free), (major, minor)))
    return found


def driver_cuda_version() -> tuple[int, int] | None:
    """The newest CUDA version the installed driver supports, e.g. (13, 0); None without one."""
    nvml = _load_nvml()
    if nvml is None:
        return None
    try:
        version = int(nvml.nvmlSystemGetCudaDriverVersion_v2())
    except nvml.NVMLError:
        return None
    return version // 1000, (version % 1000) // 10


def process_vram() -> dict[int, int]:
    """GPU memory in bytes used by each process (pid -> bytes), summed over the GPUs.

    NVML may not report per-process memory in some containers; processes it does
    not list are simply absent.
    """
    nvml = _load_nvml()
    if nvml is None:
        return {}
    used: dict[int, int] = {}
    try:
        count = nvml.nvmlDeviceGetCount()
    except nvml.NVMLError:
        return {}
    for index in range(count):
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            processes = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
        except nvml.NVMLError:
            continue
        for process in processes:
            memory = getattr(process, "usedGpuMemory", None)
            if isinstance(memory, int) and memory > 0:
                used[process.pid] = used.get(process.pid, 0) + memory
    return used


def free_vram() -> int | None:
    """Free GPU memory in bytes on the first GPU (None without one, or without NVML).

    The engines use the first GPU (llama.cpp's main GPU 0, stable-diffusion.cpp
    and whisper.cpp device 0).
    """
    found = gpus()
    return found[0].free_bytes if found else None


# --- how many layers of a chat model go to the GPU ------------------------------------

AUTO = "auto"
"""The ``gpu_layers`` value that lets the engine choose (as many layers as fit)."""
GPU_LAYERS_HELP = '"auto" or a whole number (-1 all layers, 0 CPU only)'
"""What a ``gpu_layers`` value may be, for problem messages."""
MIB = 1 << 20
MIN_COMPUTE_RESERVE = 512 * MIB
"""VRAM kept free for llama.cpp's compute buffers (at least; 10% of the model when more)."""


def parse_gpu_layers(value: object) -> int | str:
    """A ``gpu_layers`` value from a file, the environment or a request: "auto" or an int >= -1.

    Accepts ``"auto"`` (any case, spaces around), an int, or the text of an int
    ("-1", "12"). Raises ValueError for anything else ("lots", True, 2.5, -2).
    """
    if isinstance(value, bool):
        raise ValueError(f"gpu_layers must be {GPU_LAYERS_HELP}, not {value!r}")
    if isinstance(value, int):
        layers = value
    elif isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        try:
            layers = int(text)
        except ValueError:
            raise ValueError(f"gpu_layers must be {GPU_LAYERS_HELP}, not {value!r}") from None
    else:
        raise ValueError(f"gpu_layers must be {GPU_LAYERS_HELP}, not {value!r}")
    if layers < -1:
        raise ValueError(f"gpu_layers must be {GPU_LAYERS_HELP}, not {value!r}")
    return layers


@dataclass(frozen=True)
class LayerPlan:
    """How a chat model is split between the GPU and the CPU."""

    layers: int
    """``n_gpu_layers`` for llama.cpp: 0 is CPU only, -1 all layers (when the count is unknown)."""
    total: int
    """Layers the model has, the output layer included (0 when the header does not say)."""
    note: str = ""
    """A line for the user when the model does not go to the GPU as asked ('' otherwise)."""


def compute_reserve(model_bytes: int) -> int:
    """VRAM left free beyond weights and KV cache: max(512 MiB, 10% of the model)."""
    return max(MIN_COMPUTE_RESERVE, model_bytes // 10)


def plan_gpu_layers(
    setting: int | str,
    n_layers: int,
    model_bytes: int,
    kv_bytes: int,
    free_vram: int | None,
    offload_supported: bool,
) -> LayerPlan:
    """How many layers to offload (pure: every input is given).

    ``n_layers`` is the model's block count (0 if unknown; llama.cpp counts one
    more, the output layer), ``free_vram`` the free bytes of the GPU (None when
    NVML cannot tell: then "auto" offloads everything and the engine's fallback
    on a failed load protects). Without GPU offload in the binding the answer
    is 0 layers with no note. An explicit number is used as given, capped at
    the model's layers; "auto" takes all layers when weights, KV cache and a
    compute reserve fit in free VRAM, else as many layers as fit, with a note.
    """
    total = n_layers + 1 if n_layers > 0 else 0
    if not offload_supported:
        return LayerPlan(0, total)
    if setting != AUTO:
        layers = int(setting)
        if layers == 0:
            return LayerPlan(0, total)
        if total and (layers < 0 or layers > total):
            layers = total
        return LayerPlan(layers, total)
    if free_vram is None:
        return LayerPlan(total or -1, total)
    reserve = compute_reserve(model_bytes)
    need = model_bytes + kv_bytes + reserve
    if need <= free_vram:
        return LayerPlan(total or -1, total)
    room = free_vram - reserve
    fitting = 0
    if total and room > 0:
        per_layer = model_bytes / total + kv_bytes / n_layers
        fitting = min(n_layers, int(room // per_layer)) if per_layer > 0 else n_layers
    shortage = f"the model needs {human_size(need)}, {human_size(max(free_vram, 0))} of VRAM free"
    if fitting <= 0:
        return LayerPlan(0, total, f"loaded on the CPU: {shortage}")
    return LayerPlan(fitting, total, f"{fitting} of {total} layers on the GPU: {shortage}")


def load_with_gpu_fallback(
    load: Callable[[int], T],
    layers: int,
    total: int = 0,
    errors: tuple[type[BaseException], ...] = (ValueError, RuntimeError, OSError),
) -> tuple[T, int, str]:
    """``load(layers)``; when that raises with layers on the GPU, half of them, then none.

    A GPU without room makes llama-cpp-python raise ValueError ("Failed to load
    model", "Failed to create llama_context"); retrying with fewer layers turns
    that into a slower model instead of a failure. Returns what ``load``
    returned, the layers used and a note for the user ('' when the first try
    worked). The error of the CPU-only try, or of a first try with no GPU
    layers, is raised as it is.
    """
    tries = [layers]
    if layers != 0:
        full = total if layers < 0 and total else layers
        if full > 1:
            tries.append(full // 2)
        tries.append(0)
    first_error: BaseException | None = None
    for index, count in enumerate(tries):
        try:
            loaded = load(count)
        except errors as error:
            if count == 0:
                raise
            first_error = first_error or error
            gc.collect()  # a half-built model may hold VRAM until collected
            continue
        if index == 0:
            return loaded, count, ""
        reason = " ".join(str(first_error).split()) or type(first_error).__name__
        if len(reason) > 160:
            reason = reason[:159] + "…"
        if count == 0:
            return loaded, 0, f"loaded on the CPU: the GPU had no room ({reason})"
        of = f" of {total}" if total else ""
        return loaded, count, f"{count}{of} layers on the GPU: no room for more ({reason})"
    raise AssertionError("unreachable: the last try uses no GPU layers")
