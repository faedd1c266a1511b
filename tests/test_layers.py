"""The dependency direction is enforced: import-linter's contracts in pyproject.toml
(pure math and core types at the bottom, no Flower there; privacy above them; clients and
strategies independent; only the composition root imports the engines)."""

from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def test_the_import_contracts_are_kept(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0
