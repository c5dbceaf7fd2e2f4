"""The chat front ends against raw llama-cpp-python, for scripts/bench-gpu.

    python scripts/_bench_gpu_front.py --model M [--gpu-layers N] [--threads N]
                                       [--rounds 3] [--max-tokens 128] [--no-tui] [--no-cli]

One process, rounds interleaved after a warm-up round that is not counted: raw, CLI, TUI.

  raw  bench-chat's RawPath: Llama(...) in this process, the prompt formatted with the
       GGUF's template as the chat engine does; timed at the consumer.
  CLI  `python -m tui.cli chat PROMPT --stats` in a fresh process each round (with
       TRIPTYCH_GPU_LAYERS): its --stats line (the engine's own first-token time and
       decode rate) is compared; the process start and model load are not.
  TUI  the real TriptychApp headless (App.run_test, 80x24) driven by Pilot: a new
       conversation (Ctrl+N), the prompt typed into the chat screen's input, Enter. Decode
       rate: the reply's GenerationStats; TTFT: from the Enter key press to the first text
       in the reply's data (polled every ~1 ms until then, every 50 ms after), against
       raw's TTFT; split at the moment the (still empty) reply appears in the message log.

The same single user message (no system prompt), new from its first word each round, the
same sampling (temperature 0, seed) and reply length for all three. Prints a table and,
last, one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_util as bu  # noqa: E402 - lives beside this script

SCRIPTS = Path(__file__).resolve().parent
TUI_SIZE = (80, 24)


def bench_chat_module() -> Any:
    """scripts/bench-chat as a module (RawPath, SAMPLING, SEED, N_CTX)."""
    loader = importlib.machinery.SourceFileLoader("bench_chat", str(SCRIPTS / "bench-chat"))
    spec = importlib.util.spec_from_loader("bench_chat", loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_chat"] = module  # dataclasses look their module up there
    loader.exec_module(module)
    return module


def prompt(tag: str) -> str:
    return (
        f"{tag}: write a long, detailed story about a lighthouse keeper who finds a message"
        " in a bottle. Describe the sea, the weather and the keeper's thoughts."
    )


def run_cli(bc: Any, model: Path, text: str, threads: int, gpu_layers: int, max_tokens: int):
    """One `triptych chat --stats` process; its stats line as a dict."""
    s = bc.SAMPLING
    env = dict(os.environ, TRIPTYCH_GPU_LAYERS=str(gpu_layers))
    command = [
        sys.executable,
        "-m",
        "tui.cli",
        "chat",
        text,
        "--model",
        str(model),
        "--system",
        "",
        "--max-tokens",
        str(max_tokens),
        "--temperature",
        str(s["temperature"]),
        "--top-p",
        str(s["top_p"]),
        "--top-k",
        str(s["top_k"]),
        "--min-p",
        str(s["min_p"]),
        "--repeat-penalty",
        str(s["repeat_penalty"]),
        "--ctx",
        str(bc.N_CTX),
        "--seed",
        str(bc.SEED),
        "--threads",
        str(threads),
        "--stats",
    ]
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=bu.REPO, env=env, capture_output=True, text=True, timeout=300
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"triptych chat failed ({done.returncode}): {done.stderr[-2000:]}")
    stats = json.loads(done.stderr.strip().splitlines()[-1])
    stats["wall_s"] = wall
    stats["text"] = done.stdout.removesuffix("\n")  # the CLI ends the reply with one
    return stats


class Tui:
    """TriptychApp under Pilot, kept running across rounds."""

    def __init__(self, model: Path, threads: int, gpu_layers: int, max_tokens: int, bc: Any):
        from tui.app import TriptychApp
        from tui.config import Settings

        settings = Settings()
        settings.system_prompt = ""
        settings.threads = threads
        settings.gpu_layers = gpu_layers
        sampling = settings.sampling
        for key, value in {
            **bc.SAMPLING,
            "max_tokens": max_tokens,
            "n_ctx": bc.N_CTX,
            "seed": bc.SEED,
        }.items():
            if hasattr(sampling, key):
                setattr(sampling, key, value)
        self.app = TriptychApp(chat_model=str(model), settings=settings)

    async def ask(self, pilot: Any, text: str) -> dict[str, Any]:
        from tui.screens.chat import ChatScreen
        from tui.widgets.message_log import MessageLog
        from tui.widgets.prompt_input import PromptInput

        app = self.app
        await pilot.press("ctrl+n")
        await pilot.pause()
        screen = app.screen
        if not isinstance(screen, ChatScreen):
            raise RuntimeError(f"expected the chat screen, got {type(screen).__name__}")
        log = screen.query_one(MessageLog)

        def replies() -> list[Any]:
            return [v for v in log.views if v.data.role != "user"]

        before = replies()
        last_id = before[-1].data.id if before else 0
        field = screen.query_one(PromptInput)
        field.focus()
        field.text = text
        await pilot.pause()
        started = time.perf_counter()
        first = shown = None
        press = asyncio.ensure_future(pilot.press("enter"))
        deadline = started + 300
        while True:
            views = replies()
            reply = views[-1].data if views and views[-1].data.id > last_id else None
            if reply is not None and shown is None:
                shown = time.perf_counter()
            if reply is not None and first is None and reply.content:
                first = time.perf_counter()
            if reply is not None and reply.state != "streaming" and not screen.generating:
                break
            if time.perf_counter() > deadline:
                raise TimeoutError("no reply from the TUI within 300 s")
            # Fine polling only until the first text: polling every millisecond while the
            # reply streams would cost this process (the UI's) CPU that the engine needs.
            await asyncio.sleep(0.001 if first is None else 0.05)
        await press
        if reply.state != "complete" or not reply.stats:
            raise RuntimeError(f"the TUI reply ended {reply.state!r}: {reply.content[:200]!r}")
        return {
            "ttft_s": (first or time.perf_counter()) - started,
            "reply_shown_s": (shown or started) - started,
            "tokens": reply.stats.get("tokens", 0),
            "tokens_per_s": reply.stats.get("tokens_per_s", float("nan")),
            "engine_ttft_s": reply.stats.get("ttft_s", float("nan")),
            "text": reply.content,
        }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    bc = bench_chat_module()
    raw = bc.RawPath(args.model, args.threads, args.gpu_layers)
    tui = (
        None if args.no_tui else Tui(args.model, args.threads, args.gpu_layers, args.max_tokens, bc)
    )
    rows: list[list[Any]] = []
    got: dict[str, list[dict[str, Any]]] = {"raw": [], "cli": [], "tui": []}

    async def rounds(pilot: Any) -> None:
        for r in range(args.rounds + 1):
            label = str(r) if r else "warm-up"
            text = prompt(f"Round {r} of {args.rounds}" if r else "Warm-up")
            run = raw.generate([("user", text)], args.max_tokens)
            results = {
                "raw": {
                    "ttft_s": run.ttft_s,
                    "tokens": run.tokens,
                    "tokens_per_s": run.decode_tps,
                    "text": run.text,
                }
            }
            if not args.no_cli:
                results["cli"] = run_cli(
                    bc, args.model, text, args.threads, args.gpu_layers, args.max_tokens
                )
            if pilot is not None:
                results["tui"] = await tui.ask(pilot, text)
            for path, result in results.items():
                same = "" if path == "raw" else ("yes" if result["text"] == run.text else "NO")
                rows.append(
                    [
                        label,
                        path,
                        result["tokens"],
                        result["ttft_s"] * 1000,
                        result["tokens_per_s"],
                        same,
                    ]
                )
                if r:
                    got[path].append(result)
            print(f"  round {label} done", file=sys.stderr, flush=True)

    if tui is not None:
        async with tui.app.run_test(size=TUI_SIZE) as pilot:
            await pilot.pause()
            await rounds(pilot)
    else:
        await rounds(None)

    bu.print_table(["round", "path", "tokens", "TTFT ms", "decode tok/s", "same text"], rows)
    raw_tps = bu.median([x["tokens_per_s"] for x in got["raw"]])
    raw_ttft = bu.median([x["ttft_s"] for x in got["raw"]]) * 1000
    summary: dict[str, Any] = {
        "model": args.model.name,
        "gpu_layers": args.gpu_layers,
        "threads": args.threads,
        "rounds": args.rounds,
        "max_tokens": args.max_tokens,
        "raw_decode_tps": raw_tps,
        "raw_ttft_ms": raw_ttft,
        "raw_load_s": raw.load_s,
    }
    for path, what in (("cli", "engine-reported (--stats)"), ("tui", "Enter to first text")):
        if not got[path]:
            continue
        tps = bu.median([x["tokens_per_s"] for x in got[path]])
        ttft = bu.median([x["ttft_s"] for x in got[path]]) * 1000
        same = all(a["text"] == b["text"] for a, b in zip(got[path], got["raw"], strict=True))
        summary[path] = {
            "decode_tps": tps,
            "decode_ratio_app_over_raw": tps / raw_tps,
            "ttft_ms": ttft,
            "ttft_overhead_ms": ttft - raw_ttft,
            "ttft_measured": what,
            "identical_output": same,
        }
        if path == "cli":
            summary[path]["process_wall_s"] = bu.median([x["wall_s"] for x in got[path]])
        else:  # where the TUI's time to first token goes
            shown = bu.median([x["reply_shown_s"] for x in got[path]]) * 1000
            summary[path]["enter_to_reply_view_ms"] = shown
            summary[path]["reply_view_to_first_text_ms"] = ttft - shown
            print(f"  tui: Enter -> empty reply shown {shown:.1f} ms, -> first text {ttft:.1f} ms")
        print(
            f"  {path}: decode {tps:.1f} vs raw {raw_tps:.1f} tok/s -> app/raw {tps / raw_tps:.3f};"
            f" TTFT ({what}) {ttft:.1f} vs raw {raw_ttft:.1f} ms -> {ttft - raw_ttft:+.1f} ms;"
            f" same text: {same}"
        )
    return summary


def main(argv: list[str] | None = None) -> int:
    bu.ensure_venv()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="GGUF chat model")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--gpu-layers", type=int, default=0, help="-1: all")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--no-tui", action="store_true", help="leave out the TUI path")
    parser.add_argument("--no-cli", action="store_true", help="leave out the CLI path")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    print(
        f"bench-gpu front: {args.model.name}, gpu layers {args.gpu_layers}, {args.threads} threads"
    )
    summary = asyncio.run(run(args))
    summary["elapsed_s"] = time.perf_counter() - began
    bu.print_json_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
