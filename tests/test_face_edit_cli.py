"""`idgen inpaint` and `idgen swap` on the tiny embedded default: photos, videos, bad input."""

import json

import numpy as np
import pytest
from PIL import Image

from idgen.app.cli import EXIT_BAD_INPUT, EXIT_MISSING_MODEL, EXIT_OK, main
from idgen.image_io import load_image
from idgen.media.video import probe_video

from test_video import face_frames, make_video

#: The most the invisible watermark moves a pixel, in grey levels (measured: 4-5 on the test photos).
WATERMARK_MAX_CHANGE = 8


pytestmark = pytest.mark.usefixtures("empty_home")  # a fresh machine: nothing configured


@pytest.mark.parametrize("method", ["pva", "faceid", "instantid"])
def test_swap_a_photo_on_the_embedded_default(method, faces_dir, tmp_path, capsys):
    target = faces_dir / "portrait_glasses.jpg"
    out = tmp_path / "out"
    code = main(["swap", str(target), "--source", str(faces_dir / "portrait_smile.jpg"), "--method", method,
                 "--steps", "2", "--out", str(out), "--backend", "dlib"])
    assert code == EXIT_OK, capsys.readouterr().err
    record = json.loads((out / "record.json").read_text())
    assert record["embedded_default"] is True and record["faces"][0]["source"] == 0
    used = record["parameters"]  # the values the run used, not nulls
    assert used["num_inference_steps"] == 2 and used["guidance_scale"] > 1 and used["strength"] == 1.0
    assert used["identity_scale"] == {"pva": 1.0, "faceid": 1.0, "instantid": 0.8}[method]
    result, original = load_image(record["output"]), load_image(target)
    assert result.shape == original.shape and np.any(result != original)


@pytest.mark.parametrize("provenance", ["0", "1"])
def test_inpaint_with_a_custom_mask_changes_only_inside_it(faces_dir, tmp_path, capsys, monkeypatch, provenance):
    """Outside the mask the photo is kept: exactly without provenance, and up to the invisible
    watermark's few grey levels with it (on by default)."""
    monkeypatch.setenv("IDGEN_PROVENANCE", provenance)
    target = faces_dir / "portrait_glasses.jpg"
    original = load_image(target)
    mask = np.zeros(original.shape[:2], np.uint8)
    mask[250:400, 200:400] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "out"
    code = main(["inpaint", str(target), "--face", str(faces_dir / "portrait_smile.jpg"), "--mask",
                 str(tmp_path / "mask.png"), "--dilate", "0", "--steps", "2", "--out", str(out), "--backend", "dlib"])
    assert code == EXIT_OK, capsys.readouterr().err
    result = load_image(json.loads((out / "record.json").read_text())["output"])
    difference = np.abs(result.astype(int) - original).max(axis=-1)
    watermark = 0 if provenance == "0" else WATERMARK_MAX_CHANGE
    changed = difference > watermark
    assert changed.any()
    grown = np.zeros_like(mask)
    grown[240:410, 190:410] = 1  # the mask plus the resampling margin of the crop warp
    assert not (changed & (grown == 0)).any()


def test_swap_a_video_keeps_frames_and_audio(faces_dir, tmp_path, capsys):
    video = make_video(tmp_path / "clip.mp4", face_frames(4, blank=()))
    out = tmp_path / "out"
    code = main(["swap", str(video), "--source", str(faces_dir / "portrait_smile.jpg"), "--steps", "2",
                 "--out", str(out), "--backend", "dlib"])
    assert code == EXIT_OK, capsys.readouterr().err
    record = json.loads((out / "record.json").read_text())
    info = probe_video(record["output"])
    assert info.num_frames == 4 and info.has_audio and record["video"]["tracks"] == 1


def test_swap_a_video_keeps_what_exclude_protects(faces_dir, tmp_path, capsys, monkeypatch):
    from idgen.media.video import read_frames, write_video

    monkeypatch.setenv("IDGEN_PROVENANCE", "0")  # the watermark moves every pixel a little: compared exactly here

    video = make_video(tmp_path / "clip.mp4", face_frames(3, blank=()), audio=None)
    decoded = list(read_frames(video))
    keep_all = tmp_path / "keep.png"
    Image.fromarray(np.full(decoded[0].shape[:2], 255, np.uint8)).save(keep_all)
    # what an untouched video looks like after the output's lossy re-encoding (crf 18)
    write_video(tmp_path / "untouched.mp4", decoded, 10)
    untouched = np.stack(list(read_frames(tmp_path / "untouched.mp4"))).astype(float)
    changes = {}
    for name, extra in (("plain", []), ("excluded", ["--exclude", str(keep_all)])):
        out = tmp_path / name
        assert main(["swap", str(video), "--source", str(faces_dir / "portrait_smile.jpg"), "--steps", "2",
                     "--out", str(out), "--backend", "dlib", *extra]) == EXIT_OK, capsys.readouterr().err
        result = np.stack(list(read_frames(json.loads((out / "record.json").read_text())["output"])))
        changes[name] = float(np.abs(result.astype(float) - untouched).mean())
    assert changes["excluded"] < 0.05 and changes["plain"] > 5, changes


