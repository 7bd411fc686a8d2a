"""Errors that reach the user as one clear message (no traceback): what is wrong and how to fix it."""


class LRAError(Exception):
    """Base class: the entry points print ``str(error)`` and exit with status 2."""


class DataError(LRAError):
    """Missing, truncated or malformed data; the message names the file (and line) and the fix."""


class ConfigError(LRAError, ValueError):
    """An invalid option or preset; the message names the option and the valid choices."""


class RunStorageError(LRAError):
    """The run folder cannot be written (disk full, read-only); the message names the folder and what to do."""


class RunFolderBusy(LRAError):
    """Another process is writing the same run folder (same command started twice)."""
