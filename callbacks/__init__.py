"""Lightning callbacks of the suite."""

from callbacks.caption_writer import CaptionWriter
from callbacks.config_logging import LoggerSaveConfigCallback
from callbacks.exact_resume import ExactResume
from callbacks.run_costs import RunCosts

__all__ = ["CaptionWriter", "ExactResume", "LoggerSaveConfigCallback", "RunCosts"]
