"""The package's own exceptions: each carries one line saying what is wrong and what to do, which
the command line prints with an exit code and Jupyter shows without a traceback.
"""

import signal


class BnmnistError(Exception):
    """Base class: a problem the user can fix; ``str(err)`` is the whole message."""

    def _render_traceback_(self):  # IPython and Jupyter show this line instead of a traceback
        return [f"{type(self).__name__}: {self}"]


class ConfigError(BnmnistError, ValueError):
    """A configuration value (flag) that makes no sense."""


class DataError(BnmnistError, ValueError):
    """An MNIST file that is missing, truncated, corrupt or of the wrong shape."""


class RunFolderError(BnmnistError):
    """A log or run folder that can't be created, written, or is not a bnmnist run."""


class CheckpointError(BnmnistError, ValueError):
    """A checkpoint that is missing, truncated, or belongs to another architecture."""


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM (``signum``) stopped the run cleanly after its last completed epoch."""

    def __init__(self, run_dir: str, epochs_done: int, signum: int = signal.SIGINT):
        super().__init__(f"interrupted; {epochs_done} epoch(s) saved in {run_dir}")
        self.run_dir, self.epochs_done, self.signum = run_dir, epochs_done, signum


class NumericalError(BnmnistError):
    """Training diverged: the loss became NaN or infinite."""


class WriteError(BnmnistError):
    """A run's files could not be written during training (disk full, folder removed, read-only).
    ``resumable``: a complete checkpoint of the run is still there to resume from."""

    def __init__(self, message: str, resumable: bool = False):
        super().__init__(message)
        self.resumable = resumable
