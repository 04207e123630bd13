"""Property-based fuzzing (Hypothesis) of idgen's input boundaries: the image reader, the
checkpoint key maps and their validation, and the mask / keypoint geometry.

Each property says what every input must give: a documented result, or one `IdgenError` subclass
with a message that names what was wrong; never a bare `TypeError`, `cv2.error`, `KeyError`,
`RuntimeError` from torch or a silent NaN.

Profiles (`IDGEN_FUZZ_PROFILE`): "ci" (default) is small and derandomized, so CI runs the same
examples every time in a few tens of seconds; "deep" runs 20x more, random, for a local hunt:
`IDGEN_FUZZ_PROFILE=deep pytest tests/test_fuzz.py`.
"""

import functools
import io
import json
import math
import os
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageFile


from idgen.adapters.faceid import convert_faceid_checkpoint, extract_faceid_state_dict, load_faceid_into_unet
from idgen.adapters.faceid.loader import FACEID_ADAPTER_NAME, unload_faceid_from_unet
from idgen.adapters.instantid import InstantIDAdapter, ResamplerConfig, load_instantid_adapter
from idgen.adapters.instantid import official_state_dict as instantid_official
from idgen.adapters.pva import PVAAdapter, load_pva_adapter
from idgen.adapters.pva import official_state_dict as pva_official
from idgen.adapters.svfr import IDProjection, SVFRConfig, load_id_projection
from idgen.adapters.svfr import official_state_dict as svfr_official
from idgen.conditioning import MAX_COORDINATE, draw_kps, face_mask, fit_kps, output_size_for, resize_kps
from idgen.errors import CheckpointError, ConfigError, IdgenError, ImageReadError
from idgen.testing.released import SD15_UNET, SDXL_UNET, meta_unet
from idgen.face import Face, align_face, paste_back, similarity_transform, transform_points
from idgen.image_io import DEFAULT_MAX_IMAGE_PIXELS, load_image
from idgen.testing import TINY_RESAMPLER, random_faceid_state_dict, seeded, tiny_unet

from conftest import REPO, SHARED
from test_bad_images import png_declaring

settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("deep", parent=settings.get_profile("ci"), max_examples=1200, derandomize=False)
FUZZ = settings(settings.get_profile(os.environ.get("IDGEN_FUZZ_PROFILE", "ci")))
#: The expensive properties (a model per example) run a quarter as many examples.
FUZZ_SLOW = settings(FUZZ, max_examples=max(10, FUZZ.max_examples // 4))

ASSET_PHOTOS = sorted((REPO / "assets" / "faces").glob("*.jpg"))


def assert_rgb(pixels: np.ndarray) -> None:
    """What `load_image` promises: a C-contiguous uint8 `[H, W, 3]` array with pixels."""
    assert isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8
    assert pixels.ndim == 3 and pixels.shape[2] == 3 and min(pixels.shape[:2]) >= 1
    assert pixels.flags.c_contiguous


def load_or_refuse(image, **limits):
    """`load_image(image)`, or None when it raised `ImageReadError` (the only error allowed)."""
    try:
        pixels = load_image(image, **limits)
    except ImageReadError as e:
        assert str(e) and "\n" not in str(e), "one-line message"
        return None
    assert_rgb(pixels)
    return pixels


# -- 1. the image reader -----------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def encoded_samples() -> dict:
    """Real files to corrupt: the asset photos as they are, and one re-encoded small in every
    format `load_image` reads (EXIF orientation 6 on the JPEG, an animated GIF, a 16-bit PNG)."""
    samples = {photo.name: photo.read_bytes() for photo in ASSET_PHOTOS}
    small = Image.open(ASSET_PHOTOS[0]).convert("RGB")
    small.thumbnail((48, 48))
    exif = Image.Exif()
    exif[0x0112] = 6
    for name, fmt, image, kwargs in (
        ("small.jpg", "JPEG", small, {"exif": exif.tobytes()}),
        ("small.png", "PNG", small, {}),
        ("small.webp", "WEBP", small, {}),
        ("small.bmp", "BMP", small, {}),
        ("small.tif", "TIFF", small, {}),
        ("animated.gif", "GIF", small.convert("P"), {"save_all": True, "append_images": [small.rotate(90).convert("P")]}),
        ("deep.png", "PNG", Image.fromarray((np.asarray(small.convert("L")).astype(np.uint16) * 257)), {}),
    ):
        buffer = io.BytesIO()
        image.save(buffer, fmt, **kwargs)
        samples[name] = buffer.getvalue()
    return samples


MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"BM",
         b"II*\x00", b"MM\x00*", b"%!PS-Adobe-3.0 EPSF-3.0\n"]


@FUZZ
@given(prefix=st.sampled_from(MAGIC), body=st.binary(max_size=512))
def test_arbitrary_bytes_decode_or_raise_image_read_error(prefix, body):
    load_or_refuse(prefix + body)


@st.composite
def corrupted(draw, data: bytes) -> bytes:
    """`data` truncated, with bytes overwritten, inserted or deleted (a few edits)."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        if not out:
            break
        kind = draw(st.sampled_from(["truncate", "overwrite", "insert", "delete"]))
        at = draw(st.integers(0, len(out) - 1))
        if kind == "truncate":
            del out[at:]
        elif kind == "overwrite":
            patch = draw(st.binary(min_size=1, max_size=8))
            out[at:at + len(patch)] = patch
        elif kind == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            del out[at:at + draw(st.integers(1, 64))]
    return bytes(out)


@FUZZ
@given(data=st.data(), name=st.sampled_from(sorted(encoded_samples())), as_file=st.booleans())
def test_corrupted_real_files_decode_or_raise_image_read_error(tmp_path_factory, data, name, as_file):
    damaged = data.draw(corrupted(encoded_samples()[name]))
    if as_file:
        path = tmp_path_factory.mktemp("damaged") / name
        path.write_bytes(damaged)
        load_or_refuse(path)
    else:
        load_or_refuse(damaged)


def test_intact_samples_decode_with_their_documented_meaning():
    """The unmutated samples: EXIF orientation applied, frame 0 of the GIF, 16-bit scaled not clipped."""
    samples = encoded_samples()
    small = load_image(samples["small.png"])
    assert load_image(samples["small.jpg"]).shape == (small.shape[1], small.shape[0], 3)  # orientation 6 = 90°
    gif = Image.open(io.BytesIO(samples["animated.gif"]))
    first = np.asarray(gif.convert("RGB"))
    gif.seek(1)
    assert (load_image(samples["animated.gif"]) == first).all() and (first != np.asarray(gif.convert("RGB"))).any()
    deep = load_image(samples["deep.png"])
    grey = np.asarray(Image.open(io.BytesIO(samples["small.png"])).convert("L"))
    assert np.abs(deep[..., 0].astype(int) - grey).max() <= 1 and deep.mean() < 250  # scaled, not clipped at 255


DTYPES = [np.bool_, np.uint8, np.uint16, np.int8, np.int32, np.int64, np.uint64, np.float16, np.float32,
          np.float64, np.complex64, np.object_, np.str_, "datetime64[s]"]


@st.composite
def any_array(draw):
    """Arrays of every dtype and rank, image-like shapes most often, NaN/inf among the floats."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(st.one_of(
        st.tuples(st.integers(0, 6), st.integers(0, 6), st.sampled_from([3, 4])),
        hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    ))
    if dtype.kind == "O":
        elements = st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=2))
        return draw(hnp.arrays(dtype, shape, elements=elements))
    return draw(hnp.arrays(dtype, shape))


