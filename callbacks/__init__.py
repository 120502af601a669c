"""Lightning callbacks of the suite."""

from callbacks.caption_writer import CaptionWriter
from callbacks.config_logging import LoggerSaveConfigCallback

__all__ = ["CaptionWriter", "LoggerSaveConfigCallback"]
