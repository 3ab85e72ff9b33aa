"""Every setting is documented (docs/settings.md names each AICLOUD_* variable)."""

from __future__ import annotations

from pathlib import Path

from aicloud.config import Settings

DOCS = Path(__file__).parents[2] / "docs" / "settings.md"


def test_every_setting_is_documented() -> None:
    text = DOCS.read_text()
    missing = [
        f"AICLOUD_{name.upper()}" for name in Settings.model_fields if f"`AICLOUD_{name.upper()}`" not in text
    ]
    assert missing == [], f"document these in docs/settings.md: {missing}"


def test_every_setting_has_a_description() -> None:
    assert [n for n, f in Settings.model_fields.items() if not f.description] == []
