"""The chat engine's token loop (tui/engines/decode.py).

The pure parts (stop strings, grouping) are unit tests; the loop itself runs the
real SmolLM2 model and must give exactly what llama-cpp-python's own
``create_completion(stream=True)`` gives for the same prompt and seed.
"""

from __future__ import annotations

import pytest

from tui.engines.decode import Coalescer, StopStrings, TokenText, decode_steps

# --- stop strings ------------------------------------------------------------------


def feed_all(stops: StopStrings, parts: list[str]) -> tuple[str, bool]:
    shown = []
    for part in parts:
        text, stopped = stops.feed(part)
        shown.append(text)
        if stopped:
            return "".join(shown), True
    return "".join(shown) + stops.flush(), False


def test_a_stop_string_split_over_tokens_is_found_and_never_shown() -> None:
    stops = StopStrings(["</s>", "\nUser:"])
    assert feed_all(stops, ["Hello", " there", "\n", "Us", "er", ": more"]) == (
        "Hello there",
        True,
    )


def test_text_that_only_looks_like_a_stop_start_is_released() -> None:
    stops = StopStrings(["\nUser:"])
    # "\nUs" is held back, then released when "ing" shows it was not a stop.
    assert stops.feed("a\nUs") == ("a", False)
    assert stops.feed("ing") == ("\nUsing", False)
    assert feed_all(StopStrings(["\nUser:"]), ["x\nU"]) == ("x\nU", False)


def test_no_stop_strings_pass_text_through() -> None:
    stops = StopStrings(None)
    assert stops.feed("<|im_end|>") == ("<|im_end|>", False)


def test_the_earliest_stop_wins() -> None:
    stops = StopStrings(["BB", "A"])
    assert stops.feed("xxAyyBB") == ("xx", True)


# --- grouping tokens into events ---------------------------------------------------


def test_coalescer_sends_the_first_token_at_once_and_groups_fast_ones() -> None:
    sent: list[tuple[str, int]] = []
    group = Coalescer(lambda text, n: sent.append((text, n)), interval=0.010)
    group.add("A", now=1.000)
    assert sent == [("A", 1)]  # the first token is never held
    group.add("b", now=1.002)
    group.add("", now=1.004)  # a token that shows nothing yet (half a character)
    group.add("c", now=1.006)
    assert sent == [("A", 1)]
    group.add("d", now=1.011)  # a frame after the last event: all four go
    assert sent == [("A", 1), ("bcd", 4)]
    group.add("e", now=1.012)
    group.flush()
    assert sent[-1] == ("e", 1)


def test_coalescer_sends_every_token_of_a_slow_reply_at_once() -> None:
    sent: list[tuple[str, int]] = []
    group = Coalescer(lambda text, n: sent.append((text, n)), interval=0.010)
    for i in range(5):
        group.add(str(i), now=1.0 + i * 0.05)  # 20 tokens a second
    assert sent == [(str(i), 1) for i in range(5)]


def test_coalescer_flush_without_text_sends_nothing() -> None:
    sent: list[tuple[str, int]] = []
    group = Coalescer(lambda text, n: sent.append((text, n)))
    group.add("", now=1.0)
    group.flush()
    assert sent == []


# --- the loop with the real model --------------------------------------------------


@pytest.fixture
def llm(chat_model):
    from llama_cpp import Llama

    model = Llama(str(chat_model), n_ctx=1024, n_threads=2, verbose=False)
    yield model
    model.close()


def raw_reply(llm, prompt: list[int], **sampling) -> str:
    chunks = llm.create_completion(prompt=prompt, stream=True, **sampling)
    return "".join(chunk["choices"][0]["text"] or "" for chunk in chunks)


def loop_reply(llm, prompt: list[int], seed: int, max_tokens: int, stop=None, **sampling):
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    llm.set_seed(seed)
    steps = list(
        decode_steps(
            llm,
            prompt,
            max_tokens=max_tokens,
            stop=stop,
            is_eog=lambda token: llama_cpp.llama_vocab_is_eog(vocab, token),
            text=TokenText(vocab, llama_cpp),
            **sampling,
        )
    )
    return "".join(step.text for step in steps), steps


def chatml(llm, question: str) -> list[int]:
    prompt = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    )
    return llm.tokenize(prompt.encode(), add_bos=False, special=True)


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_the_loop_gives_what_create_completion_gives(llm, temperature: float) -> None:
    prompt = chatml(llm, "Write three sentences about lighthouses, with an emoji: 🌊.")
    sampling = dict(top_p=0.95, top_k=40, min_p=0.05, repeat_penalty=1.1)
    raw = raw_reply(llm, prompt, max_tokens=96, seed=7, temperature=temperature, **sampling)
    text, steps = loop_reply(llm, prompt, seed=7, max_tokens=96, temp=temperature, **sampling)
    assert text == raw
    assert steps[-1].finish in ("stop", "length")
    assert sum(step.token for step in steps) <= 96


@pytest.mark.slow
def test_the_loop_answers_paris_and_ends_on_the_end_token(llm) -> None:
    prompt = chatml(llm, "Name the capital city of France.")
    text, steps = loop_reply(llm, prompt, seed=1, max_tokens=64, temp=0.0)
    assert "Paris" in text
    assert steps[-1].finish == "stop" and steps[-1].token is False


@pytest.mark.slow
def test_max_tokens_ends_with_length_and_a_stop_string_cuts_the_text(llm) -> None:
    prompt = chatml(llm, "Count from one to twenty in words, separated by commas.")
    text, steps = loop_reply(llm, prompt, seed=1, max_tokens=5, temp=0.0)
    assert steps[-1].finish == "length"
    assert sum(step.token for step in steps) == 5
    full, _ = loop_reply(llm, prompt, seed=1, max_tokens=40, temp=0.0)
    word = full.split(",")[1].strip()
    assert word
    cut, steps = loop_reply(llm, prompt, seed=1, max_tokens=40, stop=[word], temp=0.0)
    assert steps[-1].finish == "stop"
    assert cut == full[: full.index(word)]


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_narrowed_penalties_sample_the_same_tokens(chat_model, temperature: float) -> None:
    """tui/compat/llama_cpp.py: penalties on the top candidates only, same tokens."""
    from llama_cpp import Llama

    from tui.compat.llama_cpp import narrow_penalties

    stock = Llama(str(chat_model), n_ctx=512, n_threads=2, verbose=False)
    narrow = Llama(str(chat_model), n_ctx=512, n_threads=2, verbose=False)
    narrow_penalties(narrow)
    prompt = chatml(stock, "List twenty fruits, one per line, and say why you like each.")

    def tokens(llm, seed: int) -> list[int]:
        llm.set_seed(seed)
        made: list[int] = []
        for token in llm.generate(
            prompt, temp=temperature, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.3
        ):
            made.append(token)
            if len(made) == 80:
                break
        return made

    try:
        for seed in (1, 2):
            assert tokens(narrow, seed) == tokens(stock, seed)
    finally:
        stock.close()
        narrow.close()
