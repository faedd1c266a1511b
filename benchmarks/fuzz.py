"""Fuzzing the three input boundaries with many more examples than the test suite (issue 17).

The properties and input strategies are the fuzz tests' own (``tests/fuzz/``): scenario
settings and ``--set`` overrides, client replies (plain and secure aggregation), data
files. Each boundary runs ``--scale`` times its test's ``max_examples`` (20 by default),
generation only (no shrinking, no example database), and every failing input is counted
instead of stopping at the first: per boundary, the inputs tried and the failures found,
with the first few distinct failures (exception type and message).

    nice -n 10 .venv/bin/python benchmarks/fuzz.py             # 20x the suite
    .venv/bin/python benchmarks/fuzz.py --scale 2 --only data  # a quick look
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings

ROOT = Path(__file__).resolve().parents[1]
FUZZ = ROOT / "tests" / "fuzz"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"fuzz_{name}", FUZZ / f"test_fuzz_{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _capsys_free_cli(module, tmp: Path):
    """The command-line property without pytest's capsys: stderr captured by hand."""
    import contextlib
    import io

    blocker = tmp / "a-file"
    blocker.write_text("not a folder")

    class Capture:
        def __init__(self) -> None:
            self.err = io.StringIO()

        def readouterr(self):
            out = self.err.getvalue()
            self.err.seek(0)
            self.err.truncate()
            return type("Captured", (), {"err": out, "out": ""})

    capture = Capture()

    def check(args):
        with contextlib.redirect_stderr(capture.err):
            module.check_command_line(args, str(blocker / "run"), capture)

    return check


def boundaries(tmp: Path) -> dict[str, tuple[object, object, int]]:
    """name -> (input strategy, property, the suite's max_examples)."""
    import hypothesis.strategies as st

    config, replies, secagg, data = (_module(n) for n in ("config", "replies", "secagg", "data"))
    return {
        "config": (config.overrides(), config.check_overrides, config.MAX_EXAMPLES),
        "scenario files": (
            config.scenario_files(),
            config.check_scenario_file,
            config.MAX_FILE_EXAMPLES,
        ),
        "command line": (
            config.command_lines(),
            _capsys_free_cli(config, tmp),
            config.MAX_CLI_EXAMPLES,
        ),
        "replies": (replies.replies(), replies.check_reply, replies.MAX_EXAMPLES),
        "secagg messages": (st.data(), secagg.check_secagg, secagg.MAX_EXAMPLES),
        "data files": (data.data_files(), data.check_data_file, data.MAX_EXAMPLES),
    }


def run(name: str, strategy, check, examples: int) -> tuple[int, Counter, float]:
    """Inputs tried and the distinct failures (type: first line of the message) found."""
    tried, failures = [0], Counter()

    @settings(
        max_examples=examples,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def fuzz(case) -> None:
        tried[0] += 1
        try:
            check(case)
        except Exception as err:  # a failure of the property, counted, not raised
            where = traceback.extract_tb(err.__traceback__)[-1]
            first = (str(err).strip().splitlines() or [""])[0][:160]
            failures[
                f"{type(err).__name__} at {Path(where.filename).name}:{where.lineno}: {first}"
            ] += 1

    start = time.perf_counter()
    fuzz()
    return tried[0], failures, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=20, help="times the suite's max_examples")
    parser.add_argument("--only", help="one boundary (a substring of its name)")
    args = parser.parse_args()
    import logging
    import tempfile
    import warnings

    logging.disable(logging.WARNING)  # each rejected reply logs a warning
    warnings.simplefilter("ignore")  # numpy's on hostile values; the properties judge them
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for name, (strategy, check, suite) in boundaries(Path(tmp)).items():
            if args.only and args.only not in name:
                continue
            tried, failures, seconds = run(name, strategy, check, suite * args.scale)
            rows.append((name, tried, sum(failures.values()), seconds))
            print(f"{name}: {tried} inputs, {sum(failures.values())} failures, {seconds:.1f} s")
            for failure, count in failures.most_common(5):
                print(f"    {count} x {failure}")
            sys.stdout.flush()
    print("\n| boundary | inputs tried | failures found | seconds |\n|---|---|---|---|")
    for name, tried, failed, seconds in rows:
        print(f"| {name} | {tried} | {failed} | {seconds:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
