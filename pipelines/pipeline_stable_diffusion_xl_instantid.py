"""InstantID for Stable Diffusion XL: identity tokens from an ArcFace embedding (Resampler), decoupled
identity cross-attention in every UNet cross-attention, and the IdentityNet (a ControlNet fed with
the face keypoint image and, as its cross-attention context, the identity tokens), optionally
with extra ControlNets (depth, canny, pose...) after it, as the official "full" pipeline.

Same math and checkpoints as the official `pipeline_stable_diffusion_xl_instantid.py`: the official
`ip-adapter.bin` and IdentityNet folder load unchanged, and with the same inputs the output matches
the official implementation (`tests/test_instantid_pipeline.py`; with an extra ControlNet and
`control_mask`, the official `pipeline_stable_diffusion_xl_instantid_full.py`:
`tests/test_instantid_controlnets.py`). The denoising loop is
diffusers' `StableDiffusionXLControlNetPipeline.__call__`; the identity goes in through hooks
scoped to the call (`idgen.pipelines.instantid_common`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
from diffusers.image_processor import PipelineImageInput
from diffusers.pipelines.controlnet.pipeline_controlnet_sd_xl import StableDiffusionXLControlNetPipeline
from diffusers.utils import replace_example_docstring

from idgen.identity import FaceEmbedsInput, ReferenceMode
from idgen.pipelines.instantid_common import (
    IDENTITY_END,
    IDENTITY_START,
    InstantIDText2ImageMixin,
    StableDiffusionXLInstantIDComponents,
)

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from diffusers import ControlNetModel
        >>> from idgen.pipelines import StableDiffusionXLInstantIDPipeline
        >>> from idgen.image_io import load_image

        >>> controlnet = ControlNetModel.from_pretrained("checkpoints/ControlNetModel", torch_dtype=torch.float16)
        >>> pipe = StableDiffusionXLInstantIDPipeline.from_pretrained(
        ...     "stabilityai/stable-diffusion-xl-base-1.0", controlnet=controlnet, torch_dtype=torch.float16
        ... ).to("cuda")
        >>> pipe.load_instantid("checkpoints/ip-adapter.bin")

        >>> photo = load_image("me.jpg")  # the face photo: embedding, keypoints and output size
        >>> image = pipe("analog film photo of a man", face_image=photo, negative_prompt="lowres").images[0]
        >>> pipe.save_pretrained("my-instantid")  # adapter included; from_pretrained restores it

        >>> # an extra ControlNet: one condition per ControlNet, the IdentityNet's first (None: drawn keypoints)
        >>> pipe.add_controlnets(ControlNetModel.from_pretrained("diffusers/controlnet-depth-sdxl-1.0-small"))
        >>> image = pipe("a man", face_image=photo, image=[None, load_image("depth.png")],
        ...              controlnet_conditioning_scale=[0.8, 0.5]).images[0]
        ```
"""


