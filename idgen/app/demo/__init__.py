"""The Gradio demo: one tab per capability (`idgen demo`, `python app.py`).

`build_app(ctx)` returns the Blocks app (tests call its endpoints in-process); `launch(...)`
serves it. Handlers live next to their tab (`generate_tab`, `edit_tab`, `restore_tab`,
`train_tab`, `models_tab`) as plain functions of a `DemoContext`.

The names below load on first use (they import gradio and the models' stack), so importing the
package is light: the CLI's `idgen demo` parser lives in `cli`, and `idgen --help` stays fast.
"""

import importlib

#: name -> the submodule that defines it.
_EXPORTS = {"TABS": "app", "build_app": "app", "launch": "app", "DemoContext": "common"}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["TABS", "DemoContext", "build_app", "launch"]
