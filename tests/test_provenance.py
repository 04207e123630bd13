"""Provenance: manifest, model hashes, metadata in PNG/JPEG/WebP/MP4, the invisible watermark
(robust to JPEG 75 + 0.5x, silent on clean photos) and `idgen verify`."""

import hashlib
import io
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from idgen.errors import ImageReadError, ModelNotFoundError
from idgen.provenance import (Provenance, ProvenanceError, detect, embed, encode_image, file_sha256, folder_sha256,
                              read_metadata, stamp, verify_file)
from idgen.provenance import hashes, watermark

REPO = Path(__file__).resolve().parents[1]
ASSET_FACES = sorted((REPO / "assets" / "faces").glob("*.jpg"))


def _photo(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _jpeg(image, quality=75) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def _half(image) -> np.ndarray:
    return cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)


def _psnr(a, b) -> float:
    return 10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b) ** 2))


def _manifest(operation="generate", method="instantid", **kw) -> Provenance:
    return Provenance(operation, method, models={"unet": "ab" * 32, "adapter": "embedded-default (random weights)"},
                      parameters={"seed": 7, "steps": 30, "prompt": 'a <photo> & "quotes" é', "scale": np.float32(0.5)},
                      **kw)


def _strict_loads(text):
    def refuse(name):
        raise AssertionError(f"{name} in strict JSON")

    return json.loads(text, parse_constant=refuse)


# Manifest


def test_manifest_round_trips_and_labels_generation_and_edits():
    made = _manifest()
    again = Provenance.from_json(made.to_json())
    assert again == made and again.id == made.id and len(made.id) == 8
    data = _strict_loads(made.to_json())
    assert data["parameters"]["scale"] == 0.5 and data["label"] == "AI-generated"
    action = data["c2pa"]["assertions"][0]
    assert action["label"] == "c2pa.actions"
    assert action["data"]["actions"][0]["action"] == "c2pa.created"
    assert data["digital_source_type"].endswith("/trainedAlgorithmicMedia")
    assert data["generator"].startswith("idgen ") and data["created"].endswith("Z")
    for operation in ("inpaint", "swap", "restore"):
        edit = _strict_loads(_manifest(operation, "pva").to_json())
        assert edit["c2pa"]["assertions"][0]["data"]["actions"][0]["action"] == "c2pa.edited"
        assert edit["digital_source_type"].endswith("/compositeWithTrainedAlgorithmicMedia")


def test_manifest_id_covers_every_field():
    made = _manifest()
    assert _manifest(created=made.created).id == made.id
    changed = Provenance(made.operation, made.method, models=made.models, created=made.created,
                         parameters={**made.parameters, "seed": 8})
    assert changed.id != made.id


def test_manifest_refuses_bad_values():
    with pytest.raises(ProvenanceError, match="strict JSON"):
        Provenance("generate", "faceid", parameters={"guidance": float("nan")})
    with pytest.raises(ProvenanceError, match="operation"):
        Provenance("paint", "faceid")
    with pytest.raises(ProvenanceError, match="not JSON"):
        Provenance("generate", "faceid", parameters={"image": object()})
    with pytest.raises(ProvenanceError, match="not valid JSON"):
        Provenance.from_json('{"schema": "idgen.provenance/1", "x": NaN}')


def test_swap_manifest_says_face_swap(tmp_path):
    swap = _manifest("swap", "pva")
    assert swap.face_swap and _strict_loads(swap.to_json())["face_swap"] is True
    assert "face swap" in swap.description
    assert not _manifest("restore", "gfpgan").face_swap
    with pytest.raises(ProvenanceError, match="face swap"):
        _manifest("swap", "pva", face_swap=False)
    path = tmp_path / "swapped.png"
    path.write_bytes(encode_image(_photo(ASSET_FACES[0]), "png", swap))
    assert verify_file(path)["face_swap"] is True


# Model hashes


