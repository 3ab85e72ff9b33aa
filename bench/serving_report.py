"""The tables and the issue #4 targets of bench/serving.py, from its result rows."""

from __future__ import annotations

from typing import Any

from peers.harness import PEERS
from rich.table import Table


def _fmt(v: Any) -> str:
    return "" if v is None else f"{v}"


def table_for(title: str, result: dict[str, Any]) -> Table:
    table = Table(title=title)
    for col in (
        *("system", "conc. / batch", "req/s", "p50 ms", "p99 ms"),
        *("of ceiling", "batch, busy", "load 1m", "errors"),
    ):
        table.add_column(col, justify="left" if col == "system" else "right")
    ceilings: dict[int, float] = {}
    for r in result["rows"]:
        if "batch" in r:  # the higher of the ceilings measured (before and after the HTTP rows)
            ceilings[r["batch"]] = max(ceilings.get(r["batch"], 0.0), r["req_s"])
    group = None
    for r in sorted(result["rows"], key=lambda r: ("batch" in r, r.get("concurrency", 0))):
        if group is not None and r.get("concurrency") != group:
            table.add_section()
        group = r.get("concurrency")
        if "batch" in r:
            head = (r["path"], f"batch {r['batch']}", r["req_s"], r["p50_ms"], r["p99_ms"])
            table.add_row(*map(_fmt, (*head, "", "", r["loadavg_1m"], "")))
            continue
        ceiling = ceilings.get(1 if r["concurrency"] == 1 else 32)  # the highest of any shape
        share = f"{100 * r['req_s'] / ceiling:.0f}%" if ceiling else ""
        errors = ", ".join(f"{k}: {v}" for k, v in r["errors"].items())
        busy = f"{r['batch_mean']}, {r['workers_busy']:.2f}" if "batch_mean" in r else ""
        values = (
            r["path"],
            r["concurrency"],
            r["req_s"],
            r["p50_ms"],
            r["p99_ms"],
            share,
            busy,
            r["loadavg_1m"],
            errors,
        )
        table.add_row(*map(_fmt, values))
    table.caption = (
        "one row (a) or sentence (b) per request; load generator (asyncio, keep-alive) shares the "
        "machine's cores with the servers; ceiling: same model in-process, no HTTP, rows/s, latency per "
        "call; of ceiling: vs batch 1 at concurrency 1, vs batch 32 above; batch, busy: aicloud's mean "
        "batch size and the share of the time its batch workers ran the model (aicloud_batch_seconds); "
        "load 1m: the machine's 1-minute load average at the end of the row (2 cores)"
    )
    return table


