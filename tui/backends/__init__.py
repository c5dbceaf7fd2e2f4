"""Where a chat request goes: the local engine process or a remote server.

A chat model spec is either a GGUF file (path, name or '' for the default),
served by the local :class:`~tui.engines.host.EngineHost`, or names a server
from the settings' ``servers`` table:

- ``server:NAME`` uses the model configured for that server (or, when none is
  configured, the first one the server lists);
- ``server:NAME/MODEL`` asks that server for ``MODEL`` (a model id may itself
  hold slashes: everything after the first one is the id).

Modules: ``servers`` (the settings' servers table and the spec syntax),
``chat`` (:func:`~tui.backends.chat.chat_backend_for`, the one place a spec
becomes a backend; the Chat panel's service and ``triptych chat`` both call
it) and ``remote`` (the OpenAI-compatible client). Both kinds of backend take a
:class:`~tui.engines.protocol.ChatRequest` in ``submit`` and yield the same
protocol events. Nothing here imports Textual or the ``openai`` client (that
loads only when a remote backend is used).
"""
