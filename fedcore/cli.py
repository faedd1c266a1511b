"""The ``fedcore`` command line (also ``python -m fedcore``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from fedcore.config import ConfigError, load_scenario, parse_override
from fedcore.datasets import DatasetError
from fedcore.server import RunFailed
from simulations.deploy import DeploymentError

DEFAULT_SCENARIO = "digits-dirichlet"


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedcore", description=__doc__)
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
        "--nodes", type=int, help="SuperNodes, one per client (default: data.num-clients)"
    )
    dep.add_argument("--workdir", type=Path, help="certificates, logs, node data (default: temp)")
    dep.add_argument("--out", type=Path, help="run directory (default: a new folder in runs/)")
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
    certs.add_argument("--nodes", type=int, default=0, help="SuperNode key pairs to make")
    rep = sub.add_parser("report", help="write the privacy report of a run directory")
    rep.add_argument("run_dir", type=Path)
    return parser


def _simulate(args: argparse.Namespace, console: Console) -> int:
    from simulations.runner import simulate

    overrides = dict(parse_override(o) for o in args.overrides)
    cfg = load_scenario(scenario_path(args.scenario), overrides)
    result = simulate(cfg, out=args.out, progress=not args.quiet)
    final = result.summary["final_metrics"]
    acc = final.get("server-eval/accuracy")
    console.print(
        f"[green]done[/green] {result.summary['rounds']} rounds in "
        f"{result.summary['wall_seconds']:.1f} s"
        + (f", test accuracy {acc:.4f}" if acc is not None else "")
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
    report = write_report(args.run_dir)
    console.print(
        f"{headline(report['guarantee'], report['delta'])}; "
        f"wrote {args.run_dir}/privacy_report.{{json,md,html}}"
    )
    return 0


def _partition(args: argparse.Namespace, console: Console) -> int:
    from simulations.deploy import write_client_files

    overrides = dict(parse_override(o) for o in args.overrides)
    cfg = load_scenario(scenario_path(args.scenario), overrides)
    paths = write_client_files(cfg, args.out)
    console.print(f"wrote {len(paths)} node files ({cfg.data.dataset}) to {args.out}")
    return 0


def _deploy_local(args: argparse.Namespace, console: Console) -> int:
    import signal
    import tempfile
    import time

    from simulations.deploy import LocalDeployment

    overrides = dict(parse_override(o) for o in args.overrides)
    cfg = load_scenario(scenario_path(args.scenario), overrides)
    nodes = args.nodes or cfg.data.num_clients
    if args.out is not None and args.out.exists():  # refused before any process starts
        raise FileExistsError(f"--out {args.out} already exists; give a new directory")
    out = args.out or Path("runs") / time.strftime(f"%Y%m%d-%H%M%S-deployed-{cfg.task}")

    def interrupt(signum: int, frame: object) -> None:  # SIGTERM stops everything, as Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    with tempfile.TemporaryDirectory(prefix="fedcore-deploy-") as tmp:
        workdir = args.workdir or Path(tmp)
        console.print(f"starting a SuperLink and {nodes} SuperNodes in {workdir} ...")
        with LocalDeployment(workdir, cfg, nodes, insecure=args.insecure) as deployment:
            console.print(f"running {cfg.train.rounds} rounds with flwr run ...")
            run_dir = deployment.run(out)
    summary = json.loads((run_dir / "summary.json").read_text())
    acc = summary["final_metrics"].get("server-eval/accuracy")
    console.print(
        f"[green]done[/green] {summary['rounds']} rounds"
        + (f", test accuracy {acc:.4f}" if acc is not None else "")
        + (f"; privacy report: {run_dir / 'privacy_report.html'}" if "privacy" in summary else "")
    )
    console.print(f"results: {run_dir}")
    return 0


def _certs(args: argparse.Namespace, console: Console) -> int:
    from fedcore.certs import write_node_keys, write_server_certs

    hosts = args.hosts or ["localhost", "127.0.0.1"]
    try:
        files = write_server_certs(args.out, hosts)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    for i in range(args.nodes):
        write_node_keys(args.out, f"node-{i}")
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
    logging.getLogger("flwr").setLevel(logging.WARNING)
    try:
        if args.command == "config":
            from fedcore.config import describe

            for key, default, doc in describe():
                print(f"{key:28} {default:14} {doc}")
            return 0
        if args.command == "report":
            return _report(args, console)
        if args.command == "partition":
            return _partition(args, console)
        if args.command == "certs":
            return _certs(args, console)
        if args.command == "deploy-local":
            return _deploy_local(args, console)
        return _simulate(args, console)
    except (ConfigError, DatasetError, FileExistsError, DeploymentError) as err:
        console.print(f"[red]error:[/red] {escape(str(err))}")
        return 2
    except RunFailed as err:  # the run went wrong, the program did not: no traceback
        notes = "".join(f"; {note}" for note in getattr(err, "__notes__", ()))
        console.print(f"[red]run failed:[/red] {escape(str(err) + notes)}")
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]: the run directory keeps completed rounds")
        return 130
    # Anything else is a bug: it propagates, so its traceback reaches the log and the exit
    # status is 1 (the run directory, if there is one, already records it as failed).


if __name__ == "__main__":
    sys.exit(main())
