"""`idgen generate` on the tiny embedded default: one generation per method, and each composable
input (several people with regions, an extra ControlNet, img2img, a style preset, a style image,
negative noise) wired through to the pipeline: it changes the output, and at scale 0 it is gone
exactly."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED
from idgen.app.cli import EXIT_BAD_INPUT, EXIT_OK, main
from idgen.app.generate import GenerationRequest, generate
from idgen.app.people import Person
from idgen.models.methods import GENERATION_METHODS

FACES = SHARED / "faces"
FACE, OTHER, POSE = (str(FACES / n) for n in ("portrait_glasses.jpg", "portrait_smile.jpg", "pose_fullbody_a.jpg"))


@pytest.fixture(autouse=True)
def _home(empty_home, monkeypatch):
    """Nothing configured; no provenance watermark (it differs per job, so equal pixels would not be)."""
    monkeypatch.setenv("IDGEN_PROVENANCE", "0")
    return empty_home


def run(tmp_path, name="out", **fields):
    fields.setdefault("faces", [FACE] if "people" not in fields else [])
    fields.setdefault("steps", 2)
    request = GenerationRequest(seed=1, face_backend="dlib", embedded_default=True, **fields)
    record = generate(request, tmp_path / name, overwrite=True)
    return np.asarray(Image.open(record["files"][0]).convert("RGB")).astype(np.int16), record


@pytest.mark.parametrize("method", GENERATION_METHODS)
def test_every_method_generates_from_the_cli(tmp_path, method, capsys):
    code = main(["generate", "--method", method, "--face", FACE, "--tiny", "--steps", "2", "--backend", "dlib",
                 "--out", str(tmp_path)])
    assert code == EXIT_OK, capsys.readouterr().err
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["request"]["method"] == method and record["embedded_default"] is True
    assert np.isfinite(np.asarray(Image.open(record["files"][0]), dtype=np.float32)).all()


def test_two_people_each_in_their_region(tmp_path):
    image, record = run(tmp_path, method="instantid", width=96, height=64,
                        people=[Person([FACE], box="left"), Person([OTHER], box="right")])
    assert [p["box"] for p in record["people"]] == ["left", "right"]
    keypoints = np.asarray(Image.open(record["conditions"]["keypoints"]))
    assert keypoints.shape[:2] == (64, 96)
    lit = np.nonzero(keypoints.max(axis=-1))[1]
    assert lit.min() < 48 <= lit.max()  # a face drawn in each half
    one, _ = run(tmp_path, "one", method="instantid", width=96, height=64, people=[Person([FACE], box="left")])
    assert np.abs(image - one).max() > 0


def test_faceid_people_and_a_mask_region(tmp_path):
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 32:] = 255
    Image.fromarray(mask).save(tmp_path / "right.png")
    _, record = run(tmp_path, method="faceid",
                    people=[Person([FACE]), Person([f"{OTHER}#0"], mask=str(tmp_path / "right.png"))])
    assert record["people"][1]["mask"].endswith("right.png") and len(record["faces"]) == 2


def test_an_extra_controlnet_acts_and_at_scale_zero_is_gone(tmp_path):
    plain, _ = run(tmp_path, "plain", method="instantid")
    zero, record = run(tmp_path, "zero", method="instantid", controls=[f"canny=tiny:{POSE}:0.0"])
    assert np.array_equal(plain, zero)
    assert record["controls"][0]["kind"] == "canny" and "control0-canny" in record["conditions"]
    acting, record = run(tmp_path, "acting", method="instantid", controls=[f"canny=tiny:{POSE}:1.0"])
    assert np.abs(acting - plain).max() > 0
    assert record["parameters"]["controlnet_conditioning_scale"] == [0.8, 1.0]


def test_img2img_starts_from_the_init_image(tmp_path):
    weak, record = run(tmp_path, "weak", method="instantid", init_image=OTHER, strength=0.5, steps=4)
    strong, _ = run(tmp_path, "strong", method="instantid", init_image=OTHER, strength=1.0, steps=4)
    assert record["pipeline"] == "StableDiffusionXLInstantIDImg2ImgPipeline" and record["init_image"] == OTHER
    assert weak.shape == strong.shape and np.abs(weak - strong).max() > 0


def test_style_preset_rewrites_the_prompt(tmp_path):
    plain, _ = run(tmp_path, "plain", method="faceid")
    styled, record = run(tmp_path, "styled", method="faceid", style="watercolor")
    assert record["style"]["preset"] == "watercolor" and np.abs(plain - styled).max() > 0


@pytest.mark.parametrize("method", ["faceid", "instantid"])
def test_style_image_acts_and_at_scale_zero_is_gone(tmp_path, method):
    plain, _ = run(tmp_path, "plain", method=method)
    zero, _ = run(tmp_path, "zero", method=method, style_image=POSE, style_scale=0.0)
    assert np.array_equal(plain, zero)
    styled, record = run(tmp_path, "styled", method=method, style_image=POSE, style_scale=1.0, style_blocks="all")
    assert record["style"]["image"] == POSE and np.abs(styled - plain).max() > 0


def test_negative_noise_zero_is_the_official_negative(tmp_path):
    plain, _ = run(tmp_path, "plain", method="faceid", guidance_scale=5.0)
    zero, _ = run(tmp_path, "zero", method="faceid", guidance_scale=5.0, negative_noise=0.0)
    noisy, _ = run(tmp_path, "noisy", method="faceid", guidance_scale=5.0, negative_noise=1.0)
    assert np.array_equal(plain, zero) and np.abs(noisy - plain).max() > 0


def test_cli_people_groups_and_their_errors(tmp_path, capsys):
    out = tmp_path / "two"
    assert main(["generate", "--method", "faceid", "--face", FACE, "--face", OTHER, "--box", "left", "--box", "right",
                 "--tiny", "--steps", "2", "--backend", "dlib", "--out", str(out)]) == EXIT_OK
    assert [p["box"] for p in json.loads((out / "record.json").read_text())["people"]] == ["left", "right"]
    assert main(["generate", "--method", "faceid", "--face", FACE, "--face", OTHER, "--box", "left", "--tiny",
                 "--out", str(tmp_path / "x")]) == EXIT_BAD_INPUT
    assert "need as many --box" in capsys.readouterr().err
    assert main(["generate", "--method", "arc2face", "--face", FACE, "--face", OTHER, "--tiny",
                 "--out", str(tmp_path / "y")]) == EXIT_BAD_INPUT
    assert "several people is not available with arc2face" in capsys.readouterr().err


def test_pulid_uses_every_photo_of_the_person(tmp_path, monkeypatch):
    from idgen.pipelines import StableDiffusionXLPuLIDPipeline

    calls, call = [], StableDiffusionXLPuLIDPipeline.__call__
    monkeypatch.setattr(StableDiffusionXLPuLIDPipeline, "__call__",
                        lambda self, *a, **k: calls.append(k) or call(self, *a, **k))
    one, _ = run(tmp_path, "one", method="pulid")
    two, record = run(tmp_path, "two", method="pulid", faces=[FACE, OTHER])
    # the official multi-photo encoding (one aligned crop per photo), not the first photo's crop
    assert np.asarray(calls[0]["id_image"]).shape == (512, 512, 3) and len(calls[1]["id_image"]) == 2
    assert len(record["faces"]) == 2 and np.abs(one - two).max() > 0
