"""The training loop shared by every idgen trainer, on accelerate.

A trainer is a `TrainingTask`: it builds its models, names its trainable modules, computes the
loss of a batch and writes its weights in the format inference loads. `run_training` does the
rest: accelerator, optimizer (AdamW, or bitsandbytes' 8-bit AdamW), LR schedule, mixed
precision, gradient accumulation and clipping, EMA, checkpoints with exact resume, validation,
a progress bar with loss and speed, and a final summary.

Exact resume, also with a different number of processes: the data position is one integer (the
number of samples drawn, `StepBatchSampler`) and every random draw of a step (noise, timesteps,
condition dropout) comes from a generator seeded by `(seed, micro-step, process)`, so no RNG
state has to be saved. Checkpoints hold only the trainable weights (safetensors), the optimizer,
LR-scheduler and EMA states (read back with `weights_only=True`) and a JSON step counter.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import torch

from idgen.errors import IdgenError
from idgen.train.options import TrainingArgs

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
TRAINABLE_FILE = "trainable.safetensors"


class StepBatchSampler(torch.utils.data.Sampler):
    """Endless batches of dataset indices, a pure function of the number of samples drawn.

    The global sample stream is one permutation of the dataset per epoch, seeded by
    `(seed, epoch)`. Each micro-step draws `batch_size x num_processes` consecutive samples of it
    and process `p` takes the `p`-th slice. Resuming at `start_sample` (saved in checkpoints)
    continues the stream exactly, whatever the number of processes before and after. Written by
    hand because accelerate's `skip_first_batches` replays the loader and its sharding depends on
    the number of processes.
    """

    def __init__(self, num_samples: int, batch_size: int, *, seed: int, start_sample: int = 0,
                 process_index: int = 0, num_processes: int = 1):
        if num_samples < 1:
            raise IdgenError("the training dataset is empty.")
        self.n, self.batch_size, self.seed = num_samples, batch_size, seed
        self.position, self.rank, self.world = start_sample, process_index, num_processes
        self._epoch, self._perm = None, None

    def _index(self, sample: int) -> int:
        epoch = sample // self.n
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g).tolist()
        return self._perm[sample % self.n]

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            start = self.position + self.rank * self.batch_size
            yield [self._index(start + i) for i in range(self.batch_size)]
            self.position += self.batch_size * self.world

    def __len__(self) -> int:  # endless; DataLoader only needs it for len(), which the loop never calls
        return 2**62


def step_generator(seed: int, micro_step: int, process_index: int) -> torch.Generator:
    """The CPU generator of every random draw of one micro-step on one process."""
    return torch.Generator().manual_seed((seed * 1_000_003 + micro_step * 7919 + process_index * 104_729) % 2**63)


class TrainingTask:
    """What a trainer provides to `run_training` (subclasses override the methods below)."""

    name = "task"

    def setup(self, accelerator, weight_dtype: torch.dtype) -> None:
        """Load the models onto `accelerator.device` (frozen ones in `weight_dtype`)."""
        raise NotImplementedError

    def dataset(self) -> torch.utils.data.Dataset:
        """The map-style training dataset; items go through `collate`."""
        raise NotImplementedError

    def collate(self, items: list) -> dict:
        raise NotImplementedError

    def trainable_modules(self) -> list[torch.nn.Module]:
        """Modules holding the trainable parameters (handed to `accelerator.prepare`)."""
        raise NotImplementedError

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.trainable_state_dict().values())

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Every trainable parameter by a stable name (`{module index}.{parameter name}`): what
        checkpoints and the EMA hold. The values are the live parameters."""
        return {f"{i}.{name}": p for i, module in enumerate(self.trainable_modules())
                for name, p in module.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def load_trainable_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Copy `state_dict` into the live parameters, in place (the optimizer keeps them)."""
        live = self.trainable_state_dict()
        missing = sorted(set(live) - set(state_dict))
        extra = sorted(set(state_dict) - set(live))
        if missing or extra:
            raise IdgenError(f"{self.name}: the saved trainable weights do not match this model "
                             f"(missing {missing[:1]}, unexpected {extra[:1]}); same options as the saved run?")
        for key, param in live.items():
            if param.shape != state_dict[key].shape:
                raise IdgenError(f"{self.name}: {key} is {tuple(state_dict[key].shape)} in the checkpoint, "
                                 f"{tuple(param.shape)} here.")
            param.copy_(state_dict[key])

    def loss(self, batch: dict, generator: torch.Generator, modules: Sequence[torch.nn.Module]) -> torch.Tensor:
        """The scalar loss of one micro-batch; `modules` are the prepared `trainable_modules()`
        (call those, so DDP synchronises gradients); draw all randomness from `generator`."""
        raise NotImplementedError

    def validate(self, out_dir: Path, step: int) -> list[Path]:
        """Write validation images for `step` under `out_dir`; return their paths."""
        return []

    def save_weights(self, out_dir: Path) -> list[Path]:
        """Write the trained weights in the format the matching pipeline loads; return the files."""
        raise NotImplementedError


@dataclass
class TrainingSummary:
    steps: int
    seconds: float
    final_loss: float
    losses: list[float]
    weights: list[str]
    output_dir: str
    resumed_from: Optional[str] = None

    def to_dict(self) -> dict:
        return asdict(self)


def _checkpoints(output_dir: Path) -> list[Path]:
    found = [p for p in (output_dir / "checkpoints").glob(CHECKPOINT_PREFIX + "*") if (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def _resolve_resume(args: TrainingArgs) -> Optional[Path]:
    if not args.resume_from_checkpoint:
        return None
    if args.resume_from_checkpoint == "latest":
        found = _checkpoints(Path(args.output_dir))
        return found[-1] if found else None  # nothing saved yet: start fresh, as diffusers' scripts do
    path = Path(args.resume_from_checkpoint)
    if not (path / "state.json").is_file():
        raise IdgenError(f"--resume-from-checkpoint {path}: not an idgen checkpoint (no state.json).")
    return path


def _torch_load(path: Path):
    return torch.load(path, map_location="cpu", weights_only=True)


class _Checkpointer:
    """Saves and restores the training state (see the module docstring for what is in it)."""

    def __init__(self, accelerator, task: TrainingTask, optimizer, lr_scheduler, ema, args: TrainingArgs):
        self.accelerator, self.task, self.optimizer, self.lr_scheduler, self.ema = accelerator, task, optimizer, lr_scheduler, ema
        self.args = args
        # Sharded optimizers (FSDP, DeepSpeed) keep their state in their own formats.
        self.native = accelerator.distributed_type.value in ("FSDP", "DEEPSPEED")

    def save(self, step: int, samples: int, losses: list[float]) -> Path:
        from safetensors.torch import save_file

        acc = self.accelerator
        root = Path(self.args.output_dir) / "checkpoints"
        path = root / f"{CHECKPOINT_PREFIX}{step}"
        if self.native:
            acc.save_state(str(path / "native"))
        if acc.is_main_process:
            path.mkdir(parents=True, exist_ok=True)
            save_file({k: v.detach().float().cpu().contiguous() for k, v in self.task.trainable_state_dict().items()},
                      str(path / TRAINABLE_FILE))
            if not self.native:
                torch.save(self.optimizer.state_dict(), path / "optimizer.pt")  # accelerate's wrappers delegate
            torch.save(self.lr_scheduler.state_dict(), path / "scheduler.pt")
            if self.ema is not None:
                torch.save(self.ema.state_dict(), path / "ema.pt")
            # state.json last: it marks the checkpoint complete
            (path / "state.json").write_text(json.dumps({"step": step, "samples": samples, "losses": losses}))
            if self.args.checkpoints_total_limit:
                for old in _checkpoints(Path(self.args.output_dir))[: -self.args.checkpoints_total_limit]:
                    shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return path

    def load(self, path: Path) -> dict:
        from safetensors.torch import load_file

        state = json.loads((path / "state.json").read_text())
        self.task.load_trainable_state_dict(load_file(str(path / TRAINABLE_FILE)))
        if self.native:
            self.accelerator.load_state(str(path / "native"))
        else:
            self.optimizer.load_state_dict(_torch_load(path / "optimizer.pt"))
        self.lr_scheduler.load_state_dict(_torch_load(path / "scheduler.pt"))
        if self.ema is not None:
            if not (path / "ema.pt").is_file():
                raise IdgenError(f"{path} has no EMA state but --use-ema is set; resume without it or from a run that used it.")
            self.ema.load_state_dict(_torch_load(path / "ema.pt"))
        return state


def _optimizer(params, args: TrainingArgs):
    if args.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise IdgenError("--use-8bit-adam needs bitsandbytes (pip install bitsandbytes) and a CUDA GPU.") from None
        cls = bnb.optim.AdamW8bit
    else:
        cls = torch.optim.AdamW
    return cls(params, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
               weight_decay=args.adam_weight_decay, eps=args.adam_epsilon)


class _EMA:
    """EMA of the trainable tensors by name (diffusers' `EMAModel` wants a module's parameter
    list in a fixed order; this keys by the task's stable names, which checkpoints also use)."""

    def __init__(self, task: TrainingTask, decay: float):
        self.task, self.decay = task, decay
        self.shadow = {k: v.detach().float().clone() for k, v in task.trainable_state_dict().items()}

    @torch.no_grad()
    def step(self) -> None:
        for k, v in self.task.trainable_state_dict().items():
            self.shadow[k].lerp_(v.detach().float(), 1.0 - self.decay)

    def state_dict(self) -> dict:
        return dict(self.shadow)

    def load_state_dict(self, state: dict) -> None:
        self.shadow = {k: v.float().clone() for k, v in state.items()}


def run_training(task: TrainingTask, args: TrainingArgs,
                 on_step: Optional[Callable[[int, float], None]] = None) -> TrainingSummary:
    """Train `task` as `args` says; return the summary (also written to `summary.json`).

    `on_step(step, loss)` is called on the main process after every optimizer step (live loss in
    the demo); an exception it raises stops the run (that is how the demo cancels).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    out = Path(args.output_dir)
    accelerator = Accelerator(gradient_accumulation_steps=args.gradient_accumulation_steps,
                              mixed_precision=args.mixed_precision)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.mixed_precision, torch.float32)
    set_seed(args.seed)  # the initial adapter weights are drawn from the global RNG
    task.setup(accelerator, weight_dtype)
    dataset = task.dataset()
    params = task.trainable_parameters()
    if not params:
        raise IdgenError(f"{task.name}: nothing to train (no parameter requires grad).")
    for p in params:  # trainable weights in fp32 whatever the mixed precision
        p.data = p.data.float()
    optimizer = _optimizer(params, args)
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=args.max_train_steps * accelerator.num_processes)
    modules = task.trainable_modules()
    prepared = accelerator.prepare(*modules, optimizer, lr_scheduler)
    modules, optimizer, lr_scheduler = list(prepared[: len(modules)]), prepared[-2], prepared[-1]
    ema = _EMA(task, args.ema_decay) if args.use_ema else None
    checkpointer = _Checkpointer(accelerator, task, optimizer, lr_scheduler, ema, args)

    step, samples, losses, resumed = 0, 0, [], _resolve_resume(args)
    if resumed is not None:
        state = checkpointer.load(resumed)
        step, samples, losses = state["step"], state["samples"], list(state["losses"])
        logger.info("resumed from %s at step %d", resumed, step)
    # Not prepared by accelerate: StepBatchSampler shards by process itself (see its docstring).
    sampler = StepBatchSampler(len(dataset), args.train_batch_size, seed=args.seed, start_sample=samples,
                               process_index=accelerator.process_index, num_processes=accelerator.num_processes)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=task.collate,
                                         num_workers=args.dataloader_num_workers)
    batches = iter(loader)
    micro_batch = args.train_batch_size * accelerator.num_processes

    bar = tqdm(total=args.max_train_steps, initial=step, desc=task.name,
               disable=not (args.progress and accelerator.is_local_main_process))
    started = time.perf_counter()
    while step < args.max_train_steps:
        step_loss = 0.0
        for _ in range(args.gradient_accumulation_steps):
            micro_step = samples // micro_batch
            batch = next(batches)
            with accelerator.accumulate(*modules):
                loss = task.loss(batch, step_generator(args.seed, micro_step, accelerator.process_index), modules)
                if not torch.isfinite(loss):
                    raise IdgenError(f"{task.name}: the loss became {loss.item()} at step {step}; lower the "
                                     "learning rate or use bf16 instead of fp16.")
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            samples += micro_batch
            step_loss += accelerator.gather(loss.detach()[None]).mean().item() / args.gradient_accumulation_steps
        step += 1
        losses.append(step_loss)
        if ema is not None:
            ema.step()
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr_scheduler.get_last_lr()[0]:.2e}")
        if on_step is not None and accelerator.is_main_process:
            on_step(step, step_loss)
        if step % args.checkpointing_steps == 0 and step < args.max_train_steps:
            checkpointer.save(step, samples, losses)
        if args.validation_steps and step % args.validation_steps == 0 and accelerator.is_main_process:
            task.validate(out / "validation", step)
    bar.close()
    seconds = time.perf_counter() - started

    checkpointer.save(step, samples, losses)
    weights: list[Path] = []
    if accelerator.is_main_process:
        if ema is not None:  # export the average
            task.load_trainable_state_dict(ema.state_dict())
        weights = task.save_weights(out)
        task.validate(out / "validation", step)
    summary = TrainingSummary(steps=step, seconds=round(seconds, 2), final_loss=losses[-1] if losses else math.nan,
                              losses=losses, weights=[str(w) for w in weights], output_dir=str(out),
                              resumed_from=str(resumed) if resumed else None)
    if accelerator.is_main_process:
        (out / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary
