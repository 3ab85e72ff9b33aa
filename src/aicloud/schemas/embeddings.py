"""Wire models of semantic search (docs/zoo.md#semantic-search): vector indexes over a text column."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from aicloud.schemas.jobs import ModelVersionOut


class IndexCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(description="a dataset version of this workspace: name or name:version")
    column: str = Field(min_length=1, max_length=200, description="the text column to embed")
    model: str = Field(default="zoo/minilm", description="a text-embedding model version (ref)")
    name: str | None = Field(
        default=None,
        description="the index's model name (default <dataset>-<column>-index); each build is a version",
    )


class IndexOut(BaseModel):
    index: ModelVersionOut
    rows: int
    dimensions: int
    backend: str = Field(description="numpy (exact brute force) or faiss-hnsw (above the measured crossover)")
    seconds: float


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=10_000)
    k: int = Field(default=10, ge=1, le=1000)


class SearchHit(BaseModel):
    row: int = Field(description="the row's position in the indexed dataset version")
    score: float = Field(description="cosine similarity")
    text: str


class SearchOut(BaseModel):
    index: str = Field(description="name:version of the index searched")
    hits: list[SearchHit]
    backend: str
