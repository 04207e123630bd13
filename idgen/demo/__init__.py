"""The Gradio demo: one tab per capability (`idgen demo`, `python app.py`)."""