@FUZZ
@given(array=any_array())
def test_arrays_of_any_dtype_and_shape_give_rgb_or_image_read_error(array):
    pixels = load_or_refuse(array)
    image_like = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))
    numeric = array.dtype.kind in "biuf"
    if pixels is None:
        assert not (image_like and numeric and min(array.shape[:2]) > 0), "a valid array was refused"
        return
    assert image_like and numeric and pixels.shape[:2] == array.shape[:2]
    if array.dtype == np.uint8:
        expected = array if array.ndim == 3 else np.repeat(array[..., None], 3, axis=2)
        np.testing.assert_array_equal(pixels, expected[..., :3])
    if array.dtype == np.bool_:
        assert set(np.unique(pixels)) <= {0, 255}


@FUZZ
@given(mode=st.sampled_from(sorted(Image.MODES)), width=st.integers(0, 9), height=st.integers(0, 9),
       seed=st.integers(0, 2**16), orientation=st.sampled_from([None, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 65535]))
def test_pil_images_of_every_mode_and_orientation(mode, width, height, seed, orientation):
    raw = np.random.default_rng(seed).integers(0, 256, len(Image.new(mode, (width, height)).tobytes()), dtype=np.uint8)
    image = Image.frombytes(mode, (width, height), raw.tobytes())
    if mode == "P":
        image.info["transparency"] = int(raw[0]) if raw.size else 0
    if orientation is not None:
        image.getexif()[0x0112] = orientation
    pixels = load_or_refuse(image)
    if width == 0 or height == 0:
        assert pixels is None
        return
    assert pixels is not None, f"a {mode} image was refused"
    turned = orientation in (5, 6, 7, 8)
    assert pixels.shape[:2] == ((width, height) if turned else (height, width))


@FUZZ
@given(width=st.integers(1, 2**16), height=st.integers(1, 2**16), max_pixels=st.integers(1, 10**6))
def test_pixel_limit_is_checked_before_decoding(width, height, max_pixels):
    """A small file declaring a huge image (decompression bomb) is refused from its header: the
    decoder is never run (it would raise the AssertionError below)."""
    assume(width * height > max_pixels)
    data = png_declaring(width, height)
    with mock.patch.object(ImageFile.ImageFile, "load", side_effect=AssertionError("decoded")):
        with pytest.raises(ImageReadError, match="pixels, above the limit"):
            load_image(data, max_pixels=max_pixels)


@FUZZ
@given(size=st.integers(2, 4096), max_bytes=st.integers(1, 4095), as_file=st.booleans())
def test_byte_limit_is_checked_before_opening(tmp_path_factory, size, max_bytes, as_file):
    assume(size > max_bytes)
    data = png_declaring(4, 4) + b"\x00" * size
    image = data
    if as_file:
        image = tmp_path_factory.mktemp("big") / "big.png"
        image.write_bytes(data)
    with mock.patch.object(Image, "open", side_effect=AssertionError("opened")):
        with pytest.raises(ImageReadError, match="bytes, above the limit"):
            load_image(image, max_bytes=max_bytes)


ENV_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)


@FUZZ
@given(name=st.sampled_from(["IDGEN_MAX_IMAGE_PIXELS", "IDGEN_MAX_IMAGE_BYTES"]),
       value=st.one_of(ENV_TEXT, st.integers(-10, 10**9).map(str)))
def test_limit_variables_are_read_when_used_and_validated(name, value):
    image = np.zeros((4, 4, 3), np.uint8)
    try:
        parsed = int(value.strip()) if value.strip() else None
    except ValueError:
        parsed = 0
    with mock.patch.dict(os.environ, {name: value}):
        if parsed is not None and parsed <= 0:
            with pytest.raises(ConfigError) as err:
                load_image(image)
            assert name in str(err.value) and repr(value) in str(err.value) and "positive integer" in str(err.value)
        elif name == "IDGEN_MAX_IMAGE_PIXELS" and parsed is not None and parsed < 16:
            with pytest.raises(ImageReadError, match=f"above the limit of {parsed}"):
                load_image(image)
        else:
            assert_rgb(load_image(image))


# -- 2. checkpoint key maps --------------------------------------------------------------------

PVA_ENCODER = dict(num_tokens=0, num_layers=2, num_heads=2, feedforward_dim=16)


