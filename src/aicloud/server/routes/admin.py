"""Server-wide administration: master key rotation."""

from __future__ import annotations

from fastapi import APIRouter

from aicloud.schemas import RotateKeyOut
from aicloud.server.deps import Admin, State
from aicloud.server.services.tokens import require_server_admin

router = APIRouter(tags=["admin"])


@router.post("/admin/rotate-key", response_model=RotateKeyOut)
def admin_rotate_key(principal: Admin, state: State) -> RotateKeyOut:
    """Make a new master key version current and rewrap every data key (no data is re-encrypted)."""
    require_server_admin(principal)
    blobs = state.blobs.rotate_master_key()
    secrets = 0
    for secret_id, sealed in state.store.secrets.all_ciphertexts():
        state.store.secrets.replace_ciphertext(secret_id, state.blobs.rewrap_sealed(sealed))
        secrets += 1
    return RotateKeyOut(blobs_rewrapped=blobs, secrets_rewrapped=secrets)
