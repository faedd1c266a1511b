"""fedcore.supernode: Flower's SuperNode with its poll and heartbeat intervals set. The
patched process is a subprocess, so this test process keeps Flower as shipped."""

import subprocess
import sys

import pytest

from fedcore import supernode


@pytest.mark.parametrize(
    ("poll", "heartbeat", "match"),
    [(0.0, 10.0, "poll interval"), (5.0, 10.0, "poll interval"), (0.2, 5.0, "heartbeat")],
)
def test_intervals_out_of_range_are_refused(poll, heartbeat, match):
    with pytest.raises(ValueError, match=match):
        supernode.set_intervals(poll, heartbeat)


def test_another_flower_is_refused(monkeypatch):
    """The attributes it sets are Flower 1.42's, not an API: another version must not run
    with whatever they have become."""
    monkeypatch.setattr(supernode, "version", lambda _: "1.43.0")
    with pytest.raises(SystemExit, match=r"Flower 1\.43\.0 is installed"):
        supernode.set_intervals(0.2, 10.0)


CHECK = """
import time
from fedcore.supernode import set_intervals
set_intervals(0.05, 12.0)
from flwr.supernode import fleet_http_connection as f, start_client_internal as s
from flwr.supercore import heartbeat as h
start = time.monotonic()
s.time.sleep(3)  # the SuperNode's idle wait
assert time.monotonic() - start < 1, time.monotonic() - start
assert s.time.monotonic() > 0  # the rest of the module's time is time's
assert f.HEARTBEAT_DEFAULT_INTERVAL == 12.0  # what the SuperLink is told to expect
assert h.HEARTBEAT_DEFAULT_INTERVAL == 12.0  # how often the node sends one
assert s.pull_objects.keywords == {"initial_backoff": 0.05, "backoff_cap": 1.0}
print("ok")
"""


def test_the_supernode_module_reads_the_set_intervals():
    done = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_bad_intervals_exit_with_a_usage_error():
    done = subprocess.run(
        [sys.executable, "-m", "fedcore.supernode", "--poll-interval", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "poll interval must be in (0, 3] s" in done.stderr
