"""The other way: a RunConfig as nested tables, TOML, Flower's flat run config, and the
configuration reference."""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

from fedcore.config.fields import _flatten, _key
from fedcore.config.schema import RunConfig
from fedcore.config.sections import builtin_options


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict with TOML-style keys (for the resolved config written to the run
    dir); a RunConfig's task tables come after its core sections."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        if isinstance(cfg, RunConfig) and f.name == "sections":
            out.update((name, to_dict(table)) for name, table in cfg.sections)
            continue
        v = getattr(cfg, f.name)
        out[_key(f.name)] = (
            to_dict(v) if dataclasses.is_dataclass(v) else (list(v) if isinstance(v, tuple) else v)
        )
    return out


def _scalar(v: Any) -> bool | int | float | str:
    """A value as Flower's run config holds it: a list as a comma-separated string."""
    return ",".join(map(str, v)) if isinstance(v, list | tuple) else v


def _flat_scalars(nested: dict[str, Any]) -> dict[str, bool | int | float | str]:
    return {k: _scalar(v) for k, v in _flatten(nested).items()}


def to_run_config(cfg: RunConfig) -> dict[str, bool | int | float | str]:
    """Flat scalar dict for Flower's run config (lists become comma-separated strings): the
    run's own keys, which is what a deployed run of ``cfg`` is given."""
    return _flat_scalars(to_dict(cfg))


def reference_run_config() -> dict[str, bool | int | float | str]:
    """Every key a built-in run reads, at its default: the core sections and every built-in
    task's tables. This is ``[tool.flwr.app.config]`` in ``pyproject.toml`` (a test keeps
    it current), so ``flwr run --run-config`` can override any of them."""
    flat = to_run_config(RunConfig())
    for key, option in builtin_options().items():
        flat.setdefault(key, _scalar(option.default))
    return flat


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


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
    """(key, default, description) for every setting: the configuration reference (the core
    sections, then the built-in tasks' tables, each key once with the tasks that read it)."""
    rows = []

    def row(key: str, f: dataclasses.Field, doc: str) -> None:
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        choices = f.metadata.get("choices")
        extra = f", or {f.metadata['or'][1]}" if f.metadata.get("or") else ""
        doc += f" (one of: {', '.join(choices)}{extra})" if choices else ""
        rows.append((key, _toml_value(_plain(default)), doc))

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if cls is RunConfig and f.name == "sections":
                continue
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], prefix + _key(f.name) + ".")
            else:
                row(prefix + _key(f.name), f, f.metadata["doc"])

    walk(RunConfig, "")
    for key, option in builtin_options().items():
        row(key, option.field, "; ".join(option.docs) + f" [tasks: {', '.join(option.tasks)}]")
    return rows


def reference_table() -> str:
    """The configuration reference as a Markdown table (the README's, kept in step by a test)."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    lines += [f"| `{key}` | `{default}` | {doc} |" for key, default, doc in describe()]
    return "\n".join(lines)
