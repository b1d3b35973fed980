"""One config schema for every YAML config and CLI override in geo-rs.

A config is a :class:`Schema` (a pydantic model, strict: ``half_res: "no"`` is not a bool,
``steps: 5.7`` is not an int, unknown keys are errors). :func:`load_config` reads a YAML file,
applies command-line overrides (dotted keys, ``{"train.epochs": 3}``) and validates; every failure
is one :class:`UserError` line naming the file, the key, what was expected and what was got.

Declare fields with :func:`setting`, which records the help text and the unit so ``--help`` texts and
the README can show them::

    class TrainConfig(Schema):
        steps: int = setting(2000, "optimisation steps", ge=1)
        lr: float = setting(0.1, "learning rate of the density grid", gt=0)

    cfg = load_config(TrainConfig, "configs/x.yaml", {"steps": 500})

YAML note: PyYAML reads ``1e-3`` (no dot) as a *string*; the loader here reads it as the float a
user means, so ``lr: 1e-3`` works.

:func:`check_memory` refuses an allocation that cannot fit before anything is allocated (a
``grid_res: 100000`` typo would otherwise try to allocate petabytes).
"""
from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import UserError

__all__ = [
    "Schema",
    "check_memory",
    "field_help",
    "format_validation_error",
    "load_config",
    "read_yaml",
    "setting",
    "validate_config",
]

S = TypeVar("S", bound="Schema")


class Schema(BaseModel):
    """Base of every config: strict types, unknown keys refused, assignments validated."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True,
                              protected_namespaces=())

    def to_dict(self) -> dict:
        """Plain nested dict (YAML/JSON-ready)."""
        return self.model_dump(mode="json")


def setting(default: Any, help: str, unit: str | None = None, **constraints: Any) -> Any:
    """A config field with its help text, unit and constraints (``ge``, ``gt``, ``le``, ``lt``, …).

    A mutable default (list, dict, a nested Schema) is copied for every instance.
    """
    extra = {"unit": unit} if unit else None
    if isinstance(default, list | dict | BaseModel):
        return Field(default_factory=lambda d=default: copy.deepcopy(d), description=help,
                     json_schema_extra=extra, **constraints)
    return Field(default, description=help, json_schema_extra=extra, **constraints)


def field_help(schema: type[Schema], name: str) -> str:
    """``"<help> (<unit>; default <value>)"`` for a field: one source for config docs and ``--help``."""
    info = schema.model_fields[name]
    unit = (info.json_schema_extra or {}).get("unit") if isinstance(info.json_schema_extra, dict) else None
    default = info.get_default(call_default_factory=True)
    parts = [p for p in (unit, f"default {default}") if p]
    return f"{info.description or name} ({'; '.join(parts)})"


# -- YAML ----------------------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` / ``5E+4`` (no dot) as floats, as YAML 1.2 does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.\d*)?[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def read_yaml(path: str | Path) -> dict:
    """A YAML file's top-level mapping; a missing file, bad YAML or a non-mapping is one UserError."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{p}: expected a YAML config file, got a folder")
    if not p.is_file():
        raise UserError(f"config file not found: {p}")
    try:
        values = yaml.load(p.read_text(), Loader=_Loader)
    except UnicodeDecodeError:
        raise UserError(f"{p}: not a text file (expected a YAML config)") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{p}: malformed YAML ({' '.join(str(exc).split())})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        kind = type(values).__name__
        raise UserError(f"{p}: expected a mapping of config keys at the top level, got {kind}")
    return values


# -- validation ----------------------------------------------------------------------------------
def _apply_override(values: dict, dotted: str, value: Any) -> None:
    node = values
    keys = dotted.split(".")
    for k in keys[:-1]:
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        elif not isinstance(child, dict):
            raise UserError(f"cannot override '{dotted}': '{k}' is not a mapping")
        node = child
    node[keys[-1]] = value


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_validation_error(exc: ValidationError, where: str,
                            overridden: Mapping[str, str] | None = None) -> str:
    """The first problem of a pydantic ``ValidationError`` as one line naming the key and the value.

    ``overridden`` maps dotted keys that came from the command line to the flag that set them, so the
    message names ``--steps`` instead of the file when the bad value was typed there.
    """
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required key is missing"
    got = "" if err["type"] in ("extra_forbidden", "missing") else f" (got {_short(err.get('input'))})"
    more = len(exc.errors()) - 1
    tail = f"; and {more} more problem(s)" if more > 0 else ""
    flag = (overridden or {}).get(key)
    origin = f"{flag} (command line)" if flag else f"{where}: key '{key}'"
    if err["type"] == "value_error" and not err["loc"]:
        return f"{where}: {msg.removeprefix('Value error, ')}{tail}"
    return f"{origin}: {msg.removeprefix('Value error, ')}{got}{tail}"


def validate_config(schema: type[S], values: Mapping[str, Any], where: str = "config",
                    overridden: Mapping[str, str] | None = None) -> S:
    """``schema`` built from ``values``; any problem is one UserError naming ``where`` and the key."""
    try:
        return schema.model_validate(dict(values))
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, where, overridden)) from None


def load_config(schema: type[S], path: str | Path | None = None,
                overrides: Mapping[str, Any] | None = None,
                flags: Mapping[str, str] | None = None) -> S:
    """Read ``path`` (optional), apply ``overrides`` (dotted keys; None values are skipped) and validate.

    Args:
        schema: the config class.
        path: a YAML file, or None for the defaults.
        overrides: ``{"train.epochs": 3}`` — typically the CLI options the user gave.
        flags: ``{"train.epochs": "--epochs"}`` so an error names the flag the user typed.
    """
    values = read_yaml(path) if path is not None else {}
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    for key, value in given.items():
        _apply_override(values, key, value)
    overridden = {k: (flags or {}).get(k, f"--{k.replace('_', '-')}") for k in given}
    return validate_config(schema, values, str(path) if path is not None else "config", overridden)


# -- memory --------------------------------------------------------------------------------------
def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 16 * 2**30


def check_memory(nbytes: float, what: str, limit_bytes: float | None = None) -> None:
    """Refuse (one UserError) an allocation estimated at ``nbytes`` that exceeds the limit.

    The default limit is 80 % of this machine's physical memory. ``what`` names the key that asked
    for it, e.g. ``"grid_res 100000 (a 100000³ float32 grid)"``.
    """
    limit = 0.8 * _physical_memory() if limit_bytes is None else float(limit_bytes)
    if nbytes > limit:
        raise UserError(
            f"{what} needs about {_human(nbytes)} of memory, more than the {_human(limit)} available"
        )


def _human(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(nbytes) < 1024 or unit == "PiB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1024
    return f"{nbytes:.1f} EiB"  # pragma: no cover
