"""Every output of the application carries its provenance: generate, inpaint, swap and restore
write files that `idgen verify` reads back (metadata + watermark, the same manifest id), swap and
identity-inpaint outputs say "face swap", records hold the manifest, and IDGEN_PROVENANCE=0 turns
both off."""

from __future__ import annotations

import json

import pytest

from idgen.app.cli import main
from idgen.provenance import read_metadata, verify_file


def _run(argv, capsys) -> dict:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 0, err
    return json.loads((argv[argv.index("--out") + 1] / "record.json").read_text())


@pytest.mark.parametrize("command, operation, face_swap", [
    ("generate", "generate", False), ("inpaint", "inpaint", True), ("swap", "swap", True), ("restore", "restore", False),
])
def test_outputs_carry_their_provenance(empty_home, faces_dir, tmp_path, capsys, command, operation, face_swap):
    photo, person = faces_dir / "portrait_glasses.jpg", faces_dir / "portrait_smile.jpg"
    argv = {"generate": ["generate", "--method", "faceid", "--face", person],
            "inpaint": ["inpaint", photo, "--face", person],
            "swap": ["swap", photo, "--source", person],
            "restore": ["restore", photo]}[command]
    record = _run([*argv, "--steps", "2", "--backend", "dlib", "--out", tmp_path / "out"], capsys)
    output = record["files"][0] if command == "generate" else record["output"]
    report = verify_file(output)
    manifest = read_metadata(output)["manifest"]
    assert manifest["operation"] == operation and manifest["face_swap"] is face_swap
    assert manifest["models"] == {"embedded-default": "random weights (idgen.testing), no model files"}
    assert manifest["parameters"]["seed"] == 0 and manifest["parameters"]["num_inference_steps"] == 2
    assert record["provenance"]["id"] == manifest["id"]
    assert report["watermark"]["detected"] and report["watermark"]["id_matches_manifest"], report
    assert main(["verify", output]) == 0
    assert ("face swap: yes" in capsys.readouterr().out) is face_swap


@pytest.mark.parametrize("command", ["swap", "restore"])
def test_video_outputs_carry_their_provenance(empty_home, faces_dir, tmp_path, capsys, command):
    from test_video import face_frames, make_video

    clip = make_video(tmp_path / "clip.mp4", face_frames(3, blank=()))
    source = ["--source", faces_dir / "portrait_smile.jpg"] if command == "swap" else []
    record = _run([command, clip, *source, "--steps", "2", "--backend", "dlib", "--out", tmp_path / "out"], capsys)
    report = verify_file(record["output"])
    assert report["provenance_found"] and report["metadata"]["manifest"]["operation"] == command
    assert report["face_swap"] is (command == "swap")
    assert report["metadata"]["manifest"]["id"] == record["provenance"]["id"]


def test_provenance_can_be_turned_off(empty_home, faces_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IDGEN_PROVENANCE", "0")
    record = _run(["generate", "--method", "faceid", "--face", faces_dir / "portrait_smile.jpg", "--steps", "1",
                   "--backend", "dlib", "--out", tmp_path / "out"], capsys)
    assert record["provenance"] is None and read_metadata(record["files"][0]) is None
    assert main(["verify", record["files"][0]]) == 5
