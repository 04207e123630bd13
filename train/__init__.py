"""Trainers (installed as `idgen.train`): dataset preparation (`prepare_data`, `records`),
DreamBooth-LoRA (`lora`), identity adapters (`adapter`), on one accelerate loop (`loop`).
Modules import torch lazily where the CLI needs to stay fast; import what you use from them."""
