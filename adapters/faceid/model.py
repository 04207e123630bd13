"""FaceID's identity projection: diffusers' own IP-Adapter-FaceID projection modules, built for
a `FaceIDSpec` (FaceID: `MLPProjModel`; FaceID-Plus: `ProjPlusModel` with its perceiver resampler).
The attention side is diffusers' `IPAdapterAttnProcessor2_0` with the official LoRA (see `loader`)."""

from __future__ import annotations

import torch
from diffusers.models.embeddings import IPAdapterFaceIDImageProjection, IPAdapterFaceIDPlusImageProjection

from idgen.adapters.faceid.config import (
    ID_EMBED_DIM, ID_MLP_MULT, RESAMPLER_DEPTH, RESAMPLER_DIM_HEAD, RESAMPLER_FF_MULT, FaceIDSpec,
)


def build_image_projection(spec: FaceIDSpec) -> torch.nn.Module:
    """diffusers' projection module for `spec` (random init; load `FaceIDWeights.image_proj`)."""
    if not spec.is_plus:
        return IPAdapterFaceIDImageProjection(
            image_embed_dim=ID_EMBED_DIM,
            cross_attention_dim=spec.cross_attention_dim,
            mult=ID_MLP_MULT,
            num_tokens=spec.num_tokens,
        )
    return IPAdapterFaceIDPlusImageProjection(
        embed_dims=spec.cross_attention_dim,
        output_dims=spec.cross_attention_dim,
        hidden_dims=spec.clip_dim,
        id_embeddings_dim=ID_EMBED_DIM,
        depth=RESAMPLER_DEPTH,
        dim_head=RESAMPLER_DIM_HEAD,
        heads=spec.resampler_heads,
        num_tokens=spec.num_tokens,
        ffn_ratio=RESAMPLER_FF_MULT,
        ffproj_ratio=ID_MLP_MULT,
    )
