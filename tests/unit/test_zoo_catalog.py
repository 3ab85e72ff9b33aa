"""The zoo's catalog (aicloud.zoo.catalog): the shipped entries parse, and bad entries are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aicloud.errors import InvalidDataError, NotFoundError, ValidationError
from aicloud.zoo.catalog import (
    DATA,
    Entry,
    Requirement,
    get_entry,
    load_catalog,
    parse_entry,
    require_installed,
)


def _raw(**over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "x",
        "title": "X",
        "task": "image-classification",
        "summary": "s",
        "use": "u",
        "source": "src",
        "licence": "MIT",
        "version": 1,
        "build": {"kind": "files", "folder": "x"},
    }
    raw.update(over)
    return raw


def test_the_shipped_catalog_has_minilm_and_digits_cnn() -> None:
    catalog = load_catalog()
    assert {"minilm", "digits-cnn"} <= set(catalog)
    digits = catalog["digits-cnn"]
    assert digits.build == {"kind": "files", "folder": "digits_cnn"}
    assert (DATA / "digits_cnn" / "config.json").is_file()
    size = digits.size_bytes()
    assert size is not None and size < 500_000  # "a few hundred KB at most"
    config = json.loads((DATA / "digits_cnn" / "config.json").read_text())
    assert config["architecture"]["type"] == "cnn" and config["labels"] == list(range(10))
    assert config["metrics"]["accuracy"] == pytest.approx(digits.metrics["accuracy"], abs=1e-4)
    minilm = catalog["minilm"]
    assert minilm.build["kind"] == "convert" and minilm.size_bytes() is None
    assert minilm.licence == "Apache-2.0"
    assert {r.pip for r in minilm.requires} >= {"aicloud[zoo]"}
    for entry in catalog.values():
        assert entry.to_dict()["name"] == entry.name


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"build": {"kind": "download", "url": "http://x"}}, "kind is one of"),
        ({"build": {"kind": "convert", "op": "rm"}}, "build op"),
        ({"build": {"kind": "files", "folder": "../etc"}}, "names its folder"),
        ({"build": {"kind": "package", "folder": "m"}}, "names the module"),
        ({"version": 0}, "positive integer"),
        ({"version": True}, "positive integer"),
        ({"licence": ""}, "'licence'"),
        ({"requires": [{"module": "x"}]}, "requires"),
        ({"metrics": [1]}, "'metrics'"),
    ],
)
def test_bad_entries_are_refused_naming_the_field(over: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidDataError, match=match):
        parse_entry(_raw(**over))


def test_a_file_named_otherwise_than_its_entry_is_refused(tmp_path: Path) -> None:
    (tmp_path / "y.json").write_text(json.dumps(_raw()))
    with pytest.raises(InvalidDataError, match="not 'y'"):
        load_catalog(tmp_path)


def test_unknown_entry_lists_the_ones_there_are() -> None:
    with pytest.raises(NotFoundError, match=r"it has: .*digits-cnn"):
        get_entry("nope")


def test_a_missing_package_names_what_to_install() -> None:
    entry = parse_entry(_raw())
    assert isinstance(entry, Entry) and entry.missing() == []
    missing = Entry(**{**entry.__dict__, "requires": (Requirement("no_such_module_zz", "aicloud[zoo]"),)})
    with pytest.raises(ValidationError, match=r"pip install 'aicloud\[zoo\]'"):
        require_installed(missing)


def test_a_package_entry_finds_its_folder_in_the_installed_package() -> None:
    entry = parse_entry(_raw(build={"kind": "package", "module": "json", "folder": ""}))
    folder = entry.files_folder()
    assert folder is not None and (folder / "__init__.py").is_file()
