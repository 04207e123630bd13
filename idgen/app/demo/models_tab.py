"""Models tab: what `idgen doctor` reports, and where to put missing weights."""

from __future__ import annotations

from idgen.app.demo.common import DemoContext, friendly
from idgen.models import doctor_report, format_doctor_report


def models_report() -> tuple[list[list[str]], str]:
    """A table `[model, status, where, source]` (where: its path, or where to put it) and the
    `idgen doctor` text."""

    report = doctor_report(full=True)  # the demo has torch loaded: its device costs nothing more
    rows = [[name, "present" if info["present"] else "missing",
             str(info["path"] if info["present"] else info["put_at"]), str(info.get("source", ""))]
            for name, info in report["models"].items()]
    return rows, format_doctor_report(report)


def build_models_tab(ctx: DemoContext) -> None:
    import gradio as gr  # the demo extra: imported when a page is built, so the CLI and tests import this without it

    rows, text = models_report()
    with gr.Tab("Models", id="models"):
        gr.Markdown("Weights are found exactly as by the command line (`idgen doctor`). Put a missing model at the "
                    "path shown (or set the variable `idgen doctor` names), press Refresh, and restart the demo to "
                    "use it.")
        refresh = gr.Button("Refresh")
        table = gr.Dataframe(value=rows, headers=["model", "status", "where", "get it from"], label="Models",
                             interactive=False)
        report = gr.Code(value=text, label="idgen doctor", language=None)
        refresh.click(friendly(models_report), None, [table, report], api_name="models")
