"""Shared fixtures: paths to the project's shared test material (`../shared`, beside the repo).

Tests that need shared/ fail (not skip) when it is missing: CI always has it, and a silent skip
would hide a broken parity or face test.
"""

import os
from pathlib import Path

import pytest

from idgen.face import get_face_analyzer

# The suite never touches a model hub: any accidental download fails fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _require(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: idgen's tests expect shared/ beside the repository.")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require(SHARED)


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    return _require(SHARED / "faces")


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    return _require(SHARED / "parity")


@pytest.fixture(scope="session")
def layouts_dir() -> Path:
    return _require(SHARED / "layouts")


@pytest.fixture
def empty_home(tmp_path, monkeypatch) -> Path:
    """An idgen home, a user home and a Hugging Face cache with nothing configured, offline, no
    face backend chosen: what a fresh machine looks like (the embedded default is what resolves)."""
    from idgen.models import REGISTRY, env_var

    monkeypatch.setenv("IDGEN_HOME", str(tmp_path / "idgen-home"))
    monkeypatch.setenv("HOME", str(tmp_path / "user-home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("IDGEN_FACE_BACKEND", raising=False)
    for name in REGISTRY:
        monkeypatch.delenv(env_var(name), raising=False)
    (tmp_path / "idgen-home").mkdir(exist_ok=True)
    return tmp_path / "idgen-home"


def dlib_faces():
    """The real offline face analyzer (dlib + face-recognition-models: 128-d embeddings), one
    per process (`get_face_analyzer` keeps it); for helpers outside fixtures."""
    return get_face_analyzer("dlib")


@pytest.fixture(scope="session")
def dlib_analyzer():
    """`dlib_faces()` as a fixture."""
    return dlib_faces()


@pytest.fixture
def fresh_enhancers():
    """The post-pass's cached models (parser, occluder, restorers) forgotten before and after."""
    from idgen.models import enhancers

    caches = (enhancers._restorer_at, enhancers._tiny_restorer, enhancers._parser_at, enhancers._occluder_at)
    for cache in caches:
        cache.cache_clear()
    yield
    for cache in caches:
        cache.cache_clear()