class StableDiffusionXLInstantIDPipeline(
    InstantIDText2ImageMixin, StableDiffusionXLInstantIDComponents, StableDiffusionXLControlNetPipeline
):
    r"""InstantID text-to-image with Stable Diffusion XL.

    Args:
        vae ([`AutoencoderKL`]): decodes latents to images.
        text_encoder ([`CLIPTextModel`]), text_encoder_2 ([`CLIPTextModelWithProjection`]): SDXL's two
            text encoders; tokenizer, tokenizer_2 ([`CLIPTokenizer`]) their tokenizers.
        unet ([`UNet2DConditionModel`]): the SDXL UNet; during a call its cross-attentions get
            `InstantIDAttnProcessor`s (its own processors are put back afterwards).
        scheduler ([`SchedulerMixin`]): any diffusers scheduler.
        controlnet ([`ControlNetModel`], list or [`MultiControlNetModel`], optional): the IdentityNet
            (official `ControlNetModel` folder), whose cross-attention context is the identity
            tokens, not the text; or a list with the IdentityNet first and extra ControlNets
            (depth, canny, pose... of this base model; their context is the text), as the official
            full pipeline (`add_controlnets` appends to it). May be None (e.g. to use the text
            encoders only); calling the pipeline then raises.
        identity_adapter ([`InstantIDAdapter`], optional): Resampler + identity key/value
            projections (`load_instantid` sets it; a saved pipeline restores it).
        identity_scale (`float` or block `dict`, defaults to 0.8): the default identity scale.
        force_zeros_for_empty_prompt, add_watermarker, feature_extractor, image_encoder: as in
            [`StableDiffusionXLControlNetPipeline`].
    """

    model_cpu_offload_seq = "text_encoder->text_encoder_2->image_encoder->identity_adapter->unet->vae"

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        prompt: Union[str, list[str]] = None, prompt_2: Optional[Union[str, list[str]]] = None,
        image: Union[PipelineImageInput, list] = None,
        face_embeds: Optional[FaceEmbedsInput] = None, face_image=None, pose_image=None,
        control_mask: Optional[PipelineImageInput] = None,
        identities: Optional[Sequence[Mapping[str, Any]]] = None, reference_mode: ReferenceMode = "mean",
        identity_scale: Optional[Union[float, dict]] = None, negative_noise: float = 0.0,
        identity_start: float = IDENTITY_START, identity_end: float = IDENTITY_END,
        negative_prompt: Optional[Union[str, list[str]]] = None, negative_prompt_2: Optional[Union[str, list[str]]] = None,
        prompt_embeds: Optional[torch.Tensor] = None, negative_prompt_embeds: Optional[torch.Tensor] = None,
        pooled_prompt_embeds: Optional[torch.Tensor] = None, negative_pooled_prompt_embeds: Optional[torch.Tensor] = None,
        ip_adapter_image: Optional[PipelineImageInput] = None, ip_adapter_image_embeds: Optional[list[torch.Tensor]] = None,
        controlnet_conditioning_scale: Union[float, list[float]] = 0.8, guess_mode: bool = False,
        control_guidance_start: Union[float, list[float]] = 0.0, control_guidance_end: Union[float, list[float]] = 1.0,
        height: Optional[int] = None, width: Optional[int] = None,
        num_inference_steps: int = 30, timesteps: Optional[list[int]] = None, sigmas: Optional[list[float]] = None,
        denoising_end: Optional[float] = None, guidance_scale: float = 5.0,
        num_images_per_prompt: int = 1, eta: float = 0.0,
        generator: Optional[Union[torch.Generator, list[torch.Generator]]] = None, latents: Optional[torch.Tensor] = None,
        output_type: str = "pil", return_dict: bool = True, cross_attention_kwargs: Optional[dict[str, Any]] = None,
        original_size: Optional[tuple[int, int]] = None, crops_coords_top_left: tuple[int, int] = (0, 0),
        target_size: Optional[tuple[int, int]] = None, negative_original_size: Optional[tuple[int, int]] = None,
        negative_crops_coords_top_left: tuple[int, int] = (0, 0), negative_target_size: Optional[tuple[int, int]] = None,
        clip_skip: Optional[int] = None, callback_on_step_end: Optional[Callable] = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        **kwargs,
    ):
        r"""Generate images of the person (or people) given by the identity inputs.

        Args:
            prompt, prompt_2, negative_prompt, negative_prompt_2, prompt_embeds, negative_prompt_embeds,
            pooled_prompt_embeds, negative_pooled_prompt_embeds, clip_skip: the text, as in
                [`StableDiffusionXLControlNetPipeline`] (`*_embeds` `[B, 77, 2048]`, pooled `[B, 1280]`).
            image: the IdentityNet condition (a keypoint image, e.g. `idgen.conditioning.draw_kps`).
                If omitted, the keypoints of `pose_image`, else of the face photo / `Face` records /
                `identities[i]["kps"]` are drawn at the output size. With extra ControlNets: a list
                with one condition per ControlNet, the IdentityNet's first (None: drawn as above),
                then e.g. a depth map; all are resized to the output size.
            face_embeds: raw (un-normalised) ArcFace embeddings `[512]` or `[N, 512]` (N reference
                photos of one person), or `Face` records, or a list of them.
            face_image: a photo (or list of photos) of the person instead of `face_embeds`; faces are
                found with `pipe.face_analyzer` (default `idgen.face.get_face_analyzer()`).
            pose_image: a photo whose (largest) face gives the keypoints and the output size.
            control_mask: the official "enhance face region" mask (`[H, W]` in [0, 1] or 0..255, e.g.
                white on the face box, output size): the IdentityNet's residuals are multiplied by
                it (resized bilinearly to each residual) and the identity attention is limited to
                it (the region of every person without their own `mask`).
            identities: several people in one image: `[{"face_embeds" | "face_image": ..., "mask": ...,
                "kps": ..., "scale": ...}, ...]`. `mask` ([H, W] in [0, 1], any resolution with the
                output's aspect ratio; required with 2+ people) limits the identity branch to a region;
                `kps` ([5, 2], output pixels) places the face in the combined keypoint image; `scale`
                (float or block dict) overrides `identity_scale` for that person. The IdentityNet
                sees all people's tokens, concatenated.
            reference_mode: how N reference embeddings of one person combine: "mean", "normed_mean"
                (mean rescaled to the mean norm) or "concat" (16 tokens per reference).
            identity_scale: identity scale for this call, float or block dict (`{"down": {"block_2":
                [0.0, 1.0]}, "up": ...}`); None uses `set_identity_scale` (0.8 after loading).
                Old name `ip_adapter_scale`.
            negative_noise: 0 (official) uses zero embeddings for the unconditional branch; > 0 uses
                `negative_noise` x U[0, 1) noise instead (deterministic given the generator's seed).
            identity_start, identity_end: fraction of the steps during which the identity attention
                is applied (the convention of `control_guidance_start/end`). Old names
                `identity_guidance_start/end`.
            ip_adapter_image, ip_adapter_image_embeds: a style reference image for a standard
                IP-Adapter loaded with `load_style_adapter` (or its embeddings, a list of `[2B, 1,
                D]` / `[2B, T, D]` tensors as diffusers takes them); passed to diffusers untouched.
            controlnet_conditioning_scale: IdentityNet scale (defaults to 0.8), or one per ControlNet
                (IdentityNet first); control_guidance_start, control_guidance_end: their step windows
                (a number for all, or one per ControlNet).
            height, width: output size (multiples of the VAE factor). Default: the size of `image`;
                else from the pose / face photo with its aspect ratio (the official demo's rule:
                long side 1280, multiples of 64 at SDXL size); else the UNet's native size. The
                photo's keypoints are fitted into the output without stretching.
            num_inference_steps (defaults to 30), timesteps, sigmas, denoising_end, guidance_scale
                (defaults to 5.0), guess_mode, num_images_per_prompt, eta, generator, latents,
                output_type, return_dict, original_size, crops_coords_top_left, target_size,
                negative_*, callback_on_step_end, callback_on_step_end_tensor_inputs: as in diffusers.
            cross_attention_kwargs: passed to the UNet's attention processors (e.g. `{"scale": 0.7}`
                for LoRA); the identity is added to them during the identity window.

        Examples:

        Returns:
            [`StableDiffusionXLPipelineOutput`] or `tuple`: the generated images.
        """
        arguments = {k: v for k, v in locals().items() if k not in ("self", "kwargs", "__class__")}
        return self._generate(super().__call__, arguments, kwargs)
