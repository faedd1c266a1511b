"""The ``fedcore`` command line (also ``python -m fedcore``)."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import tempfile
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from fedcore.checkpoint import CheckpointError
from fedcore.config import ConfigError, load_scenario, parse_override
from fedcore.datasets import DatasetError
from fedcore.logs import configure_logging
from fedcore.server import RunFailed
from simulations.deploy import DeploymentError

DEFAULT_SCENARIO = "digits-dirichlet"
# The most SuperNodes `deploy-local` starts and `certs` makes key pairs for: a bound, so that
# a typo cannot start processes or write files until the machine or the disk gives out.
MAX_NODES = 1000


def scenario_path(name_or_path: str) -> Path:
    """A scenario file by path, or by name from ``simulations/scenarios``."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        return path
    bundled = resources.files("simulations") / "scenarios" / f"{name_or_path}.toml"
    if bundled.is_file():
        return Path(str(bundled))
    names = sorted(
        p.name.removesuffix(".toml")
        for p in (resources.files("simulations") / "scenarios").iterdir()
        if p.name.endswith(".toml")
    )
    raise ConfigError(f"no scenario {name_or_path!r}: give a .toml path or one of {names}")


def _node_count(text: str) -> int:
    """``--nodes``: a whole number from 1 to :data:`MAX_NODES` (argparse's ``type``)."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= count <= MAX_NODES:
        raise argparse.ArgumentTypeError(f"{count} is not between 1 and {MAX_NODES}")
    return count


def _version() -> str:
    """The installed package's version (a source tree that was never installed has none)."""
    try:
        return importlib.metadata.version("fedcore")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed: run pip install -e .)"


def check_out(path: Path | None) -> None:
    """ConfigError unless directory ``path`` (None: the default ``runs``) can be made: found
    before any data is loaded, not after. Probed by making and removing a directory in its
    nearest existing folder, which also catches read-only file systems."""
    target = Path("runs") if path is None else Path(path)
    name = f"--out {target}" if path is not None else f"the run folder {target} (no --out)"
    folder = target
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if folder.exists() and not folder.is_dir():
        if folder == target:
            return  # an existing file: the run directory refuses it, naming it
        raise ConfigError(f"{name} is under {folder}, which is not a directory")
    try:
        Path(tempfile.mkdtemp(prefix=".fedcore-", dir=folder)).rmdir()
    except OSError as err:
        reason = err.strerror or err
        raise ConfigError(f"{name}: cannot create a directory in {folder} ({reason})") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedcore", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fedcore {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="run a federated simulation")
    sim.add_argument(
        "scenario",
        nargs="?",
        default=DEFAULT_SCENARIO,
        help=f"scenario file or bundled name (default: {DEFAULT_SCENARIO})",
    )
    sim.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set train.rounds=5 (repeatable)",
    )
    sim.add_argument("--out", type=Path, help="run directory (default: a new folder in runs/)")
    sim.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue the unfinished run in RUN_DIR from its checkpoint (its own config: "
        "no scenario, --set or --out)",
    )
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    sub.add_parser("config", help="print every setting with its default and meaning")
    part = sub.add_parser(
        "partition", help="write each client's data to its own .npz file (for SuperNodes)"
    )
    part.add_argument("scenario", nargs="?", default=DEFAULT_SCENARIO)
    part.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    part.add_argument("--out", type=Path, required=True, help="folder for client-<i>.npz")
    dep = sub.add_parser(
        "deploy-local",
        help="run a scenario on a SuperLink and SuperNodes started here on loopback",
    )
    dep.add_argument("scenario", nargs="?", default=DEFAULT_SCENARIO)
    dep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    dep.add_argument(
        "--nodes",
        type=_node_count,
        help=f"SuperNodes, one per client, 1 to {MAX_NODES} (default: data.num-clients)",
    )
    dep.add_argument("--workdir", type=Path, help="certificates, logs, node data (default: temp)")
    dep.add_argument("--out", type=Path, help="run directory (default: a new folder in runs/)")
    dep.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue the unfinished deployed run in RUN_DIR from its checkpoint on a fresh "
        "deployment (its own config: no scenario, --set or --out)",
    )
    dep.add_argument(
        "--insecure", action="store_true", help="no TLS, no node authentication (debugging)"
    )
    certs = sub.add_parser(
        "certs", help="make a CA, a SuperLink TLS certificate and SuperNode auth keys"
    )
    certs.add_argument("--out", type=Path, required=True, help="folder for the files")
    certs.add_argument(
        "--host",
        dest="hosts",
        action="append",
        default=[],
        help="a host name or IP the SuperLink is reached at (repeatable; default: "
        "localhost and 127.0.0.1)",
    )
    certs.add_argument(
        "--nodes",
        type=_node_count,
        default=0,
        help=f"SuperNode key pairs to make, 1 to {MAX_NODES} (default: none)",
    )
    certs.add_argument(
        "--force",
        action="store_true",
        help="replace the CA, certificates and keys --out holds (every certificate the old "
        "CA issued stops working)",
    )
    rep = sub.add_parser("report", help="write the privacy report of a run directory")
    rep.add_argument("run_dir", type=Path)
    comp = sub.add_parser(
        "compact", help="export a run's model as int8 and pruned; measure size, accuracy, latency"
    )
    comp.add_argument("run_dir", type=Path)
    comp.add_argument(
        "--prune", type=float, default=0.5, help="sparsity of the pruned model (default: 0.5)"
    )
    warm = sub.add_parser(
        "warm-exec",
        help="run a SuperNode's ClientApp messages in this one process (beside "
        "flower-supernode --isolation process): no Python start or torch import per message",
    )
    warm.add_argument(
        "--runtime-api-address",
        required=True,
        help="the SuperNode's Runtime API, HOST:PORT (its --host and --port)",
    )
    warm.add_argument(
        "--insecure", action="store_true", help="plain HTTP to the Runtime API (loopback)"
    )
    warm.add_argument("--root-certificates", type=Path, help="CA of the Runtime API's TLS")
    warm.add_argument(
        "--superexec-auth-secret-file",
        type=Path,
        help="the SuperExec shared secret the SuperNode was given",
    )
    warm.add_argument(
        "--poll", type=float, default=0.1, help="seconds between looks for a task (0.1)"
    )
    warm.add_argument(
        "--preload",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this module before the first task (repeatable), e.g. torch",
    )
    warm.add_argument("--parent-pid", type=int, help="exit when this process exits")
    return parser


