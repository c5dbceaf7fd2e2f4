"""Snapshot tests of the Chat screen (pytest-textual-snapshot).

No model runs here: the conversations come from a real SQLite store, so the
pictures are deterministic. Update with `scripts/test --snapshot-update`.
"""

from __future__ import annotations

from pathlib import Path

from tui.app import TriptychApp
from tui.config import Settings
from tui.store import Store
from tui.widgets.prompt_input import PromptInput

SIZE = (80, 24)

REPLY = """Paris is the capital of France. A few facts:

- population: about **2.1 million**
- river: the *Seine*

```python
print("Bonjour, Paris")
```
"""


def make_app(tmp_path: Path, *, with_conversation: bool, theme: str = "triptych-dark"):
    store = Store(tmp_path / "snap.db")
    if with_conversation:
        older = store.create_conversation("Bread baking")
        store.add_message(older.id, "user", "How long should dough rise?")
        conversation = store.create_conversation("Capital of France")
        store.add_message(conversation.id, "user", "What is the capital of France?")
        store.add_message(
            conversation.id,
            "assistant",
            REPLY,
            stats={"tokens": 42, "tokens_per_s": 80.5, "ttft_s": 0.12, "seed": 7},
        )
    settings = Settings()
    settings.theme = theme
    return TriptychApp(chat_model="SmolLM2-135M-Instruct.Q4_1.gguf", settings=settings, store=store)


async def freeze_cursor(pilot) -> None:
    prompt = pilot.app.screen.query_one(PromptInput)
    prompt.cursor_blink = False
    await pilot.pause()


def test_empty_chat(snap_compare, app_dirs, tmp_path):
    app = make_app(tmp_path, with_conversation=False)
    assert snap_compare(app, terminal_size=SIZE, run_before=freeze_cursor)


def test_conversation(snap_compare, app_dirs, tmp_path):
    app = make_app(tmp_path, with_conversation=True)
    assert snap_compare(app, terminal_size=SIZE, run_before=freeze_cursor)


def test_conversation_light_theme(snap_compare, app_dirs, tmp_path):
    app = make_app(tmp_path, with_conversation=True, theme="triptych-light")
    assert snap_compare(app, terminal_size=SIZE, run_before=freeze_cursor)


def test_help_screen(snap_compare, app_dirs, tmp_path):
    app = make_app(tmp_path, with_conversation=False)
    assert snap_compare(app, terminal_size=SIZE, press=["f1"], run_before=freeze_cursor)


def test_settings_dialog(snap_compare, app_dirs, tmp_path):
    app = make_app(tmp_path, with_conversation=True)
    assert snap_compare(app, terminal_size=SIZE, press=["ctrl+o"], run_before=freeze_cursor)
