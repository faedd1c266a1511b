"""Where datasets live on disk: one precedence rule, computed without touching anything."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

ENV_VAR = "FEDCORE_DATA"


def _package_sibling_data_dir() -> Path | None:
    """``<checkout parent>/shared/data`` for a source checkout, found from this file, not cwd."""
    parents = Path(__file__).resolve().parents
    return parents[3] / "shared" / "data" if len(parents) > 3 else None


def pick_data_dir(
    data_dir: str | Path | None,
    *,
    environ: Mapping[str, str],
    cwd: Path,
    package_sibling: Path | None,
    home: Path,
) -> Path:
    """The data folder by precedence; every input is explicit, so this is easy to test.

    Order: ``data_dir`` > ``$FEDCORE_DATA`` > ``<cwd>/../shared/data`` if it is a folder >
    ``package_sibling`` if it is a folder > ``$XDG_CACHE_HOME/fedcore/data`` (default
    ``~/.cache/fedcore/data``). The last one need not exist: it is where downloads go.
    """
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    if environ.get(ENV_VAR):
        return Path(environ[ENV_VAR]).expanduser()
    beside_cwd = cwd.parent / "shared" / "data"
    if beside_cwd.is_dir():
        return beside_cwd
    if package_sibling is not None and package_sibling.is_dir():
        return package_sibling
    cache_root = environ.get("XDG_CACHE_HOME") or str(home / ".cache")
    return Path(cache_root).expanduser() / "fedcore" / "data"


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The folder datasets are read from (and downloaded into); creates nothing.

    See ``pick_data_dir`` for the precedence. Only reads the environment and checks
    whether candidate folders exist.
    """
    return pick_data_dir(
        data_dir,
        environ=os.environ,
        cwd=Path.cwd(),
        package_sibling=_package_sibling_data_dir(),
        home=Path.home(),
    )
