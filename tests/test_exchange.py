"""Export a conversation as Markdown and JSON, import the JSON back, search everything.

Everything runs on the real Store; the image is a real PNG drawn with PIL and
the Markdown is parsed with markdown-it-py and rendered by Textual's Markdown
widget.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml
from markdown_it import MarkdownIt
from mdit_py_plugins.front_matter import front_matter_plugin
from PIL import Image
from textual.app import App, ComposeResult
from textual.widgets import Markdown

from tui.engines.protocol import Sampling
from tui.services.exchange import (
    ExchangeError,
    contained_markdown,
    export_conversation,
    fenced,
    import_conversation,
)
from tui.store import Attachment, Store, search_snippet

HOSTILE_NAMES = ["../../etc/passwd", "evil\x1b]52;c;QUJD\x07name\x1b[2J.py", "a\nb]</summary>.md"]
TRICKY_TEXT = (
    "before\n```\nfenced? </details>\n````\n</details>\n<details><summary>x</summary>\nafter"
)


def png_bytes(color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    image = Image.new("RGB", (16, 8), color)
    image.putpixel((3, 3), (0, 255, 0))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "db" / "triptych.db") as opened:
        yield opened


def build_conversation(store: Store, tmp_path: Path) -> int:
    """A conversation with every role, states, hostile attachments and two images."""
    conversation = store.create_conversation(
        title="Trip `plans` <b>: --- #1",
        system_prompt="You are terse.\n---\nreally",
        model="server:box/llama",
        sampling={"temperature": 0.2, "seed": 7},
    )
    cid = conversation.id
    user = store.add_message(cid, "user", "Name the capital city of France.\n" + TRICKY_TEXT)
    for index, name in enumerate(HOSTILE_NAMES):
        store.add_attachment(
            user.id,
            name,
            ("text", "code", "markdown")[index],
            f"content {index}\n{TRICKY_TEXT}\n``````\n",
            source=f"/home/u/{name}",
            tokens=10 + index,
            note="trimmed to the first 10 of 40 tokens" if index == 1 else "",
        )
    store.add_message(cid, "assistant", "Paris. ```python\nprint('open fence')", "stopped", {
        "tokens": 5,
        "tokens_per_s": 12.5,
    })  # fmt: skip
    store.add_message(cid, "error", "the engine failed <script>alert(1)", "error")
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    source = gallery / "red square.png"
    source.write_bytes(png_bytes())
    params = {"prompt": "a red (square) [x]", "steps": 4, "cfg_scale": 7.0, "sampler": "euler_a"}
    record = store.add_image(str(source), params, seed=42, width=16, height=8, seconds=1.5)
    store.add_message(cid, "image", "a red (square) [x]", image_id=record.id)
    gone = store.add_image(str(gallery / "gone.png"), {"prompt": "gone"}, seed=1, width=8, height=8)
    store.add_message(cid, "image", "gone", image_id=gone.id)
    store.delete_image(gone.id)  # the message keeps its prompt, image_id becomes NULL
    store.add_message(cid, "user", "<!-- never closed\n<pre>\nstill mine")
    return cid


def attachment_fields(attachment: Attachment) -> dict[str, Any]:
    fields = dict(vars(attachment))
    del fields["id"], fields["message_id"]
    return fields


# --- JSON round trip ---------------------------------------------------------------


def test_json_round_trip_keeps_messages_attachments_and_images(
    store: Store, tmp_path: Path
) -> None:
    cid = build_conversation(store, tmp_path)
    out = tmp_path / "out dir" / "conv.json"
    result = export_conversation(store, cid, out)
    assert result.images == 1 and result.folder == tmp_path / "out dir" / "conv_files"
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["format"] == "triptych-conversation" and document["version"] == 1

    with Store(tmp_path / "other" / "triptych.db") as other:
        imported = import_conversation(other, out, images_folder=tmp_path / "images2")
        assert imported.skipped == []
        assert (imported.messages, imported.attachments, imported.images) == (6, 3, 1)
        before = store.get_conversation(cid)
        after = imported.conversation
        assert before is not None
        for name in ("title", "system_prompt", "model", "sampling", "created", "updated"):
            assert getattr(after, name) == getattr(before, name), name

        old = store.list_messages(cid)
        new = other.list_messages(after.id)
        assert [(m.role, m.content, m.state, m.stats) for m in new] == [
            (m.role, m.content, m.state, m.stats) for m in old
        ]
        assert [m.created for m in new] == [m.created for m in old]
        old_attachments = store.attachments_for(m.id for m in old)
        new_attachments = other.attachments_for(m.id for m in new)
        for before_message, after_message in zip(old, new, strict=True):
            assert [attachment_fields(a) for a in new_attachments.get(after_message.id, [])] == [
                attachment_fields(a) for a in old_attachments.get(before_message.id, [])
            ]

        image_messages = [m for m in new if m.role == "image"]
        assert image_messages[1].image_id is None  # it had left the gallery before the export
        row = other.get_image(image_messages[0].image_id or 0)
        assert row is not None, "the imported image is in the gallery"
        assert Path(row.path).parent == tmp_path / "images2"
        assert Path(row.path).read_bytes() == png_bytes()
        original = store.get_image(old[3].image_id or 0)
        assert original is not None
        assert (row.prompt, row.seed, row.width, row.height, row.params, row.seconds) == (
            original.prompt,
            original.seed,
            original.width,
            original.height,
            original.params,
            original.seconds,
        )

        # Importing again adds a second conversation and a second file: nothing is replaced.
        again = import_conversation(other, out, images_folder=tmp_path / "images2")
        assert again.conversation.id != after.id
        assert len(list((tmp_path / "images2").iterdir())) == 2
        assert Path(row.path).read_bytes() == png_bytes()


def test_export_refuses_to_replace_a_file_unless_asked(store: Store, tmp_path: Path) -> None:
    cid = build_conversation(store, tmp_path)
    out = tmp_path / "conv.md"
    out.write_text("mine")
    with pytest.raises(ExchangeError, match="already exists"):
        export_conversation(store, cid, out)
    assert out.read_text() == "mine"
    export_conversation(store, cid, out, overwrite=True)
    assert out.read_text().startswith("---\n")
    # The JSON beside it shares the images folder (the same image, so no conflict).
    assert export_conversation(store, cid, tmp_path / "conv.json").images == 1
    with pytest.raises(ExchangeError, match="no conversation"):
        export_conversation(store, 999, tmp_path / "none.md")


# --- Markdown ----------------------------------------------------------------------


def front_matter(text: str) -> dict[str, Any]:
    assert text.startswith("---\n")
    end = text.index("\n---\n", 4)
    return yaml.safe_load(text[4:end])


def test_markdown_parses_with_front_matter_details_and_image_links(
    store: Store, tmp_path: Path
) -> None:
    cid = build_conversation(store, tmp_path)
    path = tmp_path / "my export (1).md"
    defaults = Sampling(top_k=12)
    export_conversation(store, cid, path, default_model="unused", default_sampling=defaults)
    text = path.read_text(encoding="utf-8")

    meta = front_matter(text)
    conversation = store.get_conversation(cid)
    assert conversation is not None
    assert meta["title"] == conversation.title
    assert meta["system_prompt"] == conversation.system_prompt
    assert meta["model"] == "server:box/llama"
    # The conversation's own sampling over the defaults given.
    assert meta["sampling"]["temperature"] == 0.2 and meta["sampling"]["seed"] == 7
    assert meta["sampling"]["top_k"] == 12 and meta["sampling"]["max_tokens"] == 512

    tokens = MarkdownIt("commonmark").use(front_matter_plugin).parse(text)
    assert tokens[0].type == "front_matter"
    headings = [
        tokens[i + 1].content
        for i, token in enumerate(tokens)
        if token.type == "heading_open" and token.tag == "h2"
    ]
    # No message swallowed the sections after it (open fences, <!--, <pre>, <details>).
    assert headings == [
        "System prompt",
        "User",
        "Assistant (stopped)",
        "Error",
        "Image",
        "Image",
        "User",
    ]
    opened = [t for t in tokens if t.type == "html_block" and t.content.startswith("<details>")]
    closed = [t for t in tokens if t.type == "html_block" and t.content.strip() == "</details>"]
    assert len(opened) == len(closed) == 3
    for token in opened:
        summary = token.content.splitlines()[1]
        assert summary.startswith("<summary>") and summary.endswith("</summary>")
        assert "\x1b" not in summary and "../../etc/passwd" in opened[0].content
        assert summary.count("</summary>") == 1, "the name cannot close the summary"
    fences = [t.content for t in tokens if t.type == "fence"]
    for index in range(3):
        assert f"content {index}\n{TRICKY_TEXT}\n``````\n" in fences

    images = [
        child.attrs["src"]
        for token in tokens
        if token.type == "inline"
        for child in token.children or []
        if child.type == "image"
    ]
    assert images == ["my%20export%20%281%29_files/image-001.png"]
    linked = path.parent / unquote(str(images[0]))
    assert linked.is_file() and linked.read_bytes() == png_bytes()
    assert "Image not available (deleted from the gallery)" in text
    html = MarkdownIt("commonmark").use(front_matter_plugin).render(text)
    assert "<script" not in html and html.count("<details>") == html.count("</details>") == 3


async def test_markdown_renders_in_textual(store: Store, tmp_path: Path) -> None:
    cid = build_conversation(store, tmp_path)
    path = tmp_path / "conv.md"
    export_conversation(store, cid, path)
    text = path.read_text(encoding="utf-8")

    class Viewer(App[None]):
        def compose(self) -> ComposeResult:
            yield Markdown(text)

    app = Viewer()
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        markdown = app.query_one(Markdown)
        assert len(markdown.children) > 10
    assert app.return_code in (None, 0)


def test_contained_markdown_closes_fences_and_escapes_blocks() -> None:
    assert contained_markdown("a\n```py\ncode") == "a\n```py\ncode\n```"
    assert contained_markdown("~~~~\n</details>\n~~~~") == "~~~~\n</details>\n~~~~"
    assert contained_markdown("x </details> y") == "x &lt;/details> y"
    assert contained_markdown("<!-- open") == "&lt;!-- open"
    assert contained_markdown("  <script>") == "  &lt;script>"
    assert contained_markdown("**bold** <b>ok</b>") == "**bold** <b>ok</b>"
    assert contained_markdown("x <script>y") == "x &lt;script>y"
    assert contained_markdown("`<details>` and <details>") == "`<details>` and &lt;details>"
    assert fenced("a ``` b ```` c").startswith("`````\n")


# --- broken imports ----------------------------------------------------------------


def valid_document() -> dict[str, Any]:
    return {
        "format": "triptych-conversation",
        "version": 1,
        "title": "t",
        "messages": [{"role": "user", "content": "hi", "attachments": []}],
    }


def broken(document: dict[str, Any], *path: Any, value: Any = ..., drop: bool = False) -> str:
    target: Any = document
    for key in path[:-1]:
        target = target[key]
    if drop:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(document)


BROKEN = {
    "not JSON": ("{'format': ", "not JSON"),
    "a list": ("[1, 2]", "not a JSON object"),
    "another format": (broken(valid_document(), "format", value="chat"), "not a Triptych"),
    "newer version": (broken(valid_document(), "version", value=2), "version 2"),
    "no title": (broken(valid_document(), "title", drop=True), "missing field 'title'"),
    "messages not a list": (broken(valid_document(), "messages", value={}), "messages"),
    "unknown role": (broken(valid_document(), "messages", 0, "role", value="boss"), "role"),
    "content a number": (broken(valid_document(), "messages", 0, "content", value=3), "content"),
    "bad attachment kind": (
        broken(
            valid_document(), "messages", 0, "attachments", value=[{"name": "a", "kind": "exe"}]
        ),
        "kind",
    ),
    "bad sampling": (broken(valid_document(), "sampling", value={"temperature": 99}), "sampling"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_document_is_one_line_and_creates_nothing(
    store: Store, tmp_path: Path, case: str
) -> None:
    text, words = BROKEN[case]
    path = tmp_path / "in.json"
    path.write_text(text, encoding="utf-8")
    images = tmp_path / "images"
    with pytest.raises(ExchangeError) as caught:
        import_conversation(store, path, images_folder=images)
    message = str(caught.value)
    assert "\n" not in message and words in message, message
    assert store.list_conversations() == []
    assert not images.exists()


@pytest.mark.parametrize("kind", ["binary", "missing", "folder", "fifo"])
def test_unreadable_inputs_are_one_line(store: Store, tmp_path: Path, kind: str) -> None:
    import os

    path = tmp_path / "in.json"
    if kind == "binary":
        path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    elif kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    with pytest.raises(ExchangeError) as caught:
        import_conversation(store, path, images_folder=tmp_path / "images")
    assert "\n" not in str(caught.value)
    assert store.list_conversations() == []


def test_images_that_cannot_be_used_are_left_out_and_named(store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "export"
    (folder / "conv_files").mkdir(parents=True)
    (folder / "conv_files" / "fake.png").write_text("not a png")
    (folder / "conv_files" / "good.png").write_bytes(png_bytes((1, 2, 3)))
    (tmp_path / "secret.png").write_bytes(png_bytes())
    names = [
        "conv_files/missing.png",
        "conv_files/fake.png",
        "../secret.png",
        str(tmp_path / "secret.png"),
        "conv_files/good.png",
    ]
    document = valid_document()
    document["messages"] = [
        {"role": "image", "content": f"prompt {i}", "image": {"file": name, "seed": i}}
        for i, name in enumerate(names)
    ]
    path = folder / "conv.json"
    path.write_text(json.dumps(document))
    images = tmp_path / "images"
    result = import_conversation(store, path, images_folder=images)
    assert result.images == 1 and len(result.skipped) == 4
    assert "missing" in result.skipped[0] and "not a PNG" in result.skipped[1]
    assert "outside" in result.skipped[2] or "inside" in result.skipped[2]
    assert all("\n" not in line for line in result.skipped)
    messages = store.list_messages(result.conversation.id)
    assert [m.content for m in messages] == [f"prompt {i}" for i in range(5)]
    assert [m.image_id is not None for m in messages] == [False, False, False, False, True]
    assert [p.name for p in images.iterdir()] == [
        Path(store.get_image(messages[4].image_id).path).name
    ]  # type: ignore[union-attr]


# --- search everything -------------------------------------------------------------


def test_search_finds_every_kind(store: Store, tmp_path: Path) -> None:
    chat = store.create_conversation(title="Holiday plans")
    user = store.add_message(chat.id, "user", "Where should we go in spring?")
    store.add_attachment(user.id, "itinerary.txt", "text", "Day 1: Lisbon 100%_sure")
    store.add_attachment(user.id, "budget.md", "markdown", "cheap flights")
    record = store.add_recording(str(tmp_path / "r.wav"), "Grüße an Oma", duration_s=2.0)
    store.update_recording(
        record.id, transcript=[{"start_s": 0, "end_s": 1, "text": " Die Straße nach Lisbon"}]
    )
    image = store.add_image(str(tmp_path / "i.png"), {"prompt": "Lisbon tram at dusk"}, seed=1,
                            width=8, height=8)  # fmt: skip

    def kinds(query: str) -> list[tuple[str, int]]:
        return [(hit.kind, hit.id) for hit in store.search(query)]

    assert kinds("holiday") == [("conversation", chat.id)]
    assert kinds("SPRING") == [("message", user.id)]
    budget = store.attachments_for([user.id])[user.id][1]
    assert kinds("budget") == [("attachment", budget.id)]
    hits = store.search("lisbon")
    assert {hit.kind for hit in hits} == {"attachment", "recording", "image"}
    assert [hit.time for hit in hits] == sorted((hit.time for hit in hits), reverse=True)
    assert kinds("GRÜSSE") == [] or kinds("grüße") == [("recording", record.id)]
    assert kinds("grüße") == [("recording", record.id)]
    assert kinds("STRASSE") == [] and kinds("straße") == [("recording", record.id)]
    assert kinds("tram") == [("image", image.id)]
    # % and _ are literal.
    assert kinds("100%_") == [("attachment", store.attachments_for([user.id])[user.id][0].id)]
    assert kinds("%") == kinds("100%")
    assert kinds("_") == kinds("%_")
    hit = store.search("spring")[0]
    assert hit.conversation_id == chat.id and hit.message_id == user.id
    assert hit.title == "Holiday plans" and "spring" in hit.snippet
    assert store.search("") == [] and store.search("nothing like this") == []
    assert len(store.search("i", limit=2)) == 2


def test_search_snippet_is_one_line_around_the_match() -> None:
    text = "word " * 40 + "NEEDLE\nin the\thaystack " + "tail " * 40
    snippet = search_snippet(text, "needle")
    assert "\n" not in snippet and "NEEDLE in the haystack" in snippet
    assert snippet.startswith("…") and snippet.endswith("…")
    assert len(snippet) < 120
