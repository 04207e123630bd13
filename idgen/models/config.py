"""Where idgen's models are: one configuration for the Python API, the CLI and the demo.

Order of precedence for a component's location (first wins):
  1. environment variable `IDGEN_<COMPONENT>` (upper case, e.g. `IDGEN_SDXL`, `IDGEN_INSTANTID_ADAPTER`);
  2. `"models"` in `$IDGEN_HOME/config.json` (e.g. `{"models": {"sdxl": "/data/sdxl"}}`);
  3. the component's default place under `$IDGEN_HOME/models/` (see `idgen.models.registry`).
A location is a local folder, a local file, or a hub id already in the local Hugging Face cache.
`IDGEN_HOME` defaults to `~/.idgen`. The face backend: `IDGEN_FACE_BACKEND` or `"face_backend"`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from idgen.errors import ConfigError

#: The face backends (`IDGEN_FACE_BACKEND`, `"face_backend"`); None picks automatically.
FACE_BACKENDS = ("dlib", "insightface")


def idgen_home() -> Path:
    """`$IDGEN_HOME`, default `~/.idgen`."""
    return Path(os.environ.get("IDGEN_HOME", "~/.idgen")).expanduser()


def env_var(component: str) -> str:
    """The environment variable that overrides `component`'s location."""
    return "IDGEN_" + component.upper().replace("-", "_")


@dataclass
class ModelConfig:
    """Configured model locations (`component -> path or hub id`) and the face backend."""

    home: Path
    models: dict[str, str] = field(default_factory=dict)
    face_backend: Optional[str] = None

    def location(self, component: str) -> Optional[str]:
        """The configured location of `component` (env var first, then the config file), or None."""
        return os.environ.get(env_var(component)) or self.models.get(component)

    def configured_by(self, component: str) -> Optional[str]:
        """Where `component`'s location was set, for messages: `IDGEN_SDXL=/data/sdxl` or
        `"models": {"sdxl": "/data/sdxl"} in /home/me/.idgen/config.json`; None when not set."""
        if os.environ.get(env_var(component)):
            return f"{env_var(component)}={os.environ[env_var(component)]}"
        if component in self.models:
            return f'"models": {{"{component}": "{self.models[component]}"}} in {self.home / "config.json"}'
        return None


def load_config(home: Optional[os.PathLike] = None) -> ModelConfig:
    """Read `$IDGEN_HOME/config.json` if present.

    Raises:
        ConfigError: the config file is not valid UTF-8 JSON, has the wrong shape, or names an
            unknown face backend (as does IDGEN_FACE_BACKEND).
    """
    home = Path(home).expanduser() if home is not None else idgen_home()
    path = home / "config.json"
    data: dict = {}
    if path.is_file():
        data = _read_config(path)
    face_backend = os.environ.get("IDGEN_FACE_BACKEND") or data.get("face_backend")
    if face_backend is not None and face_backend not in FACE_BACKENDS:
        where = "IDGEN_FACE_BACKEND" if os.environ.get("IDGEN_FACE_BACKEND") else f'"face_backend" in {path}'
        raise ConfigError(f"{where} must be one of {', '.join(FACE_BACKENDS)}, got {face_backend!r}.")
    return ModelConfig(home=home, models={str(k): str(v) for k, v in data.get("models", {}).items()},
                       face_backend=face_backend)


def _read_config(path: Path) -> dict:
    """`config.json` as a dict, or a ConfigError naming the file, the line and column, or the key."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not a text (UTF-8) file (byte {e.start}); write it as JSON, e.g. "
                          '{"models": {"sdxl": "/path"}}.') from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}).") from None
    except OSError as e:
        raise ConfigError(f"{path} cannot be read: {e.strerror or e}.") from None
    if not isinstance(data, dict):
        raise ConfigError(f'{path} must hold an object like {{"models": {{"sdxl": "/path"}}}}, got {type(data).__name__}.')
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError(f'"models" in {path} must be an object like {{"sdxl": "/path"}}, got {type(models).__name__}.')
    for key, value in models.items():
        if not isinstance(value, str) or not value:
            raise ConfigError(f'"models": {{"{key}": ...}} in {path} must be a path or hub id (a string), got {value!r}.')
    if data.get("face_backend") is not None and not isinstance(data["face_backend"], str):
        raise ConfigError(f'"face_backend" in {path} must be a string, got {data["face_backend"]!r}.')
    return data
