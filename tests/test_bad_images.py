"""Bad photos on their way to face analysis: each case asserts the error class and a one-line
message that names the file (or argument) and says what to do; photos of unusual kinds that are
valid (animated, 16-bit, CMYK, palette with transparency, any EXIF orientation) load correctly."""

import io
import os
import struct
import subprocess
import sys
import threading
import zlib
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from idgen.errors import ConfigError, FaceNotFoundError, ImageReadError
from idgen.face.analyzer import MAX_DETECTION_ASPECT, MIN_DETECTION_SIDE
from idgen.face.backends.insightface import InsightFaceAnalyzer
from idgen.image_io import load_image
from idgen.media.video import VideoReadError, probe_video

from conftest import REPO
from test_face_insightface import _export_pack

PHOTO = REPO / "assets" / "faces" / "portrait_glasses.jpg"


def one_line(error: Exception) -> str:
    message = str(error)
    assert message and "\n" not in message and "Traceback" not in message
    return message


@pytest.fixture(scope="module")
def insightface_analyzer(tmp_path_factory):
    """The insightface backend on a pack of tiny ONNX models (see test_face_insightface.py)."""
    root = tmp_path_factory.mktemp("insightface")
    _export_pack(root / "models" / "tinypack", landmarks=False)
    return InsightFaceAnalyzer(pack="tinypack", root=root)


@pytest.fixture(params=["dlib", "insightface"])
def analyzer(request, dlib_analyzer):
    return dlib_analyzer if request.param == "dlib" else request.getfixturevalue("insightface_analyzer")


def save(path, image: Image.Image, **kwargs):
    image.save(path, **kwargs)
    return path


# -- photos too small or too elongated for detection ------------------------------------------

@pytest.mark.parametrize("width, height", [(1, 1), (65535, 1), (1, 4000), (MIN_DETECTION_SIDE - 1, 200),
                                           (MAX_DETECTION_ASPECT * 20 + 1, 20)])
def test_photos_detection_cannot_run_on_are_a_clear_face_not_found_error(analyzer, tmp_path, width, height):
    """These ended in `cv2.error ... resize.cpp ... !dsize.empty()` inside the detectors. `detect`
    (all faces) finds none there; `get` (a face is required) says why."""
    photo = save(tmp_path / f"photo_{width}x{height}.png", Image.new("RGB", (width, height), (128, 128, 128)))
    assert analyzer.detect(photo) == []
    with pytest.raises(FaceNotFoundError) as err:
        analyzer.get(photo)
    message = one_line(err.value)
    assert f"'{photo}'" in message and f"{width}x{height} px" in message
    assert f"at least {MIN_DETECTION_SIDE} px on each side" in message and "use a larger photo" in message


@pytest.mark.parametrize("width, height", [(MIN_DETECTION_SIDE, MIN_DETECTION_SIDE),
                                           (MAX_DETECTION_ASPECT * MIN_DETECTION_SIDE, MIN_DETECTION_SIDE),
                                           (MIN_DETECTION_SIDE, MAX_DETECTION_ASPECT * MIN_DETECTION_SIDE)])
def test_the_smallest_accepted_photos_reach_the_detector_without_error(analyzer, width, height):
    """The limits are where the detectors still run (the tiny insightface detector may "see" a
    face in noise; what matters is that it runs and maps boxes back without error)."""
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    faces = analyzer.detect(image)
    assert isinstance(faces, list) and all(np.isfinite(face.bbox).all() for face in faces)


# -- files that are not readable photos -------------------------------------------------------

