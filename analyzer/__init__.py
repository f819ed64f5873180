"""tcpa: TCP session analyzer. `analyze(path)` returns a Report whose tables are pandas DataFrames."""

from .model import CaptureError
from .pipeline import analyze
from .report import Report
from .tracker import Params

__all__ = ["analyze", "Report", "Params", "CaptureError"]
__version__ = "0.1.0"
