"""A task's own configuration tables: declared by the task, parsed here with the rest.

A :class:`~fedcore.tasks.Task` or :class:`~fedcore.tasks.algorithm.Algorithm` lists its
tables in ``sections``: ``{"graph": GraphOptions}``, each a frozen dataclass whose fields are
:func:`~fedcore.config.schema.option`\\ s. The run's config then holds one instance per table
(``cfg.graph.mode``), validated like the core sections. The core knows no task's table: it
finds the task by name (the registry below maps a built-in name to its import path, and
``"package.module:NAME"`` names a user's own) and reads what the task declares.

Flower's flat run config carries one default per key, so the built-in tasks' tables form one
reference (:func:`builtin_options`): a key two tasks share has one default, and a key of
another task's table is accepted only at that default (a Flower run config holds them all).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import sys
import typing
from collections.abc import Mapping
from typing import Any

from fedcore.config.fields import ConfigError, _key

# name -> the module defining it, as "module" (its ``TASK``) or "module:NAME"; imported on
# first use, so nothing loads at import time
BUILTIN_TASKS: Mapping[str, str] = {
    "mlp": "fedcore.tasks.mlp",
    "gcn": "fedcore.tasks.gcn",
    "mf": "fedcore.tasks.mf",
    "fedsgd": "fedcore.tasks.fedsgd",
    "kmeans": "fedcore.tasks.kmeans.algorithm",
    "bayesnet": "fedcore.tasks.bayesnet.algorithm",
    "linear": "fedcore.tasks.linear.algorithm",
}
# the built-in tasks' tables, by task name, in a module that imports no torch (a test
# checks that each task declares these)
BUILTIN_SECTIONS = "fedcore.tasks.options:SECTIONS"


def _module(name: str):
    """The imported module ``name`` (``sys.modules`` first: this runs per message, and the
    import machinery takes a lock)."""
    module = sys.modules.get(name)
    return module if module is not None else importlib.import_module(name)


def load_task(name: str) -> object:
    """The object a task name refers to: a built-in's, or ``"package.module:NAME"`` in the
    user's code (imported on first use). ConfigError if it cannot be imported or is
    missing; whether it is a Task or an Algorithm is for :func:`fedcore.tasks.get_task` to
    say (this layer knows neither)."""
    if ":" not in name:
        try:
            module_name, _, attr = BUILTIN_TASKS[name].partition(":")
        except KeyError:
            raise ConfigError(
                f"unknown task {name!r}; available: {', '.join(BUILTIN_TASKS)}, or "
                "'package.module:NAME' for a Task of your own"
            ) from None
        return getattr(_module(module_name), attr or "TASK")
    module_name, _, attr = name.partition(":")
    try:
        module = _module(module_name)
    except ImportError as err:
        raise ConfigError(
            f"task = {name!r}: cannot import {module_name!r} ({err}); is it on the Python "
            "path of every process (PYTHONPATH, or an installed package)?"
        ) from None
    task = getattr(module, attr, None)
    if not hasattr(task, "load_data"):  # every Task and Algorithm has it
        raise ConfigError(
            f"task = {name!r}: {module_name}.{attr} is "
            f"{'missing' if task is None else type(task).__name__}, not a fedcore Task or Algorithm"
        )
    return task


def sections_of(task: str) -> dict[str, type]:
    """The tables task ``task`` declares: name -> frozen dataclass. A built-in's are read
    from :data:`BUILTIN_SECTIONS` without importing the task (nor torch): every process
    parses the run config, and a deployed node starts one per message."""
    if ":" in task:
        declared = getattr(load_task(task), "sections", None) or {}
    elif task in BUILTIN_TASKS:
        module_name, _, attr = BUILTIN_SECTIONS.partition(":")
        declared = getattr(_module(module_name), attr)[task]
    else:
        load_task(task)  # raises: unknown task
    for name, cls in declared.items():
        if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
            raise ConfigError(f"task {task!r}: its section {name!r} is not a dataclass type")
    return dict(declared)


@dataclasses.dataclass(frozen=True)
class BuiltinOption:
    """One key of the built-in tasks' tables: its field (rules, default), the tasks that
    read it and their docs for it (tasks sharing a key may word it differently)."""

    field: dataclasses.Field
    hint: Any
    tasks: tuple[str, ...]
    docs: tuple[str, ...]

    @property
    def default(self) -> Any:
        f = self.field
        return f.default if f.default is not dataclasses.MISSING else f.default_factory()


@functools.cache
def builtin_options() -> dict[str, BuiltinOption]:
    """Every key of the built-in tasks' tables (``"graph.mode"``), in declaration order,
    with the tasks that read it. Raises if two tasks give one key two defaults or types:
    Flower's run config holds one. Cached: the built-in tasks do not change in a process."""
    out: dict[str, BuiltinOption] = {}
    for task in BUILTIN_TASKS:
        for name, cls in sections_of(task).items():
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                key = f"{name}.{_key(f.name)}"
                new = BuiltinOption(f, hints[f.name], (task,), (f.metadata["doc"],))
                old = out.get(key)
                if old is None:
                    out[key] = new
                    continue
                if (old.default, old.hint) != (new.default, new.hint):
                    raise ConfigError(
                        f"{key}: task {task!r} declares default {new.default!r} "
                        f"({new.hint}), task {old.tasks[0]!r} {old.default!r} ({old.hint}); "
                        "a key shared by built-in tasks needs one default"
                    )
                docs = tuple(dict.fromkeys((*old.docs, *new.docs)))
                out[key] = dataclasses.replace(old, tasks=(*old.tasks, task), docs=docs)
    return out
