"""tcpa: TCP session analyzer. `analyze(path)` returns a Report whose tables are pandas DataFrames."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .model import CaptureError
    from .pipeline import analyze
    from .report import Report
    from .tracker import Params

__all__ = ["CaptureError", "Params", "Report", "analyze"]
__version__ = "0.1.0"

# Imported on first use, so that the console script (launch.py) starts without numpy, and reading a capture
# need not wait for pandas (Report).
_HOMES = {"CaptureError": "model", "Params": "tracker", "Report": "report", "analyze": "pipeline"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
