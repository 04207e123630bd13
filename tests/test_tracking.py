"""Face tracking on synthetic detections: association, identity, gaps, smoothing."""

import numpy as np
import pytest

from idgen.errors import IdgenError
from idgen.face import FaceTracker, track_faces
from idgen.face.types import Face

A, B, C = [1, 0, 0], [0, 1, 0], [0, 0, 1]


def face(x, embedding=None, y=10.0, size=20.0):
    """A `size`-pixel square face at (x, y) whose five keypoints sit at its centre."""
    return Face(bbox=np.array([x, y, x + size, y + size], np.float32),
                kps=np.tile(np.array([[x + size / 2, y + size / 2]], np.float32), (5, 1)), score=1.0,
                image_size=(200, 60), embedding=None if embedding is None else np.asarray(embedding, np.float32))


def identities(result):
    """Per frame: {track id: index of the detection's one-hot embedding}."""
    return [{tf.track_id: int(tf.face.embedding.argmax()) for tf in faces} for faces in result.per_frame]


@pytest.mark.parametrize("identity_threshold", [None, 0.5])
def test_crossing_faces_keep_their_ids_by_identity(identity_threshold):
    # A walks right, B walks left; in frames 2-3 their boxes overlap more than each overlaps its own past box
    frames = [[face(10 + 8 * t, A), face(50 - 8 * t, B)] for t in range(6)]
    result = track_faces(frames, identity_threshold=identity_threshold, smooth_sigma=0)
    assert result.num_tracks == 2
    assert identities(result) == [{0: 0, 1: 1}] * 6
    # without embeddings, position alone swaps them where they cross (so identity is what keeps them)
    anonymous = track_faces([[face(10 + 8 * t), face(50 - 8 * t)] for t in range(6)], smooth_sigma=0)
    track0 = [tf.bbox[0] for faces in anonymous.per_frame for tf in faces if tf.track_id == 0]
    assert track0 == [10, 18, 26, 26, 18, 10]


def test_identity_threshold_refuses_a_different_person_in_the_same_place():
    frames = [[face(30, A)], [face(31, A)], [face(32, C)], [face(33, C)]]
    assert track_faces(frames).num_tracks == 1  # identity only ranks: position wins
    strict = track_faces(frames, identity_threshold=0.5)
    assert strict.num_tracks == 2 and [[tf.track_id for tf in f] for f in strict.per_frame] == [[0], [0], [1], [1]]
    # a confirmed identity keeps the track through a fast move with little overlap
    fast = [[face(30, A)], [face(45, A)]]
    assert track_faces(fast).num_tracks == 2 and track_faces(fast, identity_threshold=0.5).num_tracks == 1


def test_short_gaps_are_interpolated_and_long_gaps_end_the_track():
    frames = [[face(10 + 2 * t, A)] if t not in (3, 4) else [] for t in range(8)]
    result = track_faces(frames, max_missing=2, smooth_sigma=0)
    assert result.num_tracks == 1 and all(len(f) == 1 for f in result.per_frame)
    filled = [f[0] for f in result.per_frame[3:5]]
    assert all(tf.interpolated for tf in filled) and not result.per_frame[2][0].interpolated
    assert [tf.bbox[0] for tf in filled] == pytest.approx([16, 18])  # linear in time between frames 2 and 5
    assert [tf.kps[0, 0] for tf in filled] == pytest.approx([26, 28])
    assert result.notes == ["track 0: face lost for 2 frames (3-4), interpolated"]

    result = track_faces(frames, max_missing=1, smooth_sigma=0)
    assert result.num_tracks == 2 and result.per_frame[3] == [] and result.per_frame[4] == []
    assert [f[0].track_id for f in result.per_frame if f] == [0, 0, 0, 1, 1, 1]


def test_smoothing_reduces_keypoint_jitter_without_moving_the_track():
    rng = np.random.default_rng(0)
    truth = 30 + 0.5 * np.arange(40)
    frames = [[face(x + rng.normal(0, 2), A)] for x in truth]
    raw = track_faces(frames, smooth_sigma=0)
    smooth = track_faces(frames, smooth_sigma=2)

    def error(result):
        return np.array([f[0].kps[:, 0].mean() - 10 for f in result.per_frame]) - truth

    assert error(smooth)[5:-5].std() < 0.5 * error(raw)[5:-5].std()
    assert abs(error(smooth)[5:-5].mean()) < 0.5  # centred: no lag behind the moving face
    assert [f[0].face for f in smooth.per_frame] == [f[0] for f in frames]  # detections kept as they are


def test_streaming_updates_new_faces_and_false_detections():
    tracker = FaceTracker(min_length=2)
    assert tracker.update([face(10, A)]) == [0]
    assert tracker.update([face(11, A), face(120, B)]) == [0, 1]  # a new face: a new track
    assert tracker.update([face(12, A), face(150, C)]) == [0, 2]  # far from B: not B's track
    assert tracker.update([]) == []
    result = tracker.finish()
    assert result.num_tracks == 1 and len(result.per_frame) == 4
    assert [len(f) for f in result.per_frame] == [1, 1, 1, 0]
    assert "2 track(s) with fewer than 2 detections dropped" in result.notes[0]


def test_bad_parameters_are_refused():
    for bad in ({"iou_threshold": 0}, {"identity_threshold": 2}, {"max_missing": -1}, {"smooth_sigma": -1},
                {"min_length": 0}):
        with pytest.raises(IdgenError):
            FaceTracker(**bad)
