"""Semantic search (docs/zoo.md#semantic-search): build a vector index over a dataset version's text
column, search it. Both run in the sandboxed compression worker."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from aicloud.schemas.embeddings import IndexCreate, IndexOut, SearchOut, SearchRequest
from aicloud.server.deps import Member, State, Viewer
from aicloud.server.services.embeddings import build_index, search_index

router = APIRouter(tags=["embeddings"])


@router.post("/embeddings/indexes", response_model=IndexOut, status_code=201)
async def embeddings_index(body: IndexCreate, principal: Member, state: State) -> IndexOut:
    """Embed a text column of a dataset version (default encoder zoo/minilm) into a new version of
    the index model; 422 for a column the dataset lacks, 404 for a dataset of another workspace."""
    return await run_in_threadpool(build_index, state, principal, body)


@router.post("/embeddings/indexes/{ref}/search", response_model=SearchOut)
async def embeddings_search(ref: str, body: SearchRequest, principal: Viewer, state: State) -> SearchOut:
    """The ``k`` rows nearest to ``query`` (cosine), best first; ``ref`` is ``name``, ``name:3``
    or ``name@alias`` of an index."""
    return await run_in_threadpool(search_index, state, principal, ref, body)
