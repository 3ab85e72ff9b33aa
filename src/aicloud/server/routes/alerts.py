"""Alert rules (docs/alerts.md): members create and delete them, viewers read them and their events."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response

from aicloud.schemas.alerts import AlertCreate, AlertEventOut, AlertOut
from aicloud.server.deps import Member, State, Viewer
from aicloud.server.services.alerts import create_rule, event_out, rule_out
from aicloud.server.services.names import check_name

router = APIRouter(tags=["alerts"])


@router.post("/alerts", response_model=AlertOut, status_code=201)
def alerts_create(body: AlertCreate, principal: Member, state: State) -> AlertOut:
    rule = rule_out(create_rule(state, principal.workspace.id, body))
    if state.alerts is not None:
        state.alerts.wake()
    return rule


@router.get("/alerts", response_model=list[AlertOut])
def alerts_list(principal: Viewer, state: State) -> list[AlertOut]:
    return [rule_out(r) for r in state.store.alerts.list_rules(principal.workspace.id)]


@router.get("/alerts/events", response_model=list[AlertEventOut])
def alerts_events(
    principal: Viewer,
    state: State,
    name: str | None = Query(default=None, description="Only this rule's events."),
    limit: int = Query(default=100, ge=1, le=1000),
) -> list[AlertEventOut]:
    items = state.store.alerts.notifications(principal.workspace.id, rule_name=name, limit=limit)
    return [event_out(n) for n in items]


@router.get("/alerts/{name}", response_model=AlertOut)
def alerts_get(name: str, principal: Viewer, state: State) -> AlertOut:
    return rule_out(state.store.alerts.get_rule(principal.workspace.id, check_name(name)))


@router.delete("/alerts/{name}", status_code=204)
def alerts_delete(name: str, principal: Member, state: State) -> Response:
    state.store.alerts.delete_rule(principal.workspace.id, check_name(name))
    return Response(status_code=204)
