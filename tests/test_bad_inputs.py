"""idgen's own corpus of bad inputs, run through the CLI: every case asserts its exit code (2 usage,
3 bad input, 4 missing model) and its one-line message, that no traceback was printed, and that a
failed job left nothing in its output folder.

Categories: image files, face content, option values, checkpoints (pickle payloads included),
videos, datasets, config and environment, outputs. The demo's own cases are in tests/test_demo*.py.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from idgen.app.cli import main

REPO = Path(__file__).resolve().parents[1]
FACE = REPO / "assets" / "faces" / "portrait_glasses.jpg"
FACE2 = REPO.parent / "shared" / "faces" / "portrait_smile.jpg"  # CI has shared/ beside the repo


# ------------------------------------------------------------------------------------ materials
def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares `width` x `height` with almost no data (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict:
    """Bad files by name."""
    root = tmp_path_factory.mktemp("bad")
    files = {"missing": root / "missing.jpg", "folder": root / "folder.jpg"}
    files["folder"].mkdir()
    (files.setdefault("empty", root / "empty.jpg")).write_bytes(b"")
    (files.setdefault("garbage", root / "garbage.jpg")).write_bytes(np.random.default_rng(0).bytes(4096))
    (files.setdefault("text", root / "notes.png")).write_text("this is not an image\n")
    (files.setdefault("truncated", root / "truncated.jpg")).write_bytes(FACE.read_bytes()[:2000])
    files["bomb"] = _png_header_only(root / "bomb.png", 60000, 60000)
    Image.new("RGB", (1, 1), (128, 128, 128)).save(files.setdefault("1x1", root / "1x1.png"))
    Image.new("RGB", (65535, 1), (128, 128, 128)).save(files.setdefault("65535x1", root / "65535x1.png"))
    Image.new("RGB", (256, 256), (120, 120, 120)).save(files.setdefault("noface", root / "noface.png"))
    a, b = Image.open(FACE).convert("RGB"), Image.open(FACE2).convert("RGB").resize(Image.open(FACE).size)
    pair = Image.new("RGB", (a.width * 2, a.height))
    pair.paste(a, (0, 0))
    pair.paste(b, (a.width, 0))
    pair.save(files.setdefault("twofaces", root / "twofaces.jpg"))
    (files.setdefault("video_garbage", root / "clip.mp4")).write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 500)
    (files.setdefault("video_empty", root / "empty.mp4")).write_bytes(b"")
    return files


class Payload:
    """Unpickling this runs `os.system` (a checkpoint that executes code)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def tiny_sd15(tmp_path_factory) -> Path:
    """A tiny SD1.5 diffusers folder (random weights) as a base model."""
    from diffusers import StableDiffusionPipeline

    from idgen.testing import tiny_sd15_components

    folder = tmp_path_factory.mktemp("models") / "sd15"
    StableDiffusionPipeline(**tiny_sd15_components(0), requires_safety_checker=False).save_pretrained(folder)
    return folder


