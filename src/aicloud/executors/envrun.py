"""The runtime-environment prelude: build (or reuse) a workload's ``runtime_env``, then become the workload.

``python envrun.py -- PYTHON ARGS...`` runs first inside the workload (in its sandbox, under its limits,
its output in the workload's log). It reads the spec from ``AICLOUD_RUNTIME_ENV`` (JSON:
``{"requirements": [...], "python": "3.11" | null}``) and the workspace's cache folder from
``AICLOUD_ENVS_DIR``, finds or builds the environment there, and ``execv``\\ s the environment's
interpreter with ``ARGS`` (``-m aicloud.training.bootstrap``, ``-m aicloud.serving.replica``).

The environment is a venv made without pip whose ``site-packages`` holds the requirements and a
``.pth`` that appends the control plane's own ``site-packages`` (and what its ``.pth`` files add, such
as an editable aicloud) *after* them: the environment's packages win, everything else (aicloud, numpy,
torch...) comes from the base. pip runs as the environment's interpreter (pip itself comes from the
base), so it sees the base's packages as installed and reuses them, and it honours the machine's pip
configuration (``/etc/pip.conf``, a torch constraint).

Cache: ``<envs>/<hash>/`` where the hash covers the normalized spec and the base (interpreter, its
version, ``AICLOUD_ENV_FINGERPRINT``: aicloud's version). A build happens in ``<hash>.building-<pid>``
and is renamed into place once complete; ``flock`` on ``<hash>.lock`` makes concurrent workloads with
the same spec build once. A cache hit touches ``<hash>/last_used``; :func:`collect` (the control plane,
hourly) removes environments unused for a while. Bounds: ``AICLOUD_ENV_BUILD_TIMEOUT_S`` (the pip run)
and ``AICLOUD_ENV_MAX_MB`` (the built environment's size).

Only the standard library, loaded by path: a cache hit costs one interpreter start-up and a ``stat``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import site
import subprocess
import sys
import time
from pathlib import Path

PREFIX = "[aicloud] runtime env"
LAST_USED = "last_used"
PTH_NAME = "_aicloud_base.pth"
_ERROR_LINES = 40


class BuildError(Exception):
    """The environment could not be built; the message says why (pip's own ERROR lines)."""


def say(message: str) -> None:
    sys.stdout.write(f"{message}\n")
    sys.stdout.flush()


def spec_hash(requirements: list[str], python: str, fingerprint: str) -> str:
    """The cache key: the requirements (order and duplicates do not matter), the Python minor and the
    base (this interpreter, its exact version, the site-packages layered under the env, aicloud's version)."""
    canonical = {
        "requirements": sorted({r.strip() for r in requirements if r.strip()}),
        "python": python,
        "base": [os.path.realpath(sys.executable), sys.version, base_site_dirs(), fingerprint],
    }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()[:24]


def installed_pythons() -> list[str]:
    """The ``python3.N`` interpreters on PATH (their minors), for an error message."""
    found: set[str] = set()
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        found.update(m.group(1) for n in names if (m := re.fullmatch(r"python(3\.\d+)", n)))
    return sorted(found, key=lambda v: tuple(int(x) for x in v.split(".")))


def check_python(wanted: str) -> str | None:
    """None for the control plane's own minor (the env is layered on its packages); else the other
    interpreter the launcher found on this node (``AICLOUD_ENV_PYTHON``), or BuildError."""
    have = f"{sys.version_info.major}.{sys.version_info.minor}"
    if wanted == have:
        return None
    other = os.environ.get("AICLOUD_ENV_PYTHON")
    if other and os.path.exists(other) and re.search(rf"python{re.escape(wanted)}$", other):
        return other
    installed = (
        ", ".join(sorted({have, *installed_pythons()}, key=lambda v: tuple(map(int, v.split("."))))) or have
    )
    raise BuildError(f"python {wanted} is not installed on this node; installed: {installed}")


def aicloud_requirements() -> list[str]:
    """aicloud's own base dependencies (no extras), psutil (the job session's system metrics) and
    packaging (the spec's requirements are checked with it): what
    a workload on another Python needs to run the bootstrap, ``aicloud.training`` and the SDK."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        reqs = requires("aicloud") or []
    except PackageNotFoundError:
        reqs = []
    base = [r for r in reqs if "extra ==" not in r and "extra==" not in r]
    return (
        [*base, "psutil>=5.9", "packaging>=23"]
        if base
        else [
            "psutil>=5.9",
            "packaging>=23",
            "httpx>=0.27",
            "pydantic>=2.6",
            "pydantic-settings>=2.2",
            "typer>=0.12",
            "rich>=13",
            "pyyaml>=6",
        ]
    )


def base_site_dirs() -> list[str]:
    """The control plane's site-packages folders (the base layered under every environment)."""
    dirs = [d for d in site.getsitepackages() if os.path.isdir(d)]
    return [os.path.realpath(d) for d in dirs]


def env_site_packages(env: Path, minor: str | None = None) -> Path:
    minor = minor or f"{sys.version_info.major}.{sys.version_info.minor}"
    return env / "lib" / f"python{minor}" / "site-packages"


def folder_mb(path: Path) -> float:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total / 1024**2


def _read_only_for_others(path: Path) -> None:
    """pip ran with umask 0 (the pip cache is shared by the workspace's workloads, each under a uid of
    its own); the environment itself is then made writable by its builder only."""
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            full = os.path.join(root, name)
            try:
                st = os.lstat(full)
                if not os.path.islink(full):
                    os.chmod(full, st.st_mode & ~0o022)
            except OSError:
                continue


def run_pip(
    python: Path, requirements: list[str], cache: Path, timeout_s: float, foreign: bool = False
) -> None:
    """``pip install`` the requirements into the environment of ``python``; its output goes to the log.
    ``foreign``: another Python than the control plane's, without pip: the control plane's pip installs
    into it (``--python``). BuildError with pip's ERROR lines on failure or timeout."""
    pip = [sys.executable, "-m", "pip", "--python", str(python)] if foreign else [str(python), "-m", "pip"]
    cmd = [*pip, "install", "--no-input", "--progress-bar", "off"]
    cmd += ["--disable-pip-version-check", "--cache-dir", str(cache), *requirements]
    env = {**os.environ, "PIP_NO_INPUT": "1", "PYTHONNOUSERSITE": "1"}
    old = os.umask(0)
    try:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
        )
    finally:
        os.umask(old)
    errors: list[str] = []
    tail: list[str] = []
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    import threading

    timer = threading.Timer(timeout_s, proc.kill)
    timer.daemon = True
    timer.start()
    try:
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            sys.stdout.write(f"  {line}\n")
            sys.stdout.flush()
            tail = [*tail[-(_ERROR_LINES - 1) :], line]
            if line.startswith("ERROR") or (errors and line.startswith(" ")):
                errors.append(line)
        code = proc.wait()
    finally:
        timer.cancel()
    if time.monotonic() >= deadline and code != 0:
        raise BuildError(f"pip ran past the build timeout ({timeout_s:.0f} s, AICLOUD_ENV_BUILD_TIMEOUT_S)")
    if code != 0:
        raise BuildError("pip failed: " + "\n".join((errors or tail)[-_ERROR_LINES:]))


