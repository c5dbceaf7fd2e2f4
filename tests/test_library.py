"""What each model file is, import with header checks, finding models, delete, defaults."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.sd_fixtures import fixture, truncated_copy
from tests.speech_fixtures import whisper_model
from tui import library
from tui.config import Settings
from tui.formats import ModelFileError


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "models"
    monkeypatch.setenv("TRIPTYCH_MODELS_DIR", str(folder))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return folder


def kinds(path: Path) -> tuple[str, str]:
    identity = library.identify(path)
    return identity.modality, identity.kind


def test_identify_each_kind(chat_model: Path):
    chat = library.identify(chat_model)
    assert (chat.modality, chat.kind) == ("chat", "model")
    assert chat.detail.startswith("llama")
    speech = library.identify(whisper_model())
    assert (speech.modality, speech.kind, speech.detail) == (
        "speech",
        "model",
        "whisper tiny (English)",
    )
    assert kinds(fixture("image-model")) == ("image", "model")
    assert kinds(fixture("taesd")) == ("image", "taesd")
    assert kinds(fixture("vae")) == ("image", "vae")


def test_import_accepts_a_gguf(chat_model: Path, models_dir: Path):
    model = library.import_model(chat_model)
    assert model.path == models_dir / chat_model.name
    assert model.path.stat().st_size == chat_model.stat().st_size
    assert model.modality == "chat"
    assert [p.name for p in models_dir.iterdir()] == [chat_model.name]


def test_import_copies_across_filesystems(chat_model: Path, models_dir: Path, tmp_path: Path):
    # /dev/shm is another filesystem, so the hard link fails and the copy path runs.
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem to copy across")
    source = shm / f"triptych-test-{os.getpid()}.bin"
    shutil.copyfile(whisper_model(), source)
    try:
        model = library.import_model(source)
    finally:
        source.unlink()
    assert model.modality == "speech"
    assert model.path.read_bytes()[:4] == whisper_model().read_bytes()[:4]
    assert sorted(p.name for p in models_dir.iterdir()) == [source.name]  # no temp file left


def test_import_refuses_a_text_file_named_gguf(tmp_path: Path, models_dir: Path):
    fake = tmp_path / "llama-3-8b.gguf"
    fake.write_text("this is not a model\n")
    with pytest.raises(ModelFileError, match=r"not a model Triptych can use .*it starts with"):
        library.import_model(fake)
    assert not models_dir.exists() or not any(models_dir.iterdir())


def test_import_refuses_a_truncated_gguf(chat_model: Path, tmp_path: Path, models_dir: Path):
    cut = tmp_path / "cut.gguf"
    with chat_model.open("rb") as src:
        cut.write_bytes(src.read(chat_model.stat().st_size // 2))
    with pytest.raises(ModelFileError, match="truncated GGUF model"):
        library.import_model(cut)
    assert not (models_dir / "cut.gguf").exists()


def test_import_refuses_truncated_whisper_and_safetensors(tmp_path: Path, models_dir: Path):
    cut = tmp_path / "ggml-cut.bin"
    cut.write_bytes(whisper_model().read_bytes()[:5_000_000])
    with pytest.raises(ModelFileError, match="truncated whisper model"):
        library.import_model(cut)
    with pytest.raises(ModelFileError, match="truncated safetensors"):
        library.import_model(truncated_copy(fixture("taesd"), tmp_path / "taesd.safetensors"))


def test_import_refuses_a_pickle_checkpoint(tmp_path: Path, models_dir: Path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"\x80\x02}q\x00." + b"\x00" * 64)
    with pytest.raises(ModelFileError, match="refusing a pickle checkpoint"):
        library.import_model(ckpt)


def test_import_refuses_a_name_clash(chat_model: Path, tmp_path: Path, models_dir: Path):
    library.import_model(chat_model)
    other = tmp_path / chat_model.name
    shutil.copyfile(whisper_model(), other)
    with pytest.raises(ModelFileError, match="already installed"):
        library.import_model(other)


def test_scan_finds_models_folder_added_folders_and_hf_cache(
    chat_model: Path, models_dir: Path, tmp_path: Path
):
    library.import_model(chat_model)
    mine = tmp_path / "my-models" / "whisper"
    mine.mkdir(parents=True)
    shutil.copyfile(whisper_model(), mine / "ggml-tiny.en.bin")
    (mine / "notes.bin").write_bytes(b"not a model")  # skipped, not listed
    (mine / ".hidden.gguf").write_bytes(b"GGUF")  # hidden: skipped
    # The Hugging Face cache layout: snapshots hold links to content-addressed blobs.
    repo = tmp_path / "hf-cache" / "models--madebyollin--taesd"
    (repo / "blobs").mkdir(parents=True)
    blob = repo / "blobs" / "0123abcd"
    shutil.copyfile(fixture("taesd"), blob)
    snapshot = repo / "snapshots" / "614f768"
    snapshot.mkdir(parents=True)
    (snapshot / "diffusion_pytorch_model.safetensors").symlink_to("../../blobs/0123abcd")

    settings = Settings(model_dirs=[str(tmp_path / "my-models")])
    found = {(m.name, m.source, m.modality, m.kind) for m in library.scan(settings)}
    assert found == {
        (chat_model.name, "models", "chat", "model"),
        ("ggml-tiny.en.bin", "folder", "speech", "model"),
        ("diffusion_pytorch_model.safetensors", "hf-cache", "image", "taesd"),
    }


def test_delete_only_inside_the_models_folder(chat_model: Path, models_dir: Path):
    model = library.import_model(chat_model)
    with pytest.raises(ModelFileError, match="not in Triptych's models folder"):
        library.delete_model(chat_model)  # the original, elsewhere
    assert chat_model.exists()
    library.delete_model(model.path)
    assert not model.path.exists()
    with pytest.raises(ModelFileError, match="not found"):
        library.delete_model(model.path)


def test_defaults_per_modality_and_kind(chat_model: Path, models_dir: Path):
    settings = Settings()
    assert library.default_path(settings, "speech") is None
    speech = library.set_default(settings, whisper_model())
    assert settings.speech_model == str(whisper_model().absolute())
    assert library.is_default(settings, speech)
    library.set_default(settings, fixture("taesd"))
    assert settings.image_taesd == str(fixture("taesd").absolute())
    assert settings.image_model == ""
    imported = library.import_model(chat_model)
    library.set_default(settings, imported.path)
    assert library.default_path(settings, "chat") == imported.path.absolute()