def _copy(folder: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(folder, to)
    return to


def run(argv, capsys, out: Path | None = None) -> tuple[int, str]:
    """`idgen argv...` in this process: `(exit code, stderr)`; checks that no traceback was printed
    and, on failure, that `out` (the job's output folder) holds nothing."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    err = captured.err + captured.out
    assert "Traceback" not in err, err
    if code != 0 and out is not None:
        assert not out.exists() or not any(out.iterdir()), f"a failed job left {sorted(out.iterdir())}"
    return code, err


def expect(argv, capsys, code: int, *patterns: str, out: Path | None = None) -> str:
    got, err = run(argv, capsys, out)
    assert got == code, f"exit {got} (expected {code}): {err}"
    lines = [line for line in err.splitlines() if line.startswith("idgen")]
    assert lines, err
    for pattern in patterns:
        assert pattern.lower() in err.lower(), f"{pattern!r} not in: {err}"
    return err


@pytest.fixture
def home(empty_home, monkeypatch):
    for name in ("IDGEN_MAX_IMAGE_PIXELS", "IDGEN_MAX_IMAGE_BYTES", "IDGEN_MAX_OUTPUT_PIXELS", "IDGEN_MAX_BATCH",
                 "IDGEN_DEBUG", "IDGEN_MEMORY_CHECK"):
        monkeypatch.delenv(name, raising=False)
    return empty_home


# ---------------------------------------------------------------------------------- image files
@pytest.mark.parametrize("name, pattern", [
    ("missing", "does not exist"), ("folder", "folder"), ("empty", "empty"),
    ("garbage", "could not be decoded"), ("text", "could not be decoded"), ("truncated", "truncated"),
    ("bomb", "above the limit"), ("1x1", "1x1"), ("65535x1", "65535x1"),
])
def test_bad_image_files(home, bad, capsys, name, pattern):
    err = expect(["faces", bad[name], "--backend", "dlib"], capsys, 3, pattern)
    assert str(bad[name].name) in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_photo(home, tmp_path, capsys):
    photo = tmp_path / "locked.jpg"
    photo.write_bytes(FACE.read_bytes())
    photo.chmod(0)
    expect(["faces", photo], capsys, 3, "locked.jpg")


def test_a_bad_reference_photo_among_good_ones_is_skipped_with_a_note(home, bad, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run(["generate", "--method", "faceid", "--face", FACE, bad["noface"], "--steps", "1", "--out", out,
                     "--backend", "dlib"], capsys)
    assert code == 0, err
    assert "reference photo skipped" in err and "noface.png" in err
    record = json.loads((out / "record.json").read_text())
    assert len(record["faces"]) == 1 and any("noface.png" in n for n in record["notes"])


# --------------------------------------------------------------------------------- face content
def test_no_face(home, bad, tmp_path, capsys):
    out = tmp_path / "out"
    expect(["generate", "--method", "faceid", "--face", bad["noface"], "--out", out, "--backend", "dlib"],
           capsys, 3, "no face", out=out)


def test_several_faces_where_one_is_required(home, bad, capsys):
    expect(["faces", bad["twofaces"], "--select", "one", "--backend", "dlib"], capsys, 3, "faces")


def test_a_face_index_out_of_range(home, capsys):
    expect(["faces", FACE, "--select", "7", "--backend", "dlib"], capsys, 3, "7")


# ------------------------------------------------------------------------------- option values
GENERATE = ["generate", "--method", "faceid", "--face", str(FACE)]


@pytest.mark.parametrize("option, value, pattern", [
    ("--steps", "-1", "--steps"), ("--steps", "0", "--steps"), ("--steps", "abc", "--steps"),
    ("--width", "0", "--width"), ("--width", "7", "--width"), ("--width", "100", "multiple of 8"),
    ("--guidance-scale", "nan", "finite"), ("--guidance-scale", "inf", "finite"), ("--identity-scale", "nan", "finite"),
    ("--identity-scale", "-1", "--identity-scale"), ("--control-scale", "1e400", "finite"),
    ("--identity-start", "1.5", "--identity-start"), ("--num-images", "0", "--num-images"),
    ("--seed", "18446744073709551616", "--seed"), ("--seed", "-1", "--seed"), ("--seed", "1.5", "--seed"),
])
def test_generate_option_values(home, tmp_path, capsys, option, value, pattern):
    out = tmp_path / "out"
    expect([*GENERATE, option, value, "--out", out], capsys, 2, pattern, out=out)


@pytest.mark.parametrize("extra, patterns", [
    (["--width", "100000", "--height", "100000"], ["above the limit", "IDGEN_MAX_OUTPUT_PIXELS"]),
    (["--num-images", "100000"], ["num_images", "IDGEN_MAX_BATCH"]),
    (["--identity-start", "0.8", "--identity-end", "0.2"], ["identity_start"]),
])
def test_requests_too_large_or_empty_are_refused_before_anything_runs(home, tmp_path, capsys, extra, patterns):
    out = tmp_path / "out"
    expect([*GENERATE, *extra, "--out", out], capsys, 3, *patterns, out=out)


def test_a_request_that_cannot_fit_in_memory_is_refused(home, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("idgen.resources.available_bytes", lambda device: 64 * 2**20)  # a 64 MiB machine
    out = tmp_path / "out"
    expect([*GENERATE, "--width", "2048", "--height", "2048", "--out", out, "--backend", "dlib"], capsys, 3,
           "GiB of working memory", "IDGEN_MEMORY_CHECK=0", out=out)


@pytest.mark.parametrize("command, option, value", [
    ("swap", "--strength", "0"), ("swap", "--strength", "nan"), ("swap", "--strength", "1.5"),
    ("swap", "--feather", "-1"), ("swap", "--dilate", "100000"), ("inpaint", "--target", "-2"),
])
def test_edit_option_values(home, tmp_path, capsys, command, option, value):
    source = ["--source", FACE] if command == "swap" else ["--face", FACE]
    out = tmp_path / "out"
    expect([command, FACE2, *source, option, value, "--out", out], capsys, 2, option, out=out)


@pytest.mark.parametrize("argv, pattern", [
    (["restore", str(FACE), "--fidelity", "2"], "--fidelity"),
    (["restore", str(FACE), "--steps", "0"], "--steps"),
    (["eval", "restore", "--input", str(FACE), "--max-items", "0"], "--max-items"),
    (["prepare-data", str(REPO / "assets" / "faces"), "/tmp/never", "--min-sharpness", "nan"], "--min-sharpness"),
    (["train", "lora", "--output-dir", "/tmp/never", "--learning-rate", "nan"], "--learning-rate"),
    (["train", "lora", "--output-dir", "/tmp/never", "--max-train-steps", "1e3"], "--max-train-steps"),
    (["generate", "--method", "dreambooth", "--face", str(FACE)], "--method"),
])
def test_other_option_values(home, capsys, argv, pattern):
    expect(argv, capsys, 2, pattern)


def test_too_few_steps_for_the_strength(home, tmp_path, capsys):
    """fidelity 0.5 starts restoration part-way (strength < 1): one step would be an empty schedule."""
    out = tmp_path / "out"
    expect(["restore", FACE, "--steps", "1", "--out", out, "--backend", "dlib"], capsys, 3, "no denoising step",
           "at least 2 steps", out=out)


def test_unknown_restoration_task(home, tmp_path, capsys):
    expect(["restore", FACE, "--tasks", "bfr,sharpen", "--out", tmp_path / "out"], capsys, 3, "sharpen")


# --------------------------------------------------------------------------------- checkpoints
def _faceid_adapter(path: Path) -> Path:
    from diffusers import UNet2DConditionModel

    from idgen.testing import random_faceid_state_dict, tiny_unet

    unet = tiny_unet(0)
    assert isinstance(unet, UNet2DConditionModel)
    torch.save(random_faceid_state_dict(unet, "faceid", seed=1), path)
    return path


def _faceid_run(monkeypatch, tmp_path, base: Path, adapter: Path, capsys, code: int, *patterns: str):
    monkeypatch.setenv("IDGEN_SD15", str(base))
    monkeypatch.setenv("IDGEN_FACEID_SD15", str(adapter))
    out = tmp_path / "out"
    return expect([*GENERATE, "--steps", "1", "--out", out, "--backend", "dlib"], capsys, code, *patterns, out=out)


def test_configured_tiny_weights_work(home, tiny_sd15, tmp_path, monkeypatch, capsys):
    """The control case of the checkpoint cases below: the same folder, intact, loads and runs."""
    from test_face_insightface import _export_pack  # a tiny insightface pack: the 512-d embeddings real weights need

    _export_pack(home / "insightface" / "models" / "antelopev2", landmarks=True)
    monkeypatch.setenv("IDGEN_SD15", str(tiny_sd15))
    monkeypatch.setenv("IDGEN_FACEID_SD15", str(_faceid_adapter(tmp_path / "faceid.bin")))
    code, err = run([*GENERATE, "--steps", "1", "--out", tmp_path / "out", "--backend", "insightface"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "out" / "record.json").read_text())["embedded_default"] is False


@pytest.mark.parametrize("damage, patterns", [
    ("model_index.json:{not json", ["model_index.json", "not valid JSON", "line 1"]),
    ("unet/config.json:binary", ["unet/config.json", "not a text"]),
    ("unet/config.json:[1, 2]", ["unet/config.json", "JSON object"]),
    ("unet/diffusion_pytorch_model.safetensors:truncate", ["diffusion_pytorch_model.safetensors", "truncated"]),
    ("vae/config.json:{\"_class_name\": \"AutoencoderKL\", \"latent_channels\": 7}", ["could not load", "sd15"]),
])
def test_a_damaged_base_model_folder(home, tiny_sd15, tmp_path, monkeypatch, capsys, damage, patterns):
    base = _copy(tiny_sd15, tmp_path / "sd15")
    name, how = damage.split(":", 1)
    target = base / name
    if how == "binary":
        target.write_bytes(b"\x89\xff\x00\x01" * 64)
    elif how == "truncate":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    else:
        target.write_text(how)
    _faceid_run(monkeypatch, tmp_path, base, _faceid_adapter(tmp_path / "faceid.bin"), capsys, 3, *patterns)


def test_a_pickle_payload_as_adapter_is_refused_and_never_runs(home, tiny_sd15, tmp_path, monkeypatch, capsys):
    marker = tmp_path / "payload-ran"
    adapter = tmp_path / "ip-adapter-faceid_sd15.bin"
    adapter.write_bytes(pickle.dumps({"image_proj": Payload(marker)}))
    _faceid_run(monkeypatch, tmp_path, tiny_sd15, adapter, capsys, 3, "ip-adapter-faceid_sd15.bin")
    assert not marker.exists(), "the checkpoint's code ran"


@pytest.mark.parametrize("content, pattern", [
    (b"", "ip-adapter"), (b"PK\x03\x04garbage", "ip-adapter"),
])
def test_a_corrupt_adapter_file(home, tiny_sd15, tmp_path, monkeypatch, capsys, content, pattern):
    adapter = tmp_path / "ip-adapter-faceid_sd15.bin"
    adapter.write_bytes(content)
    _faceid_run(monkeypatch, tmp_path, tiny_sd15, adapter, capsys, 3, pattern)


def test_an_adapter_of_another_method(home, tiny_sd15, tmp_path, monkeypatch, capsys):
    """An InstantID ip-adapter.bin configured as the FaceID adapter: the message names a key."""
    from idgen.testing import random_instantid_state_dict, tiny_unet

    adapter = tmp_path / "ip-adapter.bin"
    torch.save(random_instantid_state_dict(tiny_unet(0), seed=1), adapter)
    _faceid_run(monkeypatch, tmp_path, tiny_sd15, adapter, capsys, 3, "ip-adapter.bin")


def _restore_controlnet(tmp_path: Path, xl: bool) -> Path:
    from idgen.testing import tiny_controlnet, tiny_sd15_components, tiny_sdxl_components

    unet = (tiny_sdxl_components if xl else tiny_sd15_components)(0)["unet"]
    folder = tmp_path / ("identitynet-sdxl" if xl else "controlnet")
    tiny_controlnet(unet, 5).save_pretrained(folder)
    return folder


def test_an_sdxl_identitynet_as_the_restoration_controlnet(home, tiny_sd15, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IDGEN_SD15", str(tiny_sd15))
    monkeypatch.setenv("IDGEN_RESTORE_CONTROLNET", str(_restore_controlnet(tmp_path, xl=True)))
    out = tmp_path / "out"
    expect(["restore", FACE, "--steps", "1", "--out", out, "--backend", "dlib"], capsys, 3,
           "restoration ControlNet", "identitynet-sdxl", "SDXL: 2048", out=out)


@pytest.mark.parametrize("config, patterns", [
    ("{\"_class_name\": \"ControlNetModel\"", ["controlnet/config.json", "not valid JSON"]),
    ("{\"_class_name\": \"ControlNetModel\", \"block_out_channels\": [8, 16]}", ["could not load", "restoration ControlNet"]),
])
def test_a_controlnet_folder_with_a_bad_config_says_so_offline(home, tiny_sd15, tmp_path, monkeypatch, capsys,
                                                                config, patterns):
    folder = _restore_controlnet(tmp_path, xl=False)
    (folder / "config.json").write_text(config)
    monkeypatch.setenv("IDGEN_SD15", str(tiny_sd15))
    monkeypatch.setenv("IDGEN_RESTORE_CONTROLNET", str(folder))
    err = expect(["restore", FACE, "--steps", "1", "--out", tmp_path / "out", "--backend", "dlib"], capsys, 3,
                 *patterns)
    assert "internet" not in err


def test_a_missing_configured_model_exits_4(home, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IDGEN_SD15", str(tmp_path / "nowhere"))
    expect([*GENERATE, "--out", tmp_path / "out"], capsys, 4, "IDGEN_SD15", "nowhere")


# -------------------------------------------------------------------------------------- videos
@pytest.mark.parametrize("name", ["video_garbage", "video_empty"])
def test_bad_video_files(home, bad, tmp_path, capsys, name):
    out = tmp_path / "out"
    expect(["swap", bad[name], "--source", FACE, "--out", out, "--backend", "dlib", "--steps", "1"], capsys, 3,
           bad[name].name, out=out)


@pytest.mark.parametrize("command", ["swap", "restore"])
def test_a_video_without_faces_is_an_error_not_a_copy(home, tmp_path, capsys, command):
    from idgen.media.video import write_video

    clip = tmp_path / "gray.mp4"
    write_video(clip, [np.full((64, 64, 3), 100, np.uint8)] * 4, 8)
    out = tmp_path / "out"
    source = ["--source", FACE] if command == "swap" else []
    expect([command, clip, *source, "--out", out, "--steps", "1", "--backend", "dlib"], capsys, 3,
           "no face was processed", "gray.mp4", out=out)


def test_restoring_a_photo_without_faces(home, bad, tmp_path, capsys):
    out = tmp_path / "out"
    expect(["restore", bad["noface"], "--out", out, "--steps", "1", "--backend", "dlib"], capsys, 3, "face", out=out)


# ------------------------------------------------------------------------------------ datasets
@pytest.mark.parametrize("content, pattern", [(b"\xff\xfe\x00binary", "not JSON"), (b"[]", "not an idgen dataset"),
                                              (b'{"format": "idgen-faces", "version": 99}', "version")])
def test_bad_dataset_description(home, tmp_path, capsys, content, pattern):
    from idgen.train.records import open_dataset

    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "dataset.json").write_bytes(content)
    from idgen.errors import DatasetError

    with pytest.raises(DatasetError, match=pattern):
        open_dataset(tmp_path / "ds")


# ---------------------------------------------------------------------------- config and env
@pytest.mark.parametrize("content, patterns", [
    (b"\x00\x01\x02\xff binary", ["config.json", "not a text"]),
    (b'{"models": {"sd15": "/x"', ["config.json", "line 1"]),
    (b'{"models": ["sd15"]}', ["\"models\"", "object"]),
    (b'{"models": {"sd15": 3}}', ["sd15", "string"]),
    (b'{"face_backend": "mediapipe"}', ["face_backend", "mediapipe"]),
])
def test_a_bad_config_file(home, capsys, content, patterns):
    (home / "config.json").write_bytes(content)
    expect(["faces", FACE], capsys, 3, *patterns)


def test_the_config_face_backend_is_honoured(home, capsys):
    (home / "config.json").write_text('{"face_backend": "insightface"}')  # no pack installed here
    code, err = run(["faces", FACE, "--json"], capsys)
    assert code == 4 and "insightface" in err
    (home / "config.json").write_text('{"face_backend": "dlib"}')
    code, err = run(["faces", FACE, "--json"], capsys)
    assert code == 0 and '"embedding_dim": 128' in err


@pytest.mark.parametrize("variable, value", [
    ("IDGEN_MAX_IMAGE_PIXELS", "abc"), ("IDGEN_MAX_IMAGE_BYTES", "-5"), ("IDGEN_FACE_BACKEND", "opencv"),
])
def test_bad_environment_values_name_the_variable(home, monkeypatch, capsys, variable, value):
    monkeypatch.setenv(variable, value)
    assert main(["doctor"]) in (0, 3)  # no command breaks at import; the one using the value says so
    capsys.readouterr()
    expect(["faces", FACE, *(["--backend", "dlib"] if variable != "IDGEN_FACE_BACKEND" else [])], capsys, 3, variable)


@pytest.mark.parametrize("variable", ["IDGEN_MAX_BATCH", "IDGEN_MAX_OUTPUT_PIXELS"])
def test_bad_limit_variables(home, monkeypatch, tmp_path, capsys, variable):
    monkeypatch.setenv(variable, "lots")
    expect([*GENERATE, "--out", tmp_path / "out"], capsys, 3, variable, "lots")


# --------------------------------------------------------------------------------------- outputs
def test_out_naming_a_file(home, tmp_path, capsys):
    target = tmp_path / "results.png"
    target.write_bytes(b"keep me")
    expect([*GENERATE, "--out", target], capsys, 3, "is a file")
    assert target.read_bytes() == b"keep me"


def test_results_are_never_overwritten_unless_asked(home, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [*GENERATE, "--steps", "1", "--out", out, "--backend", "dlib"]
    assert run(argv, capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    expect(argv, capsys, 3, "already exists", "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert run([*argv, "--overwrite", "--seed", "0"], capsys)[0] == 0


def test_a_job_failing_after_the_model_ran_leaves_no_partial_files(home, tmp_path, capsys, monkeypatch):
    from idgen.app import records

    def fail(data):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("idgen.app.generate.json_bytes", fail)
    out = tmp_path / "out"
    code, err = run([*GENERATE, "--steps", "1", "--out", out, "--backend", "dlib"], capsys, out)
    assert code == 1 and "unexpected error" in err and "--debug" in err
    assert not out.exists() or not any(out.iterdir())
    assert records.json_bytes  # the real one is untouched


def test_debug_shows_the_traceback(home, bad, monkeypatch):
    monkeypatch.setenv("IDGEN_DEBUG", "1")
    from idgen.errors import ImageReadError

    with pytest.raises(ImageReadError):
        main(["faces", str(bad["garbage"]), "--backend", "dlib"])
