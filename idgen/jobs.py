"""Stopping a running job from another thread: the job checks a `CancelToken` between its steps
(denoising steps, video frames, training steps) and raises `JobCancelled` once it is set."""

from __future__ import annotations

import threading

from idgen.errors import IdgenError


class JobCancelled(IdgenError):
    """The job was cancelled by its user before it finished."""


class CancelToken:
    """A flag that any thread sets (`cancel`) and the job checks at each of its steps (`check`)."""

    def __init__(self):
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise `JobCancelled` once the token is cancelled."""
        if self._event.is_set():
            raise JobCancelled("cancelled by the user.")

    def on_step_end(self, pipe, step: int, timestep, tensors: dict) -> dict:
        """A diffusers `callback_on_step_end`: the denoising loop stops after the step during which
        the token was cancelled (raising skips the decoding too, so nothing of the job is kept)."""
        self.check()
        return tensors
