"""Speed and memory for every idgen pipeline: fast paths (`fast`), DeepCache-style step caching
(`step_cache`), few-step presets (`presets`) and memory modes (`memory`). Each works on any
diffusers pipeline with a UNet; `AccelerationMixin` (`mixin`) puts them on the pipelines as
`enable_fast_inference()`, `enable_step_cache()`, `load_fast_preset()` and `set_memory_mode()`.
"""
