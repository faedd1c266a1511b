"""Parsing at the boundary: TOML tables, dotted overrides and Flower's flat run config become a
validated :class:`~fedcore.config.schema.RunConfig`, or a ConfigError naming the key."""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedcore.config.fields import ConfigError, _flatten, _key
from fedcore.config.rules import _check_combination
from fedcore.config.schema import RunConfig
from fedcore.config.sections import builtin_options, sections_of

# Python's parsers recurse per level of nesting; a setting is at most a table of lists
TOO_DEEP = "values or tables nested too deeply (no setting nests more than two levels)"


def _allowed(f: dataclasses.Field, hint: Any) -> str:
    m = f.metadata
    if m.get("choices"):
        extra = f", or {m['or'][1]}" if m.get("or") else ""
        return "one of " + ", ".join(repr(c) for c in m["choices"]) + extra
    bounds = [
        f">= {m['ge']}" if m.get("ge") is not None else "",
        f"> {m['gt']}" if m.get("gt") is not None else "",
        f"<= {m['le']}" if m.get("le") is not None else "",
    ]
    kind = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        hint, "a non-empty list of integers >= 1"
    )
    return " ".join([kind, *[b for b in bounds if b]])


def _coerce(value: Any, hint: Any, key: str, allowed: str) -> Any:
    """Convert a transported value to the field's type, refusing lossy conversions."""
    bad = ConfigError(f"{key} = {value!r} is invalid: expected {allowed}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise bad
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise bad
        try:
            return int(value)
        except ValueError:
            raise bad from None
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise bad
        try:
            number = float(value)
        except ValueError:
            raise bad from None
        if not math.isfinite(number):
            raise bad
        return number
    if hint is str:
        if not isinstance(value, str):
            raise bad
        return value
    # tuple[int, ...]: a TOML list, or "200,200" from a flat run config
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise bad
    try:
        return tuple(
            _coerce(v.strip() if isinstance(v, str) else v, int, key, allowed) for v in items
        )
    except ConfigError:
        raise bad from None


def _check_range(value: Any, f: dataclasses.Field, key: str, allowed: str) -> None:
    m = f.metadata
    if isinstance(value, tuple):
        ok = all(v >= 1 for v in value)
    elif isinstance(value, bool | str):
        ok = not m.get("choices") or value in m["choices"]
        ok = ok or bool(m.get("or") and re.fullmatch(m["or"][0], str(value)))
    else:
        ok = (
            (m.get("ge") is None or value >= m["ge"])
            and (m.get("gt") is None or value > m["gt"])
            and (m.get("le") is None or value <= m["le"])
        )
    if not ok:
        shown = list(value) if isinstance(value, tuple) else value
        raise ConfigError(f"{key} = {shown!r} is out of range: expected {allowed}")


def _shown(key: str) -> str:
    """``key`` for a message: as typed, or quoted and escaped if it holds a line break or
    another unprintable character (the CLI's error is one line)."""
    return key if key.isprintable() else repr(key)


def _build(cls: type, raw: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {_key(f.name): f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        where = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
        raise ConfigError(
            f"unknown key {_shown(prefix + unknown[0])} in {where}; allowed: "
            f"{', '.join(sorted(fields))}"
        )
    kwargs = {}
    for k, v in raw.items():
        f, hint, key = fields[k], hints[fields[k].name], prefix + k
        if dataclasses.is_dataclass(hint):
            if not isinstance(v, Mapping):
                raise ConfigError(f"{key} must be a table of settings, got {v!r}")
            kwargs[f.name] = _build(hint, v, key + ".")
            continue
        kwargs[f.name] = _value(v, f, hint, key)
    return cls(**kwargs)


def _value(v: Any, f: dataclasses.Field, hint: Any, key: str) -> Any:
    """``v`` as the field's type, within its rules."""
    if isinstance(hint, types.GenericAlias):  # tuple[int, ...]
        hint = tuple
    allowed = _allowed(f, hint)
    value = _coerce(v, hint, key, allowed)
    _check_range(value, f, key, allowed)
    return value


def _sections(task: str, tables: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The task's own tables from ``tables`` (the top-level tables that are not core
    sections). A key of another task's table is accepted only at its default, which is
    what Flower's run config, holding every built-in key, passes for it."""
    declared = sections_of(task)
    out = []
    for name, raw in tables.items():
        own = declared.get(name)
        mine = {_key(f.name) for f in dataclasses.fields(own)} if own else set()
        for k in sorted(set(raw) - mine):  # the first in order, every time
            _foreign(task, f"{name}.{k}", raw[k], mine, name)
        if own is not None:
            out.append((name, _build(own, {k: raw[k] for k in raw if k in mine}, name + ".")))
    return tuple(out)


def _foreign(task: str, key: str, value: Any, mine: set[str], table: str) -> None:
    """Accept ``key`` (not in the task's tables) only at a built-in task's default."""
    option = builtin_options().get(key)
    if option is None:
        owned = ", ".join(f"{table}.{k}" for k in sorted(mine))
        raise ConfigError(
            f"unknown key {_shown(key)}; task {task!r} reads "
            + (f"{owned} in [{table}]" if owned else f"no table [{_shown(table)}]")
        )
    if _value(value, option.field, option.hint, key) != option.default:
        raise ConfigError(
            f"{key} is a setting of task {' and '.join(map(repr, option.tasks))}; "
            f"task {task!r} does not read it (set task, or remove the key)"
        )


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Turn ``{"train.lr": 0.1}`` into ``{"train": {"lr": 0.1}}``."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{_shown(key)} conflicts with the scalar setting {_shown(p)}")
        node[parts[-1]] = value
    return out


def parse_config(raw: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Validate a nested or flat mapping (plus dotted overrides) into a :class:`RunConfig`:
    the core sections, the task's own tables (:mod:`fedcore.config.sections`) and the rules
    between settings. The task's own rules (its ``check_config``) need the task itself, so
    :func:`fedcore.tasks.checked_task` runs them, before any run directory or round."""
    try:
        merged = _nest({**_flatten(raw), **_flatten(overrides or {})})
    except RecursionError:
        raise ConfigError(TOO_DEEP) from None
    core = {_key(f.name) for f in dataclasses.fields(RunConfig)} - {"sections"}
    tables = {k: v for k, v in merged.items() if k not in core and isinstance(v, Mapping)}
    cfg = _build(RunConfig, {k: v for k, v in merged.items() if k not in tables}, "")
    cfg = dataclasses.replace(cfg, sections=_sections(cfg.task, tables))
    _check_combination(cfg)
    return cfg


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``key=value`` from the command line; the value is read as TOML if it can be."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {text!r}")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    except RecursionError:
        raise ConfigError(f"--set {key.strip()}: {TOO_DEEP}") from None
    return key.strip(), parsed


def load_scenario(path: str | Path, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Read a scenario TOML file and apply overrides."""
    path = Path(path)
    try:
        # utf-8-sig: a BOM (Windows editors write one) carries nothing in UTF-8; skipped
        raw = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise ConfigError(f"scenario file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"scenario file {path} cannot be read: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"scenario file {path} is not valid TOML: {err}") from None
    except RecursionError:
        raise ConfigError(f"scenario file {path}: {TOO_DEEP}") from None
    return parse_config(raw, overrides)
