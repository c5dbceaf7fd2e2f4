"""Downloads from the Hugging Face Hub, resumable, verified and cancellable.

``huggingface_hub`` supplies what is Hub-specific: the file URL for the
endpoint (``HF_ENDPOINT``), the credentials (``HF_TOKEN`` or a saved login),
the metadata call that gives the size and the LFS sha256, its configured HTTP
session and its mapping of error answers (gated, missing repo, missing file).
The transfer loop is ours, because ``hf_hub_download`` deletes a partial file
when it fails and cannot be cancelled from another thread, and a user pulling
a 2 GB model over hotel Wi-Fi needs both: the bytes land in a hidden
``.NAME.part`` beside the destination (with a small JSON note of which remote
version they belong to), a later attempt continues with an HTTP Range request,
and only a file whose size and sha256 match is renamed into place.

huggingface_hub is imported inside the functions, so the UI starts without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tui.formats import human_size

CHUNK = 1 << 18
SPACE_MARGIN = 64 << 20
"""Free space kept on the disk beyond the file itself."""
RETRIES = 5
"""Consecutive failed attempts (no new bytes) before a download gives up."""
DEFAULT_ENDPOINT = "https://huggingface.co"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

Progress = Callable[[int, int | None, float], None]
"""progress(done_bytes, total_bytes_or_None, bytes_per_second)."""


class DownloadError(Exception):
    """A download failed; the message is one readable line."""


class DownloadCancelled(DownloadError):
    """The user cancelled; nothing was installed."""


def endpoint() -> str:
    """The Hub's address: HF_ENDPOINT (a mirror, or a test server) or huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


@dataclass(frozen=True)
class FileSpec:
    repo: str
    filename: str
    revision: str = "main"

    def __str__(self) -> str:
        suffix = "" if self.revision == "main" else f"@{self.revision}"
        return f"{self.repo}/{self.filename}{suffix}"


_EXAMPLE = "e.g. Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf"
_HUB_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")
"""An owner or repository name as the Hub allows it (no '--' or '..' either)."""
_HUB_HOSTS = ("huggingface.co/", "www.huggingface.co/", "hf.co/")


def _bad(text: str, why: str) -> DownloadError:
    return DownloadError(f"not a Hub file: {text!r} ({why})")


def parse_spec(text: str) -> FileSpec:
    """``owner/repo/path/file.gguf[@revision]`` or a Hub URL ``.../resolve|blob/REV/path``.

    Anything else raises DownloadError with one line that says what is wrong.
    """
    text = text.strip()
    if not text:
        raise DownloadError(f"no model named: give a catalog id or OWNER/REPO/FILE ({_EXAMPLE})")
    if _has_control(text):
        raise _bad(text, "it holds a control character such as a newline")
    if "://" in text or text.lower().startswith(_HUB_HOSTS):
        return _parse_url(text)
    path, revision = text.rsplit("@", 1) if "@" in text else (text, "main")
    parts = path.split("/")
    if len(parts) < 3 or not all(parts):
        raise _bad(text, f"expected OWNER/REPO/FILE, {_EXAMPLE}")
    return _checked(FileSpec("/".join(parts[:2]), "/".join(parts[2:]), revision), text)


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text)


def _parse_url(text: str) -> FileSpec:
    from urllib.parse import unquote, urlsplit

    url = text if "://" in text else "https://" + text
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise _bad(text, "only http and https addresses of the Hub")
    segments = [unquote(s) for s in parts.path.split("/")][1:]
    if segments and segments[0] in ("datasets", "spaces"):
        raise _bad(text, f"{segments[0]} are not models; give a model repository's file")
    if len(segments) < 5 or segments[2] not in ("resolve", "blob") or not all(segments[4:]):
        raise _bad(text, "a Hub address of a file reads .../OWNER/REPO/resolve/REVISION/FILE")
    owner, repo, _, revision, *path = segments
    return _checked(FileSpec(f"{owner}/{repo}", "/".join(path), revision), text)


def _checked(spec: FileSpec, text: str) -> FileSpec:
    """spec, once its names are ones the Hub (and a file system) can take."""
    if _has_control(str(spec)):  # a URL may spell one as %0A
        raise _bad(text, "it holds a control character such as a newline")
    for name in spec.repo.split("/"):
        if not _HUB_NAME.match(name) or "--" in name or ".." in name:
            raise _bad(text, f"{name!r} is not a Hub owner or repository name")
    for part in spec.filename.split("/"):
        if part in (".", "..") or "\\" in part or part != part.strip():
            raise _bad(text, f"{part!r} is not a usable file or folder name")
    if not spec.revision or spec.revision != spec.revision.strip() or " " in spec.revision:
        raise _bad(text, f"{spec.revision!r} is not a revision")
    return spec


