"""resolve_data_dir precedence: argument, FEDCORE_DATA, ../shared/data, package sibling, cache."""

from pathlib import Path

import pytest

import fedcore
from fedcore.datasets import resolve_data_dir
from fedcore.datasets.paths import ENV_VAR, pick_data_dir


def _pick(data_dir=None, *, environ=None, cwd, package_sibling=None, home=Path("/nohome")):
    return pick_data_dir(
        data_dir, environ=environ or {}, cwd=cwd, package_sibling=package_sibling, home=home
    )


def test_explicit_argument_beats_environment(tmp_path):
    chosen = _pick(tmp_path / "arg", environ={ENV_VAR: str(tmp_path / "env")}, cwd=tmp_path)
    assert chosen == tmp_path / "arg"


def test_environment_beats_folder_beside_cwd(tmp_path):
    (tmp_path / "shared" / "data").mkdir(parents=True)
    chosen = _pick(environ={ENV_VAR: str(tmp_path / "env")}, cwd=tmp_path / "repo")
    assert chosen == tmp_path / "env"


def test_empty_environment_variable_is_ignored(tmp_path):
    chosen = _pick(environ={ENV_VAR: "", "XDG_CACHE_HOME": str(tmp_path)}, cwd=tmp_path / "r")
    assert chosen == tmp_path / "fedcore" / "data"


def test_folder_beside_cwd_beats_package_sibling(tmp_path):
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "pkg").mkdir()
    chosen = _pick(cwd=tmp_path / "repo", package_sibling=tmp_path / "pkg")
    assert chosen == tmp_path / "shared" / "data"


def test_package_sibling_used_when_cwd_has_none(tmp_path):
    (tmp_path / "pkg").mkdir()
    chosen = _pick(cwd=tmp_path / "a" / "b", package_sibling=tmp_path / "pkg")
    assert chosen == tmp_path / "pkg"


def test_cache_respects_xdg_cache_home(tmp_path):
    chosen = _pick(
        environ={"XDG_CACHE_HOME": str(tmp_path / "xdg")},
        cwd=tmp_path / "a" / "b",
        package_sibling=tmp_path / "absent",
    )
    assert chosen == tmp_path / "xdg" / "fedcore" / "data"


def test_cache_defaults_to_home_dot_cache(tmp_path):
    chosen = _pick(cwd=tmp_path / "a" / "b", home=tmp_path / "home")
    assert chosen == tmp_path / "home" / ".cache" / "fedcore" / "data"


def test_resolve_reads_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "from-env"))
    assert resolve_data_dir() == tmp_path / "from-env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"


def test_resolve_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    deep = tmp_path / "x" / "y"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    resolve_data_dir()
    assert not (tmp_path / "xdg").exists()


def test_resolve_from_repo_root_finds_shared_data(monkeypatch):
    repo = Path(fedcore.__file__).resolve().parents[1]
    shared = repo.parent / "shared" / "data"
    if not shared.is_dir():
        pytest.skip(f"no shared data folder at {shared}")
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(repo)
    assert resolve_data_dir().resolve() == shared.resolve()
