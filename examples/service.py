"""Your own code served as an endpoint: a ``Service`` whose ``@handler`` methods are routes.

    aicloud deploy create my-echo --service examples/service.py --entrypoint service.py:Echo
    aicloud call my-echo echo --json '{"text": "hi"}'          # → "echo: hi"
    aicloud call my-echo lengths --json '{"text": "four"}'     # batched handler → 4

Each handler is ``POST <endpoint>/<method name>`` with a JSON object of its parameters (checked
against the type hints); see docs/serving.md.
"""

from __future__ import annotations

from aicloud import Service, handler


class Echo(Service):
    def setup(self) -> None:
        # runs once per replica before it takes requests: load weights, open files here
        self.prefix = "echo: "

    @handler
    def echo(self, text: str) -> str:
        return self.prefix + text

    @handler(batch=True, max_batch_size=16)
    def lengths(self, text: list[str]) -> list[int]:
        # concurrent requests arrive together as one list (dynamic batching)
        return [len(t) for t in text]