@functools.lru_cache(maxsize=None)
def released_unet(kind: str):
    return meta_unet({"faceid": SD15_UNET, "instantid": SDXL_UNET}[kind])


@functools.lru_cache(maxsize=None)
def layouts() -> dict:
    names = ("instantid.json", "ip-adapter-faceid.json")
    return {name: json.loads((SHARED / "layouts" / name).read_text()) for name in names}


def meta_dict(layout: dict, parts) -> dict:
    """The official nested layout with every tensor on the meta device (full size, no memory)."""
    return {part: {k: torch.empty(s, device="meta") for k, s in layout[part].items()} for part in parts}


@functools.lru_cache(maxsize=None)
def tiny(kind: str):
    """Small real UNets: "sd" (width 32) and "wide" (width 64, for FaceID-Plus's 64-wide heads)."""
    return tiny_unet(0, text_width=32 if kind == "sd" else 64).eval()


def official_files():
    """`(name, loader, valid state dict, how the loader names keys)` of each official format.
    `qualified` messages say `part.key` (InstantID, PVA), the others the key inside its part."""
    faceid = layouts()["ip-adapter-faceid.json"]
    instantid = layouts()["instantid.json"]["instantid_ip-adapter.bin"]
    with seeded(0):
        pva = pva_official(PVAAdapter.for_unet(tiny("sd"), **PVA_ENCODER))
        svfr = svfr_official(IDProjection(16, 32))
    return [
        ("faceid", lambda sd: convert_faceid_checkpoint(sd, released_unet("faceid")),
         meta_dict(faceid["ip-adapter-faceid_sd15.bin"], ("image_proj", "ip_adapter")), False),
        ("faceid-plusv2", lambda sd: convert_faceid_checkpoint(sd, released_unet("faceid")),
         meta_dict(faceid["ip-adapter-faceid-plusv2_sd15.bin"], ("image_proj", "ip_adapter")), False),
        ("instantid", lambda sd: load_instantid_adapter(sd, released_unet("instantid")),
         meta_dict(instantid, ("image_proj", "ip_adapter")), True),
        ("pva", lambda sd: load_pva_adapter(sd, tiny("sd"), num_heads=PVA_ENCODER["num_heads"]), pva, True),
        ("svfr", lambda sd: load_id_projection(sd, SVFRConfig(identity_channels=16, cross_attention_dim=32)),
         {"": svfr}, False),
    ]


@functools.lru_cache(maxsize=None)
def official_formats() -> dict:
    return {name: (load, sd, qualified) for name, load, sd, qualified in official_files()}


def unwrap(sd: dict) -> dict:
    """SVFR's file is one flat dict (kept under the part "" here)."""
    return sd[""] if list(sd) == [""] else sd


BAD_VALUES = {
    "none": lambda shape: None,
    "int": lambda shape: 3,
    "string": lambda shape: "weights",
    "list": lambda shape: [0.0] * 3,
    "numpy": lambda shape: np.zeros(shape, np.float32) if math.prod(shape) < 10**6 else np.zeros(3),
    "int64": lambda shape: torch.empty(shape, dtype=torch.int64, device="meta"),
    "bool": lambda shape: torch.empty(shape, dtype=torch.bool, device="meta"),
    "complex": lambda shape: torch.empty(shape, dtype=torch.complex64, device="meta"),
    "sparse": lambda shape: torch.sparse_coo_tensor(torch.zeros((len(shape), 0), dtype=torch.long), torch.zeros(0), shape),
    "extra_dim": lambda shape: torch.empty((*shape, 2), device="meta"),
    "scalar": lambda shape: torch.empty((), device="meta"),
    "drop_dim": lambda shape: torch.empty(shape[:-1], device="meta"),
}


