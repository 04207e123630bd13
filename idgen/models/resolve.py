"""Resolving and loading models: local folders, single-file checkpoints, cached hub ids.

Nothing is downloaded unless the caller passes `allow_download=True` and `HF_HUB_OFFLINE` is
unset; a missing model raises one `ModelNotFoundError` listing every place looked at.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from idgen.errors import CheckpointError, ConfiguredModelError, IdgenError, ModelNotFoundError
from idgen.models.config import ModelConfig, env_var, load_config
from idgen.models.loading import check_model_files, loading
from idgen.models.registry import REGISTRY, Component, FileSpec

logger = logging.getLogger(__name__)

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


@dataclass(frozen=True)
class ResolvedModel:
    """A located model: `path` (folder or file), `format` ("folder" | "file") and `source`
    (how it was found: "env", "config", "default", "argument", "hf-cache")."""

    path: Path
    format: str
    source: str


def _describe(spec: FileSpec) -> str:
    return " or ".join(spec) if isinstance(spec, tuple) else spec


def missing_files(component: Component, path: Path) -> list[str]:
    """Required files of `component` absent at `path` (empty when complete)."""
    if component.single_file:
        return [] if path.is_file() else [_describe(component.files[0])]
    missing = []
    for spec in component.files:
        options = spec if isinstance(spec, tuple) else (spec,)
        if not any((path / option).is_file() for option in options):
            missing.append(_describe(spec))
    return missing


def _from_hf_cache(repo_id: str, allow_download: bool) -> Optional[Path]:
    from huggingface_hub import constants  # light; `snapshot_download` (hf_api, httpx: ~0.5 s) only when needed

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    local_only = not allow_download or offline
    # Read the cache location now, not at huggingface_hub's import time, so HF_HUB_CACHE/HF_HOME
    # set by the caller (or a test) are honoured.
    cache_dir = os.environ.get("HF_HUB_CACHE") or (
        os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else None)
    repo_folder = Path(cache_dir or constants.HF_HUB_CACHE) / constants.REPO_ID_SEPARATOR.join(("models", *repo_id.split("/")))
    if local_only and not repo_folder.is_dir():
        return None  # never cached (huggingface_hub's layout): `idgen doctor` need not import its client
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=local_only))
    except Exception as e:  # huggingface_hub raises several types for "not in cache" / offline
        logger.debug("hub id %s not available locally: %s", repo_id, e)
        return None


def _looks_like_hub_id(value: str) -> bool:
    return value.count("/") == 1 and not value.startswith((".", "/", "~")) and not Path(value).exists()


def resolve_path(value: str, *, source: str, allow_download: bool = False) -> Optional[ResolvedModel]:
    """A folder, a file, or a hub id in the local cache → `ResolvedModel`, else None."""
    path = Path(value).expanduser()
    if path.is_dir():
        return ResolvedModel(path, "folder", source)
    if path.is_file():
        return ResolvedModel(path, "file", source)
    if _looks_like_hub_id(value):
        cached = _from_hf_cache(value, allow_download)
        if cached is not None:
            return ResolvedModel(cached, "folder", "hf-cache")
    return None


def resolve_component(name: str, *, config: Optional[ModelConfig] = None, override: Optional[str] = None,
                      allow_download: bool = False) -> ResolvedModel:
    """Locate registry component `name` and check its files.

    Looks at `override` (an explicit path or hub id), then the configuration (`IDGEN_<NAME>`,
    `config.json`), then the default place under `$IDGEN_HOME`, then the official hub repo in the
    local Hugging Face cache (never downloaded unless `allow_download`).

    Raises:
        ConfiguredModelError: the configured location (env var or config.json) does not hold it.
        ModelNotFoundError: with every place looked at and the files expected there.
    """
    if name not in REGISTRY:
        raise IdgenError(f"unknown model component {name!r}; known: {', '.join(REGISTRY)}.")
    component = REGISTRY[name]
    config = config or load_config()
    candidates = []
    if override:
        candidates.append((override, "argument"))
    configured = config.location(name)
    if configured:
        candidates.append((configured, "env" if os.environ.get(env_var(name)) else "config"))
    candidates.append((str(config.home / component.default), "default"))
    if _looks_like_hub_id(component.source):
        candidates.append((component.source, "hf-cache"))  # the official repo, if already cached
    looked = []
    for value, source in candidates:
        resolved, problem = _check_candidate(component, value, source, allow_download)
        if resolved is not None:
            return resolved
        if source in ("env", "config"):
            # What the user configured is what they meant: never look further (and never fall
            # back to the embedded default) past a location that does not resolve.
            raise ConfiguredModelError(
                f"{config.configured_by(name)} does not resolve for {component.description} ({name}): {problem}. "
                f"Expected {_expected(component)}. Fix the path, or unset it to use the default place "
                f"{config.home / component.default}.")
        looked.append(f"{value} ({source}): {problem}")
    raise ModelNotFoundError(
        f"{component.description} ({name}) was not found. Looked at:\n  " + "\n  ".join(looked)
        + f"\nExpected {_expected(component)}"
        + f"\nGet it from {component.source} and put it at {config.home / component.default}, or set "
        + f"{env_var(name)} (or \"models\": {{\"{name}\": ...}} in {config.home / 'config.json'})."
    )


def _expected(component: Component) -> str:
    return ("the file " if component.single_file else "a folder with: ") + ", ".join(_describe(f) for f in component.files)


def _check_candidate(component: Component, value: str, source: str,
                     allow_download: bool) -> tuple[Optional[ResolvedModel], str]:
    """`(resolved, "")` when `value` holds `component`, else `(None, what is wrong)`."""
    resolved = resolve_path(value, source=source, allow_download=allow_download)
    if resolved is None:
        return None, "not found"
    if resolved.format == "file" and not component.single_file:
        if resolved.path.suffix in SINGLE_FILE_SUFFIXES:
            return resolved, ""  # a single-file checkpoint of a pipeline
        return None, "a file, but a folder is needed"
    missing = missing_files(component, resolved.path)
    if missing:
        return None, f"{resolved.path} is missing {', '.join(missing)}"
    return resolved, ""


def load_pipeline(pipeline_class, resolved: ResolvedModel, *, config_folder: Optional[str] = None, **kwargs):
    """Load a diffusers pipeline from a resolved folder or single-file checkpoint.

    A single `.safetensors`/`.ckpt` goes through diffusers' `from_single_file`; offline it needs
    the matching diffusers config: pass `config_folder` (a local diffusers folder of the same
    architecture, e.g. the SDXL base folder) or have the config in the HF cache.
    """
    kwargs.setdefault("local_files_only", True)
    what = f"a {pipeline_class.__name__} base model"
    check_model_files(resolved.path)
    if resolved.format == "folder":
        with loading(what, resolved.path):
            return pipeline_class.from_pretrained(str(resolved.path), **kwargs)
    if config_folder is not None:
        kwargs["config"] = str(config_folder)
    try:
        with loading(what, resolved.path):
            return pipeline_class.from_single_file(str(resolved.path), **kwargs)
    except CheckpointError as e:
        if not isinstance(e.__cause__, OSError):
            raise
        # offline, diffusers finds no config of the checkpoint's architecture
        raise ModelNotFoundError(
            f"could not load single-file checkpoint {resolved.path} offline ({str(e.__cause__).splitlines()[0]}). "
            "Pass config_folder= a local diffusers folder of the same architecture (its model_index.json "
            "and component configs are read; no weights are taken from it)."
        ) from None
