"""The one place an image or speech model spec becomes the backend that runs it.

A spec ``server:NAME[/MODEL]`` (see :mod:`tui.backends.servers`) gives a remote
backend for that server; anything else is a local model file, run by the local
engine host passed in. Chat has its own: :func:`tui.backends.chat.chat_backend_for`.
"""

from __future__ import annotations

from typing import Any

from tui.backends.servers import parse_remote_spec, server_config
from tui.config import Settings


def is_remote(model_spec: str | None) -> bool:
    """True when ``model_spec`` names a server rather than a local model file."""
    return parse_remote_spec(str(model_spec).strip() if model_spec else None) is not None


def _backend_for(model_spec: str | None, settings: Settings, local_host: Any, kind: str) -> Any:
    """``local_host``, or the remote backend of ``kind`` for the server ``model_spec`` names."""
    parsed = parse_remote_spec(str(model_spec).strip() if model_spec else None)
    if parsed is None:
        return local_host
    name, model = parsed
    from tui.backends import remote_media

    backend = {"image": remote_media.RemoteImageBackend, "speech": remote_media.RemoteSpeechBackend}
    return backend[kind](server_config(name, settings), model)


def image_backend_for(model_spec: str | None, settings: Settings, local_host: Any) -> Any:
    """``local_host`` (the image EngineHost) or a RemoteImageBackend for ``model_spec``.

    BackendError (one line) when the server is not configured or its key is missing.
    """
    return _backend_for(model_spec, settings, local_host, "image")


def speech_backend_for(model_spec: str | None, settings: Settings, local_host: Any) -> Any:
    """``local_host`` (the speech EngineHost) or a RemoteSpeechBackend for ``model_spec``.

    BackendError (one line) when the server is not configured or its key is missing.
    """
    return _backend_for(model_spec, settings, local_host, "speech")
