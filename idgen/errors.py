"""Errors raised for bad input. Every user-facing failure is one of these, with a message that
says what was wrong and what to do; none of them should surface as a deep torch traceback."""


class IdgenError(Exception):
    """Base class of idgen's user-facing errors."""


class ImageReadError(IdgenError, ValueError):
    """An image file is missing, unreadable, corrupt, or larger than the configured limits."""


class FaceNotFoundError(IdgenError, ValueError):
    """No face was detected where one was required."""


class MultipleFacesError(IdgenError, ValueError):
    """Several faces were detected where exactly one was required."""


class FaceTooSmallError(IdgenError, ValueError):
    """The detected face is smaller than the minimum size for the requested operation."""


class ModelNotFoundError(IdgenError, FileNotFoundError):
    """A model (weights, config, ONNX pack) could not be found locally.

    The message lists every place that was looked at and the files that were expected."""


class ConfiguredModelError(ModelNotFoundError):
    """A model location the user configured (`IDGEN_<NAME>` or `config.json`) does not resolve.

    Never a reason to fall back to the embedded default: the message names the variable or the
    config key and the value that failed."""


class CheckpointError(IdgenError, ValueError):
    """A checkpoint file is of the wrong kind, truncated, or has unexpected keys or shapes.

    The message names the first offending key."""


class DatasetError(IdgenError, ValueError):
    """A training dataset is empty, incomplete, or not in the format idgen writes
    (`idgen prepare-data`); the message names the file or record at fault."""


class ConfigError(IdgenError, ValueError):
    """A configuration file (`config.json`) or environment variable is unreadable or malformed;
    the message names the file (with line and column) or the variable."""


class OutputError(IdgenError, OSError):
    """An output cannot be written: it already exists (idgen never overwrites unless asked), its
    folder is a file, or the disk refused it. Nothing partial is left behind."""


class InsufficientMemoryError(IdgenError, MemoryError):
    """A request would not fit in the memory of the device it runs on (estimated before the run,
    or reported by torch during it); the message says what to lower."""

    @staticmethod
    def advice() -> str:
        """What to do when a job ran out of memory."""
        return ("out of memory: run with --memory balanced (model offload) or --memory low (layer-wise "
                "offload, VAE tiling; add --fp8 to halve the UNet), or ask for fewer images (--num-images), a "
                "smaller --width/--height or fewer video frames at once; close other jobs using the device.")
