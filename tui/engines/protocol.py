"""Typed requests and events exchanged between the UI process and an engine process.

Everything here is a plain dataclass: they travel pickled over a pipe. Neither
side of the protocol imports Textual or a native binding from this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

# --- requests (UI -> engine) -------------------------------------------------


@dataclass
class ChatMessage:
    role: str
    """'system', 'user' or 'assistant'."""
    content: str


@dataclass(kw_only=True)
class Sampling:
    """Sampling and context settings for one chat generation.

    The one declaration of these fields and their defaults: the settings file's
    ``[sampling]`` table, each conversation's stored sampling, the settings
    dialog and :class:`ChatRequest` all derive from it.
    """

    temperature: float = 0.7
    """Randomness; 0 is greedy and deterministic."""
    top_p: float = 0.95
    """Nucleus sampling: keep the smallest token set whose mass reaches this."""
    top_k: int = 40
    """Keep only the k most likely tokens (0 disables)."""
    min_p: float = 0.05
    """Drop tokens less likely than this fraction of the most likely one."""
    repeat_penalty: float = 1.1
    """Penalty for repeating recent tokens (1 disables)."""
    max_tokens: int = 512
    """Most tokens in one reply."""
    n_ctx: int = 4096
    """Context window in tokens (prompt plus reply)."""
    seed: int = -1
    """Random seed; -1 picks a new one each time."""

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Sampling:
        """The defaults with the known keys of ``data`` (as the fields' types) over them."""
        sampling = Sampling()
        for f in fields(Sampling):
            if data and f.name in data:
                setattr(sampling, f.name, type(getattr(sampling, f.name))(data[f.name]))
        return sampling

    def sampling(self) -> Sampling:
        """Just the sampling fields (of a ChatRequest too), as a Sampling."""
        return Sampling(**{f.name: getattr(self, f.name) for f in fields(Sampling)})

    def validate(self) -> None:
        """Raise ValueError with a readable message for out-of-range values."""
        if not 0.0 <= self.temperature <= 5.0:
            raise ValueError("temperature must be between 0 and 5")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("top-p must be above 0 and at most 1")
        if self.top_k < 0:
            raise ValueError("top-k must be 0 or more")
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError("min-p must be between 0 and 1")
        if not 0.5 <= self.repeat_penalty <= 2.0:
            raise ValueError("repeat penalty must be between 0.5 and 2")
        if not 1 <= self.max_tokens <= 131072:
            raise ValueError("max tokens must be between 1 and 131072")
        if not 128 <= self.n_ctx <= 131072:
            raise ValueError("context size must be between 128 and 131072")
        if self.seed < -1:
            raise ValueError("seed must be -1 (random) or a non-negative number")


@dataclass
class ChatRequest(Sampling):
    """Generate one assistant reply to a conversation.

    Its sampling fields (keyword-only) come from :class:`Sampling`.
    """

    model_path: str
    messages: list[ChatMessage]
    n_threads: int = 0
    gpu_layers: int | str = "auto"
    """"auto" (as many layers as fit in free VRAM), -1 (all), 0 (CPU only) or a layer count;
    the engine resolves it (tui.gpu.plan_gpu_layers); a CPU-only binding uses none."""
    request_id: int = 0


@dataclass
class CountTokens:
    """Count the tokens of each text with the chat model's own tokenizer.

    Loads the model as a :class:`ChatRequest` with the same path, context size,
    threads and GPU layers would (so a chat that follows reuses it). Answered
    with :class:`TokensCounted` and then ``GenerationFinished('stop')``.
    """

    model_path: str
    texts: list[str]
    n_ctx: int = 4096
    n_threads: int = 0
    gpu_layers: int | str = "auto"
    request_id: int = 0


@dataclass
class Cancel:
    """Stop the running request as soon as possible."""

    request_id: int = 0


@dataclass
class Unload:
    """Free the loaded model (the process stays up)."""


@dataclass
class Shutdown:
    """Exit the engine process."""


# --- events (engine -> UI) -----------------------------------------------------


@dataclass
class EngineReady:
    pid: int


@dataclass
class ModelLoaded:
    model_path: str
    load_s: float
    n_ctx: int
    chat_format: str = ""
    gpu_layers: int = 0
    """Layers on the GPU (0: all on the CPU)."""
    gpu_layers_total: int = 0
    """Layers the model has, the output layer included (0 when unknown)."""
    note: str = ""
    """A line for the user when the GPU took fewer layers than asked ('' otherwise)."""


@dataclass
class TokenGenerated:
    """Reply text: one token's, or several produced within a frame of each other."""

    text: str
    request_id: int = 0
    tokens: int = 1
    """How many tokens the text is (the engine groups tokens that come faster than frames)."""


@dataclass
class ContextTrimmed:
    """Older messages were left out so the prompt fits the context window."""

    dropped_messages: int
    prompt_tokens: int
    request_id: int = 0


@dataclass
class TokensCounted:
    """The answer to :class:`CountTokens`: one count per text, and the context size."""

    counts: list[int]
    n_ctx: int
    estimated: bool = False
    """True when the counts are estimates (a remote server: about 4 characters a token)."""
    request_id: int = 0


@dataclass
class GenerationStats:
    tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    ttft_s: float = 0.0
    tokens_per_s: float = 0.0
    elapsed_s: float = 0.0
    seed: int = -1


@dataclass
class GenerationFinished:
    """Terminal event of a request: 'stop' (natural end), 'length' or 'cancelled'."""

    reason: str
    stats: GenerationStats = field(default_factory=GenerationStats)
    request_id: int = 0
    note: str = ""
    """A line for the user on how it ended ('' when there is nothing to add), e.g. that a
    stopped remote job goes on on its server."""


@dataclass
class EngineFailed:
    """Terminal event of a request that could not run.

    kind: 'model' (missing/corrupt model), 'input' (e.g. prompt too large),
    'crash' (the engine process died), 'internal'.
    """

    message: str
    kind: str = "internal"
    request_id: int = 0


@dataclass
class WaitingForCpu:
    """The request waits: the engines in ``behind`` use the cores it needs.

    Sent by the host (not the engine) before the request reaches the engine; it
    starts, with CpuGranted, as soon as they finish. Sent again when whom it
    waits for changes.
    """

    behind: list[str]
    request_id: int = 0


@dataclass
class CpuGranted:
    """A request that waited for the cores starts now."""

    waited_s: float
    request_id: int = 0


TERMINAL_EVENTS = (GenerationFinished, EngineFailed)


# --- image engine ----------------------------------------------------------------


@dataclass
class ImageRequest:
    """Generate batch_count images; each result is a PNG (bytes) with its seed."""

    model_path: str
    prompt: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    steps: int = 20
    cfg_scale: float = 7.0
    sampler: str = "default"
    scheduler: str = "default"
    seed: int = -1
    batch_count: int = 1
    init_image: bytes | None = None
    """PNG/JPEG bytes of the image-to-image source, already validated."""
    strength: float = 0.75
    vae_path: str = ""
    taesd_path: str = ""
    n_threads: int = 0
    preview: bool = True
    """Send a preview of the image after each step (TAESD when given, else a projection)."""
    offload_to_cpu: bool = False
    """GPU builds: keep weights in RAM and move them to VRAM when needed."""
    keep_clip_on_cpu: bool = False
    keep_vae_on_cpu: bool = False
    request_id: int = 0


@dataclass
class StepProgressed:
    """One denoising step finished. Floods: the UI keeps only the newest."""

    step: int
    steps: int
    seconds: float
    """Seconds the step took."""
    image_index: int = 0
    request_id: int = 0


@dataclass
class PreviewUpdated:
    """A small preview (PNG bytes) of the image being denoised."""

    png: bytes
    step: int
    request_id: int = 0


@dataclass
class ImageGenerated:
    """One finished image (PNG bytes without metadata) and the seed that made it."""

    png: bytes
    seed: int
    index: int
    width: int
    height: int
    seconds: float
    request_id: int = 0


# --- speech engine ---------------------------------------------------------------


@dataclass
class TranscribeRequest:
    """Transcribe an audio file (any format the engine can decode) or raw samples."""

    model_path: str
    audio_path: str = ""
    samples: bytes | None = None
    """float32 mono 16 kHz samples (e.g. one live phrase); used when audio_path is empty."""
    offset_s: float = 0.0
    """Added to every segment's times (where the samples start in the recording)."""
    language: str = "auto"
    translate: bool = False
    initial_prompt: str = ""
    n_threads: int = 0
    use_gpu: bool = True
    """Use the GPU when whisper.cpp was built with one."""
    request_id: int = 0


@dataclass
class SegmentTranscribed:
    start_s: float
    end_s: float
    text: str
    request_id: int = 0


@dataclass
class AudioLoaded:
    """The audio was decoded: how long it is (for progress and real-time factor)."""

    duration_s: float
    request_id: int = 0
