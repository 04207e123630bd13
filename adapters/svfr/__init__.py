"""SVFR-style video face restoration on Stable Video Diffusion: widened UNet input, task embedding, identity tokens."""