def build(
    target: Path,
    requirements: list[str],
    cache: Path,
    timeout_s: float,
    max_mb: float,
    other: tuple[str, str] | None = None,
) -> float:
    """Build the environment into ``target`` (absent), through a ``.building-<pid>`` folder renamed into
    place when complete; its size in MB. ``other``: (interpreter, minor) of another Python than the
    control plane's: no layering; aicloud's package is linked in and its base dependencies installed."""
    building = target.with_name(f"{target.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    try:
        subprocess.run(
            [other[0] if other else sys.executable, "-m", "venv", "--without-pip", str(building)],
            check=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
        )
        site_dir = env_site_packages(building, other[1] if other else None)
        if other:  # aicloud is pure Python: its package folder serves any Python 3 minor
            (site_dir / "aicloud").symlink_to(Path(__file__).resolve().parents[1], target_is_directory=True)
            requirements = [*aicloud_requirements(), *requirements]
        else:
            dirs = ", ".join(repr(d) for d in base_site_dirs())
            (site_dir / PTH_NAME).write_text(f"import site; list(map(site.addsitedir, ({dirs},)))\n")
        if requirements:
            run_pip(building / "bin" / "python", requirements, cache, timeout_s, foreign=other is not None)
        size = folder_mb(building)
        if size > max_mb:
            raise BuildError(
                f"the environment is {size:.0f} MB, over the {max_mb:.0f} MB allowed (AICLOUD_ENV_MAX_MB)"
            )
        _read_only_for_others(building)
        (building / LAST_USED).touch()
        try:
            building.rename(target)
        except OSError:  # built meanwhile by a workload that did not see our lock (a lock file removed)
            if not target.is_dir():
                raise
            shutil.rmtree(building, ignore_errors=True)
        return size
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


def prepare(spec: dict, envs_dir: Path, fingerprint: str, timeout_s: float, max_mb: float) -> Path:
    """The environment of ``spec``, built if it is not in the cache; its folder."""
    requirements = [str(r) for r in spec.get("requirements") or []]
    python = str(spec.get("python") or f"{sys.version_info.major}.{sys.version_info.minor}")
    other = check_python(python)
    key = spec_hash(requirements, python, f"{fingerprint} {other or ''}".strip())
    target = envs_dir / key
    started = time.monotonic()
    if target.is_dir():
        _touch(target)
        say(f"{PREFIX} {key[:12]}: cached ({time.monotonic() - started:.2f} s)")
        return target
    envs_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(envs_dir / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"{PREFIX} {key[:12]}: another workload is building it, waiting...")
            fcntl.flock(fd, fcntl.LOCK_EX)
        if target.is_dir():
            _touch(target)
            say(f"{PREFIX} {key[:12]}: cached ({time.monotonic() - started:.2f} s)")
            return target
        say(f"{PREFIX} {key[:12]}: building ({len(requirements)} requirements)...")
        cache = envs_dir / ".pip-cache"
        cache.mkdir(exist_ok=True)
        size = build(target, requirements, cache, timeout_s, max_mb, (other, python) if other else None)
        say(f"{PREFIX} {key[:12]}: built in {time.monotonic() - started:.1f} s ({size:.0f} MB)")
        return target
    finally:
        os.close(fd)  # releases the lock


def _touch(target: Path) -> None:
    with contextlib.suppress(OSError):  # not ours to touch: the age is a hint
        os.utime(target / LAST_USED)


def collect(envs_root: Path, max_age_s: float, now: float | None = None) -> list[Path]:
    """Remove the environments under ``envs_root`` (``<workspace>/<hash>``) unused for ``max_age_s``, and
    builds left over that long ago (a workload killed mid-build); an environment whose lock is held
    (in use being built or waited for) is skipped. Returns what was removed."""
    now = time.time() if now is None else now
    removed: list[Path] = []
    if not envs_root.is_dir():
        return removed
    for workspace in sorted(p for p in envs_root.iterdir() if p.is_dir()):
        for entry in sorted(workspace.iterdir()):
            # the control plane runs this, in a folder its workloads write: never follow their links
            if entry.name.startswith(".") or entry.is_symlink() or not entry.is_dir():
                continue
            key = entry.name.split(".building-")[0]
            marker = entry / LAST_USED
            try:
                used = (marker if marker.exists() else entry).stat().st_mtime
            except OSError:
                continue
            if now - used < max_age_s:
                continue
            lock = workspace / f"{key}.lock"
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
                if not entry.name.count(".building-"):
                    lock.unlink(missing_ok=True)
            finally:
                os.close(fd)
    return removed


def main(argv: list[str]) -> int:
    if "--" not in argv or len(argv) < argv.index("--") + 2:
        sys.stderr.write("usage: envrun.py -- PYTHON ARGS...\n")
        return 2
    real = argv[argv.index("--") + 1 :]
    try:
        spec = json.loads(os.environ["AICLOUD_RUNTIME_ENV"])
        envs_dir = Path(os.environ["AICLOUD_ENVS_DIR"])
        timeout_s = float(os.environ.get("AICLOUD_ENV_BUILD_TIMEOUT_S") or 900)
        max_mb = float(os.environ.get("AICLOUD_ENV_MAX_MB") or 4096)
        env = prepare(spec, envs_dir, os.environ.get("AICLOUD_ENV_FINGERPRINT", ""), timeout_s, max_mb)
    except BuildError as exc:
        say(f"{PREFIX}: build failed: {exc}")
        return 1
    except (KeyError, ValueError, OSError) as exc:
        say(f"{PREFIX}: could not prepare the environment: {type(exc).__name__}: {exc}")
        return 1
    python = str(env / "bin" / "python")
    os.environ["PATH"] = os.pathsep.join([str(env / "bin"), os.environ.get("PATH", os.defpath)])
    os.environ["VIRTUAL_ENV"] = str(env)
    os.execv(python, [python, *real[1:]])
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
