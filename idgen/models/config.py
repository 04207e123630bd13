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

from idgen.errors import IdgenError


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
        IdgenError: the config file is not valid JSON or has the wrong shape.
    """
    home = Path(home).expanduser() if home is not None else idgen_home()
    path = home / "config.json"
    data: dict = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise IdgenError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(data, dict) or not isinstance(data.get("models", {}), dict):
            raise IdgenError(f'{path} must hold an object like {{"models": {{"sdxl": "/path"}}}}.')
    return ModelConfig(
        home=home,
        models={str(k): str(v) for k, v in data.get("models", {}).items()},
        face_backend=os.environ.get("IDGEN_FACE_BACKEND") or data.get("face_backend"),
    )
