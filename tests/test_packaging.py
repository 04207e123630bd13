"""The distribution installs as the `idgen` namespace only, with every subpackage listed."""

import importlib
import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAPPED = {"idgen": "idgen", "idgen.pipelines": "pipelines", "idgen.adapters": "adapters", "idgen.train": "train"}


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_package_dir_maps_the_three_folders_into_idgen():
    assert _pyproject()["tool"]["setuptools"]["package-dir"] == MAPPED


def test_every_subpackage_on_disk_is_listed():
    setuptools = _pyproject()["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    data_only = set(setuptools["package-data"])
    on_disk = set()
    for package, folder in MAPPED.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder).parts
            on_disk.add(".".join((package, *rel)))
    assert on_disk <= listed, f"subpackages missing from pyproject packages: {sorted(on_disk - listed)}"
    assert listed <= on_disk | data_only, f"listed packages with no folder: {sorted(listed - on_disk - data_only)}"


@pytest.mark.parametrize("name", ["idgen.pipelines", "idgen.adapters", "idgen.train"])
def test_mapped_packages_import(name):
    importlib.import_module(name)


@pytest.mark.parametrize("name", ["pipelines", "adapters", "train"])
def test_no_top_level_package_outside_the_repo(name, tmp_path):
    # Run from an unrelated folder so the repo root is not on sys.path.
    code = f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({name!r}) is None else 1)"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path)
    assert result.returncode == 0, f"a top-level {name!r} package is importable after install"


def test_wheel_holds_only_the_idgen_namespace(tmp_path):
    """A normal (non-editable) install: the built wheel's top-level names are idgen alone."""
    import zipfile

    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("idgen-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "idgen/train/configs/single_gpu.yaml" in names  # the accelerate launch configs ship
    assert {n.split("/")[0] for n in names} == {"idgen", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    assert "idgen/pipelines/__init__.py" in names and "idgen/adapters/__init__.py" in names
    assert "idgen/train/__init__.py" in names
