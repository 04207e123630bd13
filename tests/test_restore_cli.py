"""`idgen restore` and `idgen eval restore` on the tiny embedded default; SVFR's official files."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from idgen.app.speed_options import EMBEDDED_DEFAULT_STEPS
from idgen.app.cli import EXIT_BAD_INPUT, EXIT_MISSING_MODEL, EXIT_OK, main
from idgen.errors import CheckpointError
from idgen.media.video import probe_video

from test_video import face_frames, make_video


pytestmark = pytest.mark.usefixtures("empty_home")  # a fresh machine: nothing configured


def test_restore_a_photo_and_a_video(faces_dir, tmp_path, capsys):
    out = tmp_path / "photo"
    assert main(["restore", str(faces_dir / "portrait_glasses.jpg"), "--steps", "2", "--out", str(out),
                 "--backend", "dlib"]) == EXIT_OK
    record = json.loads((out / "record.json").read_text())
    assert record["embedded_default"] and record["faces"][0]["restored"] and record["pipeline"] == "FaceRestorePipeline"
    assert record["parameters"] == {"num_inference_steps": 2, "seed": 0, "fidelity": 0.5}

    video = make_video(tmp_path / "clip.mp4", face_frames(4, blank=(2,)))
    out = tmp_path / "video"
    assert main(["restore", str(video), "--steps", "2", "--out", str(out), "--backend", "dlib"]) == EXIT_OK, \
        capsys.readouterr().err
    record = json.loads((out / "record.json").read_text())
    info = probe_video(record["output"])
    assert info.num_frames == 4 and info.has_audio and record["video"]["tracks"] == 1
    assert main(["restore", str(faces_dir / "portrait_glasses.jpg"), "--tasks", "colorize", "--out", str(out)]) == EXIT_BAD_INPUT


def _strict_json(path):
    """Parse like a strict parser (JavaScript, jq): NaN / Infinity are errors."""
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}: not valid JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_restore_a_photo_with_a_reference_of_the_person(faces_dir, tmp_path, capsys):
    photo = str(faces_dir / "portrait_glasses.jpg")
    plain, referred = tmp_path / "plain", tmp_path / "referred"
    assert main(["restore", photo, "--out", str(plain), "--backend", "dlib"]) == EXIT_OK
    assert main(["restore", photo, "--reference", str(faces_dir / "portrait_smile.jpg"), "--out", str(referred),
                 "--backend", "dlib"]) == EXIT_OK, capsys.readouterr().err
    record = json.loads((referred / "record.json").read_text())
    assert record["faces"][0]["restored"] and record["parameters"]["num_inference_steps"] == EMBEDDED_DEFAULT_STEPS  # recorded
    a, b = (np.asarray(Image.open(d / "portrait_glasses-restored.png"), dtype=float) for d in (plain, referred))
    assert np.abs(a - b).max() > 10, "the reference's identity must change the restored face"
    no_face = tmp_path / "flat.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(no_face)
    assert main(["restore", photo, "--reference", str(no_face), "--out", str(tmp_path / "x"), "--backend", "dlib"]) == EXIT_BAD_INPUT
    assert "no face" in capsys.readouterr().err


def test_video_restoration_gives_svfr_the_identity(faces_dir, tmp_path, monkeypatch):
    from idgen.app.restore import restore_video
    from idgen.models.recipes import build_restore_pipeline

    pipe, embedded = build_restore_pipeline("video", embedded_default=True)
    seen = []
    tokens = pipe.identity_tokens
    monkeypatch.setattr(pipe, "identity_tokens", lambda features, *a: seen.append(features) or tokens(features, *a))
    video = make_video(tmp_path / "clip.mp4", face_frames(3, blank=()), audio=None)
    restore_video(pipe, video, tmp_path / "out.mp4", embedded=embedded, num_inference_steps=2, progress=False)
    assert seen and all(f is not None and np.asarray(f).shape == (512,) for f in seen)


def test_eval_restore_on_photos_and_on_a_video(faces_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "restore", "--input", str(faces_dir), "--steps", "2", "--max-items", "2", "--out", str(out)]) == EXIT_OK
    report = _strict_json(out / "metrics.json")
    # noise from the tiny default has no face: the identity metrics are null, not NaN
    assert report["summary"]["identity_similarity"] is None and report["items"][0]["identity_similarity"] is None
    assert len(report["items"]) == 2 and report["summary"]["psnr"] is not None and (out / "grid.png").is_file()
    assert report["summary"]["psnr_degraded"] < 100
    # idgen's restoration beside the official restorers (tiny ones here), on the same degraded faces
    assert list(report["restorers"]) == report["grid_columns"][2:] == ["diffusion", "codeformer", "gfpgan", "restoreformer"]
    assert report["restorers"]["diffusion"]["summary"] == report["summary"]
    assert all(r["embedded_default"] and r["summary"]["psnr"] is not None for r in report["restorers"].values())
    assert report["comparison"]["gfpgan"]["psnr"] == report["restorers"]["gfpgan"]["summary"]["psnr"]
    from PIL import Image
    assert Image.open(out / "grid.png").size == (6 * 160, 2 * 160)
    assert main(["eval", "restore", "--input", str(faces_dir), "--max-items", "1", "--restorers", "gfpgan",
                 "--tiny", "--out", str(tmp_path / "one")]) == EXIT_OK
    assert list(_strict_json(tmp_path / "one" / "metrics.json")["restorers"]) == ["gfpgan"]
    assert main(["eval", "restore", "--input", str(faces_dir), "--restorers", "gfpgan,nope", "--tiny",
                 "--out", str(tmp_path / "bad")]) != EXIT_OK

    video = make_video(tmp_path / "clip.mp4", face_frames(3, blank=()), audio=False)
    assert main(["eval", "restore", "--input", str(video), "--steps", "2", "--preset", "codeformer",
                 "--tasks", "bfr,colorize", "--out", str(tmp_path / "veval")]) == EXIT_OK
    report = _strict_json(tmp_path / "veval" / "metrics.json")
    assert report["kind"] == "video" and report["summary"]["temporal_error"] is not None and len(report["items"]) == 3


def test_official_svfr_files_load_and_bad_files_are_named(tmp_path):
    from idgen.models.recipes import build_restore_pipeline
    from idgen.pipelines import load_svfr_pipeline
    from idgen.testing import tiny_svd_components

    folder = tmp_path / "svd"
    parts = tiny_svd_components(0)
    parts["unet"].save_pretrained(folder / "unet")
    parts["vae"].save_pretrained(folder / "vae")
    parts["scheduler"].save_pretrained(folder / "scheduler")
    reference, _ = build_restore_pipeline("video", embedded_default=True)
    torch.save(reference.unet.state_dict(), tmp_path / "unet.pth")
    torch.save(reference.id_projection.state_dict(), tmp_path / "id_linear.pth")
    pipe = load_svfr_pipeline(folder, tmp_path / "unet.pth", tmp_path / "id_linear.pth")
    video = (np.random.default_rng(0).random((3, 32, 32, 3)) * 255).astype(np.uint8)
    kw = dict(num_inference_steps=2, self_refine=False, identity_features=np.ones(512, np.float32), reference=video[0])
    for p in (pipe, reference):
        p.set_progress_bar_config(disable=True)
    np.testing.assert_allclose(pipe(video, generator=torch.Generator().manual_seed(0), **kw).frames,
                               reference(video, generator=torch.Generator().manual_seed(0), **kw).frames, atol=1e-6)
    torch.save({"project1024.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="id_linear"):
        load_svfr_pipeline(folder, tmp_path / "unet.pth", tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="SVFR UNet"):
        load_svfr_pipeline(folder, tmp_path / "id_linear.pth", tmp_path / "id_linear.pth")


def test_records_are_strict_json(tmp_path):
    from idgen.app.records import write_json

    path = write_json(tmp_path / "r.json", {"nan": float("nan"), "inf": np.float32("inf"), "a": np.arange(2),
                                            "p": tmp_path, "ok": 0.5})
    assert _strict_json(path) == {"nan": None, "inf": None, "a": [0, 1], "p": str(tmp_path), "ok": 0.5}


def test_a_configured_base_that_does_not_resolve_is_an_error_too(tmp_path, monkeypatch, capsys):
    # SVD is not among the weights that decide "configured?" for video restoration (it is resolved
    # first), so only the configured-location error itself stops the fallback to the embedded default
    monkeypatch.setenv("IDGEN_SVD", str(tmp_path / "missing"))
    video = make_video(tmp_path / "clip.mp4", face_frames(2, blank=()), audio=None)
    assert main(["restore", str(video), "--out", str(tmp_path / "o")]) == EXIT_MISSING_MODEL
    assert f"IDGEN_SVD={tmp_path / 'missing'} does not resolve" in capsys.readouterr().err


def test_a_configured_base_is_checked_even_when_the_restorer_is_missing(faces_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IDGEN_SD15", str(tmp_path / "missing"))  # and no restoration ControlNet at all
    assert main(["restore", str(faces_dir / "portrait_glasses.jpg"), "--out", str(tmp_path / "o")]) == EXIT_MISSING_MODEL
    assert f"IDGEN_SD15={tmp_path / 'missing'} does not resolve" in capsys.readouterr().err
