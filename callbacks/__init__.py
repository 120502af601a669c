"""Lightning callbacks of the suite."""

from callbacks.config_logging import LoggerSaveConfigCallback

__all__ = ["LoggerSaveConfigCallback"]
