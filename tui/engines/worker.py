"""Entry point of an engine process: ``python -m tui.engines.worker ENGINE FD_IN FD_OUT``.

A reader thread receives requests so that a Cancel arrives while the main
thread is busy generating. The process exits when the UI side closes its pipe.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from typing import Any

from tui.engines import protocol as p
from tui.engines.channel import Channel


def _engine_for(name: str) -> Any:
    if name == "chat":
        from tui.engines.chat import ChatEngine

        return ChatEngine()
    if name == "image":
        from tui.engines.image import ImageEngine

        return ImageEngine()
    if name == "speech":
        from tui.engines.speech import SpeechEngine

        return SpeechEngine()
    raise SystemExit(f"unknown engine {name!r}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    name, fd_in, fd_out = argv[0], int(argv[1]), int(argv[2])
    requests_in = Connection(fd_in, writable=False)
    events_out = Connection(fd_out, readable=False)
    channel = Channel(events_out)
    pending: queue.Queue[Any] = queue.Queue()
    latest_id = 0

    def read_requests() -> None:
        nonlocal latest_id
        while True:
            try:
                request = requests_in.recv()
            except (EOFError, OSError):
                # The UI process is gone: nothing left to serve.
                os._exit(0)
            if isinstance(request, p.Cancel):
                # A Cancel that crossed a newer request on the pipe is stale.
                if request.request_id in (0, latest_id):
                    channel.cancelled.set()
            else:
                latest_id = getattr(request, "request_id", latest_id)
                pending.put(request)

    threading.Thread(target=read_requests, daemon=True, name="requests").start()
    engine = _engine_for(name)
    channel.emit(p.EngineReady(pid=os.getpid()))
    while True:
        request = pending.get()
        if isinstance(request, p.Shutdown):
            return 0
        channel.cancelled.clear()
        try:
            engine.handle(request, channel)
        except Exception as error:  # noqa: BLE001 - reported to the UI, never fatal
            traceback.print_exc(file=sys.stderr)
            channel.emit(
                p.EngineFailed(
                    message=f"{type(error).__name__}: {error}",
                    kind="internal",
                    request_id=getattr(request, "request_id", 0),
                )
            )


if __name__ == "__main__":
    raise SystemExit(main())
