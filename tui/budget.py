"""Share the machine's memory between the engines.

Engines load their model on demand. Before one loads a model, the budget
adds what it will need to what the other engines hold (their processes'
resident memory) and, if that would pass the limit, unloads idle engines,
least recently used first. An engine that is busy is never unloaded; the
load then goes ahead over the budget rather than failing. Unloading ends the
engine process, which returns every byte to the system; the next request
starts it again, so no conversation, image or recording is affected.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tui import gpu
from tui.catalog import total_ram
from tui.formats import ModelFileError, human_size
from tui.formats.gguf import read_gguf_info

DEFAULT_SHARE = 0.75
"""Share of physical memory the models may use when no budget is set."""
MIB = 1 << 20


def process_rss(pid: int | None) -> int:
    """Resident memory of a process in bytes (0 if unknown or gone)."""
    if not pid:
        return 0
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0
    return 0


def budget_bytes(memory_budget_mb: int) -> int:
    """The limit from the setting (0 means DEFAULT_SHARE of RAM)."""
    if memory_budget_mb > 0:
        return memory_budget_mb * MIB
    ram = total_ram()
    return int(ram * DEFAULT_SHARE) if ram else 8 << 30


def _size(path: str) -> int:
    try:
        return Path(path).stat().st_size if path else 0
    except OSError:
        return 0


def request_need(request: Any) -> int:
    """Bytes the model named by a request will take once loaded (an estimate).

    The weights are the file sizes; chat adds its KV cache from the GGUF
    header, image the working buffers at the requested size, speech whisper's
    decoding buffers; each adds an engine process of about 60 MiB.
    """
    path = getattr(request, "model_path", "") or ""
    need = _size(path) + 60 * MIB
    name = type(request).__name__
    if name == "ChatRequest":
        try:
            need += read_gguf_info(path).kv_cache_bytes(request.n_ctx)
        except ModelFileError:
            pass
    elif name == "ImageRequest":
        need += _size(request.vae_path) + _size(request.taesd_path)
        need += request.width * request.height * 1024 + 128 * MIB
    elif name == "TranscribeRequest":
        need += 100 * MIB
    return need


def request_vram_need(request: Any) -> int:
    """Bytes of VRAM the request's model will take if it goes to the GPU (an estimate).

    Chat: weights and KV cache, the share of its layers when ``gpu_layers`` is a
    number, 0 for 0 (CPU only). Image: its model files. Speech: the model file,
    0 when ``use_gpu`` is off. Whether the engine's binding has a GPU at all is
    not known here; :meth:`MemoryBudget.make_room` only acts when a GPU reports
    engines holding VRAM.
    """
    path = getattr(request, "model_path", "") or ""
    name = type(request).__name__
    if name in ("ChatRequest", "CountTokens"):
        try:
            setting = gpu.parse_gpu_layers(request.gpu_layers)
        except ValueError:
            setting = gpu.AUTO
        if setting == 0:
            return 0
        try:
            info = read_gguf_info(path)
        except ModelFileError:
            return 0
        full = info.file_size + info.kv_cache_bytes(request.n_ctx)
        total = info.shape.get("block_count", 0) + 1
        if setting == gpu.AUTO or int(setting) < 0 or total <= 1:
            return full
        return full * min(int(setting), total) // total
    if name == "ImageRequest":
        return _size(path) + _size(request.vae_path) + _size(request.taesd_path)
    if name == "TranscribeRequest":
        return _size(path) if request.use_gpu else 0
    return 0


class MemoryBudget:
    """Decides which idle engines to unload; hosts call make_room before loading.

    RAM and VRAM are kept apart: the budget's limit is on RAM (the processes'
    resident memory); VRAM is made room in only when the GPU has less free than
    the request's model needs (never on a machine without a GPU).
    """

    def __init__(
        self,
        hosts: Sequence[Any],
        limit: int,
        notify: Callable[[str], None] | None = None,
        *,
        free_vram: Callable[[], int | None] = gpu.free_vram,
        process_vram: Callable[[], dict[int, int]] = gpu.process_vram,
    ) -> None:
        self.hosts = list(hosts)
        self.limit = limit
        self.notify = notify
        self.free_vram = free_vram
        """Free bytes on the GPU the engines use, None without one (tui.gpu; a fake in tests)."""
        self.process_vram = process_vram
        """VRAM by process id (tui.gpu; {} without a GPU)."""
        for host in self.hosts:
            host.before_load = self.make_room

    def usage(self, host: Any) -> int:
        return process_rss(host.pid) if host.alive else 0

    def used(self) -> int:
        return sum(self.usage(host) for host in self.hosts)

    def make_room(self, host: Any, request: Any) -> list[str]:
        """Unload idle engines until the request's model fits; return their names."""
        need = request_need(request)
        others = [h for h in self.hosts if h is not host and h.alive and h.loaded_model]
        held = {h.engine: self.usage(h) for h in others}
        used = sum(held.values()) + (self.usage(host) if host.alive else 0)
        unloaded: list[str] = []
        for other in sorted(others, key=lambda h: h.last_used):
            if used + need <= self.limit:
                break
            model = Path(other.loaded_model or "").name
            if other.release():
                used -= held[other.engine]
                unloaded.append(other.engine)
                self._tell(
                    f"Unloaded the {other.engine} model {model} ({human_size(held[other.engine])})"
                    f" to make room within the {human_size(self.limit)} memory budget"
                )
        return unloaded + self.make_vram_room(host, request)

    def make_vram_room(self, host: Any, request: Any) -> list[str]:
        """Unload idle engines holding VRAM until the request's model fits in free VRAM.

        Least recently used first; does nothing without a GPU (NVML lists no
        process), when the request will not use it, or when it fits already.
        """
        on_gpu = self.process_vram()
        others = [
            h
            for h in self.hosts
            if h is not host and h.alive and h.loaded_model and on_gpu.get(h.pid or 0, 0) > 0
        ]
        if not others:
            return []
        need = request_vram_need(request)
        if not need:
            return []
        # The host's own model, if any, is unloaded before its new one loads.
        free = (self.free_vram() or 0) + (on_gpu.get(host.pid or 0, 0) if host.alive else 0)
        unloaded: list[str] = []
        for other in sorted(others, key=lambda h: h.last_used):
            if need <= free:
                break
            held = on_gpu[other.pid]
            model = Path(other.loaded_model or "").name
            if other.release():
                free += held
                unloaded.append(other.engine)
                self._tell(
                    f"Unloaded the {other.engine} model {model} ({human_size(held)} of VRAM)"
                    f" to make room in VRAM ({human_size(need)} needed)"
                )
        return unloaded

    def unload_idle(self, idle_s: float) -> list[str]:
        """Unload every engine whose model has not been used for idle_s seconds."""
        if idle_s <= 0:
            return []
        now = time.monotonic()
        unloaded = []
        for host in self.hosts:
            if host.alive and not host.busy and now - host.last_used >= idle_s:
                model = Path(host.loaded_model or "").name or "engine"
                if host.release():
                    unloaded.append(host.engine)
                    self._tell(f"Unloaded the idle {host.engine} model {model}")
        return unloaded

    def _tell(self, text: str) -> None:
        if self.notify is not None:
            try:
                self.notify(text)
            except Exception:  # noqa: BLE001 - a message must never break a load
                pass
