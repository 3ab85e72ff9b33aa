"""The gateway → replica channel's wire format (aicloud.wire.frames). The channels over real sockets:
``tests/integration/test_gateway_channel.py``."""

from __future__ import annotations

import pytest

from aicloud.wire import frames as wire


def test_frames_survive_any_split_of_the_byte_stream() -> None:
    frames = [
        wire.frame_with_head(wire.REQUEST, 1, b"POST /predict\r\ncontent-type: application/json\r\n", b"{}"),
        wire.frame(wire.CANCEL, 2),
        wire.frame_with_head(wire.FULL, 3, b"200\r\n", b"x" * 100_000),
        wire.frame(wire.END, 4, b""),
    ]
    data = b"".join(frames)
    for step in (1, 7, 9, 4096, len(data)):
        decoder = wire.Decoder()
        got = []
        for i in range(0, len(data), step):
            got += decoder.feed(data[i : i + step])
        assert [(kind, sid) for kind, sid, _ in got] == [
            (wire.REQUEST, 1),
            (wire.CANCEL, 2),
            (wire.FULL, 3),
            (wire.END, 4),
        ]
    head, body = wire.split_head(got[2][2])
    assert head == b"200\r\n" and body == b"x" * 100_000
    first, headers = wire.parse_head(wire.split_head(got[0][2])[0])
    assert first == b"POST /predict" and headers == [(b"content-type", b"application/json")]


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x00\x00\x00\x00\x00\x00\x01\x07",  # kind 7
        b"\x00\x00\x00\x00\x00\x00\x00\x01\x00",  # kind 0
        b"\x7f\xff\xff\xff\x00\x00\x00\x01\x01",  # 2 GiB
    ],
)
def test_bad_frames_are_refused(data: bytes) -> None:
    with pytest.raises(wire.FrameError):
        wire.Decoder().feed(data)


def test_malformed_heads_are_refused() -> None:
    with pytest.raises(wire.FrameError):
        wire.split_head(b"\x00\x00")
    with pytest.raises(wire.FrameError):
        wire.split_head(b"\x00\x00\x00\x09abc")
    with pytest.raises(wire.FrameError):
        wire.parse_head(b"200\r\nno-colon-here\r\n")


def test_hello_carries_the_key_as_a_bearer() -> None:
    hello = wire.hello("127.0.0.1:9", "k3y")
    assert hello.startswith(wire.MAGIC) and hello.endswith(b"\r\n\r\n")
    assert wire.hello_key(hello.rstrip(b"\r\n")) == b"k3y"
    assert wire.hello_key(wire.MAGIC + b"authorization: Basic abc") is None
    assert wire.hello_key(wire.MAGIC + b"host: x") is None
