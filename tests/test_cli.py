"""The `idgen` command line: faces, doctor, generate (embedded default), exit codes."""

import json

import numpy as np
import pytest
from PIL import Image

from idgen.app.cli import EXIT_BAD_INPUT, EXIT_MISSING_MODEL, EXIT_OK, main


pytestmark = pytest.mark.usefixtures("empty_home")  # a fresh machine: nothing configured


def test_faces_json_and_drawing(faces_dir, tmp_path, capsys):
    drawing = tmp_path / "drawing.png"
    crops = tmp_path / "crops"
    code = main(["faces", str(faces_dir / "portrait_glasses.jpg"), "--backend", "dlib", "--json",
                 "--draw", str(drawing), "--crops", str(crops), "--crop-size", "224"])
    assert code == EXIT_OK
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 1
    record = records[0]
    assert {"bbox", "score", "kps"} <= record.keys() and len(record["kps"]) == 5
    assert all(len(point) == 2 for point in record["kps"])
    image = np.asarray(Image.open(drawing))
    x, y = (int(v) for v in record["kps"][2])
    assert tuple(image[y, x]) == (0, 0, 255), "the nose keypoint is drawn in blue"
    assert Image.open(crops / "face0_aligned224.png").size == (224, 224)
    assert (crops / "face0_mask.png").is_file()


def test_faces_errors_have_exit_codes(tmp_path, capsys):
    flat = tmp_path / "flat.png"
    Image.new("RGB", (200, 200), (128, 128, 128)).save(flat)
    assert main(["faces", str(flat), "--backend", "dlib", "--select", "one"]) == EXIT_BAD_INPUT
    assert "no face" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"garbage")
    assert main(["faces", str(corrupt), "--backend", "dlib"]) == EXIT_BAD_INPUT
    assert main(["faces", str(flat), "--backend", "insightface"]) == EXIT_MISSING_MODEL
    assert "antelopev2" in capsys.readouterr().err


def test_doctor_runs_offline(capsys):
    assert main(["doctor", "--json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["models"]["sdxl"]["present"] is False
    for name in ("codeformer", "gfpgan", "restoreformer", "face_parsing", "face_occluder"):  # the post-pass's files
        assert report["models"][name]["present"] is False
    assert main(["doctor"]) == EXIT_OK
    text = capsys.readouterr().out
    assert "tiny embedded default" in text and "device: not checked (torch not initialised" in text
    assert main(["doctor", "--full", "--json"]) == EXIT_OK
    full = json.loads(capsys.readouterr().out)
    assert full["accelerator"]["torch_initialised"] is True and full["device"].startswith(("cpu", "cuda", "mps"))


@pytest.mark.parametrize("method", ["instantid", "faceid", "faceid-plusv2", "arc2face"])
def test_generate_on_the_embedded_default(method, faces_dir, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["generate", "--method", method, "--face", str(faces_dir / "portrait_glasses.jpg"),
            "--prompt", "photo of a person", "--out", str(out), "--steps", "2", "--seed", "7", "--backend", "dlib"]
    if method == "instantid":
        args += ["--pose", str(faces_dir / "pose_fullbody_b.jpg")]
    assert main(args) == EXIT_OK
    assert "embedded default" in capsys.readouterr().err
    record = json.loads((out / "record.json").read_text())
    assert record["embedded_default"] is True and "noise" in record["note"]
    assert record["request"]["seed"] == 7 and record["request"]["method"] == method
    size = Image.open(record["files"][0]).size
    assert (record["width"], record["height"]) == size
    used = record["parameters"]
    assert used["num_inference_steps"] == 2 and used["seed"] == 7 and used["guidance_scale"] > 0
    if method == "instantid":
        # sized from the portrait pose photo (715x908): its aspect kept, not a square
        assert record["pose_face"] is not None and abs(size[0] / size[1] - 715 / 908) < 0.05
        assert used["identity_scale"] == 0.8 and used["controlnet_conditioning_scale"] == 0.8
        assert used["guidance_scale"] == 5.0
    elif method != "arc2face":
        assert used["identity_scale"] == 1.0 and "controlnet_conditioning_scale" not in used


def test_generate_with_a_missing_adapter_names_it(faces_dir, tmp_path, capsys):
    code = main(["generate", "--method", "faceid", "--face", str(faces_dir / "portrait_glasses.jpg"),
                 "--adapter", str(tmp_path / "nope.bin"), "--out", str(tmp_path / "o"), "--backend", "dlib"])
    assert code == EXIT_MISSING_MODEL
    assert "was not found" in capsys.readouterr().err


def test_knobs_a_method_lacks_are_refused(faces_dir, tmp_path, capsys):
    base = ["generate", "--face", str(faces_dir / "portrait_glasses.jpg"), "--out", str(tmp_path), "--tiny"]
    assert main(base + ["--method", "arc2face", "--identity-scale", "0.5"]) == EXIT_BAD_INPUT
    assert main(base + ["--method", "faceid", "--control-scale", "0.5"]) == EXIT_BAD_INPUT
    assert "IdentityNet" in capsys.readouterr().err


def test_configured_weights_that_do_not_resolve_exit_4_naming_the_value(faces_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IDGEN_SDXL", str(tmp_path / "missing"))
    code = main(["generate", "--method", "instantid", "--face", str(faces_dir / "portrait_glasses.jpg"),
                 "--out", str(tmp_path / "o"), "--backend", "dlib"])
    assert code == EXIT_MISSING_MODEL
    assert f"IDGEN_SDXL={tmp_path / 'missing'} does not resolve" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").glob("*.png"))
    assert main(["doctor"]) == EXIT_OK
    assert f"IDGEN_SDXL={tmp_path / 'missing'}" in capsys.readouterr().out
