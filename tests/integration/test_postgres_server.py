"""The same control plane on the real PostgreSQL at 127.0.0.1:5432."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from aicloud import Client
from aicloud.errors import NotFoundError
from aicloud.testing.server import ServerProcess

from helpers import digits_csv, small_csv

pytestmark = pytest.mark.postgres


def test_dataset_flow_on_postgres(
    make_server: Callable[..., ServerProcess], pg_database: str, tmp_path: Path
) -> None:
    srv = make_server(env={"AICLOUD_DATABASE_URL": pg_database})
    with Client(url=srv.url, token=srv.token) as c:
        ds = c.datasets.create("digits", digits_csv(tmp_path / "d.csv"))
        train, test = ds.split(train_size=0.8, seed=0, stratify="label")
        assert (train.num_rows, test.num_rows) == (1437, 360)
        files = [small_csv(tmp_path / f"f{i}.csv", rows=5 + i) for i in range(20)]
        with ThreadPoolExecutor(20) as pool:
            versions = list(pool.map(lambda p: c.datasets.create("many", p), files))
        assert sorted(v.version for v in versions) == list(range(1, 21))
    srv.stop()
    srv.start()  # migrations are a no-op on restart; data survives
    with Client(url=srv.url, token=srv.token) as c:
        assert c.datasets.get("digits").num_rows == 1797
        assert len(c.datasets.versions("many")) == 20
        with pytest.raises(NotFoundError):
            c.datasets.get("nope")
