"""End to end in tmux (80x24): F7 pictures the conversation inline, and it stays there.

The installed ``triptych`` runs with the real SmolLM2 test model and the random-weight
Stable Diffusion fixture; the picture is drawn in half cells (``▀``), which
``capture-pane`` shows as they are.
"""

from __future__ import annotations

import time
import tomllib
from pathlib import Path

import pytest
import tomli_w

from tests.sd_fixtures import fixture
from tests.test_e2e_tmux import Tmux, _log_rows, make_dirs, open_store, ready, tmux  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

HALF_CELL = "▀"
LIGHTHOUSE = "Describe a lighthouse at night."


def picture_rows(screen: str) -> int:
    """Rows of the message log drawn in half cells."""
    return sum(HALF_CELL in row for row in _log_rows(screen))


def test_f7_draws_the_picture_in_the_conversation_and_after_a_restart(
    tmux: Tmux,  # noqa: F811 - the fixture
    tmp_path: Path,
    chat_model: Path,
) -> None:
    env = make_dirs(tmp_path, chat_model)
    config = Path(env["TRIPTYCH_CONFIG_DIR"]) / "config.toml"
    settings = tomllib.loads(config.read_text())
    settings.update(image_model=str(fixture("image-model")), image_protocol="halfcell")
    config.write_text(tomli_w.dumps(settings))
    with open_store(env) as store:
        conversation = store.create_conversation(LIGHTHOUSE)
        store.add_message(conversation.id, "user", LIGHTHOUSE)
        store.add_message(
            conversation.id,
            "assistant",
            "A white lighthouse on black rocks, its beam over the sea.",
        )

    tmux.start("draw", env)
    tmux.wait_for("draw", ready, 30, "the first frame")
    # The Imagine panel's form: 64x64, 2 steps (Tab reaches W, H, Steps, CFG in turn;
    # each selects its value on focus, so typing replaces it).
    tmux.press("draw", "F3")
    tmux.wait_for("draw", "Ctrl+G generates", 20, "the Imagine panel")
    tmux.press("draw", "Tab", "Tab", "Tab")
    for value in ("64", "64", "2", "1"):
        # A Tab sent in the same burst as the digits is taken by the Input as typed text.
        time.sleep(0.3)
        tmux.type("draw", value)
        time.sleep(0.3)
        tmux.press("draw", "Tab")
    tmux.wait_for("draw", lambda s: "Steps  2 " in s, 10, "the form filled in")
    tmux.press("draw", "F2")
    tmux.wait_for("draw", ready, 10, "the Chat panel again")
    tmux.press("draw", "F7")
    tmux.wait_for("draw", "Enter or Ctrl+S draws it", 90, "the image prompt dialog")
    tmux.press("draw", "Enter")
    screen = tmux.wait_for(
        "draw", lambda s: picture_rows(s) >= 4, 120, "the picture in the conversation"
    )
    assert picture_rows(screen) <= 12, screen
    tmux.wait_for("draw", "The image is in the conversation", 30, "the status line")
    tmux.quit("draw")

    with open_store(env) as store:
        messages = store.list_messages(conversation.id)
        assert [m.role for m in messages] == ["user", "assistant", "image"]
        assert messages[-1].image_id is not None and messages[-1].content.strip()

    tmux.start("again", env)
    tmux.wait_for(
        "again", lambda s: ready(s) and picture_rows(s) >= 4, 30, "the picture after a restart"
    )
    tmux.quit("again")
