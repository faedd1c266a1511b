"""Local multi-process deployment: a SuperLink and N SuperNodes on loopback, run with ``flwr run``.

The same fedcore app that runs in simulation runs here on Flower's deployment runtime, as
separate processes that talk over TLS (on by default) with SuperNode authentication. Each
SuperNode reads only its own data file (``fedcore.datasets.node``) and keeps its privacy
ledger in its own state folder, so a node that is killed and restarted resumes its
accounting. :class:`LocalDeployment` starts everything in a work folder and stops every
process it started when it exits, also on Ctrl-C or an error::

    with LocalDeployment(Path("deploy"), cfg, nodes=3) as deployment:
        run_dir = deployment.run(out=Path("runs/deployed"))

Flower 1.42 serves the Fleet, Control and ServerAppIo APIs on one port. Runtime dependency
installation is disabled (it would run ``uv sync`` against the internet); the processes use
this environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fedcore.certs import write_node_keys, write_server_certs
from fedcore.config import ConfigError, RunConfig, to_run_config
from fedcore.config.export import _toml_value
from fedcore.datasets.node import write_node_files
from fedcore.keys import DATA_PATH, NUM_PARTITIONS, PARTITION_ID, STATE_DIR
from fedcore.server import RunFailed

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


class DeploymentError(RuntimeError):
    """A process of the deployment failed to start, or the run did not complete."""


def app_dir() -> Path:
    """The folder holding fedcore's ``pyproject.toml`` (the Flower App ``flwr run`` ships)."""
    root = Path(__file__).resolve().parents[1]
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


