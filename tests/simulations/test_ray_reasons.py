"""A client failure on the Ray engine is stored as one plain line, as the in-process engine
writes it, not as Ray's coloured traceback."""

import logging

import pytest

from simulations.engines.ray_reasons import (
    OneLineFailures,
    one_line_failures,
    one_line_reason,
    plain_failures,
)

# What Flower's Ray backend reported for a client that raised InjectedFault (flwr 1.x, Ray 2),
# as stored in metrics.jsonl before (the traceback is cut short here; its shape is kept).
ACTOR = (
    "\x1b[36mray::ClientAppActor.run()\x1b[39m (pid=22730, ip=192.0.2.2, actor_id=a25e, "
    "repr=<flwr.simulation.ray_transport.ray_actor.ClientAppActor object at 0x7fd398331ed0>)"
)
RAY = (
    "<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'"
    + ACTOR
    + "\n                  ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
    '  File "/work/main/simulations/faults.py", line 45, in crash_mod\n'
    '    raise InjectedFault(f"client {pid} crashed in round {server_round} (injected)")\n'
    "simulations.faults.InjectedFault: client 6 crashed in round 1 (injected)\n\n"
    "The above exception was the direct cause of the following exception:\n\n" + ACTOR + "\n"
    '  File "/x/flwr/simulation/ray_transport/ray_actor.py", line 65, in run\n'
    "    raise ClientAppException(str(ex)) from ex\n"
    "flwr.clientapp.client_app.ClientAppException: \n"
    "Exception ClientAppException occurred. Message: client 6 crashed in round 1 (injected)'>"
)
IN_PROCESS = "InjectedFault: client 6 crashed in round 1 (injected)"


def test_a_ray_failure_becomes_the_clients_exception_in_one_line():
    assert one_line_reason(f"node 52792: {RAY}") == f"node 52792: {IN_PROCESS}"


def test_a_reason_quoting_a_ray_failure_keeps_its_own_words():
    reason = f"1 of 10 sampled clients failed (first: node 5: {RAY})"
    assert (
        one_line_reason(reason) == f"1 of 10 sampled clients failed (first: node 5: {IN_PROCESS})"
    )


def test_a_plain_reason_is_kept():
    assert one_line_reason(f"node 3: {IN_PROCESS}") == f"node 3: {IN_PROCESS}"


def test_a_ray_failure_without_a_traceback_keeps_its_words_on_one_line():
    reason = "<class 'ray.exceptions.ActorDiedError'>:<'\x1b[31mThe actor died\x1b[0m\n  early'>"
    assert one_line_reason(reason) == "ActorDiedError: The actor died early"


def test_a_rounds_failures_and_reason_are_made_plain_and_nothing_else_changes():
    record = {
        "round": 1,
        "status": "aborted",
        "train-failures": [f"node 1: {RAY}"],
        "eval-failures": [f"node 2: {RAY}"],
        "reason": f"1 of 1 sampled clients failed (first: node 1: {RAY})",
        "train": {"loss": 1.0},
    }
    plain = plain_failures(record)
    assert plain["train-failures"] == [f"node 1: {IN_PROCESS}"]
    assert plain["eval-failures"] == [f"node 2: {IN_PROCESS}"]
    assert "\n" not in plain["reason"] and "\x1b" not in plain["reason"]
    assert {k: v for k, v in plain.items() if "fail" not in k and k != "reason"} == {
        "round": 1,
        "status": "aborted",
        "train": {"loss": 1.0},
    }


def _log_record(level, pathname, msg, *args):
    return logging.LogRecord("flwr", level, pathname, 1, msg, args, None)


@pytest.mark.parametrize("module", ["vce/vce_api.py", "vce/backend/raybackend.py"])
def test_flowers_ray_backend_errors_are_dropped_while_the_engine_runs(module):
    assert not OneLineFailures().filter(_log_record(logging.ERROR, f"/x/flwr/{module}", RAY))
    assert OneLineFailures().filter(_log_record(logging.ERROR, "/x/flwr/other.py", "kept"))


def test_flowers_notice_that_run_simulation_is_deprecated_is_dropped():
    notice = "DEPRECATED FEATURE: %s"
    name = "The `run_simulation` function is deprecated and will be removed"
    assert not OneLineFailures().filter(_log_record(logging.WARNING, "/x/logger.py", notice, name))


def test_the_strategys_rejected_reply_warning_becomes_one_line():
    record = _log_record(
        logging.WARNING, "/x/cohort.py", "aggregate_train: rejected reply from %s", f"node 1: {RAY}"
    )
    assert OneLineFailures().filter(record)
    assert record.getMessage() == f"aggregate_train: rejected reply from node 1: {IN_PROCESS}"


def test_the_filter_is_on_flowers_logger_only_while_the_engine_runs():
    flower = logging.getLogger("flwr")
    before = list(flower.filters)
    with one_line_failures():
        assert any(isinstance(f, OneLineFailures) for f in flower.filters)
    assert flower.filters == before