def _warm_exec(args: argparse.Namespace) -> int:
    from fedcore.warm_exec import WarmExecutor, run_warm_exec

    secret = args.superexec_auth_secret_file
    try:
        executor = WarmExecutor(
            args.runtime_api_address,
            insecure=args.insecure,
            root_certificates=args.root_certificates,
            auth_secret=None if secret is None else secret.read_bytes(),
            poll=args.poll,
            preload=tuple(args.preload),
        )
    except (OSError, ValueError) as err:
        raise ConfigError(f"warm-exec: {err}") from None
    run_warm_exec(executor, args.parent_pid)
    return 0


def _simulate(args: argparse.Namespace, console: Console) -> int:
    from simulations.runner import resume, simulate

    if args.resume is not None:
        if args.overrides or args.out or args.scenario != DEFAULT_SCENARIO:
            raise ConfigError(
                "--resume continues a run with its own config.toml: give no scenario, --set "
                "or --out with it"
            )
        result = resume(args.resume, progress=not args.quiet)
    else:
        overrides = dict(parse_override(o) for o in args.overrides)
        cfg = load_scenario(scenario_path(args.scenario), overrides)
        check_out(args.out)
        result = simulate(cfg, out=args.out, progress=not args.quiet)
    from simulations.progress import final_quality

    quality = final_quality(result.summary["final_metrics"])
    console.print(
        f"[green]done[/green] {result.summary['rounds']} rounds in "
        f"{result.summary['wall_seconds']:.1f} s" + (f", {quality}" if quality else "")
    )
    if "privacy" in result.summary:
        from privacy.report import headline

        p = result.summary["privacy"]
        console.print(
            f"privacy: {headline(p, p['delta'])}; report: {result.path / 'privacy_report.html'}"
        )
    console.print(f"results: {result.path}")
    return 0


def _report(args: argparse.Namespace, console: Console) -> int:
    from privacy.report import headline, write_report

    if not (args.run_dir / "config.toml").is_file():
        raise ConfigError(f"{args.run_dir} is not a run directory (no config.toml)")
    try:  # a corrupt or unreadable config, ledger or metrics file of the run
        report = write_report(args.run_dir)
    except (ValueError, OSError) as err:  # (json.JSONDecodeError is a ValueError)
        raise ConfigError(f"no report for {args.run_dir}: {err}") from None
    console.print(
        f"{headline(report['guarantee'], report['delta'])}; "
        f"wrote {args.run_dir}/privacy_report.{{json,md,html}}"
    )
    return 0


def _compact(args: argparse.Namespace, console: Console) -> int:
    from simulations.compact import compact

    result = compact(args.run_dir, prune=args.prune)
    for name, v in result["variants"].items():
        print(
            f"{name:7} {v['size_bytes'] / 1024:9.1f} KB ({v['size_ratio']:.2f}x)  "
            f"accuracy {v['accuracy']:.4f}  "
            f"latency {v['latency_ms']:.3f} ms ({v['latency_ratio']:.2f}x, 1 thread)"
        )
    console.print(f"wrote {args.run_dir / 'compact'}: model-int8.pt, model-pruned.pt, compact.json")
    return 0


def _partition(args: argparse.Namespace, console: Console) -> int:
    from simulations.deploy import write_client_files

    overrides = dict(parse_override(o) for o in args.overrides)
    cfg = load_scenario(scenario_path(args.scenario), overrides)
    check_out(args.out)
    paths = write_client_files(cfg, args.out)
    console.print(f"wrote {len(paths)} node files ({cfg.data.dataset}) to {args.out}")
    return 0