@st.composite
def corruption(draw, sd: dict):
    """One defect in a valid official dict: `(damaged dict, names the message may give)`."""
    sd = {part: dict(values) for part, values in sd.items()}
    part = draw(st.sampled_from(sorted(sd)))
    keys = list(sd[part])
    key = draw(st.sampled_from(keys))
    kind = draw(st.sampled_from(["delete", "rename", "extra", "non_str_key"] + sorted(BAD_VALUES)))
    names = {key}
    if kind == "delete":
        del sd[part][key]
    elif kind == "rename":
        renamed = key + draw(st.sampled_from(["_x", ".weight", "0"]))
        assume(renamed not in sd[part])
        sd[part][renamed] = sd[part].pop(key)
        names.add(renamed)
    elif kind == "extra":
        names = {"zz_unexpected.weight"}
        sd[part]["zz_unexpected.weight"] = torch.empty(3, device="meta")
    elif kind == "non_str_key":
        bad_key = draw(st.sampled_from([5, 2.5, ("a", "b"), b"weight", None]))
        names = {repr(bad_key).strip("'")}
        sd[part][bad_key] = torch.empty(3, device="meta")
    else:
        assume(kind not in ("scalar", "drop_dim") or sd[part][key].ndim > 0)
        sd[part][key] = BAD_VALUES[kind](tuple(sd[part][key].shape))
    return sd, part, names


@FUZZ
@given(data=st.data(), name=st.sampled_from(["faceid", "faceid-plusv2", "instantid", "pva", "svfr"]),
       flat=st.booleans())
def test_damaged_official_checkpoints_name_the_offending_key(data, name, flat):
    load, valid, qualified = official_formats()[name]
    damaged, part, names = data.draw(corruption(valid))
    if part:
        names |= {f"{part}.{n}" for n in names} if qualified else set()
    if flat and part:  # a safetensors-style file: `part.key` at the top level
        damaged = {f"{p}.{k}" if isinstance(k, str) else k: v for p, values in damaged.items() for k, v in values.items()}
    with pytest.raises(CheckpointError) as err:
        load(unwrap(damaged))
    message = str(err.value)
    assert any(repr(n) in message or n in message for n in names), f"{message!r} names none of {names}"


@FUZZ
@given(name=st.sampled_from(["faceid", "instantid", "pva", "svfr"]),
       top=st.sampled_from([None, 3, "file.bin", [1, 2], torch.zeros(3), {"image_proj": torch.zeros(3)},
                            {"image_proj": [1], "ip_adapter": {}}, {7: {}}, {}]))
def test_not_a_state_dict_at_all_is_a_checkpoint_error(name, top):
    load = official_formats()[name][0]
    with pytest.raises((CheckpointError, IdgenError)) as err:
        load(top)
    assert isinstance(err.value, (CheckpointError, FileNotFoundError)), type(err.value)


def nest(sd: dict, flat: bool) -> dict:
    return {f"{p}.{k}": v for p, values in sd.items() for k, v in values.items()} if flat else sd


def assert_same_state(back: dict, original: dict) -> None:
    assert list(back) == list(original)
    for part in original:
        assert list(back[part]) == list(original[part]), part
        for key, value in original[part].items():
            torch.testing.assert_close(back[part][key], value, rtol=0, atol=0)


@FUZZ_SLOW
@given(variant=st.sampled_from(["faceid", "faceid-plusv2"]), rank=st.integers(1, 6), seed=st.integers(0, 2**16),
       flat=st.booleans())
def test_faceid_round_trip_official_to_diffusers_and_back(variant, rank, seed, flat):
    unet = tiny("sd" if variant == "faceid" else "wide")
    clip_dim = None if variant == "faceid" else 16
    official = random_faceid_state_dict(unet, variant, clip_dim=clip_dim, rank=rank, seed=seed)
    state = load_faceid_into_unet(unet, nest(official, flat), variant, clip_dim=clip_dim)
    try:
        back = extract_faceid_state_dict(unet, state.spec, state.projection, FACEID_ADAPTER_NAME)
    finally:
        unload_faceid_from_unet(unet)
    assert_same_state(back, official)