def node_config_arg(partition: int, partitions: int, data_path: Path, state_dir: Path) -> str:
    """The ``--node-config`` of SuperNode ``partition``: its data file and state folder
    (Flower parses ``key=value`` pairs separated by spaces, each value as TOML)."""
    return (
        f"{PARTITION_ID}={partition} {NUM_PARTITIONS}={partitions} "
        f"{DATA_PATH}={toml_string(data_path)} {STATE_DIR}={toml_string(state_dir)}"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _bin(name: str) -> str:
    """An executable of this environment (Flower's CLIs sit beside the interpreter)."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        raise DeploymentError(f"{name} not found beside {sys.executable} or on PATH")
    return found


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to the process group (the SuperLink's and SuperNodes' children with it),
        SIGKILL after ``grace`` seconds."""
        if self.popen.poll() is None:
            _signal_group(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace)
        _signal_group(self.popen.pid, signal.SIGKILL)  # the children, even if it exited
        self.popen.wait()

    def tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class LocalDeployment:
    """A SuperLink and ``nodes`` SuperNodes on loopback for ``cfg`` (a context manager).

    Args:
        workdir: where certificates, keys, node data, logs and Flower's state go; the
            ServerApp's run directories appear under ``workdir/runs``.
        cfg: the run; each node ``i`` gets client ``i``'s partition as its own data file.
        nodes: SuperNodes to start, one per client (``data.num-clients``).
        insecure: no TLS and no node authentication (prints a warning; for debugging).
        task_poll: seconds between the SuperExecs' checks for a new ServerApp or ClientApp
            to start (Flower's ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``); None: Flower's 1 s.
            Shorter intervals load the SuperLink and measured no faster on 2 cores.
    """

    def __init__(
        self,
        workdir: Path,
        cfg: RunConfig,
        nodes: int,
        insecure: bool = False,
        task_poll: float | None = None,
    ):
        if nodes != cfg.data.num_clients:
            raise DeploymentError(
                f"{nodes} nodes for a run of {cfg.data.num_clients} clients: each node holds "
                f"one client's data (set data.num-clients = {nodes})"
            )
        self.workdir = Path(workdir).resolve()
        self.cfg, self.nodes, self.insecure = cfg, nodes, insecure
        self.port = free_port()
        self.processes: dict[str, _Process] = {}
        self.env = {
            **os.environ,
            "FLWR_HOME": str(self.workdir / "flwr-home"),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "PYTHONUNBUFFERED": "1",
            # the SuperLink and SuperNodes start Flower's other executables by name
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        }
        if task_poll is not None:
            self.env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = str(task_poll)
        # Every message starts a Python process; without cached byte code each of them would
        # compile torch again (about 10 s of CPU).
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.certs = self.workdir / "certs"
        self.data_files: list[Path] = []

    # -- set-up ---------------------------------------------------------------------------
    def __enter__(self) -> LocalDeployment:
        try:
            self._prepare()
            self.start_superlink()
            for i in range(self.nodes):
                if not self.insecure:
                    self.register(i)
                self.start_node(i)
            self.wait_for_nodes(self.nodes)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Every node's first ClientApp process imports the same modules; in an environment
        # installed without byte-code they would all compile it at once, for tens of seconds.
        subprocess.run(
            [sys.executable, "-c", "; ".join(f"import {m}" for m in _CLIENT_MODULES)],
            env=self.env,
            check=True,
            timeout=600,
        )
        if self.insecure:
            print("WARNING: insecure deployment: no TLS, no SuperNode authentication", flush=True)
        else:
            write_server_certs(self.certs, ["localhost", HOST])
            for i in range(self.nodes):
                write_node_keys(self.certs, f"node-{i}")
        self.data_files = write_client_files(self.cfg, self.workdir / "node-data")
        home = self.workdir / "flwr-home"
        home.mkdir(exist_ok=True)
        root = None if self.insecure else self.certs / "ca.crt"
        (home / "config.toml").write_text(flwr_config_toml(self.port, root))

    def _spawn(self, name: str, args: list[str]) -> _Process:
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                args,
                cwd=self.workdir,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped with its children
            )
        process = _Process(name, popen, log)
        self.processes[name] = process
        return process

    def _tls(self) -> list[str]:
        return ["--insecure"] if self.insecure else []

    def start_superlink(self) -> None:
        args = [
            _bin("flower-superlink"),
            *self._tls(),
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--database",
            str(self.workdir / "superlink.db"),
            "--disable-runtime-dependency-installation",
        ]
        if not self.insecure:
            args += [
                "--ssl-ca-certfile",
                str(self.certs / "ca.crt"),
                "--ssl-certfile",
                str(self.certs / "server.pem"),
                "--ssl-keyfile",
                str(self.certs / "server.key"),
                "--enable-supernode-auth",
            ]
        process = self._spawn("superlink", args)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not process.alive():
                raise DeploymentError(f"the SuperLink exited:\n{process.tail()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.3)
        raise DeploymentError(f"the SuperLink did not open port {self.port} in 60 s")

    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run the ``flwr`` CLI against this deployment's SuperLink."""
        return subprocess.run(
            [_bin("flwr"), *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def register(self, i: int, key: str | None = None) -> None:
        """Register SuperNode ``i``'s public key with the SuperLink."""
        pub = self.certs / f"{key or f'node-{i}'}.pub"
        done = self.flwr("supernode", "register", str(pub), CONNECTION)
        if done.returncode != 0:
            raise DeploymentError(f"registering {pub.name} failed:\n{done.stdout}{done.stderr}")

    def start_node(
        self, i: int, key: str | None = None, root_certificates: Path | None = None
    ) -> _Process:
        """Start SuperNode ``i`` on client ``i``'s data file (``key``: another key pair in
        the certificate folder; ``root_certificates``: another CA to trust)."""
        node_config = node_config_arg(
            i, self.cfg.data.num_clients, self.data_files[i], self.workdir / f"state-{i}"
        )
        args = [
            _bin("flower-supernode"),
            *self._tls(),
            "--superlink",
            f"{HOST}:{self.port}",
            "--host",
            HOST,
            "--port",
            str(free_port()),
            "--node-config",
            node_config,
            "--max-retries",
            "3",
        ]
        if not self.insecure:
            args += [
                "--root-certificates",
                str(root_certificates or self.certs / "ca.crt"),
                "--auth-supernode-private-key",
                str(self.certs / (key or f"node-{i}")),
            ]
        name = f"node-{i}" if key is None and root_certificates is None else f"node-{i}-other"
        if name in self.processes and self.processes[name].alive():
            raise DeploymentError(f"{name} is running already")
        return self._spawn(name, args)

    def restart_node(self, i: int, timeout: float = 180) -> _Process:
        """Start SuperNode ``i`` again after a crash. The SuperLink refuses a second node with
        the same key until it has missed two heartbeats (about a minute), so retry until then.
        """
        deadline = time.monotonic() + timeout
        while True:
            process = self.start_node(i)
            try:
                process.popen.wait(15)  # refused nodes exit within seconds
            except subprocess.TimeoutExpired:
                return process  # still running: it is in
            if time.monotonic() > deadline:
                raise DeploymentError(f"node-{i} could not rejoin:\n{process.tail()}")
            time.sleep(5)

    def kill_node(self, i: int) -> None:
        """SIGKILL SuperNode ``i`` and its ClientApp processes (a crash, not a shutdown)."""
        process = self.processes[f"node-{i}"]
        _signal_group(process.popen.pid, signal.SIGKILL)
        process.popen.wait()

    def _runs(self) -> list[Path]:
        """The run directories the ServerApp wrote under ``workdir/runs``, oldest first."""
        return sorted((self.workdir / "runs").glob("*"))

    def current_run(self) -> Path | None:
        """The newest run directory under ``workdir/runs`` (the one a running run writes)."""
        runs = self._runs()
        return runs[-1] if runs else None

    def online_nodes(self) -> int:
        done = self.flwr("supernode", "ls", CONNECTION, "--format", "json", timeout=60)
        if done.returncode != 0:
            return 0
        try:
            listing = json.loads(done.stdout)
        except ValueError:
            return 0
        nodes = listing.get("nodes", []) if isinstance(listing, dict) else []
        return sum(1 for n in nodes if str(n.get("status", "")).lower() == "online")

    def wait_for_nodes(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [
                p
                for n, p in self.processes.items()
                if n.startswith("node") and not n.endswith("-other") and not p.alive()
            ]
            if dead:
                raise DeploymentError(f"{dead[0].name} exited:\n{dead[0].tail()}")
            if self.online_nodes() >= count:
                return
            time.sleep(1)
        raise DeploymentError(f"fewer than {count} SuperNodes came online in {timeout:.0f} s")

    # -- running --------------------------------------------------------------------------
    def run(
        self, out: Path | None = None, timeout: float = 1800, cfg: RunConfig | None = None
    ) -> Path:
        """Run ``cfg`` (default: the deployment's) with ``flwr run`` and return its run
        directory, moved to ``out``. A run that ended ``failed`` raises :class:`RunFailed`
        once its directory is in place, so its rounds and log are kept. ``cfg`` must read
        the same data with the same seed as the deployment's: the nodes hold its partitions."""
        cfg = cfg or self.cfg
        if (cfg.data, cfg.seed, cfg.task) != (self.cfg.data, self.cfg.seed, self.cfg.task):
            raise DeploymentError(
                "this run's task, data or seed differ from the deployment's, whose SuperNodes "
                "hold the partitions of the deployment's; start a new deployment for them"
            )
        if out is not None and Path(out).exists():  # before the run, not after it
            raise FileExistsError(f"{out} already exists")
        config = self.workdir / "run-config.toml"
        config.write_text(
            "".join(f"{toml_string(k)} = {_toml_value(v)}\n" for k, v in to_run_config(cfg).items())
        )
        before = set(self._runs())
        done = self.flwr(
            "run",
            str(app_dir()),
            CONNECTION,
            "--stream",
            "--run-config",
            str(config),
            timeout=timeout,
        )
        (self.workdir / "logs" / "flwr-run.log").write_text(done.stdout + done.stderr)
        new = [r for r in self._runs() if r not in before]
        if not new:
            raise DeploymentError(
                f"flwr run produced no run directory (exit {done.returncode}):\n"
                + "\n".join((done.stdout + done.stderr).splitlines()[-20:])
            )
        run_dir = new[-1]
        summary_file = run_dir / "summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
        if out is not None:  # first, so that a failed run's directory outlives the workdir
            out = Path(out)
            if out.exists():
                raise FileExistsError(f"{out} appeared during the run, which is in {run_dir}")
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(run_dir), out)
            run_dir = out
        if summary.get("status") == "failed":
            raise RunFailed(f"{summary.get('error', 'the deployed run failed')}; see {run_dir}")
        if summary.get("status") != "completed":
            raise DeploymentError(
                f"the deployed run did not complete: {summary or done.stderr[-2000:]}"
            )
        return run_dir

    def close(self) -> None:
        """Stop every process this deployment started (nodes first, then the SuperLink)."""
        for name in sorted(self.processes, key=lambda n: n == "superlink"):
            self.processes[name].stop()
