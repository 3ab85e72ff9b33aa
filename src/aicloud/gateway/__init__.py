"""Endpoint routing: the registry the deployment controller writes, and the proxy that reads it.

Import the proxy from :mod:`aicloud.gateway.proxy` (``Gateway``, ``make_gateway_router``,
``require_endpoint_caller``); this package module stays import-free so that the server state
can import :mod:`aicloud.gateway.registry` without pulling the server back in.
"""
