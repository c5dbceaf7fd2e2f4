"""The ``triptych`` command: the TUI by default, headless subcommands otherwise."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from tui import __version__


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="triptych",
        description="Local AI in the terminal: chat, imagine, listen. Offline.",
    )
    parser.add_argument("--version", action="version", version=f"triptych {__version__}")
    parser.add_argument("--model", help="chat model (GGUF file) for new conversations")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    chat = sub.add_parser("chat", help="answer one prompt and print the reply")
    chat.add_argument("prompt", help="the prompt; '-' reads it from standard input")
    chat.add_argument("--model", dest="chat_model", help="GGUF model file (default: SmolLM2)")
    chat.add_argument("--system", help="system prompt")
    chat.add_argument("--max-tokens", type=_positive_int, default=None)
    chat.add_argument("--temperature", type=float, default=None)
    chat.add_argument("--top-p", type=float, default=None)
    chat.add_argument("--top-k", type=int, default=None)
    chat.add_argument("--min-p", type=float, default=None)
    chat.add_argument("--repeat-penalty", type=float, default=None)
    chat.add_argument("--ctx", type=int, default=None, help="context size in tokens")
    chat.add_argument("--seed", type=int, default=None)
    chat.add_argument("--threads", type=_positive_int, default=None, help="CPU threads")
    chat.add_argument(
        "--stats",
        action="store_true",
        help='print {"tokens", "ttft_s", "tokens_per_s"} as one JSON line to stderr',
    )
    return parser


def run_chat(args: argparse.Namespace) -> int:
    from tui import models
    from tui.config import Settings
    from tui.engines import protocol as p
    from tui.engines.host import EngineHost

    settings = Settings.load()
    sampling = settings.sampling
    for name in ("max_tokens", "temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed"):
        value = getattr(args, name)
        if value is not None:
            setattr(sampling, name, value)
    if args.ctx is not None:
        sampling.n_ctx = args.ctx
    try:
        sampling.validate()
    except ValueError as error:
        raise CliError(str(error)) from error
    # Strip: `echo ... | triptych chat -` ends the prompt with a newline, which
    # changes what small models answer.
    prompt = (sys.stdin.read() if args.prompt == "-" else args.prompt).strip()
    if not prompt:
        raise CliError("the prompt is empty")
    model_path = models.resolve_chat_model(args.chat_model or settings.chat_model)
    try:
        models.read_gguf_info(model_path)
    except models.ModelFileError as error:
        raise CliError(str(error)) from error

    messages = []
    system = args.system if args.system is not None else settings.system_prompt
    if system:
        messages.append(p.ChatMessage("system", system))
    messages.append(p.ChatMessage("user", prompt))
    request = p.ChatRequest(
        model_path=str(model_path),
        messages=messages,
        n_ctx=sampling.n_ctx,
        n_threads=args.threads if args.threads is not None else settings.threads,
        gpu_layers=settings.gpu_layers,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k,
        min_p=sampling.min_p,
        repeat_penalty=sampling.repeat_penalty,
        max_tokens=sampling.max_tokens,
        seed=sampling.seed,
    )
    from tui import locations

    host = EngineHost("chat", log_dir=locations.logs_dir())
    try:
        for event in host.submit(request):
            if isinstance(event, p.TokenGenerated):
                sys.stdout.write(event.text)
                sys.stdout.flush()
            elif isinstance(event, p.EngineFailed):
                raise CliError(event.message)
            elif isinstance(event, p.GenerationFinished):
                sys.stdout.write("\n")
                sys.stdout.flush()
                if args.stats:
                    stats = event.stats
                    line = {
                        "tokens": stats.tokens,
                        "ttft_s": round(stats.ttft_s, 4),
                        "tokens_per_s": round(stats.tokens_per_s, 2),
                    }
                    print(json.dumps(line), file=sys.stderr)
    finally:
        host.shutdown()
    return 0


def run_tui(args: argparse.Namespace) -> int:
    from tui.app import TriptychApp

    model = None
    if args.model:
        from tui import models

        model = models.resolve_chat_model(args.model)
        try:
            models.read_gguf_info(model)
        except models.ModelFileError as error:
            raise CliError(str(error)) from error
    TriptychApp(chat_model=str(model) if model else None).run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "chat":
            return run_chat(args)
        return run_tui(args)
    except CliError as error:
        message = " ".join(str(error).split())  # always exactly one line
        print(f"triptych: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
