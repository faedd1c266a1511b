"""The other way: a RunConfig as nested tables, TOML, Flower's flat run config, and the
configuration reference."""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

from fedcore.config.schema import (
    RunConfig,
    _flatten,
    _key,
)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict with TOML-style keys (for the resolved config written to the run dir)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[_key(f.name)] = (
            to_dict(v) if dataclasses.is_dataclass(v) else (list(v) if isinstance(v, tuple) else v)
        )
    return out


def to_run_config(cfg: RunConfig) -> dict[str, bool | int | float | str]:
    """Flat scalar dict for Flower's run config (lists become comma-separated strings)."""
    return {
        k: ",".join(map(str, v)) if isinstance(v, list) else v
        for k, v in _flatten(to_dict(cfg)).items()
    }


def to_toml(cfg: RunConfig) -> str:
    """The resolved config as a scenario file that reproduces the run."""
    top, tables = [], []
    for k, v in to_dict(cfg).items():
        if isinstance(v, dict):
            tables.append(
                f"\n[{k}]\n" + "".join(f"{kk} = {_toml_value(vv)}\n" for kk, vv in v.items())
            )
        else:
            top.append(f"{k} = {_toml_value(v)}\n")
    return "".join(top) + "".join(tables)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        # JSON string escapes are valid TOML basic-string escapes; TOML also forbids raw DEL.
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def describe() -> list[tuple[str, str, str]]:
    """(key, default, description) for every setting: the configuration reference."""
    rows = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            if dataclasses.is_dataclass(hint):
                walk(hint, prefix + _key(f.name) + ".")
            else:
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                choices = f.metadata.get("choices")
                extra = f", or {f.metadata['or'][1]}" if f.metadata.get("or") else ""
                doc = f.metadata["doc"] + (
                    f" (one of: {', '.join(choices)}{extra})" if choices else ""
                )
                rows.append(
                    (
                        prefix + _key(f.name),
                        _toml_value(list(default) if isinstance(default, tuple) else default),
                        doc,
                    )
                )

    walk(RunConfig, "")
    return rows


def reference_table() -> str:
    """The configuration reference as a Markdown table (the README's, kept in step by a test)."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    lines += [f"| `{key}` | `{default}` | {doc} |" for key, default, doc in describe()]
    return "\n".join(lines)
