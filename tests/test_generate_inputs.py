"""The application's composable generation inputs, without models: people and regions, extra
ControlNet specs, style presets, and the request's checks (each input only where the method has it)."""

import numpy as np
import pytest
from PIL import Image

from idgen.app.controls import ControlSpec, condition_image, parse_control
from idgen.app.generate import GenerationRequest
from idgen.app.people import Person, box_pixels, kps_in_box, parse_box, place_people
from idgen.models.methods import (
    CONTROL_METHODS, GENERATION_METHODS, GENERATION_WEIGHTS, IMG2IMG_METHODS, MULTI_PERSON_METHODS, STYLE_IMAGE_METHODS,
)
from idgen.models.registry import REGISTRY
from idgen.style import STYLE_PRESETS, apply_style_preset, style_block_scales
from idgen.validation import InvalidArgumentError


def test_control_spec_parsing():
    spec = parse_control("depth=models/cn-depth:depth.png:0.4:0.1:0.9")
    assert spec == ControlSpec("depth", "models/cn-depth", "depth.png", 0.4, 0.1, 0.9)
    assert parse_control("canny=tiny:a.jpg") == ControlSpec("canny", "tiny", "a.jpg", 0.5, 0.0, 1.0)
    for bad in ("depth", "depth=onlypath", "depth=p:i:x", "depth=p:i:0.5:0.9:0.1", "=p:i", "depth=p:i:0.5:0.2"):
        with pytest.raises(InvalidArgumentError):
            parse_control(bad)


def test_canny_condition_is_computed_and_other_kinds_are_taken_as_they_are(tmp_path):
    photo = np.zeros((40, 60, 3), np.uint8)
    photo[10:30, 20:40] = 255
    path = tmp_path / "square.png"
    Image.fromarray(photo).save(path)
    edges = condition_image(ControlSpec("canny", "tiny", str(path)), (60, 40))
    assert edges.shape == (40, 60, 3) and set(np.unique(edges)) <= {0, 255} and edges[20, 18:22].max() == 255
    assert edges[20, 30].max() == 0  # inside the square: no edge
    same = condition_image(ControlSpec("depth", "tiny", str(path)), (60, 40))
    assert np.array_equal(same, photo)


def test_regions_boxes_and_strips():
    assert parse_box("left") == "left" and parse_box("0,0,0.5,1") == (0.0, 0.0, 0.5, 1.0)
    assert box_pixels("right", (100, 60)) == (50, 0, 100, 60)
    assert box_pixels((10, 5, 90, 55), (100, 60)) == (10, 5, 90, 55)
    for bad in ("middle", "1,2,3", "5,5,1,1", "-1,0,1,1", "a,b,c,d"):
        with pytest.raises(InvalidArgumentError):
            parse_box(bad)
    placed = place_people([Person(["a.jpg"]), Person(["b.jpg"]), Person(["c.jpg"], box="top")], (90, 60))
    assert [p.box for p in placed] == [(0, 0, 45, 60), (45, 0, 90, 60), (0, 0, 90, 30)]  # unplaced ones share strips
    assert placed[0].mask[:, :45].all() and not placed[0].mask[:, 45:].any()
    with pytest.raises(InvalidArgumentError, match="not both"):
        Person(["a.jpg"], box="left", mask="m.png")


def test_a_mask_region_and_keypoints_fitted_into_the_box(tmp_path):
    mask = np.zeros((30, 40), np.uint8)
    mask[5:20, 10:30] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    (placed,) = place_people([Person(["a.jpg"], mask=str(tmp_path / "m.png"))], (80, 60))  # resized x2
    assert placed.box == (20, 10, 60, 40) and placed.mask.sum() == 40 * 30
    empty = tmp_path / "empty.png"
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(empty)
    with pytest.raises(Exception, match="empty"):
        place_people([Person(["a.jpg"], mask=str(empty))], (80, 60))
    kps = np.array([[10, 10], [30, 10], [20, 20], [12, 30], [28, 30]], np.float32)
    inside = kps_in_box(kps, (40, 40), (100, 0, 140, 40))
    assert np.allclose(inside, kps + [100, 0])  # same size box: shifted only
    assert (inside[:, 0] >= 100).all() and (inside[:, 0] <= 140).all()


def test_style_presets_are_the_official_templates():
    prompt, negative = apply_style_preset("watercolor", "a man", "blurry")
    assert prompt.startswith("watercolor painting, a man.") and negative.endswith(" blurry")
    assert apply_style_preset("none", "a man", "x") == ("a man", "x")
    assert len(STYLE_PRESETS) == 9  # the InstantID app's nine, "(No style)" as "none"
    assert style_block_scales("sdxl", "style", 0.7) == {"up": {"block_0": [0.0, 0.7, 0.0]}}
    assert style_block_scales("sdxl", "style+layout", 1.0) == {"up": {"block_0": [0.0, 1.0, 0.0]},
                                                               "down": {"block_2": [0.0, 1.0]}}
    assert style_block_scales("sd15", "all", 0.5) == 0.5


def test_every_method_has_registered_weights():
    for method in GENERATION_METHODS:
        assert all(name in REGISTRY for name in GENERATION_WEIGHTS[method]), method


@pytest.mark.parametrize("field, value, methods", [
    ("people", [Person(["a.jpg"]), Person(["b.jpg"])], MULTI_PERSON_METHODS),
    ("controls", ["depth=tiny:d.png"], CONTROL_METHODS),
    ("init_image", "init.png", IMG2IMG_METHODS),
    ("style_image", "style.png", STYLE_IMAGE_METHODS),
])
def test_each_input_is_refused_by_name_where_the_method_lacks_it(field, value, methods):
    for method in GENERATION_METHODS:
        kwargs = {"method": method, field: value}
        if field != "people":
            kwargs["faces"] = ["a.jpg"]
        if method in methods:
            GenerationRequest(**kwargs)
        else:
            with pytest.raises(InvalidArgumentError, match=method):
                GenerationRequest(**kwargs)


def test_request_checks():
    with pytest.raises(InvalidArgumentError, match="img2img"):
        GenerationRequest(method="instantid", faces=["a.jpg"], strength=0.5)
    with pytest.raises(InvalidArgumentError, match="style must be"):
        GenerationRequest(method="faceid", faces=["a.jpg"], style="cubism")
    with pytest.raises(InvalidArgumentError, match="not both"):
        GenerationRequest(method="faceid", faces=["a.jpg"], people=[Person(["b.jpg"])])
    with pytest.raises(InvalidArgumentError, match="Arc2Face"):
        GenerationRequest(method="arc2face", faces=["a.jpg"], style="neon")
    request = GenerationRequest(method="instantid", people=[{"faces": ["a.jpg"], "box": "left"}],
                                controls=["canny=tiny:c.png:0.3"])
    assert request.people[0].box == "left" and request.controls[0].scale == 0.3
    assert request.setup_key() == (False, ("tiny",), False)
