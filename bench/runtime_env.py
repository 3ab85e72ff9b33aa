"""Runtime environments (docs/runtime-envs.md): what a ``runtime_env`` costs a workload, and pip vs uv.

    python bench/runtime_env.py [--requirements lightgbm] [--hits 20] [--uv PATH]

Without a server: it runs the prelude (:mod:`aicloud.executors.envrun`) as a workload does, unsandboxed,
in a temporary envs folder. Reports, for ``--requirements``:

* cold build, empty pip cache (downloads) and cold build with the pip cache filled (a second spec
  of the same workspace, or the same spec after GC);
* the cache-hit overhead: ``python envrun.py -- python -c pass`` minus ``python -c pass`` (median of
  ``--hits`` runs each);
* the same environment built by uv (``uv venv`` + the same ``.pth`` + ``uv pip install --python``), cold
  and with uv's cache filled, and what each installer put into the environment (uv does not see the
  packages the ``.pth`` layers in: it installs numpy and scipy again, and would pull a CUDA torch for a
  requirement that depends on torch). Skipped when uv is not found.

Prints a table and writes bench/results/runtime_env.json. No targets are asserted: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from aicloud.executors import envrun  # noqa: E402

ENVRUN = str(ROOT / "src" / "aicloud" / "executors" / "envrun.py")


def _prelude(envs: Path, requirements: list[str], argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AICLOUD_RUNTIME_ENV": json.dumps({"requirements": requirements})}
    env["AICLOUD_ENVS_DIR"] = str(envs)
    return subprocess.run(
        [sys.executable, ENVRUN, "--", sys.executable, *argv],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _packages(site: Path) -> list[str]:
    return sorted(p.name.split("-")[0] for p in site.glob("*.dist-info"))


def _pip_builds(work: Path, requirements: list[str]) -> dict[str, object]:
    envs = work / "pip" / "ws"
    cold = _timed(lambda: _prelude(envs, requirements, ["-c", "pass"]))
    (built,) = [p for p in envs.iterdir() if p.is_dir() and not p.name.startswith(".")]
    site = envrun.env_site_packages(built)
    installed, size = _packages(site), envrun.folder_mb(built)
    shutil.rmtree(built)  # the pip cache stays: a rebuild downloads nothing
    warm = _timed(lambda: _prelude(envs, requirements, ["-c", "pass"]))
    return {"cold_s": cold, "warm_cache_s": warm, "installed": installed, "mb": size}


def _hit_overhead(work: Path, requirements: list[str], n: int) -> dict[str, float]:
    envs = work / "pip" / "ws"
    plain, wrapped = [], []
    for _ in range(n):
        plain.append(_timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True)))
        wrapped.append(_timed(lambda: _prelude(envs, requirements, ["-c", "pass"])))
    return {
        "plain_ms": statistics.median(plain) * 1000,
        "wrapped_ms": statistics.median(wrapped) * 1000,
        "overhead_ms": (statistics.median(wrapped) - statistics.median(plain)) * 1000,
    }


def _uv_build(uv: str, work: Path, requirements: list[str], cache: Path) -> tuple[float, Path]:
    target = work / f"uv-env-{time.monotonic_ns()}"

    def build() -> None:
        base = os.path.realpath(sys.executable)
        subprocess.run([uv, "venv", "-q", "--python", base, str(target)], check=True, capture_output=True)
        dirs = ", ".join(repr(d) for d in envrun.base_site_dirs())
        pth = envrun.env_site_packages(target) / envrun.PTH_NAME
        pth.write_text(f"import site; list(map(site.addsitedir, ({dirs},)))\n")
        cmd = [
            uv,
            "pip",
            "install",
            "-q",
            "--cache-dir",
            str(cache),
            "--python",
            str(target / "bin" / "python"),
        ]
        subprocess.run([*cmd, *requirements], check=True, capture_output=True)

    return _timed(build), target


def _uv_builds(uv: str, work: Path, requirements: list[str]) -> dict[str, object]:
    cache = work / "uv-cache"
    cold, target = _uv_build(uv, work, requirements, cache)
    site = envrun.env_site_packages(target)
    installed, size = _packages(site), envrun.folder_mb(target)
    warm, _ = _uv_build(uv, work, requirements, cache)
    return {"cold_s": cold, "warm_cache_s": warm, "installed": installed, "mb": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requirements", default="lightgbm", help="comma-separated requirements")
    parser.add_argument("--hits", type=int, default=20)
    parser.add_argument("--uv", default=shutil.which("uv"), help="the uv binary (default: on PATH)")
    args = parser.parse_args()
    requirements = [r for r in args.requirements.split(",") if r]
    results: dict[str, object] = {"requirements": requirements, "machine": platform.node()}
    with tempfile.TemporaryDirectory(prefix="aicloud-bench-envs-") as tmp:
        work = Path(tmp)
        results["pip"] = pip = _pip_builds(work, requirements)
        results["hit"] = hit = _hit_overhead(work, requirements, args.hits)
        results["uv"] = uv = _uv_builds(args.uv, work, requirements) if args.uv else None
    print(f"runtime env {requirements} (python {platform.python_version()}, {os.cpu_count()} cores)")
    print(f"{'installer':10} {'cold build':>11} {'pip/uv cache':>13} {'MB':>6}  installed")
    for name, row in (("pip", pip), ("uv", uv)):
        if isinstance(row, dict):
            print(
                f"{name:10} {row['cold_s']:10.2f}s {row['warm_cache_s']:12.2f}s {row['mb']:6.0f}  "
                f"{', '.join(row['installed'])}"
            )
    print(
        f"cache hit: python -c pass {hit['plain_ms']:.0f} ms, through the prelude {hit['wrapped_ms']:.0f} ms "
        f"(+{hit['overhead_ms']:.0f} ms, median of {args.hits})"
    )
    out = ROOT / "bench" / "results" / "runtime_env.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