@FUZZ_SLOW
@given(seed=st.integers(0, 2**16), flat=st.booleans(), half=st.booleans())
def test_instantid_round_trip(seed, flat, half):
    unet = tiny("sd")
    config = ResamplerConfig.from_mapping(TINY_RESAMPLER, output_dim=unet.config.cross_attention_dim)
    with seeded(seed):
        official = instantid_official(InstantIDAdapter.for_unet(unet, config))
    if half:
        official = {k: v.half() for k, v in official.items()}
    nested = {p: {k.partition(".")[2]: v for k, v in official.items() if k.startswith(p + ".")}
              for p in ("image_proj", "ip_adapter")}
    loaded = load_instantid_adapter(nest(nested, flat), unet, resampler_config=TINY_RESAMPLER)
    back = instantid_official(loaded)
    assert list(back) == list(official)
    for key, value in official.items():
        torch.testing.assert_close(back[key], value, rtol=0, atol=0)


@FUZZ_SLOW
@given(seed=st.integers(0, 2**16), flat=st.booleans(), layers=st.integers(1, 3))
def test_pva_round_trip(seed, flat, layers):
    unet = tiny("sd")
    with seeded(seed):
        official = pva_official(PVAAdapter.for_unet(unet, **{**PVA_ENCODER, "num_layers": layers}))
    back = pva_official(load_pva_adapter(nest(official, flat), unet, num_heads=PVA_ENCODER["num_heads"]))
    assert_same_state(back, official)


@FUZZ_SLOW
@given(seed=st.integers(0, 2**16), channels=st.integers(1, 32), width=st.integers(1, 32))
def test_svfr_round_trip(seed, channels, width):
    with seeded(seed):
        official = svfr_official(IDProjection(channels, width))
    back = svfr_official(load_id_projection(official, SVFRConfig(identity_channels=channels, cross_attention_dim=width)))
    assert_same_state({"": back}, {"": official})


# -- 3. mask and keypoint geometry --------------------------------------------------------------

COORD = st.one_of(
    st.floats(-64, 320, allow_nan=False),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -1e7, 1e7, 3e7, -3e7, 2.0**24, float("nan"), float("inf")]),
)


@st.composite
def keypoints(draw, count=5):
    """`[count, 2]` points: random, all equal, collinear, or with NaN/inf/huge values mixed in."""
    shape = draw(st.sampled_from(["random", "equal", "collinear"]))
    if shape == "equal":
        return np.full((count, 2), draw(COORD))
    if shape == "collinear":
        x = np.asarray(draw(st.lists(COORD, min_size=count, max_size=count)))
        return np.stack([x, 0.5 * x + draw(COORD)], axis=1)
    points = draw(st.lists(st.tuples(COORD, COORD), min_size=count, max_size=count))
    return np.asarray(points, dtype=np.float64).reshape(count, 2)


SIDE = st.one_of(st.integers(-2, 96), st.sampled_from([1, 2**16, 10**6]), st.floats(1, 50))


def valid_points(points: np.ndarray, limit: float = MAX_COORDINATE) -> bool:
    return points.size > 0 and bool(np.isfinite(points).all()) and float(np.abs(points).max()) <= limit


def positive_int(value) -> bool:
    """What `check_integer(low=1)` accepts among the drawn values: ints and integral floats >= 1."""
    return isinstance(value, (int, float)) and math.isfinite(value) and float(value).is_integer() and value >= 1


def valid_size(width, height) -> bool:
    return positive_int(width) and positive_int(height) and width * height <= DEFAULT_MAX_IMAGE_PIXELS


@FUZZ
@given(width=SIDE, height=SIDE, kps=keypoints())
def test_draw_kps_draws_the_palette_or_refuses_clearly(width, height, kps):
    valid = valid_size(width, height) and valid_points(kps)
    try:
        drawn = draw_kps((width, height), kps)
    except IdgenError as e:
        assert isinstance(e, ValueError) and not valid, f"valid input refused: {e}"
        return
    assert valid
    assert drawn.mode == "RGB" and drawn.size == (int(width), int(height))
    assert set(np.unique(np.asarray(drawn))) <= {0, 153, 255}  # the official colours, 60% on limbs


