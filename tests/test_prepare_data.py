"""`idgen prepare-data`: aligned crops, embeddings and keypoints of real photos; rejected photos
with their reasons; folder, WebDataset, parts-merged and multi-process outputs agree; bad inputs
leave nothing behind and raise DatasetError naming the culprit. An idgen dataset as input (a
synth-like WebDataset of real face crops, a prepared folder, a shard) is analysed again record by
record; an unfinished one raises DatasetError."""

import json
import shutil
import tarfile

import cv2
import numpy as np
import pytest
from PIL import Image

from idgen.app.cli import main
from idgen.errors import DatasetError
from idgen.face import align_face
from idgen.image_io import load_image
from idgen.train.prepare_data import (
    DEFAULT_MIN_SHARPNESS, merge_datasets, photo_key, prepare_dataset, prepare_parallel, sharpness,
)
from idgen.train.records import DatasetWriter, FaceRecord, open_dataset

from conftest import dlib_faces

SIZE = 256
CAPTION = "a photo of {identity}"


def _save_rgb(array, path, max_side=None):
    image = Image.fromarray(array)
    if max_side:
        image.thumbnail((max_side, max_side))
    image.save(path)


@pytest.fixture(scope="module")
def photos(faces_dir, tmp_path_factory):
    """alice/ and bob/ (one portrait each), a corrupt file, a face-less gradient, a blurred portrait."""
    root = tmp_path_factory.mktemp("photos")
    (root / "alice").mkdir()
    (root / "bob").mkdir()
    shutil.copy(faces_dir / "portrait_glasses.jpg", root / "alice")
    _save_rgb(load_image(faces_dir / "portrait_smile.jpg"), root / "bob" / "portrait_smile.jpg", max_side=512)
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    _save_rgb(np.tile(np.linspace(0, 255, 200, dtype=np.uint8)[None, :, None], (200, 1, 3)), root / "gradient.png")
    _save_rgb(cv2.GaussianBlur(load_image(faces_dir / "portrait_older.jpg"), (0, 0), 6), root / "blurred.jpg")
    return root


