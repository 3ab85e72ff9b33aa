"""A control-plane restart under load: do endpoints stay up? (issue #17)

    python bench/restart_under_load.py [--clients 4] [--before 4] [--down 1] [--after 6] [--runs 1]

Starts its own control plane (SQLite) in a temporary AICLOUD_HOME, deploys a one-replica echo
Service whose answers name the replica process that served them, and runs ``--clients``
closed-loop clients against it through the gateway. After ``--before`` seconds the control plane
is killed with SIGKILL, restarted ``--down`` seconds later, and the clients go on for ``--after``
seconds past its health check. The clients never stop: a call refused while the control plane is
down is a failure (each failure is followed by 10 ms of rest).

Prints one row per run: calls sent, ok, failed, and the failures split by when the call started
(in flight at the kill, while the control plane was down, after it was back), the time from the
control plane taking connections again to the first successful call, and whether that call was
served by the replica of before the kill (adopted) or by a new one (replaced, after a cold
start). Writes ``bench/results/restart_under_load.json``. The machinery is
:mod:`aicloud.testing.restart_load`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from aicloud.testing.restart_load import RestartReport, restart_under_load
from aicloud.testing.server import ServerProcess

RESULTS = Path(__file__).parent / "results" / "restart_under_load.json"


def table(reports: list[RestartReport]) -> Table:
    t = Table(title="control plane SIGKILL + restart under load (one echo replica)")
    for col in (
        "run",
        "sent",
        "ok",
        "failed",
        "in flight at kill",
        "while down",
        "after restart",
        "down s",
        "back → 1st ok s",
        "1st ok by",
        "ok/s before",
        "ok/s after",
    ):
        t.add_column(col, justify="right")
    for i, r in enumerate(reports, 1):
        t.add_row(
            str(i),
            str(r.sent),
            str(r.ok),
            str(r.failed),
            str(r.failed_in_flight_at_kill),
            str(r.failed_while_down),
            str(r.failed_after_restart),
            f"{r.down_s:.2f}",
            "-" if r.back_to_first_ok_s is None else f"{r.back_to_first_ok_s:.3f}",
            "same replica" if r.same_replica else "new replica",
            f"{r.ok_per_s_before:.0f}",
            f"{r.ok_per_s_after:.0f}",
        )
    return t


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--before", type=float, default=4.0, help="seconds of load before the kill")
    parser.add_argument("--down", type=float, default=1.0, help="seconds between the kill and the restart")
    parser.add_argument("--after", type=float, default=6.0, help="seconds of load after the restart")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    reports: list[RestartReport] = []
    with tempfile.TemporaryDirectory(prefix="aicloud-restart-bench-") as tmp:
        server = ServerProcess(Path(tmp) / "home").start()
        try:
            for run in range(args.runs):
                reports.append(
                    restart_under_load(
                        server,
                        f"restart-echo-{run}",
                        clients=args.clients,
                        before_s=args.before,
                        down_s=args.down,
                        after_s=args.after,
                        workdir=Path(tmp) / f"svc-{run}",
                    )
                )
        finally:
            server.stop(timeout=30)
    console = Console(width=200)
    console.print(table(reports))
    for r in reports:
        if r.failures_by_outcome:
            console.print(
                f"failures by outcome: {r.failures_by_outcome}; after the restart: "
                f"{r.failures_after_restart_by_outcome or 'none'}"
            )
        console.print(
            f"replica before: {r.replica_before} (pid {r.pid_before}); first ok after: "
            f"{r.replica_first_ok_after} (pid {r.pid_first_ok_after}); replicas after: {r.replicas_after}; "
            f"restart → healthy {r.restart_to_healthy_s:.2f}s"
        )
    result: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "runs": [r.as_dict() for r in reports],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
