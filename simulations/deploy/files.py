"""What a local deployment writes before it starts anything: the nodes' data files, Flower's
connection config and each SuperNode's node config."""

from __future__ import annotations

from pathlib import Path

from fedcore.config import ConfigError, RunConfig
from fedcore.datasets.node import write_node_files
from fedcore.keys import DATA_PATH, NUM_PARTITIONS, PARTITION_ID, STATE_DIR
from simulations.deploy.errors import DeploymentError

CONNECTION = "fedcore-local"
_CLIENT_MODULES = (
    "flwr.clientapp",
    "flwr.supernode",
    "fedcore.apps",
    "clients.handlers",
    "opacus.accountants",
    "dp_accounting.rdp",
)
HOST = "127.0.0.1"


def app_dir() -> Path:
    """The folder holding fedcore's ``pyproject.toml`` (the Flower App ``flwr run`` ships)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise DeploymentError(f"no pyproject.toml in {root}: deploy from a source checkout")
    return root


def write_client_files(cfg: RunConfig, out: Path) -> list[Path]:
    """Each client's partition of ``cfg``'s data as its own file, ``out/client-<i>.npz``."""
    from fedcore.tasks import get_task  # torch: only once files are written

    task = get_task(cfg.task)
    if not task.node_files:
        raise ConfigError(f"task {cfg.task!r} does not read node data files")
    data = task.load_data(cfg)
    return write_node_files(
        [
            (c.x_train.numpy(), c.y_train.numpy(), c.x_test.numpy(), c.y_test.numpy())
            for c in data.clients
        ],
        out,
    )


def toml_string(value: str | Path) -> str:
    """``value`` as a TOML basic string, quotes included, that also survives Flower's
    ``--node-config`` parser.

    That parser cuts ``key="..."`` out of the command line with a regular expression that
    ends the value at the next ``"``, escaped or not, before TOML sees it; so ``"`` is written
    ``\\u0022``, ``\\`` as ``\\\\`` and every control character as ``\\uXXXX``, all of which TOML
    reads back as the original character. A lone surrogate (an undecodable byte in a POSIX
    path) has no TOML spelling and is refused.
    """
    text = str(value)
    out = []
    for c in text:
        if "\ud800" <= c <= "\udfff":
            raise DeploymentError(f"{text!r} is not valid Unicode: it cannot be written in TOML")
        if c == "\\":
            out.append("\\\\")
        elif c == '"' or c < " " or c == "\x7f":
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def flwr_config_toml(port: int, root_certificates: Path | None) -> str:
    """The ``flwr`` CLI's ``config.toml``: one SuperLink connection, :data:`CONNECTION`, at
    ``HOST:port``, over TLS trusting ``root_certificates`` (None: insecure)."""
    lines = [
        "[superlink]",
        f"default = {toml_string(CONNECTION)}",
        "",
        f"[superlink.{toml_string(CONNECTION)}]",
        f"address = {toml_string(f'{HOST}:{port}')}",
    ]
    if root_certificates is None:
        lines.append("insecure = true")
    else:
        lines.append(f"root-certificates = {toml_string(root_certificates)}")
    return "\n".join(lines) + "\n"


def node_config_arg(
    partition: int, partitions: int, data_path: Path | None, state_dir: Path
) -> str:
    """The ``--node-config`` of SuperNode ``partition``: its data file (None: it reads its
    partition of the run's dataset) and state folder (Flower parses ``key=value`` pairs
    separated by spaces, each value as TOML)."""
    data = "" if data_path is None else f"{DATA_PATH}={toml_string(data_path)} "
    return (
        f"{PARTITION_ID}={partition} {NUM_PARTITIONS}={partitions} "
        f"{data}{STATE_DIR}={toml_string(state_dir)}"
    )
