"""The TOML the deployment launcher writes for Flower carries any path intact (no processes)."""

import tomllib
from pathlib import Path

import pytest
from flwr.common.config import parse_config_args

from fedcore.keys import DATA_PATH, NUM_PARTITIONS, PARTITION_ID, STATE_DIR
from simulations.deploy import (
    CONNECTION,
    DeploymentError,
    flwr_config_toml,
    node_config_arg,
)

AWKWARD = [
    Path('/tmp/a dir/with "quotes"/and\\backslash/ca.crt'),
    Path("/tmp/it's/a\ttab/and\nnewline/x.npz"),
    Path('/tmp/end\\"/\\'),
    Path('/tmp/a b=c key="v"/x'),
    Path("/tmp/plain/ca.crt"),
]


@pytest.mark.parametrize("path", AWKWARD, ids=repr)
def test_root_certificates_path_round_trips_through_the_flwr_config(path):
    parsed = tomllib.loads(flwr_config_toml(9092, path))
    assert parsed["superlink"]["default"] == CONNECTION
    assert parsed["superlink"][CONNECTION]["root-certificates"] == str(path)
    assert parsed["superlink"][CONNECTION]["address"].endswith(":9092")


def test_insecure_flwr_config_names_no_certificates():
    parsed = tomllib.loads(flwr_config_toml(9092, None))
    assert parsed["superlink"][CONNECTION] == {"address": "127.0.0.1:9092", "insecure": True}


@pytest.mark.parametrize("path", AWKWARD, ids=repr)
def test_node_config_paths_round_trip_through_flowers_parser(path):
    state = path.parent / "state 0"
    parsed = parse_config_args([node_config_arg(0, 5, path, state)])
    assert parsed == {
        PARTITION_ID: 0,
        NUM_PARTITIONS: 5,
        DATA_PATH: str(path),
        STATE_DIR: str(state),
    }


def test_a_path_that_is_not_valid_unicode_is_refused():
    undecodable = Path("/tmp/caf\udce9/ca.crt")  # b"caf\xe9" under surrogateescape
    with pytest.raises(DeploymentError, match="not valid Unicode"):
        flwr_config_toml(9092, undecodable)
