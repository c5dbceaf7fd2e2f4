"""llama.cpp side of the chat engine. Runs only inside an engine process.

One model stays loaded; llama-cpp-python keeps the evaluated tokens and the
KV cache, and reuses the longest common prefix on the next request, so a new
turn of a long conversation evaluates only the new text.
"""

from __future__ import annotations

import random
import time
from typing import Any

from tui.compat.llama_cpp import narrow_penalties
from tui.cpu import bound_threads
from tui.cpu import default_threads as default_threads  # the bench scripts import it here
from tui.engines import protocol as p
from tui.engines.channel import Channel
from tui.engines.decode import Coalescer, TokenText, decode_steps
from tui.formats import ModelFileError
from tui.formats.gguf import GGUFInfo, read_gguf_info
from tui.gpu import (
    AUTO,
    LayerPlan,
    free_vram,
    load_with_gpu_fallback,
    parse_gpu_layers,
    plan_gpu_layers,
)

MIN_REPLY_TOKENS = 64
"""Room kept free for the reply when older messages must be dropped to fit."""
WORD_JOINER = "\u2060"
"""Put inside a control token's text in a message, so that it stays plain text."""


def defuse_control_tokens(text: str, controls: tuple[str, ...]) -> str:
    """``text`` with every occurrence of a control token's text (``<|im_end|>``) broken.

    The formatted prompt is tokenized with special tokens parsed, which the chat
    template needs; without this, a message, an attached file or a pasted reply
    holding ``<|im_end|><|im_start|>system`` would end its turn and start one the
    user never wrote. A word joiner after the first character keeps the text
    readable to the model while no longer matching the token. ``controls`` is
    longest first, so a token containing another is broken whole.
    """
    for control in controls:
        if control in text:
            text = text.replace(control, control[0] + WORD_JOINER + control[1:])
    return text


def _gpu_setting(value: object) -> int | str:
    """A request's gpu_layers, normalised ("AUTO" and "12" as "auto" and 12); "auto" if bad."""
    try:
        return parse_gpu_layers(value)
    except ValueError:
        return AUTO


def _plan_layers(setting: int | str, info: GGUFInfo, n_ctx: int, offload: bool) -> LayerPlan:
    """The layers to offload: none on a CPU-only build, NVML asked only on a GPU one."""
    # llama.cpp's main GPU is device 0; None: NVML cannot tell.
    free = free_vram() if offload and setting == AUTO else None
    return plan_gpu_layers(
        setting,
        n_layers=info.shape.get("block_count", 0),
        model_bytes=info.file_size,
        kv_bytes=info.kv_cache_bytes(n_ctx),
        free_vram=free,
        offload_supported=offload,
    )


