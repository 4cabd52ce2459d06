"""Errors that end a run with one clear line instead of a traceback."""


class FwbenchError(Exception):
    """Base class: the message is a single line naming the bad value and what is accepted."""


class ConfigError(FwbenchError):
    """An invalid configuration value or override."""


class DataError(FwbenchError):
    """Input data that is missing, malformed or fails verification."""


class DownloadError(DataError):
    """No mirror delivered a verified file."""


class Interrupted(Exception):
    """SIGTERM arrived (SLURM preemption or time limit): the last checkpoint stands.

    Not a FwbenchError: the input was fine, and the job exits with its own status
    so that a scheduler can requeue it.
    """
