"""Downloads through huggingface_hub against a loopback server that answers like the Hub."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from tests.hub_server import HubServer
from tui import hub, library


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    with HubServer() as srv:
        monkeypatch.setenv("HF_ENDPOINT", srv.endpoint)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
        yield srv


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_completes_and_verifies(server: HubServer, chat_model: Path, tmp_path: Path):
    data = chat_model.read_bytes()
    server.hub.add("acme/SmolLM2-GGUF", "smol.gguf", data)
    seen: list[tuple[int, int | None]] = []
    dest = hub.download(
        hub.parse_spec("acme/SmolLM2-GGUF/smol.gguf"),
        tmp_path / "models" / "smol.gguf",
        progress=lambda done, total, speed: seen.append((done, total)),
        validate=library.identify,
    )
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert library.identify(dest).modality == "chat"
    assert seen and seen[-1] == (len(data), len(data))
    assert leftovers(dest.parent) == ["smol.gguf"]  # no .part, no note


def test_dropped_connection_resumes_with_range(server: HubServer, tmp_path: Path):
    data = os.urandom(3_000_000)
    entry = server.hub.add("acme/blob", "weights.bin", data, drops=[1_200_000, 1_200_000])
    dest = hub.download(hub.parse_spec("acme/blob/weights.bin"), tmp_path / "w.bin")
    assert dest.read_bytes() == data
    assert entry.gets[0] == ""
    assert all(g.startswith("bytes=") and g != "bytes=0-" for g in entry.gets[1:])
    assert len(entry.gets) == 3


def test_interrupted_download_resumes_on_the_next_run(server: HubServer, tmp_path: Path):
    data = os.urandom(2_000_000)
    # The first connection drops after 700 kB, then the network is down for good.
    entry = server.hub.add("acme/blob", "w.bin", data, drops=[700_000, 0, 0])
    dest = tmp_path / "w.bin"
    with pytest.raises(hub.DownloadError, match="failed after 2 attempts.*run it again"):
        hub.download(hub.parse_spec("acme/blob/w.bin"), dest, retries=2)
    partial = hub.part_path(dest)
    assert partial.exists() and 0 < partial.stat().st_size < len(data)
    assert not dest.exists()
    have = partial.stat().st_size
    assert entry.drops == []
    hub.download(hub.parse_spec("acme/blob/w.bin"), dest)
    assert dest.read_bytes() == data
    assert entry.gets[-1] == f"bytes={have}-"
    assert leftovers(tmp_path) == ["w.bin"]


def test_checksum_mismatch_is_rejected_and_leaves_nothing(server: HubServer, tmp_path: Path):
    server.hub.add("acme/blob", "w.bin", os.urandom(500_000), sha256="ab" * 32)
    with pytest.raises(hub.DownloadError, match="checksum mismatch.*deleted"):
        hub.download(hub.parse_spec("acme/blob/w.bin"), tmp_path / "w.bin")
    assert leftovers(tmp_path) == []


def test_pinned_sha256_wins_over_the_hub(server: HubServer, tmp_path: Path):
    server.hub.add("acme/blob", "w.bin", b"x" * 1000)
    with pytest.raises(hub.DownloadError, match="checksum mismatch"):
        hub.download(hub.parse_spec("acme/blob/w.bin"), tmp_path / "w.bin", sha256="cd" * 32)
    assert leftovers(tmp_path) == []


def test_missing_file_is_a_clear_404(server: HubServer, tmp_path: Path):
    server.hub.add("acme/blob", "w.bin", b"x")
    with pytest.raises(hub.DownloadError) as caught:
        hub.download(hub.parse_spec("acme/blob/nope.gguf"), tmp_path / "n.gguf")
    assert str(caught.value) == (
        f"no file 'nope.gguf' in acme/blob on {server.endpoint} (HTTP 404)"
    )


def test_missing_or_private_repo_is_a_clear_401(server: HubServer, tmp_path: Path):
    with pytest.raises(hub.DownloadError, match=r"repository acme/ghost .* not found, or it is "
                       r"private \(set HF_TOKEN\) \(HTTP 401\)"):  # fmt: skip
        hub.download(hub.parse_spec("acme/ghost/x.gguf"), tmp_path / "x.gguf")


def test_gated_repo_needs_a_token(
    server: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    server.hub.add("meta/gated", "m.bin", b"secret weights")
    server.hub.gated.add("meta/gated")
    with pytest.raises(hub.DownloadError, match="gated: accept its licence.*set HF_TOKEN"):
        hub.download(hub.parse_spec("meta/gated/m.bin"), tmp_path / "m.bin")
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(hub.DownloadError, match="gated.*whose HF_TOKEN you set"):
        hub.download(hub.parse_spec("meta/gated/m.bin"), tmp_path / "m.bin")
    monkeypatch.setenv("HF_TOKEN", server.hub.token)
    dest = hub.download(hub.parse_spec("meta/gated/m.bin"), tmp_path / "m.bin")
    assert dest.read_bytes() == b"secret weights"


def test_not_enough_space_is_reported_before_downloading(server: HubServer, tmp_path: Path):
    entry = server.hub.add("acme/huge", "huge.gguf", b"tiny", size=1 << 45)
    with pytest.raises(hub.DownloadError, match=r"not enough free space in .* needs 32\.0 TiB"):
        hub.download(hub.parse_spec("acme/huge/huge.gguf"), tmp_path / "huge.gguf")
    assert entry.gets == []  # refused before a single byte was asked for
    assert leftovers(tmp_path) == []


def test_cancel_stops_and_leaves_nothing(server: HubServer, tmp_path: Path):
    server.hub.add("acme/blob", "w.bin", os.urandom(4_000_000))
    cancel = threading.Event()
    with pytest.raises(hub.DownloadCancelled):
        hub.download(
            hub.parse_spec("acme/blob/w.bin"),
            tmp_path / "w.bin",
            progress=lambda done, total, speed: cancel.set(),
            cancel=cancel,
        )
    assert leftovers(tmp_path) == []


def test_a_file_that_is_not_a_model_is_refused(server: HubServer, tmp_path: Path):
    server.hub.add("acme/fake", "model.gguf", b"<html>Sign in to continue</html>\n")
    with pytest.raises(hub.DownloadError, match=r"acme/fake/model.gguf is not usable: not a "
                       "model Triptych can use"):  # fmt: skip
        hub.download(
            hub.parse_spec("acme/fake/model.gguf"),
            tmp_path / "model.gguf",
            validate=library.identify,
        )
    assert leftovers(tmp_path) == []


def test_queue_runs_jobs_in_order_and_reports(server: HubServer, tmp_path: Path):
    server.hub.add("acme/a", "a.bin", os.urandom(300_000))
    server.hub.add("acme/b", "b.bin", os.urandom(300_000))
    states: list[tuple[str, str]] = []
    queue = hub.DownloadQueue(on_change=lambda job: states.append((job.key, job.state)))
    queue.add("a", hub.parse_spec("acme/a/a.bin"), tmp_path / "a.bin")
    queue.add("b", hub.parse_spec("acme/b/b.bin"), tmp_path / "b.bin")
    queue.add("c", hub.parse_spec("acme/b/missing.bin"), tmp_path / "c.bin")
    assert queue.wait(timeout=30)
    assert [queue.find(k).state for k in "abc"] == ["done", "done", "failed"]
    assert "no file 'missing.bin'" in queue.find("c").error
    assert states.index(("a", "done")) < states.index(("b", "downloading"))
    assert (tmp_path / "a.bin").stat().st_size == 300_000


def test_queue_cancel_of_a_queued_job(server: HubServer, tmp_path: Path):
    server.hub.add("acme/a", "a.bin", os.urandom(2_000_000), drops=[10, 10, 10])
    queue = hub.DownloadQueue()
    queue.add("a", hub.parse_spec("acme/a/a.bin"), tmp_path / "a.bin")
    queue.add("b", hub.parse_spec("acme/a/a.bin"), tmp_path / "b.bin")
    assert queue.cancel("b")
    assert queue.cancel("a")
    assert queue.wait(timeout=30)
    assert queue.find("a").state == "cancelled" and queue.find("b").state == "cancelled"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("text", "repo", "filename", "revision"),
    [
        ("Qwen/Qwen2.5-0.5B-Instruct-GGUF/q.gguf", "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "q.gguf",
         "main"),
        ("a/b/sub/dir/f.bin@v1.0", "a/b", "sub/dir/f.bin", "v1.0"),
        ("https://huggingface.co/a/b/resolve/main/f.gguf?download=true", "a/b", "f.gguf", "main"),
        ("https://huggingface.co/a/b/blob/abc123/x/f.gguf", "a/b", "x/f.gguf", "abc123"),
    ],
)  # fmt: skip
def test_parse_spec(text: str, repo: str, filename: str, revision: str):
    assert hub.parse_spec(text) == hub.FileSpec(repo, filename, revision)


@pytest.mark.parametrize("text", ["model.gguf", "a/b", "a/b/../etc/passwd", "a/b/f@"])
def test_parse_spec_refuses(text: str):
    with pytest.raises(hub.DownloadError, match="not a Hub file"):
        hub.parse_spec(text)
