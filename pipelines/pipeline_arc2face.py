"""Arc2Face on Stable Diffusion 1.5: faces from an ArcFace embedding alone.

```py
>>> from idgen.pipelines import load_arc2face_pipeline
>>> pipe = load_arc2face_pipeline("/models/sd15", "/models/Arc2Face")  # official arc2face/ + encoder/
>>> images = pipe(face_image="me.jpg", num_images_per_prompt=4).images
```
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel

from idgen.acceleration.mixin import AccelerationMixin
from idgen.adapters.arc2face import IDENTITY_PROMPT, check_arc2face_folders, encode_identity
from idgen.errors import IdgenError
from idgen.identity import FaceEmbedsInput, ReferenceMode, resolve_face_embeds
from idgen.validation import check_sampling_arguments

ARCFACE_DIM = 512


class Arc2FacePipeline(AccelerationMixin, StableDiffusionPipeline):
    r"""Arc2Face: components as [`StableDiffusionPipeline`], with the Arc2Face fine-tuned CLIP text
    encoder as `text_encoder` (a plain `CLIPTextModel`) and the Arc2Face UNet as `unet`.

    The prompt embedding is the text encoder's output on "photo of a id person" with the "id"
    token's embedding replaced by the identity (see `idgen.adapters.arc2face.encode_identity`);
    the negative is the empty prompt, as in the official code. `face_analyzer` (attribute) is the
    `FaceAnalyzer` used for `face_image`; None means idgen's default.
    """

    face_analyzer = None

    def encode_identity(self, face_embeds: torch.Tensor, prompt: str = IDENTITY_PROMPT) -> torch.Tensor:
        """Prompt embeddings `[N, 77, D]` for normalised embeddings `[N, 512]`."""
        return encode_identity(self.text_encoder, self.tokenizer, face_embeds, prompt)

    @torch.no_grad()
    def __call__(
        self, face_embeds: Optional[FaceEmbedsInput] = None, face_image=None, *, prompt: str = IDENTITY_PROMPT,
        prompt_embeds: Optional[torch.Tensor] = None, reference_mode: ReferenceMode = "mean",
        negative_prompt: Optional[Union[str, list[str]]] = None, negative_prompt_embeds: Optional[torch.Tensor] = None,
        height: Optional[int] = None, width: Optional[int] = None, num_inference_steps: int = 25,
        timesteps: Optional[list[int]] = None, sigmas: Optional[list[float]] = None, guidance_scale: float = 3.0,
        num_images_per_prompt: int = 1, eta: float = 0.0,
        generator: Union[torch.Generator, list[torch.Generator], None] = None, latents: Optional[torch.Tensor] = None,
        output_type: str = "pil", return_dict: bool = True, cross_attention_kwargs: Optional[dict[str, Any]] = None,
        guidance_rescale: float = 0.0, callback_on_step_end: Optional[Callable] = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
    ):
        r"""Generate images of the person in `face_embeds` / `face_image` / `prompt_embeds`.

        Args:
            face_embeds: ArcFace embedding(s) `[512]` / `[N, 512]` of one person (L2-normalised
                here), `Face` records, or a list; N references are merged by `reference_mode`
                ("mean" or "normed_mean"; Arc2Face has one identity slot, so "concat" is refused).
            face_image: twin of `face_embeds`: photo(s); the largest face of each is analysed.
            prompt: the identity prompt; must contain "id" once (default: the official one).
            prompt_embeds: twin of both: the identity prompt embeddings `[N, 77, D]` from
                `encode_identity` (reuse them across calls).
            negative_prompt / negative_prompt_embeds: default: the empty prompt, as in the official code.
            num_inference_steps, guidance_scale: official demo defaults 25 and 3.0 (with DPM-Solver++).
            Others: as in [`StableDiffusionPipeline`]. There is no `clip_skip`: the identity
                embedding is the text encoder's last hidden state, as in training.

        Returns:
            [`StableDiffusionPipelineOutput`] or a tuple with `return_dict=False`.
        """
        # the base pipeline's arguments by name (as diffusers' pipelines read `locals()` for callbacks)
        arguments = {k: v for k, v in locals().items() if k not in ("self", "__class__", "face_embeds", "face_image",
                                                                      "prompt", "reference_mode")}
        check_sampling_arguments(arguments)
        if sum(x is not None for x in (face_embeds, face_image, prompt_embeds)) != 1:
            raise IdgenError("Give exactly one of `face_embeds`, `face_image` and `prompt_embeds` (the identity "
                             "prompt embeddings from `encode_identity`).")
        if reference_mode == "concat":
            raise IdgenError("Arc2Face has a single identity token: use reference_mode 'mean' or 'normed_mean'.")
        if prompt_embeds is None:
            embeds = resolve_face_embeds(face_embeds, face_image, analyzer=self.face_analyzer, dim=ARCFACE_DIM,
                                         normalize=True, reference_mode=reference_mode)
            arguments["prompt_embeds"] = self.encode_identity(embeds.to(self._execution_device), prompt)
        return super().__call__(**arguments)


def load_arc2face_pipeline(base_sd15: os.PathLike, arc2face_root: Optional[os.PathLike] = None, *,
                           unet_folder: Optional[os.PathLike] = None, encoder_folder: Optional[os.PathLike] = None,
                           torch_dtype=None, scheduler: Optional[object] = None):
    """`Arc2FacePipeline` from an SD1.5 diffusers folder (VAE, tokenizer, scheduler config) and the
    official Arc2Face files: `arc2face_root` holding `arc2face/` (UNet) and `encoder/` (text
    encoder), or the two folders given apart. DPM-Solver++ as in the official demo unless
    `scheduler` is given."""
    root = Path(arc2face_root) if arc2face_root is not None else None
    unet_path, encoder_path = check_arc2face_folders(unet_folder or root / "arc2face", encoder_folder or root / "encoder")
    kwargs = {} if torch_dtype is None else {"torch_dtype": torch_dtype}
    unet = UNet2DConditionModel.from_pretrained(str(unet_path), local_files_only=True, **kwargs)
    encoder = CLIPTextModel.from_pretrained(str(encoder_path), local_files_only=True, **kwargs)
    pipe = Arc2FacePipeline.from_pretrained(str(base_sd15), unet=unet, text_encoder=encoder, safety_checker=None,
                                            requires_safety_checker=False, local_files_only=True, **kwargs)
    pipe.scheduler = scheduler or DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    return pipe
