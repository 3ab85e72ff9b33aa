"""The zoo's catalog: what each entry is (source, licence, size, signature, what it is for) and where
its files come from. Standard library only: the control plane, the SDK's docs and the worker read it.

An entry is data, one JSON file ``entries/<name>.json``::

    {"name": "digits-cnn", "title": "...", "task": "image-classification", "summary": "...",
     "use": "what it is for", "source": "where it comes from", "licence": "MIT",
     "version": 1,                       # the entry's revision: a pull registers it once
     "build": {"kind": "files", "folder": "digits_cnn"}        # files under aicloud/zoo/data/<folder>
           | {"kind": "convert", "op": "minilm"}               # made by the compression worker
           | {"kind": "package", "module": "pkg", "folder": "model"},  # files of an installed package
     "requires": [{"module": "tokenizers", "pip": "aicloud[zoo]"}],
     "signature": {"inputs": [...], "outputs": [...]},          # what it takes and answers
     "metrics": {"accuracy": 0.98}}                              # measured, with "notes" saying how

A ``files`` or ``package`` entry's folder holds an aicloud model folder (``config.json`` and its
weights). A new entry needs no code: its JSON file and its files (``data/<folder>`` in the package).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aicloud.errors import InvalidDataError, NotFoundError, ValidationError

ENTRIES = Path(__file__).resolve().parent / "entries"
DATA = Path(__file__).resolve().parent / "data"
BUILD_KINDS = ("files", "convert", "package")
#: which ``convert`` operations the compression worker knows (aicloud.compression.worker)
CONVERTERS = ("minilm",)


@dataclass(frozen=True)
class Requirement:
    """A module an entry's pull needs, and what to install for it."""

    module: str
    pip: str

    def installed(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):
            return False


@dataclass(frozen=True)
class Entry:
    name: str
    title: str
    task: str
    summary: str
    use: str
    source: str
    licence: str
    version: int
    build: dict[str, Any]
    requires: tuple[Requirement, ...] = ()
    signature: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

    def missing(self) -> list[Requirement]:
        """The requirements not installed here."""
        return [r for r in self.requires if not r.installed()]

    def files_folder(self) -> Path | None:
        """Where a ``files`` or ``package`` entry's model folder is (None: made by a converter, or the
        package is not installed)."""
        kind = self.build["kind"]
        if kind == "files":
            return DATA / str(self.build["folder"])
        if kind == "package":
            spec = importlib.util.find_spec(str(self.build["module"]))
            if spec is None or spec.origin is None:
                return None
            return Path(spec.origin).parent / str(self.build.get("folder") or "")
        return None

    def size_bytes(self) -> int | None:
        """The bytes of its shipped files (None where a converter makes them)."""
        folder = self.files_folder()
        if folder is None or not folder.is_dir():
            return None
        return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "task": self.task,
            "summary": self.summary,
            "use": self.use,
            "source": self.source,
            "licence": self.licence,
            "version": self.version,
            "build": dict(self.build),
            "requires": [{"module": r.module, "pip": r.pip} for r in self.requires],
            "signature": dict(self.signature),
            "metrics": dict(self.metrics),
            "notes": self.notes,
            "size_bytes": self.size_bytes(),
        }


def _str(raw: dict[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidDataError(f"{where}: {key!r} must be a non-empty string")
    return value


def parse_entry(raw: Any, where: str = "entry") -> Entry:
    """An :class:`Entry` from its JSON object; InvalidDataError names the first bad field."""
    if not isinstance(raw, dict):
        raise InvalidDataError(f"{where}: an entry is a JSON object")
    build = raw.get("build")
    if not isinstance(build, dict) or build.get("kind") not in BUILD_KINDS:
        raise InvalidDataError(f"{where}: 'build' must be an object whose kind is one of {BUILD_KINDS}")
    if build["kind"] == "convert" and build.get("op") not in CONVERTERS:
        raise InvalidDataError(f"{where}: build op {build.get('op')!r} is none of {CONVERTERS}")
    if build["kind"] in ("files", "package") and not isinstance(build.get("folder", ""), str):
        raise InvalidDataError(f"{where}: build folder must be a string")
    if build["kind"] == "files" and (not build.get("folder") or ".." in str(build["folder"])):
        raise InvalidDataError(f"{where}: a files entry names its folder under aicloud/zoo/data")
    if build["kind"] == "package" and not isinstance(build.get("module"), str):
        raise InvalidDataError(f"{where}: a package entry names the module that holds its files")
    version = raw.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidDataError(f"{where}: 'version' must be a positive integer")
    requires = []
    for r in raw.get("requires") or []:
        if (
            not isinstance(r, dict)
            or not isinstance(r.get("module"), str)
            or not isinstance(r.get("pip"), str)
        ):
            raise InvalidDataError(f"{where}: each of 'requires' is {{'module': ..., 'pip': ...}}")
        requires.append(Requirement(r["module"], r["pip"]))
    for key in ("signature", "metrics"):
        if not isinstance(raw.get(key, {}), dict):
            raise InvalidDataError(f"{where}: {key!r} must be an object")
    return Entry(
        name=_str(raw, "name", where),
        title=_str(raw, "title", where),
        task=_str(raw, "task", where),
        summary=_str(raw, "summary", where),
        use=_str(raw, "use", where),
        source=_str(raw, "source", where),
        licence=_str(raw, "licence", where),
        version=version,
        build=dict(build),
        requires=tuple(requires),
        signature=dict(raw.get("signature") or {}),
        metrics=dict(raw.get("metrics") or {}),
        notes=str(raw.get("notes") or ""),
    )


def load_catalog(folder: Path = ENTRIES) -> dict[str, Entry]:
    """Every entry of ``folder`` (``*.json``), by name; a file whose name is not its entry's is an error."""
    out: dict[str, Entry] = {}
    for path in sorted(folder.glob("*.json")):
        try:
            raw = json.loads(path.read_text())
        except ValueError as exc:
            raise InvalidDataError(f"{path}: not valid JSON: {exc}") from None
        entry = parse_entry(raw, str(path))
        if entry.name != path.stem:
            raise InvalidDataError(f"{path}: the entry is named {entry.name!r}, not {path.stem!r}")
        out[entry.name] = entry
    return out


def get_entry(name: str, catalog: dict[str, Entry] | None = None) -> Entry:
    """The entry ``name`` or NotFoundError listing the ones there are."""
    catalog = load_catalog() if catalog is None else catalog
    entry = catalog.get(name)
    if entry is None:
        raise NotFoundError(
            f"the zoo has no entry {name[:100]!r}; it has: {', '.join(sorted(catalog)) or 'none'}",
            details={"kind": "zoo entry", "name": name[:100], "entries": sorted(catalog)},
        )
    return entry


def require_installed(entry: Entry) -> None:
    """A ValidationError (422) naming what to ``pip install`` when a requirement is missing."""
    missing = entry.missing()
    if missing:
        pips = sorted({r.pip for r in missing})
        raise ValidationError(
            f"zoo entry {entry.name!r} needs {', '.join(r.module for r in missing)}, not installed on "
            f"the server: pip install {' '.join(repr(p) for p in pips)}",
            details={"missing": [r.module for r in missing], "install": pips},
        )