def test_file_and_folder_hashes(tmp_path, monkeypatch):
    monkeypatch.setenv("IDGEN_CACHE_DIR", str(tmp_path / "cache"))
    big = tmp_path / "model" / "unet" / "diffusion_pytorch_model.safetensors"
    big.parent.mkdir(parents=True)
    big.write_bytes(os.urandom(hashes.CACHE_MIN_BYTES + 10))
    (tmp_path / "model" / "unet" / "config.json").write_text('{"a": 1}')
    (tmp_path / "model" / "README.md").write_text("not hashed")
    assert file_sha256(big) == hashlib.sha256(big.read_bytes()).hexdigest()
    cached = json.loads(hashes.cache_path().read_text())["files"]
    assert cached[str(big.resolve())]["sha256"] == file_sha256(big)

    folder = folder_sha256(tmp_path / "model")
    (tmp_path / "model" / "README.md").write_text("edited: still not hashed")
    assert folder_sha256(tmp_path / "model") == folder
    (tmp_path / "model" / "unet" / "config.json").write_text('{"a": 2}')
    assert folder_sha256(tmp_path / "model") != folder

    # A changed file is re-hashed (size/mtime key), a corrupt cache is ignored.
    mtime_ns = big.stat().st_mtime_ns
    big.write_bytes(os.urandom(hashes.CACHE_MIN_BYTES + 10))
    os.utime(big, ns=(mtime_ns + 10**9, mtime_ns + 10**9))
    assert file_sha256(big) == hashlib.sha256(big.read_bytes()).hexdigest()
    hashes.cache_path().write_text("{not json")
    assert file_sha256(big) == hashlib.sha256(big.read_bytes()).hexdigest()
    assert json.loads(hashes.cache_path().read_text())["version"] == 1
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        file_sha256(tmp_path / "missing.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no weight or config"):
        folder_sha256(tmp_path / "empty")


# Metadata in the file


@pytest.mark.parametrize("fmt, container", [("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP")])
def test_metadata_round_trips(fmt, container, tmp_path):
    made = _manifest("restore", "gfpgan")
    data = encode_image(_photo(ASSET_FACES[0]), fmt, made, quality=90)
    path = tmp_path / f"out.{fmt}"
    path.write_bytes(data)
    for source in (data, path):
        found = read_metadata(source)
        assert found["container"] == container
        assert found["manifest"] == made.to_dict() and found["manifest_intact"] is True
        assert found["xmp"]["digital_source_type"] == made.digital_source_type
        assert found["xmp"]["manifest_id"] == made.id and found["xmp"]["creator_tool"] == made.generator
    assert Image.open(path).format == container


def test_metadata_absent_or_edited(tmp_path):
    plain = tmp_path / "plain.png"
    Image.fromarray(_photo(ASSET_FACES[0])).save(plain)
    assert read_metadata(plain) is None
    made = _manifest()
    edited = json.loads(made.to_json())
    edited["parameters"]["seed"] = 999
    info = PngImagePlugin.PngInfo()
    info.add_itxt("idgen:provenance", json.dumps(edited))
    Image.fromarray(_photo(ASSET_FACES[0])).save(tmp_path / "edited.png", pnginfo=info)
    assert read_metadata(tmp_path / "edited.png")["manifest_intact"] is False
    camera_xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
                  b'<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
                  b'Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/%s"/>'
                  b'</rdf:RDF></x:xmpmeta>')
    Image.fromarray(_photo(ASSET_FACES[0])).save(tmp_path / "camera.jpg", xmp=camera_xmp % b"digitalCapture")
    assert read_metadata(tmp_path / "camera.jpg") is None, "XMP without AI provenance is not provenance"
    Image.fromarray(_photo(ASSET_FACES[0])).save(tmp_path / "other.jpg", xmp=camera_xmp % b"trainedAlgorithmicMedia")
    other = read_metadata(tmp_path / "other.jpg")
    assert other["manifest"] is None and other["xmp"]["digital_source_type"].endswith("/trainedAlgorithmicMedia")
    with pytest.raises(ProvenanceError, match="gif"):
        encode_image(_photo(ASSET_FACES[0]), "gif", made)
    with pytest.raises(ImageReadError, match="does not exist"):
        read_metadata(tmp_path / "missing.png")


# Watermark


@pytest.mark.parametrize("path", ASSET_FACES, ids=lambda p: p.name)
def test_watermark_survives_jpeg75_and_half_size(path):
    image = _photo(path)
    made = _manifest()
    marked = stamp(image, made)
    assert marked.shape == image.shape and _psnr(image, marked) >= 40
    expected = watermark.payload_bits(made.id)
    for attacked in (_half(_jpeg(marked)), _jpeg(_half(marked))):
        result = detect(attacked)
        assert np.mean(np.array(result.bits) == expected) >= 0.95
        assert result.magic_ok and result.payload_id == made.id and result.p_value < 1e-6


