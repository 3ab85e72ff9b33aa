"""The two files of a drift report travel as one: the server's joined reader and the worker's windows
give back each file's bytes exactly, whatever the read sizes and seeks."""

from __future__ import annotations

import io
from typing import BinaryIO, cast

import pytest

from aicloud.data.formats import read_full
from aicloud.data.worker import _Window
from aicloud.server.services.monitoring import _Joined


@pytest.mark.parametrize("chunk", [1, 7, 1000, 1 << 20])
def test_windows_over_a_joined_file_return_each_file(chunk: int) -> None:
    a, b = bytes(range(256)) * 13, b"second file\n" * 101
    joined = _Joined(io.BytesIO(a), len(a), io.BytesIO(b), len(b))
    assert joined.seek(0, io.SEEK_END) == len(a) + len(b)
    joined.seek(0)
    assert read_full(cast(BinaryIO, joined), len(a) + len(b)) == a + b
    for data, start in ((a, 0), (b, len(a))):
        window = _Window(cast(BinaryIO, joined), start, len(data))
        got = bytearray()
        while piece := window.read(chunk):
            got += piece
        assert bytes(got) == data
        window.seek(-5, io.SEEK_END)
        assert window.read() == data[-5:]
        buf = bytearray(10)
        window.seek(3)
        assert window.readinto(buf) == 10 and bytes(buf) == data[3:13]
