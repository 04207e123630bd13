"""PVA: parallel visual attention for identity-preserving face inpainting (Xu et al., WACV 2024)."""
