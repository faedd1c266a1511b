"""The machinery of settings: a field that carries its rules and doc, and the error."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from typing import Any


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key and what is allowed."""


def option(
    default: Any,
    *,
    choices: tuple = (),
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    doc: str = "",
    or_pattern: tuple[str, str] | None = None,
) -> Any:
    """A dataclass field carrying its validation rules and a one-line description.

    ``or_pattern`` is ``(regex, description)``: a string matching it is allowed besides the
    ``choices`` (a task named by its import path)."""
    meta = {"choices": choices, "ge": ge, "gt": gt, "le": le, "doc": doc, "or": or_pattern}
    if isinstance(default, list | tuple):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


def _key(name: str) -> str:
    return name.replace("_", "-")


def _flatten(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in nested.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out