def targets(key: str, res: dict[str, Any]) -> dict[str, Any]:
    """The issue #4 targets measured in this run: (a) gateway p50 at c=1 ≤ 2 ms, cold start < 2 s;
    (b) aicloud at c=32 ≥ 85% of the batch-32 ceiling and ≥ 1.3 times the best peer.

    With target rounds (``round`` in the rows, bench/serving.py ``--rounds``), (b) takes for each
    worker shape the median over rounds of aicloud's c=32 req/s over the higher of the 2-loop
    ceilings measured just before and just after it (the next round's, or the closing one), and
    the median req/s over the best peer's best c=32 row (its rounds included); without them,
    aicloud's best c=32 row over the highest ceiling of the run."""

    def row(system: str, c: int) -> dict[str, Any] | None:
        return next((r for r in res["rows"] if r["system"] == system and r.get("concurrency") == c), None)

    out: dict[str, Any] = {}
    if key == "mlp":
        gw = row("gateway", 1)
        if gw and gw["p50_ms"] is not None:
            out["gateway_p50_c1_ms"] = {"value": gw["p50_ms"], "target": "<= 2", "met": gw["p50_ms"] <= 2}
        cold = res.get("cold_start")
        if cold:
            first = cold["first_request_s"]
            out["cold_start_s"] = {"value": first, "target": "< 2", "met": first < 2}
        return out
    rows = res["rows"]
    ceiling = max((r["req_s"] for r in rows if r.get("batch") == 32), default=None)
    peers = [r for r in rows if r["system"] in PEERS and r.get("concurrency") == 32]
    best = max(peers, key=lambda r: r["req_s"], default=None)  # the peer's best row, rounds included
    for system in ("gateway", "direct"):
        single = [r for r in rows if r["system"] == system and r.get("concurrency") == 32]
        top = max((r for r in single if "round" not in r), key=lambda r: r["req_s"], default=None)
        top_share = round(top["req_s"] / ceiling, 3) if top and ceiling else None
        paired = _paired(rows, system)
        if paired is not None:  # the median over rounds of the shape whose median is highest
            share, req_s, label, each = paired
            against = req_s / share if share else None  # the ceiling the median share implies
            out[f"{system}_c32_of_ceiling"] = {
                "value": share,
                "rounds": each,
                "row": label,
                "against": "the higher of the 2-loop ceilings just before and after it (median of rounds)",
                "single_row_of_highest_ceiling": top_share,
                "target": ">= 0.85",
                "met": share >= 0.85,
            }
        elif top is not None and top_share is not None:
            req_s, label, against = top["req_s"], top["path"], ceiling
            out[f"{system}_c32_of_ceiling"] = {
                "value": top_share,
                "row": label,
                "against": "the highest ceiling of the run",
                "target": ">= 0.85",
                "met": top_share >= 0.85,
            }
        else:
            continue
        if best and best["req_s"]:
            mine = req_s
            ratio = round(mine / best["req_s"], 3)
            out[f"{system}_c32_vs_best_peer"] = {
                "value": ratio,
                "row": label,
                "best_peer": best["path"],
                "target": ">= 1.3",
                "met": ratio >= 1.3,
            }
            if against:  # how close the peer came to the ceiling, and so what 1.3x of it asks
                peer_share = best["req_s"] / against
                out[f"{system}_c32_vs_best_peer"]["peer_share_of_ceiling"] = round(peer_share, 3)
                out[f"{system}_c32_vs_best_peer"]["asks_share_of_ceiling"] = round(1.3 * peer_share, 3)
    return out


def describe(name: str, t: dict[str, Any]) -> str:
    """One target of :func:`targets` as a line for the console (Rich markup)."""
    mark = "[green]met[/green]" if t["met"] else "[red]not met[/red]"
    peer = ""
    if "asks_share_of_ceiling" in t:
        peer = (
            f" (best peer: {t['best_peer']}, at {t['peer_share_of_ceiling']:.0%} of the ceiling, "
            f"so 1.3x asks for {t['asks_share_of_ceiling']:.0%})"
        )
    elif "best_peer" in t:
        peer = f" (best peer: {t['best_peer']})"
    return f"  #4 target {name}{peer}: {t['value']} (target {t['target']}): {mark}"


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _paired(rows: list[dict[str, Any]], system: str) -> tuple[float, float, str, list[float]] | None:
    """(median share of the higher ceiling around each round, median req/s, label, the shares) for
    the worker shape whose median share is highest; None without target rounds."""
    found: list[tuple[float, float, str, list[float]]] = []
    for workers in sorted({r["workers"] for r in rows if r["system"] == system and "round" in r}):
        ceilings = {r["round"]: r["req_s"] for r in rows if r.get("pair_workers") == workers and "batch" in r}
        mine = [r for r in rows if r["system"] == system and r.get("workers") == workers and "round" in r]
        shares = [
            round(r["req_s"] / max(ceilings[r["round"]], ceilings.get(r["round"] + 1, 0.0)), 3)
            for r in mine
            if ceilings.get(r["round"])
        ]
        if not shares:
            continue
        label = mine[0]["path"].rsplit(" (round", 1)[0] + f" ({len(shares)} rounds)"
        req_s = round(_median([r["req_s"] for r in mine]), 1)
        found.append((round(_median(shares), 3), req_s, label, shares))
    return max(found, default=None)