@FUZZ
@given(kps=keypoints(count=3), sizes=st.tuples(SIDE, SIDE, SIDE, SIDE))
def test_fit_and_resize_kps_stay_finite_or_refuse(kps, sizes):
    from_size, to_size = sizes[:2], sizes[2:]
    valid = all(positive_int(v) for v in sizes) and valid_points(kps)
    for fn in (fit_kps, resize_kps):
        try:
            out = fn(kps, from_size, to_size)
        except IdgenError as e:
            assert isinstance(e, ValueError) and not valid, f"valid input refused: {e}"
            continue
        assert valid and out.shape == kps.shape and out.dtype == np.float32 and np.isfinite(out).all()
    if valid:
        inside = (kps >= 0).all(1) & (kps <= np.array(from_size)).all(1)
        fitted = fit_kps(kps, from_size, to_size)[inside]
        tolerance = 1e-3 * max(to_size) + 1e-3
        assert ((fitted >= -tolerance) & (fitted <= np.array(to_size) + tolerance)).all(), "fitted points left the canvas"


@FUZZ
@given(photo=st.tuples(SIDE, SIDE), sides=st.tuples(st.integers(-1, 2048), st.integers(-1, 2048), st.integers(-1, 128)))
def test_output_size_is_a_multiple_of_base_or_refused(photo, sides):
    min_side, max_side, base = sides
    valid = all(positive_int(v) for v in (*photo, *sides))
    try:
        width, height = output_size_for(photo, min_side=min_side, max_side=max_side, base=base)
    except IdgenError as e:
        assert isinstance(e, ValueError) and not valid, f"valid input refused: {e}"
        return
    assert valid and width % base == 0 and height % base == 0 and min(width, height) >= base


MASK_WIDTH = st.one_of(st.integers(-2, 40), st.sampled_from([2.0, 2.5, float("nan"), 10**6]))


@st.composite
def mask_inputs(draw):
    width, height = draw(st.integers(1, 64)), draw(st.integers(1, 64))
    region = draw(st.sampled_from(["face", "face_hair", "custom", "nose"]))
    n = draw(st.integers(0, 12))
    points = draw(keypoints(count=n)) if n else np.zeros((0, 2))
    source = draw(st.sampled_from(["points", "face_box", "face_landmarks"]))
    if source != "points" and n:
        bbox = draw(st.lists(COORD, min_size=4, max_size=4))
        landmarks = np.resize(points, (68, 2)) if source == "face_landmarks" else None
        points = Face(bbox=bbox, score=1.0, kps=np.zeros((5, 2)), image_size=(width, height), landmarks=landmarks)
    user = draw(hnp.arrays(draw(st.sampled_from([np.uint8, np.float32, np.bool_])),
                           draw(st.sampled_from([(height, width), (height, width, 1), (height + 1, width), (3,)]))))
    exclude = draw(st.one_of(st.none(), hnp.arrays(np.float64, (height, width))))
    widths = {name: draw(MASK_WIDTH) for name in ("dilate", "erode", "feather")}
    return (width, height), points, region, user, exclude, widths


@FUZZ
@given(inputs=mask_inputs())
def test_face_mask_is_in_unit_range_or_refused_clearly(inputs):
    (width, height), points, region, user, exclude, widths = inputs
    try:
        mask = face_mask((width, height), points, region=region, user_mask=user, exclude=exclude, **widths)
    except IdgenError as e:
        assert isinstance(e, ValueError) and "\n" not in str(e)
        return
    assert mask.shape == (height, width) and mask.dtype == np.float32
    assert np.isfinite(mask).all() and mask.min() >= 0.0 and mask.max() <= 1.0
    assert all(float(v).is_integer() and 0 <= v <= max(width, height) for v in widths.values())
    if widths["feather"] == 0:
        assert set(np.unique(mask)) <= {0.0, 1.0}, "a hard mask without feathering"