@dataclass
class RemoteFile:
    spec: FileSpec
    url: str
    size: int | None
    sha256: str | None
    """The LFS object id (the file's sha256) when the Hub reports one."""
    commit: str | None


def _token_set() -> bool:
    return bool(os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"))


def _hub_error(error: BaseException, spec: FileSpec) -> DownloadError:
    """One line for an error raised by huggingface_hub or the HTTP client."""
    from huggingface_hub import errors

    status = getattr(getattr(error, "response", None), "status_code", None)
    where = f"{spec.repo} on {endpoint()}"
    if isinstance(error, errors.GatedRepoError):
        if _token_set():
            return DownloadError(
                f"{spec.repo} is gated: accept its licence at {endpoint()}/{spec.repo}"
                " with the account whose HF_TOKEN you set"
            )
        return DownloadError(
            f"{spec.repo} is gated: accept its licence at {endpoint()}/{spec.repo},"
            " then set HF_TOKEN to an access token"
        )
    if isinstance(error, errors.RepositoryNotFoundError):
        hint = (
            "or HF_TOKEN has no access to it" if _token_set() else "or it is private (set HF_TOKEN)"
        )
        return DownloadError(f"repository {where} not found, {hint} (HTTP {status})")
    if isinstance(error, errors.RevisionNotFoundError):
        return DownloadError(f"revision {spec.revision!r} not found in {where}")
    if isinstance(error, errors.EntryNotFoundError):
        return DownloadError(f"no file {spec.filename!r} in {where} (HTTP {status})")
    if status == 401:
        return DownloadError(f"not authorised to download from {where}: check HF_TOKEN")
    if status is not None:
        return DownloadError(f"{endpoint()} answered HTTP {status} for {spec}")
    reason = str(error).splitlines()[0] if str(error) else error.__class__.__name__
    return DownloadError(f"cannot reach {endpoint()}: {reason}")


def remote_file(spec: FileSpec, timeout: float = 20.0) -> RemoteFile:
    """Ask the Hub where the file is, how big it is and its sha256 (one HEAD call)."""
    from huggingface_hub import get_hf_file_metadata, get_token, hf_hub_url

    try:
        url = hf_hub_url(spec.repo, spec.filename, revision=spec.revision, endpoint=endpoint())
        meta = get_hf_file_metadata(url, token=get_token(), timeout=timeout, endpoint=endpoint())
    except Exception as error:  # noqa: BLE001 - mapped to one line below
        raise _hub_error(error, spec) from None
    etag = (meta.etag or "").strip('"').lower()
    return RemoteFile(
        spec=spec,
        url=url,
        size=meta.size,
        sha256=etag if _SHA256.match(etag) else None,
        commit=meta.commit_hash,
    )


def part_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.part")


def _note_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.part.json")


def discard_partial(dest: Path) -> None:
    """Remove what an interrupted download of dest left behind."""
    part_path(dest).unlink(missing_ok=True)
    _note_path(dest).unlink(missing_ok=True)


def check_free_space(folder: Path, needed: int) -> None:
    """Raise DownloadError before a download that cannot fit on the disk."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return
    if needed + SPACE_MARGIN > free:
        raise DownloadError(
            f"not enough free space in {folder}: the download needs {human_size(needed)}"
            f" and {human_size(free)} is free"
        )


def _sha256_of(path: Path, cancel: threading.Event | None = None) -> hashlib._Hash:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            if cancel is not None and cancel.is_set():
                raise DownloadCancelled("download cancelled")
            digest.update(chunk)
    return digest


def download(
    spec: FileSpec,
    dest: Path,
    *,
    sha256: str | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    validate: Callable[[Path], object] | None = None,
    retries: int = RETRIES,
) -> Path:
    """Download one Hub file to dest; return dest.

    sha256 (e.g. pinned by the catalog) is checked; otherwise the Hub's LFS
    sha256 is. An interrupted transfer keeps its partial file and resumes on
    the next call; a cancelled one or one that fails verification leaves
    nothing behind. validate(path) may raise to refuse the finished file
    (e.g. a header check) before it is moved into place.
    """
    dest = Path(dest)
    remote = remote_file(spec)
    expected = (sha256 or remote.sha256 or "").lower() or None
    if dest.exists():
        raise DownloadError(f"{dest} already exists: delete it first to download it again")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DownloadError(f"cannot create {dest.parent} ({error.strerror or error})") from None

    part, note = part_path(dest), _note_path(dest)
    identity = {"url": remote.url, "size": remote.size, "sha256": expected}
    done = 0
    try:
        if part.exists() and json.loads(note.read_text()) == identity:
            done = part.stat().st_size
    except (OSError, ValueError):
        done = 0
    if remote.size is not None and done > remote.size:
        done = 0
    if done == 0:
        discard_partial(dest)
    if remote.size is not None:
        check_free_space(dest.parent, remote.size - done)

    try:
        note.write_text(json.dumps(identity))
        digest = _sha256_of(part, cancel) if done else hashlib.sha256()
        done, digest = _transfer(remote, part, done, digest, progress, cancel, retries)
    except DownloadCancelled:
        discard_partial(dest)
        raise
    except OSError as error:
        # Disk full, permission: the partial file stays for a later resume.
        raise DownloadError(
            f"cannot write {part.name} in {dest.parent} ({error.strerror or error})"
        ) from None

    if remote.size is not None and done != remote.size:
        discard_partial(dest)
        raise DownloadError(f"{spec}: got {done} bytes, the Hub announced {remote.size}")
    actual = digest.hexdigest()
    if expected and actual != expected:
        discard_partial(dest)
        raise DownloadError(
            f"checksum mismatch for {spec}: expected sha256 {expected[:16]}…, got"
            f" {actual[:16]}…; the download was deleted"
        )
    if validate is not None:
        try:
            validate(part)
        except Exception as error:  # noqa: BLE001 - the validator's message is the point
            discard_partial(dest)
            message = str(error).replace(str(part), spec.filename)
            raise DownloadError(f"{spec} is not usable: {message}") from None
    os.replace(part, dest)
    note.unlink(missing_ok=True)
    return dest


def _transfer(
    remote: RemoteFile,
    part: Path,
    done: int,
    digest: hashlib._Hash,
    progress: Progress | None,
    cancel: threading.Event | None,
    retries: int,
) -> tuple[int, hashlib._Hash]:
    """Stream the remaining bytes into part, resuming after dropped connections."""
    import httpx2
    from huggingface_hub import get_token
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    session = get_session()
    failures = 0
    rate = _Rate(done)
    while True:
        headers = build_hf_headers(token=get_token())
        headers["Accept-Encoding"] = "identity"
        if done:
            headers["Range"] = f"bytes={done}-"
        if remote.size is not None and done >= remote.size:
            return done, digest
        progressed = False
        try:
            with session.stream(
                "GET", remote.url, headers=headers, follow_redirects=True, timeout=30.0
            ) as response:
                if response.status_code == 416 and remote.size == done:
                    return done, digest
                if response.status_code >= 400:
                    response.read()
                    hf_raise_for_status(response)
                mode = "ab"
                if done and response.status_code != 206:
                    # The server ignored the Range: start over.
                    done, mode = 0, "wb"
                    digest = hashlib.sha256()
                    rate = _Rate(0)
                with part.open(mode) as out:
                    for chunk in response.iter_bytes(CHUNK):
                        if cancel is not None and cancel.is_set():
                            raise DownloadCancelled("download cancelled")
                        out.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        progressed = True
                        if progress is not None and rate.tick(done):
                            progress(done, remote.size, rate.speed)
                    out.flush()
                    os.fsync(out.fileno())
            if remote.size is None or done >= remote.size:
                if progress is not None:
                    progress(done, remote.size, rate.speed)
                return done, digest
            raise httpx2.RemoteProtocolError("the server closed the connection early")
        except DownloadCancelled:
            raise
        except (httpx2.TransportError, httpx2.StreamError) as error:
            failures = 0 if progressed else failures + 1
            if failures >= retries:
                raise DownloadError(
                    f"download of {remote.spec} failed after {retries} attempts"
                    f" ({error.__class__.__name__}); run it again to resume from"
                    f" {human_size(done)}"
                ) from None
            _sleep(min(2.0, 0.25 * (failures + 1)), cancel)
        except Exception as error:
            from huggingface_hub import errors

            if isinstance(error, errors.HfHubHTTPError):
                raise _hub_error(error, remote.spec) from None
            raise


def _sleep(seconds: float, cancel: threading.Event | None) -> None:
    if cancel is None:
        time.sleep(seconds)
    elif cancel.wait(seconds):
        raise DownloadCancelled("download cancelled")


class _Rate:
    """Bytes per second over the last few seconds, and a 10 Hz report throttle."""

    def __init__(self, done: int) -> None:
        now = time.monotonic()
        self.samples: deque[tuple[float, int]] = deque([(now, done)])
        self.last_report = 0.0
        self.speed = 0.0

    def tick(self, done: int) -> bool:
        now = time.monotonic()
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[0][0] > 3.0:
            self.samples.popleft()
        t0, d0 = self.samples[0]
        if now > t0:
            self.speed = (done - d0) / (now - t0)
        if now - self.last_report >= 0.1:
            self.last_report = now
            return True
        return False


# --------------------------------------------------------------------------- queue


@dataclass
class Job:
    """One queued download, as the UI sees it."""

    key: str
    spec: FileSpec
    dest: Path
    sha256: str | None = None
    validate: Callable[[Path], object] | None = None
    state: str = "queued"
    """queued, downloading, done, failed or cancelled."""
    done: int = 0
    total: int | None = None
    speed: float = 0.0
    error: str = ""
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def active(self) -> bool:
        return self.state in ("queued", "downloading")

    @property
    def eta_s(self) -> float | None:
        if self.total is None or self.speed <= 0:
            return None
        return max(0.0, (self.total - self.done) / self.speed)

    def describe(self) -> str:
        """e.g. '45% · 3.1 MB/s · 0:12 left'."""
        if self.state == "queued":
            return "queued"
        if self.state != "downloading":
            return self.error or self.state
        parts = []
        if self.total:
            parts.append(f"{100 * self.done // self.total}%")
        else:
            parts.append(human_size(self.done))
        parts.append(f"{human_size(int(self.speed))}/s")
        eta = self.eta_s
        if eta is not None:
            minutes, seconds = divmod(int(eta + 0.5), 60)
            parts.append(f"{minutes}:{seconds:02d} left")
        return " · ".join(parts)


class DownloadQueue:
    """Downloads one job at a time in a background thread.

    on_change(job) is called from that thread whenever a job changes (at most
    about ten times a second while bytes flow); the UI forwards it to its loop.
    """

    def __init__(self, on_change: Callable[[Job], None] | None = None) -> None:
        self.on_change = on_change
        self.jobs: list[Job] = []
        self._pending: deque[Job] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(
        self,
        key: str,
        spec: FileSpec,
        dest: Path,
        sha256: str | None = None,
        validate: Callable[[Path], object] | None = None,
    ) -> Job:
        """Queue a download (a job already queued or running for key is returned as is)."""
        for job in self.jobs:
            if job.key == key and job.active:
                return job
        job = Job(key=key, spec=spec, dest=dest, sha256=sha256, validate=validate)
        with self._wake:
            self.jobs = [j for j in self.jobs if j.key != key] + [job]
            self._pending.append(job)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="triptych-downloads", daemon=True
                )
                self._thread.start()
            self._wake.notify()
        self._changed(job)
        return job

    def find(self, key: str) -> Job | None:
        for job in reversed(self.jobs):
            if job.key == key:
                return job
        return None

    def cancel(self, key: str) -> bool:
        """Cancel a queued or running job; True if there was one."""
        job = self.find(key)
        if job is None or not job.active:
            return False
        job.cancel.set()
        if job.state == "queued":
            with self._wake:
                with contextlib.suppress(ValueError):
                    self._pending.remove(job)
            job.state = "cancelled"
            self._changed(job)
        return True

    def active(self) -> list[Job]:
        return [job for job in self.jobs if job.active]

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no job is active (for tests and the CLI)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.active():
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _changed(self, job: Job) -> None:
        if self.on_change is not None:
            try:
                self.on_change(job)
            except Exception:  # noqa: BLE001 - a closed UI must not kill the queue
                pass

    def _run(self) -> None:
        while True:
            with self._wake:
                if not self._pending:
                    self._wake.wait(timeout=30.0)
                    if not self._pending:
                        return
                job = self._pending.popleft()
            if job.cancel.is_set():
                continue
            job.state = "downloading"
            self._changed(job)

            def report(done: int, total: int | None, speed: float, job: Job = job) -> None:
                job.done, job.total, job.speed = done, total, speed
                self._changed(job)

            try:
                download(
                    job.spec,
                    job.dest,
                    sha256=job.sha256,
                    progress=report,
                    cancel=job.cancel,
                    validate=job.validate,
                )
                job.state = "done"
            except DownloadCancelled:
                job.state = "cancelled"
            except DownloadError as error:
                job.state, job.error = "failed", str(error)
            except Exception as error:  # noqa: BLE001 - reported, never raised in a thread
                job.state, job.error = "failed", f"{error.__class__.__name__}: {error}"
            self._changed(job)
