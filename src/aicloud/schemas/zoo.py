"""Wire models of the model zoo (docs/zoo.md)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from aicloud.schemas.jobs import ModelVersionOut


class ZooEntryOut(BaseModel):
    """A catalog entry, and whether this server has pulled it."""

    name: str
    ref: str = Field(description="the model reference every workspace uses: zoo/<name>")
    title: str
    task: str
    summary: str
    use: str = Field(description="what it is for")
    source: str
    licence: str
    version: int = Field(description="the entry's revision: a pull registers it once")
    requires: list[dict[str, str]] = Field(default_factory=list)
    installed: bool = Field(description="whether every package its pull needs is installed on the server")
    install: list[str] = Field(default_factory=list, description="what to pip install for a missing package")
    signature: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    notes: str = ""
    size_bytes: int | None = Field(
        default=None, description="the pulled version's files (or the shipped files before a pull)"
    )
    pulled: bool = False
    model_version: ModelVersionOut | None = Field(default=None, description="the pulled version, if any")


class ZooPullOut(BaseModel):
    entry: ZooEntryOut
    created: bool = Field(description="false: the entry was pulled already and nothing was done")
    seconds: float = 0.0
    check: dict[str, Any] = Field(
        default_factory=dict, description="the conversion's check (minilm: vs torch)"
    )
