"""Every exception glandseg raises, in one place.

Each carries a one-line message that names the file, field or value at fault, so the command line and the
dashboard can show it as it is. They share the base :class:`GlandsegError`; each also keeps the built-in base it
had before the redesign (``ValueError`` or ``RuntimeError``), so existing ``except ValueError`` code still works.
"""

from __future__ import annotations


class GlandsegError(Exception):
    """Base class of glandseg's own errors (one-line message)."""


class ImageError(GlandsegError, ValueError):
    """An image or label map that cannot be read or written (one-line message naming the file)."""


class DatasetError(GlandsegError, ValueError):
    """A GlaS folder that is missing, incomplete or inconsistent (one-line message)."""


class ModelError(GlandsegError, ValueError):
    """A model folder or checkpoint that cannot be used (one-line message)."""


class ConfigError(GlandsegError, ValueError):
    """A configuration or post-processing setting of the wrong type or out of range (names the field)."""


class TrainingBusy(GlandsegError, RuntimeError):
    """Another training is running (one-line message naming it)."""


class TrainingStopped(GlandsegError):
    """A training was asked to stop (SIGTERM or a stop request) and saved its state.

    Args:
        what: where it stopped ("stopped during epoch 3").
        resume: what ``--resume`` (the Train page's Resume) does then ("repeats that epoch"); empty when the
            reader's general words apply.
    """

    def __init__(self, what: str, resume: str = "") -> None:
        super().__init__(what, resume)
        self.what, self.resume = what, resume

    def __str__(self) -> str:
        return f"{self.what}; resume {self.resume}" if self.resume else self.what


class WriteError(GlandsegError, OSError):
    """A file that could not be written (disk full, ...): one line naming it; no temporary file is left."""


class FolderBusy(GlandsegError, RuntimeError):
    """Another process is writing into the same output folder (one line naming it and the holder)."""
