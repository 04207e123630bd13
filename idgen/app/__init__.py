"""The application: what a user runs. `cli` (the `idgen` command), `generate`, `edit` (inpaint and
swap), `restore` (restoration and its evaluation) and `demo` (the Gradio app), built on the
pipelines, adapters and the ground floor of `idgen`; nothing below this package imports it."""
