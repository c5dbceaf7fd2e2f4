"""llama-cpp-python internals (``llama-cpp-python==0.3.36``, pinned in pyproject.toml).

Runs only in the chat engine process. ``Llama.generate()`` builds its sampler chain
with the private ``Llama._init_sampler(...)`` (from ``llama_cpp._internals.LlamaSampler``):
penalties, then top-k, typical, top-p, min-p, temperature, dist. The penalties
sampler looks every candidate up in its table of recent tokens: all ~50,000 of the
vocabulary, about 0.2 ms per token on a laptop-class core, which is a tenth of a
token's time when a GPU decodes 500 tokens a second, and the app's default
repeat penalty (1.1) turns it on.

A repeat penalty >= 1 (and frequency/presence penalties >= 0) only ever lowers
logits, of at most ``last_n_tokens_size`` distinct tokens. So the k best tokens
after the penalties are among the ``k + last_n`` best before them, and the chain
top-k(k + last_n) -> penalties -> top-k(k) -> the rest keeps exactly the same
candidates, with the same logits, in the same order, as penalties -> top-k(k) ->
the rest: the same tokens for a seed, with the penalties applied to about a
hundred candidates instead of the whole vocabulary. Greedy decoding (temperature
0) has no top-k; its best token after the penalties is among the 1 + last_n best
before them, so the narrowing holds there too. Any other setting (a penalty that
raises logits, top-k off, mirostat, a grammar, logits processors) keeps the
binding's own chain.
"""

from __future__ import annotations

from typing import Any


def narrow_penalties(llm: Any) -> None:
    """Make ``llm.generate()`` apply repeat penalties to the top candidates only.

    The sampled tokens do not change (see the module docstring);
    ``tests/test_decode.py`` checks that against the binding's own chain.
    """
    from llama_cpp import _internals

    stock = llm._init_sampler
    window = int(llm.last_n_tokens_size)

    def init_sampler(
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        typical_p: float = 1.0,
        temp: float = 0.80,
        repeat_penalty: float = 1.0,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        mirostat_mode: int = 0,
        logits_processor: Any = None,
        grammar: Any = None,
        **rest: Any,
    ) -> Any:
        penalised = repeat_penalty != 1.0 or frequency_penalty != 0.0 or presence_penalty != 0.0
        lowers_only = repeat_penalty >= 1.0 and frequency_penalty >= 0 and presence_penalty >= 0
        plain = mirostat_mode == 0 and logits_processor is None and grammar is None
        if not (penalised and lowers_only and plain and top_k > 0 and temp >= 0 and window > 0):
            return stock(
                top_k=top_k,
                top_p=top_p,
                min_p=min_p,
                typical_p=typical_p,
                temp=temp,
                repeat_penalty=repeat_penalty,
                frequency_penalty=frequency_penalty,
                presence_penalty=presence_penalty,
                mirostat_mode=mirostat_mode,
                logits_processor=logits_processor,
                grammar=grammar,
                **rest,
            )
        sampler = _internals.LlamaSampler()
        sampler.add_top_k((1 if temp == 0.0 else top_k) + window)
        sampler.add_penalties(
            n_vocab=llm._n_vocab,
            penalty_last_n=window,
            penalty_repeat=repeat_penalty,
            penalty_freq=frequency_penalty,
            penalty_present=presence_penalty,
        )
        if temp == 0.0:
            sampler.add_greedy()
        else:
            sampler.add_top_k(top_k)
            sampler.add_typical(typical_p, 1)
            sampler.add_top_p(top_p, 1)
            sampler.add_min_p(min_p, 1)
            sampler.add_temp(temp)
            sampler.add_dist(llm._seed)
        return sampler

    llm._init_sampler = init_sampler
