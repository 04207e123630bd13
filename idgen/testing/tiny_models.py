"""Tiny random-weight diffusion models, built offline and deterministically from a seed.

The sizes follow diffusers' own test components (`get_dummy_components()`): 2 UNet blocks of
32/64 channels, a 2-layer 32-wide CLIP, a 2-block VAE (latents are 1/2 of the image size), so a
2-step pipeline call at 64x64 runs in well under a second on CPU. The same builders are the
**embedded default** backbone that the CLI and demo fall back to without real weights.
"""

from __future__ import annotations

import contextlib
import inspect

import torch

import diffusers
from diffusers import (
    AutoencoderKL, AutoencoderKLTemporalDecoder, ControlNetModel, DDIMScheduler, EulerDiscreteScheduler,
    UNet2DConditionModel, UNetSpatioTemporalConditionModel,
)
from transformers import (
    CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from idgen.testing.tokenizer import _vocab_and_merges, tiny_clip_tokenizer, tiny_vocab_size

#: Label carried by every output made with the embedded default.
EMBEDDED_DEFAULT_NOTE = (
    "made with idgen's tiny embedded default (random-weight miniature models): the pixels are "
    "noise; the face analysis, conditioning and pipeline plumbing are real. Configure real "
    "weights (see `idgen doctor`) for real images."
)

TEXT_WIDTH = 32  # CLIP hidden size; SDXL's UNet sees the two encoders concatenated (64)
PIPELINE_KINDS = ("sd15", "sdxl", "sd15-inpaint", "sdxl-inpaint", "sd15-controlnet", "sdxl-controlnet", "svd")


@contextlib.contextmanager
def seeded(seed: int):
    """Run a block under `torch.manual_seed(seed)` without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _special_ids() -> tuple[int, int]:
    vocab = _vocab_and_merges()[0]
    return vocab["<|startoftext|>"], vocab["<|endoftext|>"]


def tiny_text_encoder(seed: int = 0, *, with_projection: bool = False, width: int = TEXT_WIDTH):
    """CLIP text tower, 2 layers, hidden size `width` (`CLIPTextModel` or `...WithProjection`)."""

    bos, eos = _special_ids()
    config = CLIPTextConfig(
        bos_token_id=bos, eos_token_id=eos, pad_token_id=eos, hidden_size=width, intermediate_size=37,
        layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=2, vocab_size=tiny_vocab_size(),
        projection_dim=width,
    )
    with seeded(seed):
        model = (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)
    return model.eval()


def tiny_vae(seed: int = 0):
    with seeded(seed):
        return AutoencoderKL(
            block_out_channels=[32, 64], in_channels=3, out_channels=3,
            down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
            latent_channels=4, norm_num_groups=2, sample_size=32,
        )


def _scheduler(xl: bool):
    common = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    if xl:
        return EulerDiscreteScheduler(**common, steps_offset=1, timestep_spacing="leading")
    return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def tiny_unet(seed: int = 0, *, xl: bool = False, in_channels: int = 4, text_width: int = TEXT_WIDTH):
    """`UNet2DConditionModel`: SD1.5-like (cross-attention `text_width`) or SDXL-like
    (cross-attention 2 x 32, `text_time` micro-conditioning: 6 time ids x 8 + pooled text 32 = 80)."""

    common = dict(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=in_channels, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    )
    with seeded(seed):
        if xl:
            return UNet2DConditionModel(
                **common, cross_attention_dim=2 * TEXT_WIDTH, attention_head_dim=(2, 4), norm_num_groups=1,
                use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
                transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=6 * 8 + TEXT_WIDTH,
            )
        return UNet2DConditionModel(**common, cross_attention_dim=text_width, attention_head_dim=8, norm_num_groups=2)


def tiny_sd15_components(seed: int = 0, *, in_channels: int = 4, with_image_encoder: bool = False,
                         text_width: int = TEXT_WIDTH) -> dict:
    """Components for `StableDiffusionPipeline` (or its inpainting variant with in_channels=9).
    `text_width` 64 suits adapters whose heads are 64 wide (FaceID-Plus's resampler)."""
    image_encoder, feature_extractor = (tiny_clip_vision_encoder(seed + 4) if with_image_encoder else (None, None))
    return {
        "unet": tiny_unet(seed, in_channels=in_channels, text_width=text_width),
        "vae": tiny_vae(seed + 1),
        "text_encoder": tiny_text_encoder(seed + 2, width=text_width),
        "tokenizer": tiny_clip_tokenizer(),
        "scheduler": _scheduler(xl=False),
        "safety_checker": None,
        "feature_extractor": feature_extractor,
        "image_encoder": image_encoder,
    }


def tiny_sdxl_components(seed: int = 0, *, in_channels: int = 4) -> dict:
    """Components for `StableDiffusionXLPipeline` (or its inpainting variant with in_channels=9)."""
    return {
        "unet": tiny_unet(seed, xl=True, in_channels=in_channels),
        "vae": tiny_vae(seed + 1),
        "text_encoder": tiny_text_encoder(seed + 2),
        "text_encoder_2": tiny_text_encoder(seed + 3, with_projection=True),
        "tokenizer": tiny_clip_tokenizer(),
        "tokenizer_2": tiny_clip_tokenizer(),
        "scheduler": _scheduler(xl=True),
        "image_encoder": None,
        "feature_extractor": None,
    }


def tiny_controlnet(unet, seed: int = 0):
    """A `ControlNetModel` matching `unet` (SD1.5 or SDXL), with random (not zero) output
    convolutions so the control signal changes the result, as in diffusers' tests."""

    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    keep = set(inspect.signature(ControlNetModel.__init__).parameters)
    kwargs = {k: v for k, v in config.items() if k in keep}
    kwargs.update(in_channels=4, conditioning_embedding_out_channels=(16, 32))
    with seeded(seed):
        controlnet = ControlNetModel(**kwargs)
        for module in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
            torch.nn.init.normal_(module.weight, std=0.1)
            torch.nn.init.normal_(module.bias, std=0.1)
    return controlnet


def tiny_clip_vision_encoder(seed: int = 0, *, image_size: int = 32):
    """(`CLIPVisionModelWithProjection`, `CLIPImageProcessor`): hidden size 32, 2 layers, 16x16
    patches of `image_size` pixels (SVD resizes its conditioning frame to 224 itself)."""

    config = CLIPVisionConfig(
        hidden_size=32, projection_dim=32, num_hidden_layers=2, num_attention_heads=4,
        image_size=image_size, intermediate_size=37, patch_size=max(4, image_size // 16),
    )
    with seeded(seed):
        encoder = CLIPVisionModelWithProjection(config).eval()
    processor = CLIPImageProcessor(crop_size=image_size, size=image_size)
    return encoder, processor


def tiny_svd_components(seed: int = 0) -> dict:
    """Components for `StableVideoDiffusionPipeline`: spatio-temporal UNet, temporal VAE, CLIP
    image encoder (diffusers' SVD test sizes)."""

    with seeded(seed):
        unet = UNetSpatioTemporalConditionModel(
            block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=8, out_channels=4,
            down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
            up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
            cross_attention_dim=32, num_attention_heads=8, projection_class_embeddings_input_dim=96,
            addition_time_embed_dim=32,
        )
    with seeded(seed + 1):
        vae = AutoencoderKLTemporalDecoder(
            block_out_channels=[32, 64], in_channels=3, out_channels=3,
            down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"], latent_channels=4,
        )
    image_encoder, feature_extractor = tiny_clip_vision_encoder(seed + 2, image_size=224)
    scheduler = EulerDiscreteScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, interpolation_type="linear",
        num_train_timesteps=1000, prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002,
        steps_offset=1, timestep_spacing="leading", timestep_type="continuous", use_karras_sigmas=True,
    )
    return {"unet": unet, "vae": vae, "image_encoder": image_encoder, "feature_extractor": feature_extractor, "scheduler": scheduler}


def tiny_pipeline(kind: str, seed: int = 0):
    """A ready diffusers pipeline on tiny components; `kind` is one of `PIPELINE_KINDS`."""

    if kind not in PIPELINE_KINDS:
        raise ValueError(f"kind must be one of {PIPELINE_KINDS}, got {kind!r}.")
    if kind == "svd":
        return diffusers.StableVideoDiffusionPipeline(**tiny_svd_components(seed))
    xl = kind.startswith("sdxl")
    inpaint = kind.endswith("inpaint")
    build = tiny_sdxl_components if xl else tiny_sd15_components
    components = build(seed, in_channels=9 if inpaint else 4)
    if kind.endswith("controlnet"):
        components["controlnet"] = tiny_controlnet(components["unet"], seed + 5)
        cls = diffusers.StableDiffusionXLControlNetPipeline if xl else diffusers.StableDiffusionControlNetPipeline
    elif inpaint:
        cls = diffusers.StableDiffusionXLInpaintPipeline if xl else diffusers.StableDiffusionInpaintPipeline
    else:
        cls = diffusers.StableDiffusionXLPipeline if xl else diffusers.StableDiffusionPipeline
    if not xl:
        components.setdefault("requires_safety_checker", False)
    return cls(**components)


