"""Records passed between the pipeline's stages.

capture  -> FrameBatch    raw frames, columnar (one numpy array per field)
decode   -> SegmentTable  one row per TCP segment, columnar
engine   -> connections, transitions, findings (pandas, built in report.py)

Timestamps are integer nanoseconds since the Unix epoch everywhere; frame numbers are 1-based, in file order,
as Wireshark numbers them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
U8 = npt.NDArray[np.uint8]

SCHEMA_VERSION = "tcpa/1"  # of the JSON report (and the Parquet file's metadata)


class CaptureError(Exception):
    """A capture that cannot be read at all; its message is one line naming the file and the problem."""


@dataclass(frozen=True, slots=True)
class Notice:
    """A problem found in the input, tied to a frame where one applies (0: the file itself)."""

    frame: int
    kind: str  # stable id, e.g. "truncated_file", "caplen_over_snaplen", "bad_tcp_option"
    message: str


@dataclass(slots=True)
class Interface:
    """One capture interface: a pcap file has one, a pcapng file one per Interface Description Block."""

    linktype: int
    snaplen: int
    ts_resolution_ns: float  # nanoseconds per timestamp unit (1000.0 for microseconds)
    name: str = ""
    description: str = ""


@dataclass(slots=True)
class CaptureFacts:
    """What is known about the capture file (or stream) as a whole."""

    source: str  # path as given, or "-" for stdin
    file_format: str = ""  # "pcap", "pcap-nsec", "pcapng"
    compressed: bool = False
    interfaces: list[Interface] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)  # pcapng section/packet comments (hostile text)
    frames: int = 0
    bytes_captured: int = 0
    first_ns: int = 0
    last_ns: int = 0
    notices: list[Notice] = field(default_factory=list)


@dataclass(slots=True)
class FrameBatch:
    """A batch of consecutive frames. `data` holds every frame's captured bytes back to back."""

    data: U8
    offset: I64  # start of each frame in data
    caplen: I32  # bytes captured
    wirelen: I32  # bytes on the wire (original length)
    ts_ns: I64
    linktype: I32  # per frame: pcapng interfaces may differ
    frame: I64  # 1-based frame number in the capture

    def __len__(self) -> int:
        return len(self.frame)

    def part(self, start: int, stop: int) -> FrameBatch:
        """Frames start to stop, as views (the data is shared whole: the offsets index it)."""
        return FrameBatch(self.data, self.offset[start:stop], self.caplen[start:stop], self.wirelen[start:stop],
                          self.ts_ns[start:stop], self.linktype[start:stop], self.frame[start:stop])