def test_bad_inputs_get_exit_codes(faces_dir, tmp_path, capsys):
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(flat)
    base = ["--steps", "2", "--out", str(tmp_path / "o"), "--backend", "dlib"]
    assert main(["swap", str(flat), "--source", str(faces_dir / "portrait_smile.jpg"), *base]) == EXIT_BAD_INPUT
    assert "no face" in capsys.readouterr().err
    assert main(["swap", str(faces_dir / "portrait_glasses.jpg"), "--source", str(tmp_path / "nope.jpg"), *base]) == EXIT_BAD_INPUT
    assert main(["swap", str(faces_dir / "portrait_glasses.jpg"), "--source", str(faces_dir / "portrait_smile.jpg"),
                 "--adapter", str(tmp_path / "nope.bin"), *base]) == EXIT_MISSING_MODEL
    assert main(["swap", str(faces_dir / "portrait_glasses.jpg"), "--source", str(faces_dir / "portrait_smile.jpg"),
                 "--map", "reference", *base]) == EXIT_BAD_INPUT
    assert "reference" in capsys.readouterr().err


def test_swap_with_the_post_pass_photo_and_video(faces_dir, tmp_path, capsys, fresh_enhancers):
    source = str(faces_dir / "portrait_smile.jpg")
    out = tmp_path / "photo"
    assert main(["swap", str(faces_dir / "portrait_glasses.jpg"), "--source", source, "--steps", "2",
                 "--enhance", "codeformer:0.6", "--enhance-blend", "0.7", "--out", str(out)]) == EXIT_OK, \
        capsys.readouterr().err
    record = json.loads((out / "record.json").read_text())
    assert record["enhance"] == {"restorer": "codeformer:0.6", "blend": 0.7, "embedded_default": True, "notes": []}
    assert record["face_parser"] is False and record["provenance"]["parameters"]["enhance"] == "codeformer:0.6"
    video = make_video(tmp_path / "clip.mp4", face_frames(3, blank=()))
    assert main(["swap", str(video), "--source", source, "--steps", "2", "--enhance", "gfpgan", "--batch-size", "2",
                 "--out", str(tmp_path / "video")]) == EXIT_OK, capsys.readouterr().err
    record = json.loads((tmp_path / "video" / "record.json").read_text())
    assert record["enhance"]["restorer"] == "gfpgan" and probe_video(record["output"]).num_frames == 3


def test_parsed_regions_need_the_parser_and_use_it_when_configured(faces_dir, tmp_path, capsys, monkeypatch,
                                                                  fresh_enhancers):
    import torch

    from idgen.face.parsing import random_bisenet_state_dict

    target, source = str(faces_dir / "portrait_glasses.jpg"), str(faces_dir / "portrait_smile.jpg")
    base = ["--source", source, "--steps", "2"]
    assert main(["swap", target, *base, "--region", "skin,nose,mouth", "--out", str(tmp_path / "a")]) == EXIT_BAD_INPUT
    assert "79999_iter.pth" in capsys.readouterr().err
    assert main(["swap", target, *base, "--region", "skin,noze", "--out", str(tmp_path / "b")]) == EXIT_BAD_INPUT
    assert "noze" in capsys.readouterr().err
    parser = tmp_path / "79999_iter.pth"
    torch.save(random_bisenet_state_dict(3), parser)
    monkeypatch.setenv("IDGEN_FACE_PARSING", str(parser))
    out = tmp_path / "parsed"
    assert main(["swap", target, *base, "--region", "skin,nose,mouth", "--keep", "glasses,hair",
                 "--out", str(out)]) == EXIT_OK, capsys.readouterr().err
    record = json.loads((out / "record.json").read_text())
    assert record["face_parser"] is True and record["request"]["keep"] == ["glasses", "hair"]
