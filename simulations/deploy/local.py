"""The SuperLink and SuperNodes of one local deployment, and its run (``flwr run``)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fedcore.certs import write_node_keys, write_server_certs
from fedcore.config import RunConfig, load_scenario, to_run_config
from fedcore.config.export import _toml_value
from fedcore.server import RoundRecord, RunFailed
from simulations.deploy.errors import DeploymentError
from simulations.deploy.files import (
    _CLIENT_MODULES,
    CONNECTION,
    HOST,
    app_dir,
    flwr_config_toml,
    node_config_arg,
    toml_string,
    write_client_files,
)
from simulations.deploy.follow import MetricsFollower
from simulations.deploy.processes import _bin, _Process, _signal_group, free_port, stop_all

# what a warm executor imports before its first message, so the first round is no slower
_WARM_PRELOAD = (*_CLIENT_MODULES, "clients.statistics", "clients.queries", "fedcore.tasks.mlp")
FOLLOW_INTERVAL = 0.5  # seconds between looks at the run's metrics.jsonl while flwr run runs


def _holds(run_dir: Path, cfg: RunConfig) -> bool:
    """Whether ``run_dir`` is a run of ``cfg`` (runs started side by side appear together)."""
    try:
        return load_scenario(run_dir / "config.toml") == cfg
    except (OSError, ValueError):  # not written yet, or not a config: not this run's
        return False


def place_run(run_dir: Path, out: Path) -> Path:
    """Move a finished run directory to ``out``, which must be new or an empty directory
    (checked before the run; :class:`FileExistsError` if it was filled meanwhile)."""
    try:
        out.rmdir()  # an empty directory, as simulate's --out may be: the run takes its place
    except FileNotFoundError:
        pass
    except OSError:
        raise FileExistsError(f"{out} appeared during the run, which is in {run_dir}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(run_dir), out)
    return out


class LocalDeployment:
    """A SuperLink and ``nodes`` SuperNodes on loopback for ``cfg`` (a context manager).

    Args:
        workdir: where certificates, keys, node data, logs and Flower's state go; the
            ServerApp's run directories appear under ``workdir/runs``.
        cfg: the run; each node ``i`` gets client ``i``'s partition as its own data file
            (a task that reads no node files: node ``i`` loads partition ``i`` itself).
        nodes: SuperNodes to start, one per client (``data.num-clients``).
        insecure: no TLS and no node authentication (prints a warning; for debugging).
        task_poll: seconds between the SuperExecs' checks for a new ServerApp or ClientApp
            to start (Flower's ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``); None: Flower's 1 s.
            Shorter intervals load the SuperLink and measured no faster on 2 cores.
        node_files: False: no data files, whatever the task; node ``i`` then loads
            partition ``i`` of each run it is sent, so the deployment runs any task and
            data with ``nodes`` clients (tests and demos).
        warm: each SuperNode runs in ``process`` isolation beside a ``fedcore warm-exec``
            that runs its messages in one long-lived process (torch and the data stay
            loaded); False: Flower's default, a fresh ``flwr-clientapp`` process per message.
        node_poll, heartbeat: seconds between a SuperNode's looks for a message (Flower:
            3) and between its heartbeats (Flower: 30; a killed node may rejoin after two
            missed ones), set by :mod:`fedcore.supernode`; both None: ``flower-supernode``
            itself.
    """

    def __init__(
        self,
        workdir: Path,
        cfg: RunConfig,
        nodes: int,
        insecure: bool = False,
        task_poll: float | None = None,
        node_files: bool = True,
        warm: bool = True,
        node_poll: float | None = 0.2,
        heartbeat: float | None = 10.0,
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
        self.node_files = node_files
        self.warm = warm
        self.node_poll, self.heartbeat = node_poll, heartbeat

    # -- set-up ---------------------------------------------------------------------------
    def __enter__(self) -> LocalDeployment:
        compiling = None
        try:
            compiling = self._prepare()
            self.start_superlink()
            if not self.insecure:  # a flwr CLI process each (seconds): side by side
                with ThreadPoolExecutor(self.nodes) as pool:
                    list(pool.map(self.register, range(self.nodes)))
            if compiling is not None and compiling.wait(timeout=600) != 0:
                raise DeploymentError("importing the nodes' modules failed (see above)")
            for i in range(self.nodes):
                self.start_node(i)
            self.wait_for_nodes(self.nodes)
        except BaseException:
            if compiling is not None and compiling.poll() is None:
                compiling.kill()
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _prepare(self) -> subprocess.Popen | None:
        """Write the certificates, keys, node data and Flower's config; return the process
        that compiles the nodes' modules, if one is needed (wait for it before starting
        them)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Every node's executor imports the same modules; in an environment installed
        # without byte-code they would all compile them at once, for tens of seconds. Done
        # beside the rest of the set-up.
        compiling = None  # (where byte code is written, the first import writes it)
        if sys.dont_write_bytecode or os.environ.get("PYTHONDONTWRITEBYTECODE"):
            compiling = subprocess.Popen(
                [sys.executable, "-c", "; ".join(f"import {m}" for m in _WARM_PRELOAD)],
                env=self.env,
            )
        if self.insecure:
            print("WARNING: insecure deployment: no TLS, no SuperNode authentication", flush=True)
        else:
            write_server_certs(self.certs, ["localhost", HOST])
            for i in range(self.nodes):
                write_node_keys(self.certs, f"node-{i}")
        from fedcore.tasks import get_task  # torch: only once the certificates are written

        if self.node_files and get_task(self.cfg.task).node_files:
            self.data_files = write_client_files(self.cfg, self.workdir / "node-data")
        home = self.workdir / "flwr-home"
        home.mkdir(exist_ok=True)
        root = None if self.insecure else self.certs / "ca.crt"
        (home / "config.toml").write_text(flwr_config_toml(self.port, root))
        return compiling

    def _spawn(self, name: str, args: list[str]) -> _Process:
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        with open(log, "ab") as out:
            start = out.tell()
            popen = subprocess.Popen(
                args,
                cwd=self.workdir,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped with its children
            )
        process = _Process(name, popen, log, start)
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
        """Start SuperNode ``i`` on client ``i``'s data file, or for a task that reads none
        (``gcn``, ``mf``) on partition ``i`` of the run's dataset (``key``: another key pair
        in the certificate folder; ``root_certificates``: another CA to trust)."""
        data = self.data_files[i] if self.data_files else None
        node_config = node_config_arg(
            i, self.cfg.data.num_clients, data, self.workdir / f"state-{i}"
        )
        runtime_api = free_port()
        if self.node_poll is None and self.heartbeat is None:
            supernode = [_bin("flower-supernode")]
        else:
            supernode = [sys.executable, "-m", "fedcore.supernode"]
            supernode += ["--poll-interval", str(self.node_poll or 3.0)]
            supernode += ["--heartbeat-interval", str(self.heartbeat or 30.0)]
        args = [
            *supernode,
            *self._tls(),
            "--superlink",
            f"{HOST}:{self.port}",
            "--host",
            HOST,
            "--port",
            str(runtime_api),
            "--node-config",
            node_config,
            "--max-retries",
            "3",
        ]
        if self.warm:
            args += ["--isolation", "process"]
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
        node = self._spawn(name, args)
        # its executor: gone with the node (--parent-pid) or by kill_node; a node with another
        # key or CA is one expected to be refused, and gets none
        if self.warm and name == f"node-{i}":
            self._spawn(
                f"{name}-exec",
                [
                    sys.executable,
                    "-m",
                    "fedcore",
                    "warm-exec",
                    "--runtime-api-address",
                    f"{HOST}:{runtime_api}",
                    "--insecure",  # the Runtime API is served on loopback only
                    "--parent-pid",
                    str(node.popen.pid),
                    *(a for m in _WARM_PRELOAD for a in ("--preload", m)),
                ],
            )
        return node

    def restart_node(self, i: int, timeout: float = 180) -> _Process:
        """Start SuperNode ``i`` again after a crash. The SuperLink refuses a second node with
        the same key until the first has missed two heartbeats (20 s with this deployment's
        10 s heartbeats, a minute with Flower's 30 s), so retry until then."""
        deadline = time.monotonic() + timeout
        while True:
            process = self.start_node(i)
            try:
                process.popen.wait(15)  # refused nodes exit within seconds
            except subprocess.TimeoutExpired:
                return process  # still running: it is in
            if time.monotonic() > deadline:
                raise DeploymentError(f"node-{i} could not rejoin:\n{process.tail()}")
            time.sleep(2)

    def kill_superlink(self) -> None:
        """SIGKILL the SuperLink and the ServerApp it runs (a crash of the server machine's
        processes; its database, ``workdir/superlink.db``, stays)."""
        process = self.processes["superlink"]
        _signal_group(process.popen.pid, signal.SIGKILL)
        process.popen.wait()

    def restart_superlink(self, timeout: float = 240) -> None:
        """Start the SuperLink again on its database, which keeps the registered SuperNode
        keys, and the SuperNodes with it (as after a reboot of the machine that runs them
        all; each keeps its privacy ledger in its state directory). A SuperNode that had
        lived through the outage would be reachable again only after its next heartbeat. A
        run the SuperLink was serving continues with :meth:`run` ``(resume=RUN_DIR)`` from
        the run directory's checkpoint."""
        for i in range(self.nodes):
            if self.processes[f"node-{i}"].alive():
                self.kill_node(i)
        if self.processes["superlink"].alive():
            self.kill_superlink()
        self.start_superlink()
        with ThreadPoolExecutor(self.nodes) as pool:  # each waits to see it is let in
            list(pool.map(self.restart_node, range(self.nodes)))
        self.wait_for_nodes(self.nodes, timeout)

    def kill_node(self, i: int) -> None:
        """SIGKILL SuperNode ``i`` and its ClientApp processes (a crash, not a shutdown)."""
        for name in (f"node-{i}", f"node-{i}-exec"):
            if (process := self.processes.get(name)) is not None:
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
            ours = (f"node-{i}{suffix}" for i in range(self.nodes) for suffix in ("", "-exec"))
            dead = [p for n in ours if (p := self.processes.get(n)) and not p.alive()]
            if dead:
                raise DeploymentError(f"{dead[0].name} exited:\n{dead[0].tail()}")
            # a node prints its id once the SuperLink let it in: until enough have, asking
            # the SuperLink (a flwr CLI process, seconds of CPU each) is not worth it
            connected = sum(
                self.processes[f"node-{i}"].said("SuperNode ID")
                for i in range(self.nodes)
                if f"node-{i}" in self.processes
            )
            if connected >= count and self.online_nodes() >= count:
                return
            time.sleep(0.5 if connected < count else 1)
        raise DeploymentError(f"fewer than {count} SuperNodes came online in {timeout:.0f} s")

    # -- running --------------------------------------------------------------------------
    def run(
        self,
        out: Path | None = None,
        timeout: float = 1800,
        cfg: RunConfig | None = None,
        on_round: Callable[[RoundRecord], None] | None = None,
        resume: Path | None = None,
    ) -> Path:
        """Run ``cfg`` (default: the deployment's) with ``flwr run`` and return its run
        directory, moved to ``out`` (new or an empty directory, as ``simulate``'s). A run
        that ended ``failed`` raises :class:`RunFailed` once its directory is in place, so
        its rounds and log are kept. Where the nodes hold data files, ``cfg`` must read the
        same data with the same seed as the deployment's, with a task that reads such
        files; nodes without files load the partition of whatever run they are sent (one
        per node: ``data.num-clients`` = the nodes). ``on_round`` is called with each
        round's record as the ServerApp writes it.

        ``resume``: continue the unfinished run in that directory from its checkpoint (after
        a crash of the server or of this process), with its own config; it stays where it
        is (no ``out``, no ``cfg``)."""
        from simulations.rundir import _refuse_used  # torch: only when a run starts

        if resume is not None:
            if out is not None or cfg is not None:
                raise DeploymentError("a resumed run keeps its directory and its config")
            resume = Path(resume).resolve()
            cfg = load_scenario(resume / "config.toml")
            cfg = dataclasses.replace(
                cfg, train=dataclasses.replace(cfg.train, resume_from=str(resume))
            )
        cfg = cfg or self.cfg
        if out is not None:  # before the run, not after it
            _refuse_used(Path(out))
        self._check_runnable(cfg)
        # a file of its own per call: runs may be started side by side, from threads
        fd, name = tempfile.mkstemp(prefix="run-config-", suffix=".toml", dir=self.workdir)
        config = Path(name)
        with os.fdopen(fd, "w") as f:
            f.write(
                "".join(
                    f"{toml_string(k)} = {_toml_value(v)}\n" for k, v in to_run_config(cfg).items()
                )
            )
        before = set(self._runs())

        def new_runs() -> list[Path]:
            if resume is not None:
                return [resume]
            return [r for r in self._runs() if r not in before and _holds(r, cfg)]

        log = self.workdir / "logs" / f"flwr-{config.stem}.log"
        follower = MetricsFollower(lambda: next(iter(new_runs()), None))
        returncode = self._flwr_run(config, log, timeout, follower, on_round)
        output = log.read_text(errors="replace")
        new = new_runs()
        if not new:
            raise DeploymentError(
                f"flwr run produced no run directory (exit {returncode}):\n"
                + "\n".join(output.splitlines()[-20:])
            )
        run_dir = new[-1]
        summary_file = run_dir / "summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
        if out is not None:  # first, so that a failed run's directory outlives the workdir
            run_dir = place_run(run_dir, Path(out))
        if summary.get("status") == "failed":
            raise RunFailed(f"{summary.get('error', 'the deployed run failed')}; see {run_dir}")
        if summary.get("status") != "completed":
            raise DeploymentError(f"the deployed run did not complete: {summary or output[-2000:]}")
        return run_dir

    def _flwr_run(
        self,
        config: Path,
        log: Path,
        timeout: float,
        follower: MetricsFollower,
        on_round: Callable[[RoundRecord], None] | None,
    ) -> int:
        """``flwr run`` of the app with ``config``, its output to ``log``; passes each round
        to ``on_round`` as it lands and returns the exit status."""
        args = [_bin("flwr"), "run", str(app_dir()), CONNECTION, "--stream"]
        with open(log, "wb") as output:
            popen = subprocess.Popen(
                [*args, "--run-config", str(config)],
                cwd=self.workdir,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        try:
            while popen.poll() is None:
                if time.monotonic() > deadline:
                    raise DeploymentError(f"flwr run did not end in {timeout:.0f} s; see {log}")
                for record in follower.poll() if on_round else ():
                    on_round(record)
                time.sleep(FOLLOW_INTERVAL)
            for record in follower.poll() if on_round else ():
                on_round(record)
        finally:
            if popen.poll() is None:  # an error or Ctrl-C here: flwr run goes with it
                popen.kill()
                popen.wait()
        return popen.returncode

    def _check_runnable(self, cfg: RunConfig) -> None:
        """DeploymentError unless the nodes hold what a run of ``cfg`` reads."""
        from fedcore.tasks import get_task  # torch: only when a run is checked

        if cfg.data.num_clients != self.nodes:
            raise DeploymentError(
                f"this run has data.num-clients = {cfg.data.num_clients}; the deployment "
                f"has {self.nodes} nodes, one per client"
            )
        if not self.data_files:
            return
        if (cfg.data, cfg.seed) != (self.cfg.data, self.cfg.seed) or not get_task(
            cfg.task
        ).node_files:
            raise DeploymentError(
                "this run's task, data or seed differ from the deployment's, whose SuperNodes "
                "hold the partitions of the deployment's; start a new deployment for them"
            )

    def close(self) -> None:
        """Stop every process this deployment started (the nodes together, then the
        SuperLink)."""
        stop_all([p for n, p in self.processes.items() if n != "superlink"])
        if "superlink" in self.processes:
            self.processes["superlink"].stop()
