"""The chat engine's token loop: llama-cpp-python's ``generate()`` without its text layer.

``Llama.create_completion(stream=True)`` wraps ``generate()`` in a text layer that,
for every token, detokenizes the whole reply so far (and, while a multi-byte
character or a possible stop string is pending, every pending token again): the
Python cost per token grows with the reply. On a CPU it hides behind the model's
own time; on a GPU decoding 500 tokens a second it was most of what the app lost
against the raw binding (and with random-weight models, which make many partial
byte tokens, it took more time than the model itself). This loop keeps the same
sampling (the same ``generate()`` call with the same arguments, hence the same
tokens for a seed) and the same stopping rules, with constant work per token:

- the text of each token is its piece (``llama_token_to_piece``, no special tokens,
  as ``detokenize`` does), through an incremental UTF-8 decoder, so a character
  split over byte tokens comes out whole, once;
- a stop string is found in the text; the end of the text that could still be the
  start of one is held back until it is not;
- an end-of-generation token ends with 'stop', ``max_tokens`` (bounded by the room
  left in the context) with 'length'.

``Coalescer`` then groups the text of tokens that arrive within ``COALESCE_S`` of the
last event into one event: a reply at 500 tokens a second crosses the pipe (and
wakes the UI) about 60 times a second, not 500; a slow reply still sends every token
the moment it exists, and the first token is never held.
"""

from __future__ import annotations

import codecs
import ctypes
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

COALESCE_S = 1 / 60
"""Tokens produced within this long of the last event are sent together (a frame)."""


@dataclass
class DecodeStep:
    """What one sampled token added: visible text (maybe empty) and whether it was the last."""

    text: str
    finish: str = ""
    """'' while generating; 'stop' or 'length' on the step that ends the reply."""
    token: bool = True
    """False for the closing step of an end-of-generation token (not part of the reply)."""


class TokenText:
    """Token ids to text, one token at a time, for one reply."""

    def __init__(self, vocab: Any, llama_cpp: Any) -> None:
        self._vocab = vocab
        self._to_piece = llama_cpp.llama_token_to_piece
        self._token = llama_cpp.llama_token
        self._buffer = ctypes.create_string_buffer(256)
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def piece(self, token: int) -> bytes:
        """The token's bytes as ``Llama.detokenize`` joins them (special tokens empty)."""
        size = len(self._buffer)
        n = self._to_piece(self._vocab, self._token(token), self._buffer, size, 0, False)
        if n < 0:  # the piece is longer than the buffer: grow it and ask again
            self._buffer = ctypes.create_string_buffer(-n)
            n = self._to_piece(self._vocab, self._token(token), self._buffer, -n, 0, False)
        return self._buffer.raw[: max(n, 0)]

    def feed(self, token: int) -> str:
        """The text this token completes (a partial UTF-8 character waits for its rest)."""
        return self._decoder.decode(self.piece(token))

    def flush(self) -> str:
        """What is left at the end (an unfinished character becomes U+FFFD)."""
        return self._decoder.decode(b"", final=True)


class StopStrings:
    """Finds stop strings in streamed text, holding back what could start one."""

    def __init__(self, stops: list[str] | tuple[str, ...] | None) -> None:
        self._stops = [s for s in (stops or []) if s]
        self._longest = max((len(s) for s in self._stops), default=0)
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to show, whether a stop string was reached)."""
        if not self._stops:
            return text, False
        pending = self._pending + text
        cut = -1
        for stop in self._stops:
            found = pending.find(stop)
            if found != -1 and (cut == -1 or found < cut):
                cut = found
        if cut != -1:
            self._pending = ""
            return pending[:cut], True
        hold = 0
        for size in range(min(self._longest - 1, len(pending)), 0, -1):
            tail = pending[-size:]
            if any(stop.startswith(tail) for stop in self._stops):
                hold = size
                break
        self._pending = pending[len(pending) - hold :] if hold else ""
        return (pending[: len(pending) - hold] if hold else pending), False

    def flush(self) -> str:
        """The held-back text at the end of a reply that reached no stop string."""
        pending, self._pending = self._pending, ""
        return pending


def decode_steps(
    llm: Any,
    prompt: list[int],
    *,
    max_tokens: int,
    stop: list[str] | None,
    is_eog: Callable[[int], bool],
    text: TokenText,
    **generate_args: Any,
) -> Iterator[DecodeStep]:
    """Run ``llm.generate(prompt, **generate_args)`` and yield one step per sampled token.

    ``max_tokens`` <= 0 means up to the end of the context, and it never passes it
    (as ``create_completion`` does). The generator is closed when this one is.
    """
    room = llm.n_ctx() - len(prompt)
    if max_tokens <= 0 or max_tokens > room:
        max_tokens = room
    stops = StopStrings(stop)
    tokens = llm.generate(prompt, **generate_args)
    count = 0
    try:
        for token in tokens:
            if is_eog(token):
                yield DecodeStep(stops.feed(text.flush())[0] + stops.flush(), "stop", token=False)
                return
            count += 1
            shown, stopped = stops.feed(text.feed(token))
            if stopped:
                yield DecodeStep(shown, "stop")
                return
            if count >= max_tokens:
                shown += stops.feed(text.flush())[0] + stops.flush()
                yield DecodeStep(shown, "length")
                return
            yield DecodeStep(shown)
        # generate() returned: its stopping criteria (the template's stop tokens) ended it.
        yield DecodeStep(stops.feed(text.flush())[0] + stops.flush(), "stop", token=False)
    finally:
        tokens.close()


class Coalescer:
    """Groups token text into events: at most one per ``interval`` while tokens stream."""

    def __init__(self, send: Callable[[str, int], None], interval: float = COALESCE_S) -> None:
        self._send = send
        self._interval = interval
        self._parts: list[str] = []
        self._tokens = 0
        self._sent_at = -1e9

    def add(self, text: str, now: float | None = None, tokens: int = 1) -> None:
        """One token's text ('' for a token that showed nothing yet)."""
        self._tokens += tokens
        if text:
            self._parts.append(text)
        if not self._parts:
            return
        now = time.perf_counter() if now is None else now
        if now - self._sent_at >= self._interval:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        """Send what is waiting (the end of a reply, or a cancel)."""
        if self._parts:
            self._send("".join(self._parts), self._tokens)
            self._sent_at = time.perf_counter() if now is None else now
        self._parts.clear()
        self._tokens = 0
