"""The demo app: one tab per capability, a queue with a concurrency limit, files only from the
app's own temp folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from .common import MAX_FILE_SIZE, TINY_BANNER, DemoContext
from .edit_tab import build_inpaint_tab, build_swap_tab
from .generate_tab import build_generate_tab
from .models_tab import build_models_tab
from .restore_tab import build_restore_tab
from .train_tab import build_train_tab

#: The tabs in page order; adding a capability is one line here.
TABS = [build_generate_tab, build_inpaint_tab, build_swap_tab, build_restore_tab, build_train_tab, build_models_tab]


def build_app(ctx: Optional[DemoContext] = None, *, concurrency: int = 1, max_queue: int = 16):
    """The Gradio Blocks app.

    Args:
        ctx: the demo state (default: a new one with the CLI's weights rule).
        concurrency: jobs run at once per event (1: two users never load two pipelines' worth
            of activations at the same time); others wait in the queue (`max_queue` places).
    """
    ctx = ctx or DemoContext()
    # Uploads and results land in the app's own folder (Gradio's cache, read when Gradio is first
    # imported), and only it is served.
    os.environ.setdefault("GRADIO_TEMP_DIR", str(ctx.root / "uploads"))
    import gradio as gr

    with gr.Blocks(title="idgen — identity-preserving generation") as demo:
        gr.Markdown("# idgen\nIdentity-preserving generation, inpainting, face swap and training.")
        if ctx.embedded_default_in_use:
            gr.Markdown(TINY_BANNER, elem_id="tiny-banner")
        with gr.Tabs():
            for build in TABS:
                build(ctx)
    demo.queue(default_concurrency_limit=concurrency, max_size=max_queue)
    demo.idgen_context = ctx
    return demo


def launch(host: str = "127.0.0.1", port: int = 7860, *, tiny: Optional[bool] = None, share: bool = False, **kwargs):
    """Build and serve the demo (blocks until stopped unless `prevent_thread_lock=True`)."""
    demo = build_app(DemoContext(tiny=tiny))
    root: Path = demo.idgen_context.root
    return demo.launch(server_name=host, server_port=port, share=share, max_file_size=MAX_FILE_SIZE,
                       allowed_paths=[str(root / "results")], show_error=False, **kwargs)
