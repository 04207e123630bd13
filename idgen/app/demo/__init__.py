"""The Gradio demo: one tab per capability (`idgen demo`, `python app.py`).

`build_app(ctx)` returns the Blocks app (tests call its endpoints in-process); `launch(...)`
serves it. Handlers live next to their tab (`generate_tab`, `edit_tab`, `restore_tab`,
`train_tab`, `models_tab`) as plain functions of a `DemoContext`.
"""

from idgen.app.demo.app import TABS, build_app, launch
from idgen.app.demo.common import DemoContext

__all__ = ["TABS", "DemoContext", "build_app", "launch"]