def _deploy_local(args: argparse.Namespace, console: Console) -> int:
    import signal
    import tempfile
    import time

    from simulations.deploy import LocalDeployment
    from simulations.deploy.local import place_run
    from simulations.progress import final_quality, round_line
    from simulations.rundir import _refuse_used

    if args.resume is not None:  # the run's own config; it stays where it is
        if args.overrides or args.out or args.scenario != DEFAULT_SCENARIO:
            raise ConfigError(
                "--resume continues a run with its own config.toml: give no scenario, --set "
                "or --out with it"
            )
        cfg = load_scenario(args.resume / "config.toml")
    else:
        overrides = dict(parse_override(o) for o in args.overrides)
        cfg = load_scenario(scenario_path(args.scenario), overrides)
    nodes = args.nodes if args.nodes is not None else cfg.data.num_clients
    if nodes > MAX_NODES:
        raise ConfigError(f"{nodes} SuperNodes (data.num-clients): at most {MAX_NODES}")
    if args.out is not None:  # refused before any process starts, as simulate's --out
        _refuse_used(args.out)
    check_out(args.out)
    out = args.out or Path("runs") / time.strftime(f"%Y%m%d-%H%M%S-deployed-{cfg.task}")

    def interrupt(signum: int, frame: object) -> None:  # SIGTERM stops everything, as Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)

    def on_round(record: dict) -> None:
        console.print(round_line(record, cfg.train.rounds), markup=False, highlight=False)

    with tempfile.TemporaryDirectory(prefix="fedcore-deploy-") as tmp:
        workdir = args.workdir or Path(tmp)
        console.print(f"starting a SuperLink and {nodes} SuperNodes in {workdir} ...")
        deployment = LocalDeployment(workdir, cfg, nodes, insecure=args.insecure)
        try:
            with deployment:
                console.print(f"running {cfg.train.rounds} rounds with flwr run ...")
                if args.resume is not None:
                    run_dir = deployment.run(on_round=on_round, resume=args.resume)
                else:
                    run_dir = deployment.run(out, on_round=on_round)
        except BaseException as err:  # an unfinished run outlives the (temporary) workdir
            left = None if args.resume is not None else deployment.current_run()
            if left is not None and (left / "checkpoint.bin").exists():
                place_run(left, out)
                err.add_note(f"run directory: {out}")
                err.add_note(f"continue it with: fedcore deploy-local --resume {out}")
            raise
    summary = json.loads((run_dir / "summary.json").read_text())
    quality = final_quality(summary["final_metrics"])
    console.print(
        f"[green]done[/green] {summary['rounds']} rounds"
        + (f", {quality}" if quality else "")
        + (f"; privacy report: {run_dir / 'privacy_report.html'}" if "privacy" in summary else "")
    )
    console.print(f"results: {run_dir}")
    return 0


def _certs(args: argparse.Namespace, console: Console) -> int:
    from fedcore.certs import write_deployment_certs

    hosts = args.hosts or ["localhost", "127.0.0.1"]
    try:
        files = write_deployment_certs(args.out, hosts, args.nodes, force=args.force)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    console.print(
        f"wrote {files.ca_cert.name} (give it to every SuperNode and flwr), "
        f"{files.server_cert.name} + {files.server_key.name} (SuperLink, for {', '.join(hosts)})"
        + (f", node-0..{args.nodes - 1}[.pub] (SuperNode keys)" if args.nodes else "")
        + f" in {args.out}; keep ca.key offline"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console(stderr=True, soft_wrap=True)
    configure_logging()
    try:
        if args.command == "config":
            from fedcore.config import describe

            for key, default, doc in describe():
                print(f"{key:28} {default:14} {doc}")
            return 0
        if args.command == "report":
            return _report(args, console)
        if args.command == "compact":
            return _compact(args, console)
        if args.command == "partition":
            return _partition(args, console)
        if args.command == "certs":
            return _certs(args, console)
        if args.command == "deploy-local":
            return _deploy_local(args, console)
        if args.command == "warm-exec":
            return _warm_exec(args)
        return _simulate(args, console)
    except (ConfigError, DatasetError, FileExistsError, DeploymentError, CheckpointError) as err:
        console.print(f"[red]error:[/red] {escape(str(err))}")
        return 2
    except RunFailed as err:  # the run went wrong, the program did not: no traceback
        notes = "".join(f"; {note}" for note in getattr(err, "__notes__", ()))
        console.print(f"[red]run failed:[/red] {escape(str(err) + notes)}")
        return 1
    except KeyboardInterrupt as err:
        notes = "".join(f"; {note}" for note in getattr(err, "__notes__", ()))
        console.print(
            "[yellow]interrupted[/yellow]: the run directory keeps every completed round"
            + escape(notes)
        )
        return getattr(err, "exit_status", 130)
    # Anything else is a bug: it propagates, so its traceback reaches the log and the exit
    # status is 1 (the run directory, if there is one, already records it as failed).


if __name__ == "__main__":
    sys.exit(main())
