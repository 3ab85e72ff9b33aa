"""Semantic search (docs/zoo.md#semantic-search) on a real server: an index over a text column of a
dataset version, built with zoo/minilm in the sandboxed worker and kept as a versioned artifact with
lineage; search returns the nearest rows; a bad column is a 422, another workspace's dataset a 404."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from aicloud import Client
from aicloud.testing.server import ServerProcess

from helpers import assert_error

ROWS = [
    ("I forgot my password and cannot log in", "account"),
    ("How do I reset the password of my account?", "account"),
    ("Where is my parcel? It has not arrived yet", "delivery"),
    ("The package was delivered to the wrong address", "delivery"),
    ("I would like a refund for the broken kettle", "refund"),
    ("Can I get my money back for this order?", "refund"),
    ("What time does the shop open on Sunday?", "hours"),
    ("Are you open on public holidays?", "hours"),
]


def test_index_a_text_column_and_search_it(
    client: Client, server: ServerProcess, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    client.zoo.pull("minilm")  # a no-op when another test pulled it
    csv = tmp_path / "faq.csv"
    csv.write_text("text,label\n" + "".join(f'"{t}",{label}\n' for t, label in ROWS))
    ds = client.datasets.create(unique("faq"), csv)
    index = client.embeddings.index(ds, "text")
    assert index.info.rows == len(ROWS) and index.info.dimensions == 384 and index.info.backend == "numpy"
    version = index.info.index
    assert version.config["task"] == "vector-index"
    assert (
        version.lineage["datasets"][0]["id"] == ds.id
        and version.lineage["derived"]["method"] == "embedding-index"
    )
    assert version.lineage["parent_version"] == client.models.get("zoo/minilm").id
    hits = index.search("my refund has not been paid back", k=3).hits
    assert len(hits) == 3 and hits[0].score >= hits[1].score >= hits[2].score
    assert {ROWS[h.row][1] for h in hits[:2]} == {"refund"}, hits
    assert hits[0].text == ROWS[hits[0].row][0] and 0 < hits[0].score <= 1.0 + 1e-5
    # by name: the latest version of the index; a second build is version 2
    again = client.embeddings.index(f"{ds.name}:{ds.version}", "text", name=version.name)
    assert again.info.index.version == version.version + 1
    top = client.embeddings.search(version.name, "when are you open", k=2).hits
    assert {ROWS[h.row][1] for h in top} == {"hours"}

    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=120
    ) as h:
        bad = h.post("/api/v1/embeddings/indexes", json={"dataset": ds.ref, "column": "nope"})
        assert "no column 'nope'" in assert_error(bad, 422, "validation_error")["message"]
        not_text = h.post(
            "/api/v1/embeddings/indexes",
            json={"dataset": ds.ref, "column": "text", "model": "zoo/digits-cnn"},
        )
        if client.zoo.show("digits-cnn").pulled:
            assert "not a text-embedding model" in assert_error(not_text, 422)["message"]
        else:
            assert_error(not_text, 422)
        k_zero = h.post(f"/api/v1/embeddings/indexes/{version.name}/search", json={"query": "x", "k": 0})
        assert_error(k_zero, 422)
        empty = h.post(f"/api/v1/embeddings/indexes/{version.name}/search", json={"query": ""})
        assert_error(empty, 422)

    # another workspace: the dataset and the index do not exist there
    other = client.workspaces.create(unique("search-team"))
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {other.admin_token.token}"}, timeout=120
    ) as h:
        assert_error(h.post("/api/v1/embeddings/indexes", json={"dataset": ds.ref, "column": "text"}), 404)
        assert_error(
            h.post(f"/api/v1/embeddings/indexes/{version.name}/search", json={"query": "refund"}), 404
        )
