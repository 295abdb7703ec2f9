"""Limits changed at the bedside survive a restart: ``<data_dir>/alarm-limits.json``.

IEC 60601-1-8 expects alarm settings to come back after a power cut; a reboot that quietly
put a bed back on its defaults would be an unannounced limit change. Each bed's entry keeps
the configured limits it was changed from (``base``): when ``config.toml`` has since been
changed for that bed, the configuration wins (a technician changed it on purpose) and a
warning says so. An entry that is unreadable or not sane is ignored with an error, never
used. The file is replaced atomically (temporary file, fsync, rename, fsync directory).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from gateway.alarms.limits import METRICS, LimitError, Limits, check

log = structlog.get_logger(__name__)

VERSION = 1


def _as_json(limits: Mapping[str, Limits]) -> dict[str, Any]:
    return {name: lim.as_dict() for name, lim in sorted(limits.items())}


def _from_json(raw: Any) -> dict[str, Limits]:
    if not isinstance(raw, dict):
        raise LimitError("limits: expected an object")
    out = {}
    for name, fields in raw.items():
        metric = METRICS.get(name)
        if metric is None or not isinstance(fields, dict):
            raise LimitError(f"{name}: unknown metric or not an object")
        try:
            limits = Limits(**fields)
        except TypeError as exc:
            raise LimitError(f"{name}: {exc}") from None
        check(metric, limits)
        out[name] = limits
    return out


class LimitFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._beds: dict[str, Any] = {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.error("saved alarm limits unreadable; configured limits used", error=str(exc))
            return
        if isinstance(data, dict) and data.get("version") == VERSION:
            beds = data.get("beds")
            self._beds = beds if isinstance(beds, dict) else {}
        else:
            log.error("saved alarm limits in an unknown format; configured limits used")

    def restore(self, bed: str, configured: Mapping[str, Limits]) -> dict[str, Limits] | None:
        """The limits saved for ``bed`` if they still apply, else ``None``."""
        entry = self._beds.get(bed)
        if not isinstance(entry, dict):
            return None
        if entry.get("base") != _as_json(configured):
            log.warning(
                "config.toml changed this bed's limits since a bedside change; "
                "the configuration wins",
                bed=bed,
            )
            return None
        try:
            return _from_json(entry.get("limits"))
        except LimitError as exc:
            log.error(
                "saved alarm limits not sane; configured limits used", bed=bed, error=str(exc)
            )
            return None

    def save(self, bed: str, base: Mapping[str, Limits], limits: Mapping[str, Limits]) -> None:
        """Record ``limits`` for ``bed`` (changed from ``base``); raises OSError on failure."""
        beds = dict(self._beds)
        beds[bed] = {"base": _as_json(base), "limits": _as_json(limits)}
        text = json.dumps({"version": VERSION, "beds": beds}, indent=1, sort_keys=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".alarm-limits.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dirfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
        self._beds = beds
