"""tcpa: TCP session analyzer. `analyze(path)` returns a Report whose tables are pandas DataFrames."""

from typing import Any

from .model import CaptureError
from .pipeline import analyze
from .tracker import Params

__all__ = ["CaptureError", "Params", "Report", "analyze"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """`analyzer.Report`, imported on first use (pandas with it), so reading a capture need not wait for it."""
    if name == "Report":
        from .report import Report

        return Report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
