"""The in-replica runtime: Service classes, the dynamic batcher, model runtimes and protocols.

See docs/serving.md for the replica contract; :mod:`aicloud.serving.replica` is the entry point.
"""

from aicloud.serving.service import Service, handler

__all__ = ["Service", "handler"]
