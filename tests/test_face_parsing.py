"""Face parsing (idgen.face.parsing): parity of the BiSeNet with the official zllrunning/face-parsing.PyTorch
network on seeded random weights (tests/data/parity/face-parsing/, made by bench/parity/face_parsing.py),
the official `79999_iter.pth` layout at full size, bad files, label masks, facefusion's XSeg occluder
pre/post-processing on a tiny exported ONNX model, and the occlusion fallback from a parsing."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from idgen.errors import CheckpointError, IdgenError, ModelNotFoundError
from idgen.face.parsing import (CLASSES, LABELS, FaceParser, OcclusionModel, bisenet_layout, label_ids,
                                occlusion_from_parsing, random_bisenet_state_dict)

DATA = Path(__file__).parent / "data"
CASE_DIR = DATA / "parity" / "face-parsing"
LAYOUT = DATA / "layouts" / "face_parsing_bisenet.json"
# torch >= 2.9 warns that the TorchScript ONNX exporter (dynamo=False, the one that works here) is legacy
ONNX_EXPORT_WARNINGS = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def case():
    return json.loads((CASE_DIR / "case.json").read_text())


@pytest.fixture(scope="module")
def random_state_dict(case):
    return random_bisenet_state_dict(case["case"]["weights_seed"])


@pytest.fixture(scope="module")
def parser(random_state_dict):
    return FaceParser.from_state_dict(random_state_dict, device="cpu")


def test_label_order_is_celebamask_hq():
    assert CLASSES[0] == "background" and len(CLASSES) == 19
    assert CLASSES[1:] == ("skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r", "nose",
                           "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat")
    assert LABELS["hair"] == 17 and label_ids("lips") == [12, 13]


def test_parity_with_official_bisenet(parser, case):
    pixels = np.asarray(Image.open(CASE_DIR / "input.png").convert("RGB"))
    assert pixels.shape == (512, 512, 3)
    logits = parser.logits(pixels)
    assert logits.shape == (1, 19, 512, 512)
    o, s = case["case"]["sub_offset"], case["case"]["sub_stride"]
    sub = torch.from_numpy(np.load(CASE_DIR / "logits_sub.npy"))
    diff_sub = (logits[:, :, o::s, o::s] - sub).abs().max().item()
    lowres = torch.from_numpy(np.load(CASE_DIR / "logits_lowres.npy"))
    full = F.interpolate(lowres, (512, 512), mode="bilinear", align_corners=True)  # the official last step
    diff_full = (logits - full).abs().max().item()
    print(f"face parsing parity max abs diff: sampled {diff_sub:.3e}, full {diff_full:.3e}")
    assert diff_sub <= 1e-4 and diff_full <= 1e-4
    expected = np.asarray(Image.open(CASE_DIR / "labels.png"))
    labels = parser.parse(pixels)
    assert labels.shape == (512, 512) and labels.dtype == np.int64
    assert (labels == expected).mean() > 0.9999


def test_parse_any_size_resizes_labels_back(parser):
    crop = np.asarray(Image.open(CASE_DIR / "input.png").convert("RGB").resize((150, 170)))
    labels = parser.parse(crop)
    assert labels.shape == (170, 150) and labels.min() >= 0 and labels.max() < 19
    with pytest.raises(IdgenError, match="uint8"):
        parser.parse(crop.astype(np.float32))


def _meta(keys):
    return {k: torch.empty(shape, device="meta") for k, shape in keys.items()}


def test_official_layout_loads_unchanged():
    keys = {k: tuple(v) for k, v in json.loads(LAYOUT.read_text())["keys"].items()}
    assert keys == bisenet_layout()
    assert len(keys) == 191 and keys["conv_out.conv_out.weight"] == (19, 256, 1, 1)
    model = FaceParser.from_state_dict(_meta(keys)).model
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == keys
    # files saved before torch 0.4.1 have no num_batches_tracked; fp16 copies load as float32
    older = FaceParser.from_state_dict(_meta({k: s for k, s in keys.items() if not k.endswith("num_batches_tracked")}))
    assert set(older.model.state_dict()) == set(keys)
    victim = "cp.arm16.conv_atten.weight"
    with pytest.raises(CheckpointError, match=f"missing key '{victim}'"):
        FaceParser.from_state_dict(_meta({k: s for k, s in keys.items() if k != victim}))
    with pytest.raises(CheckpointError, match=f"'{victim}' has shape"):
        FaceParser.from_state_dict(_meta({**keys, victim: (1, 2)}))
    with pytest.raises(CheckpointError, match="'cp.extra.weight'"):
        FaceParser.from_state_dict(_meta({**keys, "cp.extra.weight": (3,)}))


def test_bad_files(tmp_path, random_state_dict):
    with pytest.raises(ModelNotFoundError, match="79999_iter.pth") as error:
        FaceParser.from_file(tmp_path / "79999_iter.pth")
    assert "parsing_bisenet.pth" in str(error.value) and "facexlib" in str(error.value)
    with pytest.raises(ModelNotFoundError, match="79999_iter.pth"):
        FaceParser.from_file(tmp_path)  # an empty folder

    half = {k: v.half() if v.is_floating_point() else v for k, v in random_state_dict.items()}
    torch.save(half, tmp_path / "parsing_bisenet.pth")  # facexlib's name, found in the folder
    parser = FaceParser.from_file(tmp_path)
    assert next(parser.model.parameters()).dtype == torch.float32

    renamed = dict(half)
    renamed["cp.resnet.layer9.weight"] = renamed.pop("cp.resnet.conv1.weight")
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(CheckpointError, match="cp.resnet.conv1.weight"):
        FaceParser.from_file(tmp_path / "renamed.pth")
    corrupt = tmp_path / "79999_iter.pth"
    corrupt.write_bytes((tmp_path / "parsing_bisenet.pth").read_bytes()[:4096])
    with pytest.raises(CheckpointError, match="could not be read"):
        FaceParser.from_file(corrupt)
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="not a dict"):
        FaceParser.from_file(tmp_path / "list.pth")


def test_mask_include_exclude():
    labels = np.zeros((4, 6), dtype=np.int64)
    labels[0] = [LABELS[n] for n in ("skin", "nose", "eye_g", "hair", "u_lip", "l_eye")]
    labels[1] = [LABELS[n] for n in ("mouth", "l_brow", "r_brow", "cloth", "hat", "neck")]
    mask = FaceParser.mask(labels)  # skin and nose
    assert mask.dtype == np.float32 and mask.shape == (4, 6)
    assert mask[0].tolist() == [1, 1, 0, 0, 0, 0] and mask[1:].sum() == 0
    face = FaceParser.mask(labels, include="face", exclude=("lips", "brows"))
    assert face[0].tolist() == [1, 1, 0, 0, 0, 1] and face[1].tolist() == [1, 0, 0, 0, 0, 0]
    assert FaceParser.mask(labels, include=("glasses", "hair"), exclude=())[0].tolist() == [0, 0, 1, 1, 0, 0]
    assert FaceParser.mask(labels, include="face", exclude="face").sum() == 0
    with pytest.raises(IdgenError, match="unknown face-parsing class 'beard'") as error:
        FaceParser.mask(labels, include="beard")
    assert "l_brow" in str(error.value) and "glasses" in str(error.value)


class _BlueIsFace(torch.nn.Module):
    """A stand-in occluder: NHWC [1, H, W, 3] in, [1, H, W, 1] out = the first (BGR: blue) channel."""

    def forward(self, x):
        return x[..., :1] * 1.0


def _export(path, size=(64, 48), dynamic=False):
    h, w = size
    kwargs = {"dynamic_axes": {"input": {1: "h", 2: "w"}, "output": {1: "h", 2: "w"}}} if dynamic else {}
    torch.onnx.export(_BlueIsFace(), (torch.zeros(1, h, w, 3),), str(path), input_names=["input"],
                      output_names=["output"], dynamo=False, **kwargs)
    return path


def _facefusion_mask(session, crop_bgr, size):
    """facefusion face_masker.create_occlusion_mask, step by step (frames are BGR there)."""
    prepare = cv2.resize(crop_bgr, size)
    prepare = np.expand_dims(prepare, axis=0).astype(np.float32) / 255.0
    mask = session.run(None, {"input": prepare})[0][0]
    mask = mask.clip(0, 1).astype(np.float32)
    mask = cv2.resize(mask, crop_bgr.shape[:2][::-1])
    return (cv2.GaussianBlur(mask.clip(0, 1), (0, 0), 5).clip(0.5, 1) - 0.5) * 2


@ONNX_EXPORT_WARNINGS
def test_onnx_occluder_matches_facefusion(tmp_path):
    crop = np.zeros((90, 120, 3), dtype=np.uint8)  # RGB
    crop[:, :70, 2] = 255  # blue on the left: "face"; the right is an occluder
    crop[20:40, 10:30] = (200, 30, 30)  # a red patch on the face: occluded too
    model = OcclusionModel.from_file(_export(tmp_path / "xseg_1.onnx"))
    assert model.sizes == [(48, 64)]  # (width, height) from the NHWC graph
    expected = _facefusion_mask(model.sessions[0], crop[:, :, ::-1].copy(), (48, 64))
    visible = model.visible_mask(crop)
    assert visible.shape == (90, 120) and visible.dtype == np.float32
    np.testing.assert_allclose(visible, expected, atol=1e-6)
    occluded = model.occlusion_mask(crop)
    np.testing.assert_allclose(occluded, 1 - expected, atol=1e-6)
    assert occluded[:, 100:].min() > 0.99 and occluded[60:, :40].max() < 0.01 and occluded[30, 20] > 0.99

    (tmp_path / "dyn").mkdir()
    dynamic = OcclusionModel.from_file(_export(tmp_path / "dyn" / "xseg_2.onnx", dynamic=True))
    assert dynamic.sizes == [(256, 256)]  # facefusion's size for every XSeg
    both = OcclusionModel.from_files([tmp_path / "xseg_1.onnx", tmp_path / "dyn"])  # a folder: found by name
    np.testing.assert_allclose(both.raw_mask(crop), np.minimum(model.raw_mask(crop), dynamic.raw_mask(crop)))


@ONNX_EXPORT_WARNINGS
def test_onnx_occluder_bad_files(tmp_path):
    with pytest.raises(ModelNotFoundError, match="xseg_1.onnx"):
        OcclusionModel.from_file(tmp_path / "missing.onnx")
    (tmp_path / "xseg_1.onnx").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="could not be read as an ONNX model"):
        OcclusionModel.from_file(tmp_path / "xseg_1.onnx")
    torch.onnx.export(torch.nn.Conv2d(3, 1, 1), (torch.zeros(1, 3, 32, 32),), str(tmp_path / "nchw.onnx"),
                      input_names=["input"], dynamo=False)
    with pytest.raises(CheckpointError, match="NHWC"):
        OcclusionModel.from_file(tmp_path / "nchw.onnx")


def test_occlusion_from_parsing_marks_a_hand():
    labels = np.zeros((100, 80), dtype=np.int64)
    labels[10:90, 10:70] = LABELS["skin"]
    labels[10:25, 10:70] = LABELS["hair"]
    labels[45:50, 25:55] = LABELS["u_lip"]
    labels[50:80, 40:70] = LABELS["background"]  # a hand over the cheek, unknown to the parser
    labels[70:80, 20:40] = LABELS["cloth"]  # a scarf
    box = (10, 10, 70, 90)
    occluded = occlusion_from_parsing(labels, box)
    assert occluded.dtype == np.float32 and occluded.shape == labels.shape
    assert occluded[50:80, 40:70].min() == 1 and occluded[70:80, 20:40].min() == 1
    assert occluded.sum() == 30 * 30 + 10 * 20  # nothing else: skin, hair, lips are the face
    assert occluded[:10].sum() == 0 and occluded[:, 70:].sum() == 0  # outside the box
    region = np.zeros(labels.shape, dtype=np.float32)
    region[:, :55] = 1.0
    assert occlusion_from_parsing(labels, region)[50:80, 55:].sum() == 0  # a mask region too
    with pytest.raises(IdgenError, match="face_region"):
        occlusion_from_parsing(labels, np.ones((3, 3)))
