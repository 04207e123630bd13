"""A style reference beside the identity (InstantStyle): a standard IP-Adapter file (`ip-adapter_sdxl.bin`,
`ip-adapter_sd15.bin`, Plus / full-face, `.safetensors`) as one more adapter of diffusers' multi-IP-Adapter
path, acting only in the style (and layout) blocks. `layout` checks the file (and refuses identity
adapters), `loader` converts it with diffusers' code and installs it (`StyleAdapterLoaderMixin`:
`load_style_adapter`, `set_style_scale`, `unload_style_adapter`); the style image is `ip_adapter_image`."""

from idgen.adapters.style.layout import StyleSpec, check_style_file, infer_style_spec
from idgen.adapters.style.loader import (
    StyleAdapter,
    StyleAdapterLoaderMixin,
    assign_ip_scale,
    convert_style_checkpoint,
    expand_ip_scale,
    get_style_adapter,
    install_style,
    set_ip_scale,
    style_scale_config,
    uninstall_style,
)

__all__ = [
    "StyleAdapter",
    "StyleAdapterLoaderMixin",
    "StyleSpec",
    "assign_ip_scale",
    "check_style_file",
    "convert_style_checkpoint",
    "expand_ip_scale",
    "get_style_adapter",
    "infer_style_spec",
    "install_style",
    "set_ip_scale",
    "style_scale_config",
    "uninstall_style",
]
