"""Model configuration, the registry of known components, resolution and loading.

`resolve_component("sdxl")` finds a model from `IDGEN_SDXL`, `$IDGEN_HOME/config.json` or
`$IDGEN_HOME/models/sdxl`; `load_pipeline(cls, resolved)` loads folders and single files offline.
"""

from idgen.models.config import ModelConfig, env_var, idgen_home, load_config
from idgen.models.doctor import doctor_report, format_doctor_report
from idgen.models.fallback import any_configured, build_or_embedded
from idgen.models.registry import REGISTRY, Component
from idgen.models.resolve import ResolvedModel, load_pipeline, missing_files, resolve_component, resolve_path

__all__ = [
    "REGISTRY",
    "Component",
    "ModelConfig",
    "ResolvedModel",
    "any_configured",
    "build_or_embedded",
    "doctor_report",
    "env_var",
    "format_doctor_report",
    "idgen_home",
    "load_config",
    "load_pipeline",
    "missing_files",
    "resolve_component",
    "resolve_path",
]
