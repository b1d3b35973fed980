"""Resumable storage of unit results for :mod:`geo_rs.parallel`: one JSON file per unit.

``OUT/job.json`` holds the job's fingerprint and the settings behind it; ``OUT/parts/<unit id>.json``
holds one unit's result, its fingerprint, seed and time. Files are written atomically, so a killed
run leaves whole files only; a rerun reuses every stored unit of the same job and refuses a folder
that holds another job's results (one line naming the settings that differ) unless told to
overwrite.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import write_json
from .errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from .parallel_units import Unit

__all__ = ["ResultStore"]


class ResultStore:
    """One JSON file per finished unit under ``out_dir/parts``, plus ``out_dir/job.json``.

    Args:
        out_dir: the run folder (created).
        job: fingerprint of the settings shared by all units (model, parameters, base seed);
            a folder whose ``job.json`` holds another one is refused (one UserError line naming the
            settings that differ, from ``describe``) unless ``overwrite``.
        describe: JSON-able settings behind ``job`` (stored; used in that message).
        overwrite: delete the results already in the folder and start afresh.
    """

    def __init__(self, out_dir: str | Path, job: str, describe: dict | None = None,
                 overwrite: bool = False) -> None:
        self.out = Path(out_dir)
        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"output folder {self.out} exists and is not a folder")
        self.parts = self.out / "parts"
        self.job = job
        self.describe = describe or {}
        job_file = self.out / "job.json"
        if overwrite:
            self._clear()
        elif job_file.is_file():
            try:
                stored = json.loads(job_file.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                stored = None
            if not isinstance(stored, dict):
                raise UserError(f"{job_file}: unreadable; use --overwrite to start afresh")
            if stored.get("fingerprint") != job:
                raise UserError(f"{self.out} holds results of another job ({self._diff(stored)}); "
                                "use --overwrite to replace them, or another --out")
        elif self.parts.is_dir() and any(self.parts.glob("*.json")):
            raise UserError(f"{self.out}/parts holds results without a job.json (another program or "
                            "version); use --overwrite to replace them, or another --out")
        self.parts.mkdir(parents=True, exist_ok=True)
        write_json(job_file, {"fingerprint": job, "settings": self.describe}, indent=1)

    def _diff(self, stored: dict) -> str:
        old = stored.get("settings") or {}
        keys = sorted(k for k in set(old) | set(self.describe) if old.get(k) != self.describe.get(k))
        if not keys:
            return "different fingerprint"
        shown = [f"{k}: {old.get(k)!r} then, {self.describe.get(k)!r} now" for k in keys[:3]]
        return "; ".join(shown) + (f"; and {len(keys) - 3} more" if len(keys) > 3 else "")

    def _clear(self) -> None:
        # Only what a store writes: never a recursive delete of a user's folder.
        if self.parts.is_dir():
            for p in self.parts.glob("*.json"):
                p.unlink()
        (self.out / "job.json").unlink(missing_ok=True)

    def path(self, unit: Unit) -> Path:
        return self.parts / f"{unit.id}.json"

    def load(self, unit: Unit) -> tuple[dict, float] | None:
        """``(result, seconds)`` of a finished unit, None if absent or unreadable (recomputed).

        Raises UserError if the stored unit was computed from other inputs (fingerprint or seed).
        """
        path = self.path(unit)
        if not path.is_file():
            return None
        try:
            part = json.loads(path.read_text())
            result, seconds = part["result"], float(part["seconds"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
            print(f"warning: {path} is unreadable; computing that unit again", file=sys.stderr)
            return None
        if part.get("job") != self.job or part.get("fingerprint") != unit.fingerprint \
                or part.get("seed") != unit.seed:
            raise UserError(f"{path} was computed from other inputs than unit {unit.id} of this job; "
                            "use --overwrite to replace the results in this folder, or another --out")
        return result, seconds

    def save(self, unit: Unit, result: dict, seconds: float) -> None:
        write_json(self.path(unit), {"job": self.job, "unit": unit.id, "fingerprint": unit.fingerprint,
                                     "seed": unit.seed, "seconds": seconds, "result": result})
