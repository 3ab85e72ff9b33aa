"""The model zoo (docs/zoo.md): the catalog (any token) and pulling an entry (a server admin), and the
zoo's models under ``/models/zoo/<entry>``: read by any token, written by none (403)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from aicloud.entities.core import ZOO_REF_PREFIX, ZOO_WORKSPACE_ID
from aicloud.schemas.jobs import ModelVersionOut
from aicloud.schemas.zoo import ZooEntryOut, ZooPullOut
from aicloud.server.deps import Admin, Member, State, Viewer
from aicloud.server.services.models import refuse_zoo_write
from aicloud.server.services.names import check_name, parse_version
from aicloud.server.services.zoo import list_entries, pull_entry, show_entry

router = APIRouter(tags=["zoo"])


@router.get("/zoo", response_model=list[ZooEntryOut])
async def zoo_list(principal: Viewer, state: State) -> list[ZooEntryOut]:
    """The zoo's entries: what each is, its source, licence, size and signature, and whether it is pulled."""
    return await run_in_threadpool(list_entries, state)


@router.get("/zoo/{name}", response_model=ZooEntryOut)
async def zoo_show(name: str, principal: Viewer, state: State) -> ZooEntryOut:
    return await run_in_threadpool(show_entry, state, name)


@router.post("/zoo/{name}/pull", response_model=ZooPullOut)
async def zoo_pull(name: str, principal: Admin, state: State) -> ZooPullOut:
    """Register the entry for every workspace (an admin token of the ``default`` workspace); MiniLM is
    converted in the sandboxed compression worker (a minute or two). Pulled already: nothing is done."""
    return await run_in_threadpool(pull_entry, state, principal, name)


# --- the zoo's models, as /models/zoo/<entry>/... (the SDK's client.models.get("zoo/minilm"))


@router.get("/models/zoo/{entry}/versions/{version}", response_model=ModelVersionOut)
def zoo_model_version(entry: str, version: str, principal: Viewer, state: State) -> ModelVersionOut:
    from aicloud.server.services.models import resolve_model_ref

    ref = f"{ZOO_REF_PREFIX}{check_name(entry)}:{version}"
    parse_version(version)
    return ModelVersionOut.model_validate(resolve_model_ref(state, principal.workspace.id, ref))


@router.get("/models/zoo/{entry}/versions", response_model=list[ModelVersionOut])
def zoo_model_versions(entry: str, principal: Viewer, state: State) -> list[ModelVersionOut]:
    versions = state.store.models.list_versions(ZOO_WORKSPACE_ID, check_name(entry))
    return [ModelVersionOut.model_validate(v) for v in versions]


@router.api_route(
    "/models/zoo/{entry}/{rest:path}", methods=["POST", "PUT", "PATCH", "DELETE"], include_in_schema=False
)
def zoo_model_write(entry: str, rest: str, request: Request, principal: Member) -> None:
    """Any write to a zoo model (a version, an alias, a delete, a compression) is a 403."""
    raise refuse_zoo_write(f"{ZOO_REF_PREFIX}{entry}")
