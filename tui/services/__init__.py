"""Textual-free services: each panel's state and every engine request, for screens and CLI.

Nothing under ``tui.services`` imports textual (``tests/test_import_hygiene.py``
checks). A service owns its state, builds its engine requests in one place,
does blocking work in methods documented as blocking (screens call those from a
thread worker; the CLI calls them directly) and announces what happened as
plain events to its subscribers (:class:`tui.services.base.Service`).
"""