def test_face_mask_from_collinear_and_equal_points_is_a_thin_mask():
    """Degenerate hulls still give a mask (a line, a dot), not an error."""
    line = face_mask((32, 32), np.array([[4.0, 4.0], [10.0, 10.0], [20.0, 20.0]]))
    dot = face_mask((32, 32), np.full((5, 2), 7.0))
    assert 0 < line.sum() < 64 and dot.sum() == 1.0 and dot[7, 7] == 1.0


@st.composite
def align_inputs(draw):
    height, width = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    image = draw(st.sampled_from(["rgb", "rgba", "grey", "float"]))
    pixels = np.random.default_rng(draw(st.integers(0, 99))).integers(0, 255, (height, width, 4), dtype=np.uint8)
    image = {"rgb": pixels[..., :3].copy(), "rgba": pixels, "grey": pixels[..., 0], "float": pixels[..., :3] / 255.0}[image]
    size = draw(st.sampled_from([112, 128, 224, 256, 64, 100, 0, -112, 2**20, 112.0, 112.5, "112"]))
    mode = draw(st.sampled_from(["arcface", "ffhq", "other"]))
    border = draw(st.sampled_from([0, 255, 128, -1, 256, 1.5]))
    return image, draw(keypoints()), size, mode, border


@FUZZ
@given(inputs=align_inputs())
def test_align_face_gives_a_crop_and_an_inverse_or_refuses_clearly(inputs):
    image, kps, size, mode, border = inputs
    try:
        aligned = align_face(image, kps, size=size, mode=mode, border_value=border)
    except IdgenError as e:
        assert isinstance(e, ValueError) and "\n" not in str(e)
        return
    size = int(size)
    assert aligned.image.shape == (size, size, 3) and aligned.image.dtype == np.uint8
    assert np.isfinite(aligned.matrix).all() and np.isfinite(aligned.inverse).all()
    assert valid_points(kps, limit=float("inf")) and mode in ("arcface", "ffhq")
    scale = math.sqrt(abs(np.linalg.det(aligned.matrix[:, :2])))
    if 1e-3 < scale < 1e3:  # numerically meaningful: the inverse maps crop points back onto the keypoints
        back = transform_points(transform_points(kps, aligned.matrix), aligned.inverse)
        np.testing.assert_allclose(back, kps, atol=1e-6 * (1 + np.abs(kps).max()))


@FUZZ
@given(src=keypoints(count=4), dst=keypoints(count=4))
def test_similarity_transform_is_finite_or_refused(src, dst):
    try:
        matrix = similarity_transform(src, dst)
    except IdgenError as e:
        assert isinstance(e, ValueError)
        finite = np.isfinite(src).all() and np.isfinite(dst).all()
        degenerate = finite and (np.ptp(src, axis=0).max() < 1e-100 or np.abs(np.r_[src, dst]).max() > 1e100)
        assert not finite or degenerate, f"valid points refused: {e}"
        return
    assert matrix.shape == (2, 3) and np.isfinite(matrix).all()


@st.composite
def paste_inputs(draw):
    height, width, s = draw(st.integers(1, 40)), draw(st.integers(1, 40)), draw(st.integers(1, 24))
    image = np.zeros((height, width, 3), np.uint8)
    crop = np.full((s, draw(st.sampled_from([s, s + 1])), 3), 200, np.uint8)
    inverse = np.asarray(draw(st.lists(COORD, min_size=6, max_size=6))).reshape(2, 3)
    mask = draw(st.one_of(st.none(), hnp.arrays(np.float32, (s, s)), hnp.arrays(np.float32, (s + 1, s))))
    feather = draw(MASK_WIDTH)
    return image, crop, inverse, mask, feather


@FUZZ
@given(inputs=paste_inputs())
def test_paste_back_keeps_the_image_shape_or_refuses_clearly(inputs):
    image, crop, inverse, mask, feather = inputs
    try:
        out = paste_back(image, crop, inverse, mask=mask, feather=feather)
    except IdgenError as e:
        assert isinstance(e, ValueError)
        return
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.isfinite(inverse).all()
