"""`idgen prepare-data`: aligned crops, embeddings and keypoints of real photos; rejected photos
with their reasons; folder, WebDataset and multi-process outputs agree; bad inputs leave nothing."""

import json
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image

from idgen.cli import main
from idgen.errors import DatasetError
from idgen.train.prepare_data import prepare_dataset, prepare_parallel
from idgen.train.records import open_dataset

SIZE = 256


@pytest.fixture(scope="module")
def photos(faces_dir, tmp_path_factory):
    """Two people in identity sub-folders, a corrupt file, a face-less gradient, a blurred portrait."""
    root = tmp_path_factory.mktemp("photos")
    (root / "alice").mkdir()
    (root / "bob").mkdir()
    shutil.copy(faces_dir / "portrait_glasses.jpg", root / "alice")
    shutil.copy(faces_dir / "portrait_smile.jpg", root / "bob")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    Image.fromarray(np.tile(np.linspace(0, 255, 200, dtype=np.uint8)[None, :, None], (200, 1, 3))).save(root / "gradient.png")
    blurred = cv2.GaussianBlur(cv2.imread(str(faces_dir / "portrait_older.jpg")), (0, 0), 6)
    cv2.imwrite(str(root / "blurred.jpg"), blurred)
    return root


@pytest.fixture(scope="module")
def prepared(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "ds"
    summary = prepare_dataset(photos, out, size=SIZE, caption="a photo of {identity}", progress=False)
    return out, summary


def _records(path):
    ds = open_dataset(path)
    return {r["key"]: r for r in (ds[i] for i in range(len(ds)))}


def test_kept_and_rejected_with_reasons(prepared):
    out, summary = prepared
    assert summary["count"] == 2 and summary["rejected"] == 3
    reasons = {json.loads(line)["source"]: json.loads(line)["reason"] for line in (out / "rejected.jsonl").read_text().splitlines()}
    assert reasons["gradient.png"] == "no face"
    assert reasons["corrupt.jpg"].startswith("unreadable")
    assert reasons["blurred.jpg"].startswith("too blurry")
    info = json.loads((out / "dataset.json").read_text())
    assert info["embedding_dim"] == 128 and info["identities"] == 2 and info["layout"] == "folder"


def test_records_are_aligned_faces(prepared):
    out, _ = prepared
    records = _records(out)
    assert sorted(r["caption"] for r in records.values()) == ["a photo of alice", "a photo of bob"]
    for record in records.values():
        assert record["image"].size == (SIZE, SIZE)
        assert record["embedding"].shape == (128,) and record["embedding"].dtype == np.float32
        kps = record["kps"]
        assert ((kps > 0) & (kps < SIZE)).all()
        assert kps[0, 0] < kps[1, 0]  # the eye on the image's left comes first
        x1, y1, x2, y2 = record["bbox"]
        assert x1 <= kps[:, 0].min() and kps[:, 0].max() <= x2 and y1 <= kps[:, 1].min() and kps[:, 1].max() <= y2
    lines = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert all((out / line["file_name"]).is_file() and (out / line["face"]).is_file() for line in lines)


def test_webdataset_and_parallel_outputs_match_folder(prepared, photos, tmp_path):
    out, _ = prepared
    folder = _records(out)
    shards = tmp_path / "shards"
    prepare_dataset(photos, shards, size=SIZE, caption="a photo of {identity}", shard_size=1, progress=False)
    parallel = tmp_path / "parallel"
    prepare_parallel(photos, parallel, num_workers=2, size=SIZE, caption="a photo of {identity}")
    single_tar = _records(next((shards / "shards").glob("*.tar")))
    for other in (_records(shards), _records(parallel)):
        assert other.keys() == folder.keys()
        for key, record in folder.items():
            assert other[key]["caption"] == record["caption"]
            np.testing.assert_array_equal(other[key]["embedding"], record["embedding"])
            np.testing.assert_array_equal(np.asarray(other[key]["image"]), np.asarray(record["image"]))
    assert len(single_tar) == 1 and set(single_tar) <= set(folder)
    assert not list(tmp_path.glob("*.part*")) and not list(tmp_path.glob("*.partial-*"))


def test_empty_and_faceless_folders_leave_nothing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no photos"):
        prepare_dataset(empty, tmp_path / "out1", progress=False)
    faceless = tmp_path / "faceless"
    faceless.mkdir()
    Image.new("RGB", (64, 64), (120, 80, 40)).save(faceless / "wall.png")
    (faceless / "broken.png").write_bytes(b"nope")
    with pytest.raises(DatasetError, match="no usable face.*no face"):
        prepare_dataset(faceless, tmp_path / "out2", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "faceless"]


def test_bad_arguments_and_datasets(prepared, photos, tmp_path):
    out, _ = prepared
    with pytest.raises(DatasetError, match="not empty"):
        prepare_dataset(photos, out, progress=False)
    with pytest.raises(DatasetError, match="unknown placeholder"):
        prepare_dataset(photos, tmp_path / "x", caption="a photo of {person}", progress=False)
    with pytest.raises(DatasetError, match="not an idgen dataset"):
        open_dataset(photos)
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    with open(broken / "metadata.jsonl", "a") as f:
        f.write("{not json\n")
    with pytest.raises(DatasetError, match="line 3"):
        open_dataset(broken)
    bad_tar = tmp_path / "bad.tar"
    bad_tar.write_bytes(b"not a tar")
    with pytest.raises(DatasetError, match="tar"):
        open_dataset(bad_tar)


def test_cli(photos, tmp_path, capsys):
    assert main(["prepare-data", str(photos), str(tmp_path / "ds"), "--size", str(SIZE)]) == 0
    assert "kept 2 face(s), rejected 3" in capsys.readouterr().out
    assert (tmp_path / "ds" / "dataset.json").is_file()
    (tmp_path / "empty").mkdir()
    assert main(["prepare-data", str(tmp_path / "empty"), str(tmp_path / "ds2")]) == 3
    assert "no photos" in capsys.readouterr().err
