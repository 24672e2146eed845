"""``python -m harness``: demo, certify, replay, judge."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from harness.procs import install_signal_handlers, interrupt_signal
from harness.records import interrupted_exit_code


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--balancer-cmd", default=None, help="the build to test: a command with {config}")
    p.add_argument("--toxiproxy-url", default=None, help="a real Toxiproxy server (default: the embedded one)")


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds above 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness", description="wschaos: chaos harness for WebSocket balancers"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="kill the primary under 4 playing clients and summarise")
    _common(demo)
    demo.add_argument("--runs-dir", default="runs", help="where the run directory goes (default: runs/)")

    cert = sub.add_parser("certify", help="run the chaos suite against a build and issue a verdict")
    _common(cert)
    cert.add_argument("--profile", choices=("quick", "ci", "nightly"), default="quick")
    cert.add_argument("--report", default=None, metavar="DIR", help="report directory")
    cert.add_argument(
        "--scenario",
        action="append",
        metavar="NAME",
        help="run only this named scenario (repeatable; no generated plans)",
    )
    cert.add_argument(
        "--scenario-file", action="append", metavar="FILE", help="also run a scenario from a .json or .py file"
    )
    cert.add_argument(
        "--hypothesis-examples", type=_non_negative_int, default=None, metavar="N", help="override the profile"
    )
    cert.add_argument(
        "--generated",
        type=_non_negative_int,
        default=None,
        metavar="N",
        help="run N generated fault plans (with --scenario, none are run unless this asks)",
    )
    cert.add_argument("--seed", type=int, default=None, metavar="N", help="make the generated plans reproducible")
    cert.add_argument(
        "--fail-fast", action="store_true", help="stop at the first failing scenario; print the time to it"
    )
    cert.add_argument(
        "--parallel",
        type=_positive_int,
        default=None,
        metavar="N",
        help="run scenarios on N independent clusters at once (default: 3 per core, at most 6)",
    )
    cert.add_argument(
        "--ready-timeout",
        type=_positive_seconds,
        default=20.0,
        metavar="S",
        help="how long the build may take to accept TCP on its listen address (default 20)",
    )
    cert.add_argument(
        "--smoke-timeout",
        type=_positive_seconds,
        default=None,
        metavar="S",
        # The default is harness.smoke.SMOKE_TIMEOUT_S, not imported here: a cluster's modules would
        # slow every `python -m harness` start (tests/harness/test_main.py holds them equal).
        help="how long the smoke gate waits for its first clients to play before it refuses the build (default 15)",
    )

    replay = sub.add_parser("replay", help="replay a saved scenario (JSON) and judge it")
    _common(replay)
    replay.add_argument("file", help="scenario.json, as printed by a failing run")
    replay.add_argument("--runs-dir", default="runs")

    judge = sub.add_parser("judge", help="re-judge a stored run directory without running anything")
    judge.add_argument("run_dir")
    return parser


def _run_scenario_cli(scenario_path: str | None, args: argparse.Namespace, demo: bool = False) -> int:
    from harness.catalog import load_scenario_file, named_scenarios
    from harness.cluster import BuildFailed, Cluster, ClusterSpec, default_balancer_cmd, default_toxiproxy_url
    from harness.procs import ProcessFailed
    from harness.runner import ScenarioRunner
    from harness.scenario import ScenarioError

    try:
        scenario = named_scenarios()["kill_primary"] if demo else load_scenario_file(scenario_path or "")
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    spec = ClusterSpec(
        balancer_cmd=args.balancer_cmd or default_balancer_cmd(),
        toxiproxy_url=args.toxiproxy_url or default_toxiproxy_url(),
    )
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"  # never reuse a run directory
    root = Path(args.runs_dir) / f"{'demo' if demo else 'replay'}-{scenario.name}-{stamp}"
    cluster = Cluster(root / "cluster", spec)
    try:
        cluster.start()
        judged = ScenarioRunner(cluster).run(scenario, root / "run")
    except (BuildFailed, ProcessFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        cluster.close()
    if demo:
        from harness.demo import demo_summary

        ok, text = demo_summary(judged)
        print(text)
        return 0 if ok else 1
    print(judged.summary())
    return {"pass": 0, "fail": 1}.get(judged.outcome, 3)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    install_signal_handlers()
    try:
        if args.command == "demo":
            return _run_scenario_cli(None, args, demo=True)
        if args.command == "replay":
            return _run_scenario_cli(args.file, args)
        if args.command == "certify":
            from harness.certify import certify_main

            return certify_main(args)
        if args.command == "judge":
            from harness.checkers import judge
            from harness.history import load_run
            from harness.records import RUN_META_FILE, RecordError, read_json_object, render_violations
            from harness.scenario import Scenario, ScenarioError

            path = Path(args.run_dir)
            meta_path = path / RUN_META_FILE
            if not meta_path.is_file():
                print(f"error: {path} is not a run directory (no run.json)", file=sys.stderr)
                return 2
            # load_run() tolerates a malformed run.json (it judges an empty one); re-judging a
            # stored run must not, so it is read here first and any problem is one line, exit 2.
            try:
                read_json_object(meta_path)
            except RecordError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            only: list[str] | None = None
            scenario_path = path / "scenario.json"
            if scenario_path.exists():
                # The runner judged only the scenario's invariants; so must a re-judge.
                try:
                    only = list(Scenario.load(scenario_path).invariants)
                except ScenarioError as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return 2
            try:
                run = load_run(path)
                results = judge(run, only=only)
            except (OSError, ValueError) as exc:  # an unreadable file, or an unknown invariant
                why = (str(exc).splitlines() or [type(exc).__name__])[0]
                print(f"error: {path}: cannot judge: {why}", file=sys.stderr)
                return 2
            if only is not None:
                print(f"judging the {len(only)} invariant(s) listed in {scenario_path}")
            for r in results:
                print(f"{r.status:<11} {r.invariant}  {r.note}")
                for line in render_violations(r.violations, indent="    "):
                    print(line)
            from harness.outcome import decide
            from harness.recovery import describe_figures, recovery_figures

            print(f"recovery: {describe_figures(recovery_figures(run))}")
            outcome, reasons = decide(run, results)
            print(f"outcome: {outcome}")
            for reason in reasons:
                print(f"  inconclusive: {reason}")
            return {"pass": 0, "fail": 1}.get(outcome, 3)
    except KeyboardInterrupt as exc:
        sig = interrupt_signal(exc)
        print(f"interrupted by {sig.name}; every process was stopped", file=sys.stderr)
        return interrupted_exit_code(sig)
    return 2


if __name__ == "__main__":
    sys.exit(main())
