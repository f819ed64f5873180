"""tcpa: TCP session analyzer. `analyze(path)` returns a Report whose tables are pandas DataFrames."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .model import CaptureError
    from .pipeline import analyze
    from .report import Report
    from .tracker import Params

__all__ = ["CaptureError", "Params", "Report", "analyze"]
__version__ = "0.1.0"


_HOMES = {"CaptureError": "model", "analyze": "pipeline", "Params": "tracker", "Report": "report"}


def __getattr__(name: str) -> Any:
    """The package's names, each imported on first use: `Report` brings pandas, the rest numpy, and the command
    line sets up the process (cli.py) before either is imported."""
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