def test_no_watermark_in_clean_photos(faces_dir):
    photos = [_photo(p) for p in sorted(faces_dir.iterdir()) if p.suffix in (".jpg", ".png")] + \
             [_photo(p) for p in ASSET_FACES]
    assert len(photos) >= 6
    for image in photos:
        for variant in (image, _jpeg(image), _half(image)):
            result = detect(variant)
            assert not result.magic_ok and result.payload_id is None and result.p_value > 1e-3


def test_watermark_is_deterministic_idempotent_and_takes_any_size():
    image = _photo(ASSET_FACES[0])
    once = embed(image, "0123abcd")
    assert np.array_equal(once, embed(image, "0123abcd"))
    assert np.array_equal(embed(once, "0123abcd"), once), "re-stamping with the same id changes nothing"
    other = detect(embed(once, "89abcdef"))
    assert other.payload_id == "89abcdef", "a new stamp replaces the old one"
    for side in (1, 8, 64):
        small = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
        assert embed(small, "0123abcd").shape == small.shape
    assert detect(embed(cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA), "0123abcd")).payload_id == "0123abcd"
    with pytest.raises(ProvenanceError, match="8 hex digits"):
        embed(image, "xyz")
    with pytest.raises(ProvenanceError, match=r"\[H, W, 3\]"):
        embed(image[:, :, 0], "0123abcd")


# idgen verify


@pytest.fixture(scope="module")
def cli_main():
    from idgen.app.cli import main

    return main


def test_verify_cli_exit_codes_and_output(cli_main, tmp_path, capsys):
    made = _manifest("swap", "pva")
    marked = tmp_path / "swap.png"
    marked.write_bytes(encode_image(_photo(ASSET_FACES[0]), "png", made))
    assert cli_main(["verify", str(marked)]) == 0
    out = capsys.readouterr().out
    assert f"idgen manifest {made.id} (intact)" in out and "face swap: yes" in out
    assert f"watermark: detected, id {made.id}, matches the manifest" in out

    assert cli_main(["verify", str(marked), "--json"]) == 0
    report = _strict_loads(capsys.readouterr().out)
    assert report["provenance_found"] and report["metadata"]["manifest"]["id"] == made.id
    assert report["watermark"]["id_matches_manifest"] is True and report["watermark"]["id_bit_errors"] == 0

    # Metadata stripped by a re-encoder (JPEG 75, half size): the watermark alone still answers.
    stripped = tmp_path / "reposted.jpg"
    Image.fromarray(_half(np.asarray(Image.open(marked)))).save(stripped, quality=75)
    assert cli_main(["verify", str(stripped), "--json"]) == 0
    report = _strict_loads(capsys.readouterr().out)
    assert not report["metadata"]["found"] and report["watermark"]["payload_id"] == made.id

    clean = tmp_path / "clean.png"
    Image.fromarray(_photo(ASSET_FACES[0])).save(clean)
    assert cli_main(["verify", str(clean)]) == 5
    assert "provenance: none found" in capsys.readouterr().out


def test_verify_cli_missing_and_corrupt_files(cli_main, tmp_path, capsys):
    missing = tmp_path / "missing.png"
    assert cli_main(["verify", str(missing)]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing.png" in err and "does not exist" in err
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff garbage")
    assert cli_main(["verify", str(corrupt)]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "corrupt.jpg" in err
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")
    assert cli_main(["verify", str(broken)]) == 3
    assert "broken.mp4" in capsys.readouterr().err


# Video


def test_video_round_trip(tmp_path):
    av = pytest.importorskip("av")
    from idgen.media.video import write_video

    image = cv2.resize(_photo(ASSET_FACES[0]), (256, 256), interpolation=cv2.INTER_AREA)
    frames = [np.ascontiguousarray(np.roll(image, i, axis=1)) for i in range(12)]
    made = _manifest("swap", "pva")
    path = tmp_path / "swap.mp4"
    assert write_video(path, frames, 12, crf=18, provenance=made) == 12
    with av.open(str(path)) as container:
        assert _strict_loads(container.metadata["description"])["id"] == made.id
        assert "AI-generated" in container.metadata["comment"]
    report = verify_file(path)
    assert report["kind"] == "video" and report["metadata"]["manifest_intact"] is True
    assert report["face_swap"] is True
    assert report["watermark"]["detected"] and report["watermark"]["id_matches_manifest"] is True
    assert min(f["bit_accuracy"] for f in report["watermark"]["frames"]) >= 0.9

    plain = tmp_path / "plain.mp4"
    write_video(plain, frames, 12, crf=18)
    report = verify_file(plain)
    assert not report["provenance_found"] and not report["watermark"]["detected"]