@pytest.fixture(scope="module")
def prepared(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "ds"
    summary = prepare_dataset(photos, out, size=SIZE, caption=CAPTION, backend="dlib", progress=False)
    return out, summary


def _records(path):
    dataset = open_dataset(path)
    return {record["key"]: record for record in (dataset[i] for i in range(len(dataset)))}


def _assert_same_records(a, b):
    assert a.keys() == b.keys()
    for key, record in a.items():
        assert b[key]["caption"] == record["caption"] and b[key]["identity"] == record["identity"]
        for field in ("embedding", "kps", "bbox"):
            np.testing.assert_array_equal(b[key][field], record[field])
        np.testing.assert_array_equal(np.asarray(b[key]["image"]), np.asarray(record["image"]))


def test_default_min_sharpness_keeps_portraits_and_drops_blurred_copies(faces_dir):
    analyzer = dlib_faces()
    for name in ("portrait_glasses.jpg", "portrait_smile.jpg", "portrait_older.jpg", "portrait_small.png"):
        image = load_image(faces_dir / name)
        kps = analyzer.detect(image)[0].kps
        blurred = cv2.GaussianBlur(image, (0, 0), 6)
        assert sharpness(align_face(image, kps, 512, mode="ffhq").image) > 5 * DEFAULT_MIN_SHARPNESS, name
        assert sharpness(align_face(blurred, kps, 512, mode="ffhq").image) < DEFAULT_MIN_SHARPNESS, name


def test_kept_and_rejected_with_reasons(prepared):
    out, summary = prepared
    assert summary["count"] == 2 and summary["rejected"] == 3
    assert summary["rejected_by_reason"] == {"too blurry": 1, "unreadable": 1, "no face": 1}
    reasons = {row["source"]: row["reason"] for row in map(json.loads, (out / "rejected.jsonl").read_text().splitlines())}
    assert reasons["gradient.png"] == "no face"
    assert reasons["corrupt.jpg"].startswith("unreadable: ")
    assert reasons["blurred.jpg"].startswith("too blurry (sharpness ")
    info = json.loads((out / "dataset.json").read_text())
    assert info == summary
    assert info["embedding_dim"] == 128 and info["identities"] == 2 and info["layout"] == "folder" and info["size"] == SIZE
    assert not list(out.parent.glob("*.partial-*"))


def test_records_are_aligned_faces(prepared, photos):
    out, _ = prepared
    lines = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert [line["source"] for line in lines] == ["alice/portrait_glasses.jpg", "bob/portrait_smile.jpg"]
    assert all((out / line["file_name"]).is_file() and (out / line["face"]).is_file() for line in lines)
    assert all(line["embedding_dim"] == 128 and line["embedding_model"] for line in lines)
    dataset = open_dataset(out)
    assert len(dataset) == 2 and dataset.info["count"] == 2
    for i, line in enumerate(lines):
        record = dataset[i]
        assert record["key"] == line["key"] and record["caption"] == f"a photo of {line['identity']}"
        assert record["image"].mode == "RGB" and record["image"].size == (SIZE, SIZE)
        assert record["embedding"].shape == (128,) and record["embedding"].dtype == np.float32
        kps, (x1, y1, x2, y2) = record["kps"], record["bbox"]
        assert kps.shape == (5, 2) and ((kps > 0) & (kps < SIZE)).all()
        assert kps[0, 0] < kps[1, 0]  # the eye on the image's left comes first
        assert x1 <= kps[:, 0].min() and kps[:, 0].max() <= x2 and y1 <= kps[:, 1].min() and kps[:, 1].max() <= y2
    # The stored embedding is the analyzer's raw embedding of the source photo.
    source = dlib_faces().detect(load_image(photos / lines[0]["source"]))[0]
    np.testing.assert_array_equal(dataset[0]["embedding"], source.embedding)


def test_webdataset_output_matches_folder(prepared, photos, tmp_path):
    out, _ = prepared
    shards = tmp_path / "shards"
    summary = prepare_dataset(photos, shards, size=SIZE, caption=CAPTION, backend="dlib", shard_size=1, progress=False)
    assert summary["layout"] == "webdataset" and summary["shards"] == ["shards/000000.tar", "shards/000001.tar"]
    assert not (shards / "metadata.jsonl").exists() and (shards / "rejected.jsonl").is_file()
    folder = _records(out)
    _assert_same_records(folder, _records(shards))
    single = _records(shards / "shards" / "000001.tar")
    assert len(single) == 1
    _assert_same_records({k: folder[k] for k in single}, single)
    _assert_same_records(folder, _records(sorted((shards / "shards").glob("*.tar"))))


def test_parts_merged_equal_single_process(prepared, photos, tmp_path):
    out, summary = prepared
    parts = [tmp_path / f"part{i}" for i in range(2)]
    for i, part in enumerate(parts):  # part1 keeps no face: only the blurred and the corrupt photo
        prepare_dataset(photos, part, size=SIZE, caption=CAPTION, backend="dlib", num_shards=2, shard_index=i,
                        allow_empty=True, progress=False)
    merged = merge_datasets(parts, tmp_path / "merged")
    assert merged == summary
    assert (tmp_path / "merged" / "metadata.jsonl").read_text() == (out / "metadata.jsonl").read_text()
    _assert_same_records(_records(out), _records(tmp_path / "merged"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]


def test_parallel_webdataset_matches_folder(prepared, photos, tmp_path):
    out, summary = prepared
    summary = prepare_parallel(photos, tmp_path / "ds", num_workers=2, size=SIZE, caption=CAPTION, backend="dlib",
                               shard_size=1, progress=False)
    assert summary["count"] == 2 and summary["rejected"] == 3 and summary["shards"] == ["shards/000000.tar", "shards/000001.tar"]
    _assert_same_records(_records(out), _records(tmp_path / "ds"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def _record(key, size=8, dim=4):
    return FaceRecord(key=key, image=Image.new("RGB", (size, size)), caption="c", embedding=np.ones(dim, np.float32),
                      embedding_model="m", kps=np.zeros((5, 2), np.float32), bbox=np.zeros(4, np.float32))


def test_writer_is_atomic_and_checks_records(tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(RuntimeError):
        with DatasetWriter(out, size=8) as writer:
            writer.add(_record("a"))
            raise RuntimeError("interrupted")
    with pytest.raises(DatasetError, match=r"no usable face.*2 no face, 1 unreadable"):
        with DatasetWriter(out, size=8, shard_size=2) as writer:
            writer.reject("x.jpg", "no face")
            writer.reject("y.jpg", "no face")
            writer.reject("z.jpg", "unreadable: corrupt")
    assert list(tmp_path.iterdir()) == []
    with DatasetWriter(out, size=8) as writer:
        writer.add(_record("a"))
        for bad, message in ((_record("a"), "used twice"), (_record("b.c"), "must match"), (_record("b", size=9), "expected"),
                             (_record("b", dim=5), "differs"), (FaceRecord(**{**vars(_record("b")), "kps": np.zeros(10)}), "kps")):
            with pytest.raises(DatasetError, match=message):
                writer.add(bad)
    assert len(open_dataset(out)) == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_empty_and_faceless_folders_leave_nothing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no photos"):
        prepare_dataset(empty, tmp_path / "out1", progress=False)
    faceless = tmp_path / "faceless"
    faceless.mkdir()
    Image.new("RGB", (64, 64), (120, 80, 40)).save(faceless / "wall.PNG")
    (faceless / "broken.png").write_bytes(b"nope")
    with pytest.raises(DatasetError, match="no usable face.*1 unreadable, 1 no face"):
        prepare_dataset(faceless, tmp_path / "out2", backend="dlib", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "faceless"]


def test_bad_arguments(prepared, photos, tmp_path):
    out, _ = prepared
    with pytest.raises(DatasetError, match="not empty"):
        prepare_dataset(photos, out, progress=False)
    with pytest.raises(DatasetError, match=r"unknown placeholder.*'person'"):
        prepare_dataset(photos, tmp_path / "x", caption="a photo of {person}", progress=False)
    with pytest.raises(DatasetError, match="malformed"):
        prepare_dataset(photos, tmp_path / "x", caption="a photo of {identity", progress=False)
    with pytest.raises(DatasetError, match="shard_index"):
        prepare_dataset(photos, tmp_path / "x", num_shards=2, shard_index=2, progress=False)
    assert list(tmp_path.iterdir()) == []


def _copy(out, tmp_path, name):
    broken = tmp_path / name
    shutil.copytree(out, broken)
    return broken


def test_malformed_datasets_are_named(prepared, photos, tmp_path):
    out, _ = prepared
    with pytest.raises(DatasetError, match="not an idgen dataset.*idgen prepare-data"):
        open_dataset(photos)
    broken = _copy(out, tmp_path, "bad_line")
    with open(broken / "metadata.jsonl", "a") as f:
        f.write("{not json\n")
    with pytest.raises(DatasetError, match=r"metadata.jsonl line 3: not JSON"):
        open_dataset(broken)
    missing = _copy(out, tmp_path, "missing")
    first = json.loads((missing / "metadata.jsonl").read_text().splitlines()[0])
    (missing / first["file_name"]).unlink()
    with pytest.raises(DatasetError, match=f"line 1: {first['file_name']} does not exist"):
        open_dataset(missing)
    shapes = _copy(out, tmp_path, "shapes")
    from safetensors.numpy import save_file

    save_file({"embedding": np.zeros(128, np.float32), "kps": np.zeros((68, 2), np.float32),
               "bbox": np.zeros(4, np.float32)}, shapes / first["face"])
    with pytest.raises(DatasetError, match=r"'kps' has shape \[68, 2\], expected \[5, 2\]"):
        open_dataset(shapes)[0]
    incomplete = _copy(out, tmp_path, "incomplete")
    (incomplete / "metadata.jsonl").write_text((incomplete / "metadata.jsonl").read_text().splitlines()[0] + "\n")
    with pytest.raises(DatasetError, match="lists 2 records but .* holds 1"):
        open_dataset(incomplete)
    (tmp_path / "bad.tar").write_bytes(b"not a tar")
    with pytest.raises(DatasetError, match="not a readable tar"):
        open_dataset(tmp_path / "bad.tar")
    with tarfile.open(tmp_path / "partial.tar", "w") as tar:
        tar.add(out / first["file_name"], arcname=f"{first['key']}.png")
    with pytest.raises(DatasetError, match=f"lacks {first['key']}.json, {first['key']}.safetensors"):
        open_dataset(tmp_path / "partial.tar")


def test_cli(photos, tmp_path, capsys):
    assert main(["prepare-data", str(photos), str(tmp_path / "ds"), "--size", str(SIZE), "--backend", "dlib",
                 "--caption", "{name} of {identity}"]) == 0
    printed = capsys.readouterr().out
    assert "kept 2 face(s), rejected 3 (1 too blurry, 1 unreadable, 1 no face" in printed
    assert f"folder dataset of 2 identity(ies) to {tmp_path / 'ds'}" in printed
    assert sorted(r["caption"] for r in _records(tmp_path / "ds").values()) == ["portrait_glasses of alice", "portrait_smile of bob"]
    (tmp_path / "empty").mkdir()
    assert main(["prepare-data", str(tmp_path / "empty"), str(tmp_path / "ds2")]) == 3
    assert "no photos" in capsys.readouterr().err
    assert main(["prepare-data", str(photos), str(tmp_path / "ds")]) == 3  # exists, no --overwrite
    assert main(["prepare-data", str(photos), str(tmp_path / "ds3"), "--num-workers", "2", "--distributed"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "empty"]


@pytest.fixture(scope="module")
def synthetic(prepared, tmp_path_factory):
    """A dataset laid out as `idgen synth` writes it (WebDataset, one record a shard, 512-d
    vectors): the two real aligned crops of `prepared`, and a face-less gradient between them."""
    out = tmp_path_factory.mktemp("synthetic") / "synth"
    crops = [open_dataset(prepared[0])[i]["image"] for i in range(2)]
    gradient = Image.fromarray(np.tile(np.linspace(0, 255, SIZE, dtype=np.uint8)[None, :, None], (SIZE, 1, 3)))
    with DatasetWriter(out, size=SIZE, shard_size=1) as writer:
        items = [("id0000000", crops[0]), ("id0000001", gradient), ("id0000001", crops[1])]
        for i, (identity, image) in enumerate(items):
            writer.add(FaceRecord(key=f"{identity}_{i:05d}", image=image, caption=f"a photo of {identity}",
                                  embedding=np.full(512, 0.04, np.float32), embedding_model="arcface-synth",
                                  kps=np.zeros((5, 2), np.float32), bbox=np.zeros(4, np.float32), identity=identity,
                                  source=f"synth:{i}"))
    return out


def test_dataset_input_is_analysed_again(synthetic, tmp_path):
    out = tmp_path / "ds"
    summary = prepare_dataset(synthetic, out, size=128, caption="{name} of {identity}", backend="dlib", progress=False)
    assert summary["count"] == 2 and summary["rejected_by_reason"] == {"no face": 1} and summary["identities"] == 2
    assert summary["embedding_dim"] == 128 and summary["size"] == 128  # re-embedded with dlib, cropped to 128 px
    assert [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()] == [
        {"source": "id0000001_00001", "reason": "no face"}]
    source = open_dataset(synthetic)
    records = _records(out)
    assert sorted(records) == [photo_key(0, "id0000000_00000"), photo_key(2, "id0000001_00002")]
    for i in (0, 2):
        record, key = records[photo_key(i, source[i]["key"])], source[i]["key"]
        assert (record["source"], record["identity"], record["caption"]) == (key, source[i]["identity"],
                                                                             f"{key} of {source[i]['identity']}")
        assert record["image"].size == (128, 128)
        face = dlib_faces().detect(np.array(source[i]["image"]))[0]
        np.testing.assert_array_equal(record["embedding"], face.embedding)
    # one shard of it; the same filters and reasons as for photos (nothing written when all fail)
    assert prepare_dataset(synthetic / "shards" / "000002.tar", tmp_path / "one", size=128, backend="dlib",
                           progress=False)["count"] == 1
    with pytest.raises(DatasetError, match=r"no usable face.*2 face too small, 1 no face"):
        prepare_dataset(synthetic, tmp_path / "x", backend="dlib", min_face_size=SIZE, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "one"]


def test_dataset_input_parts_and_cli(prepared, synthetic, tmp_path, capsys):
    single = prepare_dataset(synthetic, tmp_path / "single", size=SIZE, backend="dlib", progress=False)
    parts = [tmp_path / f"part{i}" for i in range(2)]
    for i, part in enumerate(parts):  # items [i::2]: part0 the two faces, part1 the gradient
        prepare_dataset(synthetic, part, size=SIZE, backend="dlib", num_shards=2, shard_index=i, allow_empty=True,
                        progress=False)
    assert merge_datasets(parts, tmp_path / "merged") == single
    _assert_same_records(_records(tmp_path / "single"), _records(tmp_path / "merged"))
    # a prepared folder dataset as INPUT, over two worker processes
    out, _ = prepared
    assert main(["prepare-data", str(out), str(tmp_path / "ds"), "--size", str(SIZE), "--backend", "dlib",
                 "--num-workers", "2", "--shard-size", "1"]) == 0
    assert "kept 2 face(s), rejected 0" in capsys.readouterr().out
    inputs = {record["key"]: record for record in _records(out).values()}
    again = _records(tmp_path / "ds")
    assert sorted(r["source"] for r in again.values()) == sorted(inputs)
    assert all(r["identity"] == inputs[r["source"]]["identity"] for r in again.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "merged", "single"]


def test_unfinished_dataset_input_is_named(prepared, synthetic, tmp_path, capsys):
    for name, dataset in (("synth", synthetic), ("folder", prepared[0])):  # not taken for a folder of photos
        unfinished = _copy(dataset, tmp_path, name)
        (unfinished / "dataset.json").unlink()
        with pytest.raises(DatasetError, match=r"incomplete idgen dataset \(no dataset.json"):
            prepare_dataset(unfinished, tmp_path / "out", backend="dlib", progress=False)
    assert main(["prepare-data", str(tmp_path / "synth"), str(tmp_path / "out")]) == 3
    assert "incomplete idgen dataset" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "synth"]
