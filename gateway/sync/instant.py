"""UTC instants as HL7 DTM and FHIR instant text, with milliseconds.

Every observation sent carries one or two of these, so a backlog of millions formats
millions of them. ``datetime`` formatting costs microseconds per call; here the text of
each whole second is cached (a backlog visits the same seconds over and over: a ward
produces many readings per second) and only the milliseconds are formatted per call.
The rounding is ``datetime.fromtimestamp``'s (to the microsecond, half to even), so the
text is exactly what ``datetime`` would give.
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime


def split_milliseconds(t: float) -> tuple[int, int]:
    """UTC seconds -> (whole seconds, milliseconds 0-999), rounded as ``datetime`` does."""
    second = math.floor(t)
    micro = round((t - second) * 1e6)  # exact subtraction; round() is half to even
    if micro >= 1_000_000:
        second += 1
        micro -= 1_000_000
    return second, micro // 1000


def hl7_timestamp(t: float) -> str:
    """UTC seconds -> HL7 DTM ``YYYYMMDDHHMMSS.sss+0000``."""
    second, ms = split_milliseconds(t)
    return f"{_hl7_second(second)}.{ms:03d}+0000"


def fhir_instant(t: float) -> str:
    """UTC seconds -> FHIR instant ``YYYY-MM-DDThh:mm:ss.sss+00:00``."""
    second, ms = split_milliseconds(t)
    return f"{_iso_second(second)}.{ms:03d}+00:00"


@functools.lru_cache(maxsize=8192)
def _hl7_second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y%m%d%H%M%S")


@functools.lru_cache(maxsize=8192)
def _iso_second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
