"""What idgen's training commands take: `idgen prepare-data`'s defaults, `TrainingArgs` (every
trainer's shared options), each trainer's options dataclass, and the helpers that make command-line
flags of a dataclass's fields. Free of torch: the trainers import their options from here, and
`idgen train … --help` lists the flags without loading them."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, dataclass, field, fields
from typing import Optional

from idgen import arguments
from idgen.errors import IdgenError
from idgen.media.degrade import PRESETS, TASKS
from idgen.validation import check_integer, check_number

# -- idgen prepare-data --------------------------------------------------------------------------
DEFAULT_CAPTION = "a photo of a person"
# Default of `min_sharpness`, measured with dlib on ../shared/faces (512 px crops, `sharpness`):
# the four portraits score 148-499, the two small full-body faces 23-51, and Gaussian-blurred
# copies (sigma 6 px) 3-12 (sigma 3: 4-45). 20 keeps every portrait with a 7x margin and drops
# every sigma-6 copy. The raw Laplacian variance of the whole crop could not serve: it falls ~30x
# from 256 to 1024 px crops (portraits at 1024 score 3-38) and a blurred photo whose crop runs
# past the image edge scores 170 on the black fill's edge.
DEFAULT_MIN_SHARPNESS = 20.0

# -- every trainer (`idgen.train.loop.run_training`) ---------------------------------------------
@dataclass
class TrainingArgs:
    """Options every trainer shares (command-line flags of the same names, `-` for `_`)."""

    output_dir: str = field(metadata={"help": "folder for checkpoints, validation images and the final weights"})
    max_train_steps: int = field(default=500, metadata={"help": "optimizer steps to train for"})
    train_batch_size: int = field(default=1, metadata={"help": "samples per process and micro-step"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-steps per optimizer step"})
    learning_rate: float = field(default=1e-4, metadata={"help": "peak learning rate"})
    lr_scheduler: str = field(default="constant", metadata={
        "help": "diffusers schedule: constant, constant_with_warmup, linear, cosine, cosine_with_restarts, polynomial"})
    lr_warmup_steps: int = field(default=0, metadata={"help": "warm-up optimizer steps"})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2"})
    adam_weight_decay: float = field(default=1e-2, metadata={"help": "AdamW weight decay"})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm (0: off)"})
    use_8bit_adam: bool = field(default=False, metadata={"help": "bitsandbytes' 8-bit AdamW (CUDA, bitsandbytes installed)"})
    mixed_precision: str = field(default="no", metadata={"help": "no, fp16 or bf16 (frozen weights in that dtype, trainable in fp32)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute UNet activations in backward"})
    seed: int = field(default=0, metadata={"help": "seed of the data order and of every random draw"})
    snr_gamma: Optional[float] = field(default=None, metadata={"help": "Min-SNR loss weighting gamma (5.0 is usual); off when unset"})
    noise_offset: float = field(default=0.0, metadata={"help": "noise offset (0.05-0.1 helps very dark/bright images)"})
    checkpointing_steps: int = field(default=500, metadata={"help": "save a resumable checkpoint every N optimizer steps"})
    checkpoints_total_limit: Optional[int] = field(default=None, metadata={"help": "keep at most this many checkpoints"})
    resume_from_checkpoint: Optional[str] = field(default=None, metadata={"help": "a checkpoint folder, or 'latest'"})
    validation_steps: int = field(default=0, metadata={"help": "write validation images every N steps (0: only at the end)"})
    use_ema: bool = field(default=False, metadata={"help": "keep an exponential moving average of the trainable weights and export it"})
    ema_decay: float = field(default=0.9999, metadata={"help": "EMA decay"})
    dataloader_num_workers: int = field(default=0, metadata={"help": "data-loading worker processes"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def __post_init__(self):
        for name in ("max_train_steps", "train_batch_size", "gradient_accumulation_steps", "checkpointing_steps"):
            check_integer(f"--{name.replace('_', '-')}", getattr(self, name), low=1)
        check_number("--learning-rate", self.learning_rate, low=0.0, low_open=True)
        for name in ("adam_beta1", "adam_beta2", "ema_decay"):
            check_number(f"--{name.replace('_', '-')}", getattr(self, name), low=0.0, high=1.0)
        for name in ("lr_warmup_steps", "validation_steps", "dataloader_num_workers", "seed"):
            check_integer(f"--{name.replace('_', '-')}", getattr(self, name), low=0)
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise IdgenError(f"--mixed-precision must be no, fp16 or bf16, got {self.mixed_precision!r}.")


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls, title: str) -> None:
    """Register every field of the dataclass `cls` as `--field-name` with its help text
    (booleans as `--x/--no-x`); read them back with `dataclass_from_namespace`."""
    types = {"int": arguments.integer(), "float": arguments.number(), "str": str}  # numbers finite
    group = parser.add_argument_group(title)
    for f in fields(cls):
        kwargs = {"dest": f.name, "help": f.metadata["help"]}
        if f.default is MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = f.default
            kwargs["help"] += f" (default: {f.default})"
        base_type = str(f.type).removeprefix("Optional[").removesuffix("]")
        if base_type == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = types[base_type]
        group.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def dataclass_from_namespace(cls, ns: argparse.Namespace):
    return cls(**{f.name: getattr(ns, f.name) for f in fields(cls)})


# -- idgen train lora (`idgen.train.lora`) -------------------------------------------------------
@dataclass
class LoRAOptions:
    """What DreamBooth-LoRA training needs beyond `TrainingArgs`."""

    base: str = field(metadata={"help": "base model: diffusers folder, single file, cached hub id, or tiny-sd15/tiny-sdxl"})
    instance_data: str = field(metadata={"help": "photos of the person: a folder of images or a prepared dataset"})
    instance_prompt: str = field(default="a photo of sks person", metadata={"help": "prompt with the rare identifier token"})
    resolution: int = field(default=512, metadata={"help": "training resolution in pixels (1024 for SDXL)"})
    rank: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: Optional[int] = field(default=None, metadata={"help": "LoRA alpha (default: the rank, i.e. scale 1)"})
    train_text_encoder: bool = field(default=False, metadata={"help": "also train LoRAs on the text encoder(s)"})
    with_prior_preservation: bool = field(default=False, metadata={"help": "add the class-prior loss (DreamBooth)"})
    class_data: Optional[str] = field(default=None, metadata={"help": "class images folder (filled up to --num-class-images by the base model)"})
    class_prompt: Optional[str] = field(default=None, metadata={"help": "prompt of the class images, e.g. 'a photo of a person'"})
    num_class_images: int = field(default=100, metadata={"help": "class images needed for prior preservation"})
    prior_loss_weight: float = field(default=1.0, metadata={"help": "weight of the prior loss"})
    validation_prompt: Optional[str] = field(default=None, metadata={"help": "prompt of the validation images (default: the instance prompt)"})
    num_validation_images: int = field(default=2, metadata={"help": "validation images per validation"})
    validation_inference_steps: int = field(default=25, metadata={"help": "denoising steps of validation images"})
    config_folder: Optional[str] = field(default=None, metadata={"help": "diffusers folder with the configs of a single-file --base (offline)"})

    def __post_init__(self):
        if self.with_prior_preservation and not (self.class_data and self.class_prompt):
            raise IdgenError("--with-prior-preservation needs --class-data and --class-prompt.")
        if self.rank < 1:
            raise IdgenError(f"--rank must be at least 1, got {self.rank}.")


# -- idgen train adapter (`idgen.train.adapter`) -------------------------------------------------
ADAPTER_KINDS = ("faceid", "instantid", "arc2face", "pva")


@dataclass
class AdapterOptions:
    """What identity-adapter training needs beyond `TrainingArgs`."""

    kind: str = field(metadata={"help": "adapter kind: faceid, instantid, arc2face or pva"})
    base: str = field(metadata={"help": "base model: diffusers folder, single file, cached hub id, or tiny-sd15/tiny-sdxl"})
    data: str = field(metadata={"help": "a prepared dataset (idgen prepare-data): folder, or a .tar shard"})
    resolution: int = field(default=512, metadata={"help": "training resolution in pixels (1024 for SDXL)"})
    caption: Optional[str] = field(default=None, metadata={"help": "one caption for every image (default: the dataset's)"})
    text_dropout: float = field(default=0.05, metadata={"help": "probability of dropping the text only"})
    identity_dropout: float = field(default=0.05, metadata={"help": "probability of dropping the identity only"})
    both_dropout: float = field(default=0.05, metadata={"help": "probability of dropping text and identity"})
    lora_rank: int = field(default=128, metadata={"help": "faceid: rank of the built-in LoRA (official: 128)"})
    train_lora: bool = field(default=True, metadata={"help": "faceid: train the built-in LoRA (else it stays zero)"})
    num_tokens: int = field(default=4, metadata={"help": "faceid: identity tokens (official: 4)"})
    resampler_config: Optional[str] = field(default=None, metadata={
        "help": "instantid: Resampler hyperparameters as JSON (default: the official dim 1280, depth 4, heads 20, 16 queries)"})
    controlnet: Optional[str] = field(default=None, metadata={"help": "instantid: start the IdentityNet from this ControlNet folder"})
    train_identitynet: bool = field(default=True, metadata={"help": "instantid: train the IdentityNet too"})
    pva_tokens: int = field(default=10, metadata={"help": "pva: identity tokens (paper: 10; 0 = one per reference, official)"})
    pva_layers: int = field(default=4, metadata={"help": "pva: transformer layers of the identity encoder"})
    pva_heads: int = field(default=8, metadata={"help": "pva: attention heads of the identity encoder (official 8)"})
    init_adapter: Optional[str] = field(default=None, metadata={
        "help": "pva: start from these PVA weights (a pva_adapter/ folder or FPIP.bin): the per-identity fine-tune"})
    validation_inference_steps: int = field(default=25, metadata={"help": "denoising steps of validation images"})
    tiny_text_width: int = field(default=32, metadata={"help": "width of the tiny-sd15 text encoder (tests; arc2face needs >= 512)"})

    def __post_init__(self):
        if self.kind not in ADAPTER_KINDS:
            raise IdgenError(f"--kind must be one of {', '.join(ADAPTER_KINDS)}, got {self.kind!r}.")
        total = self.text_dropout + self.identity_dropout + self.both_dropout
        if min(self.text_dropout, self.identity_dropout, self.both_dropout) < 0 or total > 1:
            raise IdgenError(f"dropout probabilities must be >= 0 and sum to at most 1 (got {total}).")


# -- idgen train restore (`idgen.train.restore`) -------------------------------------------------
@dataclass
class RestoreOptions:
    """What restoration-ControlNet training needs beyond `TrainingArgs`."""

    base: str = field(metadata={"help": "SD1.5 base: diffusers folder, single file, cached hub id, or tiny-sd15"})
    data: str = field(metadata={"help": "clean aligned faces: a folder of photos or a prepared dataset"})
    preset: str = field(default="gfpgan", metadata={"help": "degradation preset: gfpgan, codeformer, codeformer-light"})
    tasks: str = field(default="bfr", metadata={"help": "comma-separated tasks drawn per example: bfr, colorize, inpaint"})
    resolution: int = field(default=512, metadata={"help": "training resolution in pixels"})
    caption: str = field(default="a high quality, detailed photo of a face", metadata={"help": "caption of every example"})
    caption_dropout: float = field(default=0.1, metadata={"help": "probability of training with the empty caption"})
    controlnet: Optional[str] = field(default=None, metadata={"help": "start from this ControlNet folder (else from the UNet)"})
    validation_inference_steps: int = field(default=25, metadata={"help": "denoising steps of validation images"})

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise IdgenError(f"--preset must be one of {', '.join(PRESETS)}, got {self.preset!r}.")
        bad = [t for t in self.task_list if t not in TASKS]
        if bad or not self.task_list:
            raise IdgenError(f"--tasks must be a comma-separated subset of {', '.join(TASKS)}, got {self.tasks!r}.")
        if not 0.0 <= self.caption_dropout <= 1.0:
            raise IdgenError(f"--caption-dropout must be in [0, 1], got {self.caption_dropout}.")

    @property
    def task_list(self) -> list[str]:
        return [t.strip() for t in self.tasks.split(",") if t.strip()]


# -- idgen train svfr (`idgen.train.svfr`) -------------------------------------------------------
SVFR_IDENTITY_BACKENDS = ("none", "insightface")


@dataclass
class SVFROptions:
    """What SVFR training needs beyond `TrainingArgs`."""

    base: str = field(metadata={"help": "SVD folder (stable-video-diffusion-img2vid-xt) or an SVFR folder, or tiny-svd"})
    data: str = field(metadata={"help": "a folder of face videos (aligned crops)"})
    num_frames: int = field(default=16, metadata={"help": "frames per training clip"})
    resolution: int = field(default=512, metadata={"help": "frame size in pixels"})
    preset: str = field(default="gfpgan", metadata={"help": "degradation preset"})
    task_prob: float = field(default=0.3, metadata={"help": "probability of adding colorization / inpainting to BFR"})
    reference_dropout: float = field(default=0.3, metadata={
        "help": "probability of training without reference latent and identity (CFG negative, first pass)"})
    identity_backend: str = field(default="none", metadata={
        "help": "none (identity tokens stay zero) or insightface (ArcFace embedding of the reference frame; "
                "trains id_projection; needs a local insightface pack)"})
    identity_dropout: float = field(default=0.1, metadata={"help": "probability of dropping the identity alone"})
    ulr_weight: float = field(default=0.0, metadata={"help": "weight of the unified latent regularisation (0: off)"})
    ulr_temperature: float = field(default=0.1, metadata={"help": "temperature of the ULR contrastive term"})
    landmark_weight: float = field(default=0.0, metadata={"help": "weight of the facial landmark prior loss (0: off)"})

    def __post_init__(self):
        for name in ("task_prob", "reference_dropout", "identity_dropout"):
            if not 0 <= getattr(self, name) <= 1:
                raise IdgenError(f"--{name.replace('_', '-')} is a probability; got {getattr(self, name)}.")
        if min(self.ulr_weight, self.landmark_weight) < 0 or self.ulr_temperature <= 0:
            raise IdgenError("--ulr-weight and --landmark-weight must be >= 0 and --ulr-temperature > 0.")
        if self.num_frames < 1 or self.resolution < 8 or self.resolution % 8:
            raise IdgenError(f"--num-frames must be >= 1 and --resolution a multiple of 8; got {self.num_frames}, "
                             f"{self.resolution}.")
        if self.identity_backend not in SVFR_IDENTITY_BACKENDS:
            raise IdgenError(f"--identity-backend must be one of {SVFR_IDENTITY_BACKENDS}, got {self.identity_backend!r}.")
        if self.preset not in PRESETS:
            raise IdgenError(f"--preset must be one of {sorted(PRESETS)}, got {self.preset!r}.")
