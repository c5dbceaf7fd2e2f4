"""The one place a chat model spec becomes the backend that answers it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from tui.backends.servers import parse_remote_spec, server_config
from tui.config import Settings


class ChatBackend(Protocol):
    """What the Chat panel and the CLI use of a chat backend."""

    engine: str

    @property
    def busy(self) -> bool: ...

    def submit(self, request: Any) -> Iterator[Any]: ...

    def cancel(self) -> None: ...

    def shutdown(self) -> None: ...


def chat_backend_for(
    model_spec: str | None, settings: Settings, local_host: ChatBackend
) -> ChatBackend:
    """The backend that answers chat requests for ``model_spec``.

    ``local_host`` (the chat EngineHost) for a local spec; a new
    :class:`~tui.backends.remote.RemoteChatBackend` for ``server:NAME[/MODEL]``.
    BackendError (one line) when the server is not configured or its key is missing.
    """
    parsed = parse_remote_spec(model_spec)
    if parsed is None:
        return local_host
    name, model = parsed
    config = server_config(name, settings)
    from tui.backends.remote import RemoteChatBackend

    return RemoteChatBackend(config, model)