class ChatEngine:
    def __init__(self) -> None:
        self.llm: Any = None
        self.formatter: Any = None
        self.key: tuple[Any, ...] | None = None
        self.controls: tuple[str, ...] = ()
        """Texts of the model's control tokens, longest first (see defuse_control_tokens)."""

    # --- loading ------------------------------------------------------------

    def _load(self, request: p.ChatRequest | p.CountTokens, channel: Channel) -> bool:
        # Bounded here too, so that no request can ask for more threads than CPUs.
        threads = bound_threads(request.n_threads)
        setting = _gpu_setting(request.gpu_layers)
        # The setting as asked, not the layers it came to: free VRAM changes with
        # what this very model holds, and must not make the next request reload.
        key = (request.model_path, request.n_ctx, threads, setting)
        if self.llm is not None and self.key == key:
            return True
        # Check the file before unloading: a bad pick keeps the loaded model.
        try:
            info = read_gguf_info(request.model_path)
        except ModelFileError as error:
            channel.emit(p.EngineFailed(str(error), "model", request.request_id))
            return False
        self._unload()
        started = time.perf_counter()
        import llama_cpp  # imported here: only engine processes load it

        # After unloading: the model it replaces no longer holds VRAM.
        plan = _plan_layers(setting, info, request.n_ctx, llama_cpp.llama_supports_gpu_offload())

        def load(layers: int) -> Any:
            return llama_cpp.Llama(
                model_path=request.model_path,
                n_ctx=request.n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                n_gpu_layers=layers,
                verbose=False,
            )

        try:
            self.llm, layers, fallback = load_with_gpu_fallback(load, plan.layers, plan.total)
        except (ValueError, RuntimeError, OSError) as error:
            self.llm = None
            channel.emit(
                p.EngineFailed(
                    f"could not load {request.model_path} "
                    f"({info.architecture or 'unknown architecture'}): {error}",
                    "model",
                    request.request_id,
                )
            )
            return False
        narrow_penalties(self.llm)  # the same tokens, the penalties on ~100 candidates only
        self.formatter = self._make_formatter()
        self.controls = self._control_texts()
        self.key = key
        channel.emit(
            p.ModelLoaded(
                model_path=request.model_path,
                load_s=time.perf_counter() - started,
                n_ctx=self.llm.n_ctx(),
                chat_format=str(self.llm.chat_format or ""),
                gpu_layers=plan.total if layers < 0 else layers,
                gpu_layers_total=plan.total,
                note=fallback or plan.note,
            )
        )
        return True

    def _make_formatter(self) -> Any:
        from llama_cpp import llama_chat_format, llama_model_get_vocab, llama_vocab_get_text

        llm = self.llm
        template = llm.metadata.get("tokenizer.chat_template")
        if template:
            vocab = llama_model_get_vocab(llm.model)

            def text(token: int) -> str:
                return llama_vocab_get_text(vocab, token).decode("utf-8") if token != -1 else ""

            eos_id, bos_id = llm.token_eos(), llm.token_bos()
            eos, bos = text(eos_id), text(bos_id)
            return llama_chat_format.Jinja2ChatFormatter(
                template=template, eos_token=eos, bos_token=bos, stop_token_ids=[eos_id]
            )
        # No template in the file: ChatML is what most small instruct models use.
        return llama_chat_format.format_chatml

    def _control_texts(self) -> tuple[str, ...]:
        """The texts of the vocabulary's control tokens (about 50 ms for 50,000 tokens)."""
        import llama_cpp

        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        control = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
        texts = set()
        for token in range(llama_cpp.llama_vocab_n_tokens(vocab)):
            if llama_cpp.llama_vocab_get_attr(vocab, token) & control:
                text = llama_cpp.llama_vocab_get_text(vocab, token).decode("utf-8", "replace")
                if len(text) > 1:
                    texts.add(text)
        return tuple(sorted(texts, key=len, reverse=True))

    def _unload(self) -> None:
        if self.llm is not None:
            self.llm.close()
        self.llm = self.formatter = self.key = None
        self.controls = ()

    # --- requests -----------------------------------------------------------

    def handle(self, request: Any, channel: Channel) -> None:
        if isinstance(request, p.Unload):
            self._unload()
        elif isinstance(request, p.ChatRequest):
            self.chat(request, channel)
        elif isinstance(request, p.CountTokens):
            self.count_tokens(request, channel)
        else:
            channel.emit(p.EngineFailed(f"unknown request {type(request).__name__}", "internal"))

    def count_tokens(self, request: p.CountTokens, channel: Channel) -> None:
        """Tokens of each text as the model's tokenizer splits it (no BOS, no template)."""
        if not self._load(request, channel):
            return
        llm = self.llm
        counts = [
            len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)) if text else 0
            for text in request.texts
        ]
        channel.emit(p.TokensCounted(counts, llm.n_ctx(), request_id=request.request_id))
        channel.emit(p.GenerationFinished("stop", request_id=request.request_id))

    def _prompt(self, messages: list[p.ChatMessage]) -> tuple[list[int], Any]:
        formatted = self.formatter(
            messages=[
                {"role": m.role, "content": defuse_control_tokens(m.content, self.controls)}
                for m in messages
            ]
        )
        tokens = self.llm.tokenize(
            formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True
        )
        return tokens, formatted

    def _fit(self, request: p.ChatRequest, channel: Channel) -> tuple[list[int], Any, int] | None:
        """Format the prompt, leaving out the oldest turns until it fits the context."""
        n_ctx = self.llm.n_ctx()
        room = min(request.max_tokens, MIN_REPLY_TOKENS)
        system = [m for m in request.messages[:1] if m.role == "system"]
        rest = request.messages[len(system) :]
        dropped = 0
        while True:
            tokens, formatted = self._prompt(system + rest)
            if len(tokens) + room <= n_ctx:
                if dropped:
                    channel.emit(p.ContextTrimmed(dropped, len(tokens), request.request_id))
                return tokens, formatted, dropped
            if len(rest) <= 1:
                channel.emit(
                    p.EngineFailed(
                        f"the message is {len(tokens)} tokens but the context holds {n_ctx} "
                        f"(with {room} kept for the reply): shorten it or raise the context size",
                        "input",
                        request.request_id,
                    )
                )
                return None
            # Drop the oldest turn; never start the kept history with an assistant reply.
            rest = rest[1:]
            dropped += 1
            while len(rest) > 1 and rest[0].role != "user":
                rest = rest[1:]
                dropped += 1

    def chat(self, request: p.ChatRequest, channel: Channel) -> None:
        if not self._load(request, channel):
            return
        fitted = self._fit(request, channel)
        if fitted is None:
            return
        tokens, formatted, _ = fitted
        llm = self.llm
        cached = 0
        for a, b in zip(llm.input_ids[: llm.n_tokens], tokens, strict=False):
            if a != b:
                break
            cached += 1
        import llama_cpp  # only engine processes load it

        seed = request.seed if request.seed >= 0 else random.randrange(2**31)
        llm.set_seed(seed)
        request_id = request.request_id
        events = Coalescer(
            lambda text, n: channel.emit(p.TokenGenerated(text, request_id, tokens=n))
        )
        started = time.perf_counter()
        first_at: float | None = None
        last_at = started
        count = 0
        reason = "stop"
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        steps = decode_steps(
            llm,
            tokens,
            max_tokens=request.max_tokens,
            stop=formatted.stop,
            is_eog=lambda token: llama_cpp.llama_vocab_is_eog(vocab, token),
            text=TokenText(vocab, llama_cpp),
            temp=request.temperature,
            top_p=request.top_p,
            top_k=request.top_k,
            min_p=request.min_p,
            repeat_penalty=request.repeat_penalty,
            stopping_criteria=formatted.stopping_criteria,
        )
        try:
            for step in steps:
                now = time.perf_counter()
                if step.token:
                    if first_at is None:
                        first_at = now
                    last_at = now
                    count += 1
                events.add(step.text, now, tokens=int(step.token))
                if step.finish:
                    reason = step.finish
                if channel.cancelled.is_set():
                    reason = "cancelled"
                    break
        finally:
            steps.close()
            events.flush()
        finished = time.perf_counter()
        ttft = (first_at - started) if first_at is not None else finished - started
        decode_s = last_at - first_at if first_at is not None else 0.0
        stats = p.GenerationStats(
            tokens=count,
            prompt_tokens=len(tokens),
            cached_tokens=cached,
            ttft_s=ttft,
            tokens_per_s=(count - 1) / decode_s if count > 1 and decode_s > 0 else 0.0,
            elapsed_s=finished - started,
            seed=seed,
        )
        channel.emit(p.GenerationFinished(reason, stats, request.request_id))
