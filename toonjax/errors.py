"""Errors a user can act on. The CLI prints their message as one line, never a traceback."""


class ToonjaxError(Exception):
    """Base class: the message names the file or field at fault and the fix."""


class DatasetError(ToonjaxError, ValueError):
    """A dataset cannot be read or written."""


class ConfigError(ToonjaxError, ValueError):
    """A config field has a value toonjax cannot use."""


class TrainingError(ToonjaxError, RuntimeError):
    """Training cannot go on (non-finite loss, incompatible checkpoint, ...)."""


class ConvertError(ToonjaxError, ValueError):
    """A foreign checkpoint cannot be read or converted (or was refused as unsafe)."""
