"""``triptych export`` and ``triptych import``, run as a user would: a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.test_exchange import build_conversation, png_bytes
from tui import locations
from tui.store import Store

TRIPTYCH = Path(sys.executable).parent / "triptych"


def triptych(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TRIPTYCH), *args],
        input="",
        capture_output=True,
        text=True,
        env=dict(os.environ),
        cwd=cwd,
        timeout=120,
        check=False,
    )


def one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("triptych: "), proc.stderr
    assert proc.stdout == ""
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def filled(app_dirs: Path) -> int:
    """The app's database with the test conversation (and a hostile title) in it."""
    locations.data_dir().mkdir(parents=True, exist_ok=True)
    with Store(locations.database_file()) as store:
        store.create_conversation(title="older one")
        cid = build_conversation(store, app_dirs)
        store.rename_conversation(cid, "Trip \x1b]0;pwned\x07 plans")
    return cid


def test_export_json_then_import_it_back(filled: int, tmp_path: Path) -> None:
    listed = triptych(tmp_path, "export", "--list")
    assert listed.returncode == 0, listed.stderr
    first = listed.stdout.splitlines()[0]
    assert first.startswith(f"{filled}  ") and "\x1b" not in listed.stdout
    assert "␛]0;pwned␇" in first

    out = tmp_path / "out" / "conv.json"
    proc = triptych(tmp_path, "export", str(filled), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    assert "1 image in" in proc.stderr
    assert (tmp_path / "out" / "conv_files" / "image-001.png").read_bytes() == png_bytes()
    assert json.loads(out.read_text())["title"] == "Trip \x1b]0;pwned\x07 plans"

    again = triptych(tmp_path, "export", str(filled), "-o", str(out))
    one_line_error(again, "already exists")

    imported = triptych(tmp_path, "import", str(out))
    assert imported.returncode == 0, imported.stderr
    new_id, title = imported.stdout.strip().split("  ", 1)
    assert int(new_id) > filled and title == "Trip ␛]0;pwned␇ plans"
    with Store(locations.database_file()) as store:
        before = store.list_messages(filled)
        after = store.list_messages(int(new_id))
        assert [(m.role, m.content, m.state) for m in after] == [
            (m.role, m.content, m.state) for m in before
        ]


def test_export_markdown_by_default_to_the_current_folder(filled: int, tmp_path: Path) -> None:
    proc = triptych(tmp_path, "export")  # the most recent conversation
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert path.parent == tmp_path and path.name == f"triptych-{filled}-trip-0-pwned-plans.md"
    text = path.read_text(encoding="utf-8")
    end = text.index("\n---\n", 4)
    assert yaml.safe_load(text[4:end])["title"] == "Trip \x1b]0;pwned\x07 plans"

    json_out = triptych(tmp_path, "export", "1", "--format", "json", "-o", "-")
    assert json_out.returncode == 0, json_out.stderr
    assert json.loads(json_out.stdout)["title"] == "older one"
    with_images = triptych(tmp_path, "export", str(filled), "-o", "-")
    one_line_error(with_images, "has images")


def test_bad_input_is_one_line(filled: int, tmp_path: Path) -> None:
    one_line_error(triptych(tmp_path, "export", "999"), "no conversation with id 999")
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "triptych-conversation", "version": 1, "title": 3}')
    one_line_error(triptych(tmp_path, "import", str(broken)), "title")
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\x00\xff\xfe")
    one_line_error(triptych(tmp_path, "import", str(binary)))
    one_line_error(triptych(tmp_path, "import", str(tmp_path / "nothing.json")), "not found")
    one_line_error(triptych(tmp_path, "import", str(tmp_path)), "not a regular file")
    with Store(locations.database_file()) as store:
        assert len(store.list_conversations()) == 2, "nothing was imported"