def test_a_folder_fifo_device_loop_or_dangling_link_is_an_image_read_error(analyzer, tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(tmp_path / "loop2.jpg")
    (tmp_path / "loop2.jpg").symlink_to(loop)
    dangling = tmp_path / "dangling.jpg"
    dangling.symlink_to(tmp_path / "gone.jpg")
    folder = tmp_path / "photos.jpg"
    folder.mkdir()
    cases = {folder: "is a folder", fifo: "not a regular file", "/dev/null": "not a regular file",
             loop: "symbolic links", dangling: "does not exist"}
    for path, expected in cases.items():
        with pytest.raises(ImageReadError) as err:
            analyzer.get(path)
        message = one_line(err.value)
        assert f"'{path}'" in message and expected in message, message


def test_a_fifo_is_refused_without_blocking(tmp_path):
    """Opening a FIFO for reading waits for a writer forever: the file kind is checked first."""
    fifo = tmp_path / "camera.png"
    os.mkfifo(fifo)
    result = []
    reader = threading.Thread(target=lambda: result.append(pytest.raises(ImageReadError, load_image, fifo)), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive(), "load_image blocked on a FIFO"
    assert "not a regular file" in str(result[0].value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_a_file_without_read_permission(tmp_path):
    photo = tmp_path / "locked.jpg"
    photo.write_bytes(PHOTO.read_bytes())
    photo.chmod(0)
    with pytest.raises(ImageReadError, match="locked.jpg.*Permission denied.*check its permissions"):
        load_image(photo)


def test_a_permission_error_while_reading_is_an_image_read_error(tmp_path):
    """The same path as a file without read permission, also when the tests run as root."""
    photo = tmp_path / "locked.jpg"
    photo.write_bytes(PHOTO.read_bytes())
    with mock.patch("builtins.open", side_effect=PermissionError(13, "Permission denied")):
        with pytest.raises(ImageReadError) as err:
            load_image(photo)
    message = one_line(err.value)
    assert "locked.jpg" in message and "Permission denied" in message and "check its permissions" in message


def test_empty_truncated_and_foreign_files(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(PHOTO.read_bytes()[:5000])
    postscript = tmp_path / "drawing.eps"
    postscript.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    cases = {empty: "empty (0 bytes)", truncated: "truncated or corrupt", postscript: "convert it to PNG or JPEG"}
    for path, expected in cases.items():
        with pytest.raises(ImageReadError) as err:
            load_image(path)
        message = one_line(err.value)
        assert f"'{path}'" in message and expected in message, message


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares `width` x `height` (8-bit grey), with a few bytes of pixel data."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_a_huge_declared_size_in_a_tiny_file_is_refused_before_decoding(tmp_path):
    for width, height in ((7000, 6000), (60000, 60000)):  # 42 MP; 3.6 GP (past Pillow's own bomb check)
        bomb = tmp_path / f"bomb{width}.png"
        bomb.write_bytes(png_declaring(width, height))
        with mock.patch("PIL.ImageFile.ImageFile.load", side_effect=AssertionError("decoded")):
            with pytest.raises(ImageReadError) as err:
                load_image(bomb)
        message = one_line(err.value)
        assert bomb.name in message and "above the limit of 40000000" in message and "IDGEN_MAX_IMAGE_PIXELS" in message


def test_byte_limit(tmp_path):
    with pytest.raises(ImageReadError, match=r"portrait_glasses\.jpg' is \d+ bytes, above the limit of 1000; shrink it"):
        load_image(PHOTO, max_bytes=1000)


# -- unusual but valid photos -----------------------------------------------------------------

def test_animated_gif_and_multi_page_tiff_give_their_first_frame(tmp_path):
    first = Image.new("RGB", (8, 6), (200, 30, 30))
    second = Image.new("RGB", (8, 6), (30, 30, 200))
    gif = save(tmp_path / "anim.gif", first, save_all=True, append_images=[second], duration=100, loop=0)
    tiff = save(tmp_path / "pages.tif", first, save_all=True, append_images=[second])
    for path in (gif, tiff):
        pixels = load_image(path)
        assert pixels.shape == (6, 8, 3)
        assert pixels[..., 0].mean() > 150 and pixels[..., 2].mean() < 80, f"{path.name}: not the first frame"


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100], [40000, 65535]], np.uint16)
    path = save(tmp_path / "deep.png", Image.fromarray(values))
    assert Image.open(path).mode.startswith("I;16")
    np.testing.assert_array_equal(load_image(path)[..., 0], [[0, 100], [155, 255]])


def test_cmyk_jpeg(tmp_path):
    path = save(tmp_path / "cmyk.jpg", Image.new("CMYK", (16, 16), (0, 255, 255, 0)), quality=95)  # red
    red = load_image(path)[8, 8].astype(int)
    assert red[0] > 230 and red[1] < 30 and red[2] < 30


def test_palette_with_transparency(tmp_path, recwarn):
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    path = save(tmp_path / "palette.png", image, transparency=1)
    pixels = load_image(path)
    assert (pixels == [10, 200, 30]).all()  # the colour under the transparency (alpha is dropped)
    assert not [w for w in recwarn if "Palette images with Transparency" in str(w.message)]


# Pillow's transposes for EXIF orientations 2-8, in numpy terms on an [H, W, 3] array.
ORIENTED = {
    1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 255, 65535])
