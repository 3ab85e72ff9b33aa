"""``client.embeddings``: semantic search over a text column (docs/zoo.md#semantic-search).

``index(dataset_version, column)`` embeds the column with a text-embedding model (``zoo/minilm`` by
default) on the server, in its sandboxed worker, and keeps the vectors as a new version of a model
(task ``vector-index``) with lineage to the dataset version and the encoder; ``search`` returns the
``k`` nearest rows with their cosine scores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aicloud.schemas.embeddings import IndexOut, SearchOut

if TYPE_CHECKING:
    from aicloud.client.http import Transport

INDEXES = "/api/v1/embeddings/indexes"
#: embedding a column runs the encoder over every row on the server: minutes for large datasets
INDEX_TIMEOUT_S = 1860.0
SEARCH_TIMEOUT_S = 660.0


class VectorIndex:
    """An index version, searchable: ``client.embeddings.index(...)`` returns one."""

    def __init__(self, api: EmbeddingsAPI, out: IndexOut) -> None:
        self._api = api
        self.info = out

    @property
    def ref(self) -> str:
        return f"{self.info.index.name}:{self.info.index.version}"

    def search(self, query: str, k: int = 10) -> SearchOut:
        return self._api.search(self.ref, query, k)

    def __repr__(self) -> str:
        return f"VectorIndex({self.ref!r}, rows={self.info.rows}, backend={self.info.backend!r})"


class EmbeddingsAPI:
    """``client.embeddings``."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def index(
        self, dataset_version: Any, column: str, model: str = "zoo/minilm", name: str | None = None
    ) -> VectorIndex:
        """Embed ``column`` of ``dataset_version`` (a :class:`DatasetVersion` or ``"name:version"``)
        into a new version of the index ``name`` (default ``<dataset>-<column>-index``)."""
        if isinstance(dataset_version, str):
            ref = dataset_version
        else:
            ref = f"{dataset_version.name}:{dataset_version.version}"
        body = {"dataset": ref, "column": column, "model": model, "name": name}
        out = self._t.json("POST", INDEXES, json=body, retry=False, timeout=INDEX_TIMEOUT_S)
        return VectorIndex(self, IndexOut.model_validate(out))

    def search(self, index: str, query: str, k: int = 10) -> SearchOut:
        """The ``k`` rows of index ``index`` (``name``, ``name:3``, ``name@alias``) nearest to ``query``."""
        path = f"{INDEXES}/{quote(index, safe='')}/search"
        out = self._t.json("POST", path, json={"query": query, "k": k}, timeout=SEARCH_TIMEOUT_S)
        return SearchOut.model_validate(out)