def test_every_exif_orientation_and_out_of_range_ones(tmp_path, orientation):
    pixels = np.random.default_rng(orientation).integers(0, 255, (3, 5, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(tmp_path / "oriented.png", Image.fromarray(pixels), exif=exif.tobytes())
    expected = ORIENTED.get(orientation, ORIENTED[1])(pixels)  # 0, 9, 255, 65535: no such orientation, as stored
    np.testing.assert_array_equal(load_image(path), expected)


# -- the limits' environment variables --------------------------------------------------------

@pytest.mark.parametrize("variable, value", [("IDGEN_MAX_IMAGE_PIXELS", "abc"), ("IDGEN_MAX_IMAGE_BYTES", "-5"),
                                             ("IDGEN_MAX_IMAGE_PIXELS", "0"), ("IDGEN_MAX_IMAGE_BYTES", "1.5")])
def test_bad_limit_variables_fail_where_used_not_at_import(monkeypatch, variable, value):
    env = {**os.environ, variable: value}
    code = "import idgen.image_io, idgen.face, idgen.conditioning, idgen.media.video"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as err:
        load_image(PHOTO)
    assert one_line(err.value) == f"{variable} must be a positive integer, got {value!r}; fix or unset it."


def test_limit_variables_are_read_when_used_and_old_names_still_work(monkeypatch):
    import idgen.image_io as image_io

    monkeypatch.setenv("IDGEN_MAX_IMAGE_PIXELS", "1000")
    monkeypatch.setenv("IDGEN_MAX_IMAGE_BYTES", " 2048 ")
    assert (image_io.MAX_IMAGE_PIXELS, image_io.MAX_IMAGE_BYTES) == (1000, 2048)
    with pytest.raises(ImageReadError, match="above the limit of 1000; resize it or raise IDGEN_MAX_IMAGE_PIXELS"):
        load_image(np.zeros((40, 40, 3), np.uint8))
    monkeypatch.setenv("IDGEN_MAX_IMAGE_PIXELS", "abc")
    with pytest.raises(ConfigError, match="IDGEN_MAX_IMAGE_PIXELS"):
        image_io.MAX_IMAGE_PIXELS


# -- the video reader shares the file checks ---------------------------------------------------

def test_video_reader_refuses_folders_fifos_and_loops_by_name(tmp_path):
    fifo = tmp_path / "stream.mp4"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.mp4"
    loop.symlink_to(loop)
    folder = tmp_path / "clips.mp4"
    folder.mkdir()
    for path, expected in {folder: "is a folder", fifo: "not a regular file", loop: "symbolic links"}.items():
        with pytest.raises(VideoReadError) as err:
            probe_video(path)
        message = one_line(err.value)
        assert f"'{path}'" in message and expected in message, message


def test_encoded_bytes_name_no_file_but_say_what_they_are():
    with pytest.raises(ImageReadError) as err:
        load_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    assert one_line(err.value).startswith("image could not be decoded")
    with pytest.raises(ImageReadError, match="got list"):
        load_image([[0, 0, 0]])
    with pytest.raises(ImageReadError, match="dtype object; convert it with"):
        load_image(np.full((4, 4, 3), None))
    assert load_image(io.BytesIO(PHOTO.read_bytes()).getvalue()).shape[2] == 3
