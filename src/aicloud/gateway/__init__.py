"""Endpoint routing: the registry the deployment controller writes, and the gateway that reads it.

* :mod:`aicloud.gateway.registry`: the live routing table (``EndpointRegistry``);
* :mod:`aicloud.gateway.asgi`: ``/v1/endpoints/...`` as a raw ASGI app (``EndpointApp``) and its
  auth decision (``require_endpoint_caller``);
* :mod:`aicloud.gateway.proxy`: the data path (``Gateway``: choose, hold, forward, retry);
* :mod:`aicloud.gateway.upstream`: the keep-alive HTTP/1.1 client to the replicas.

This package module stays import-free so that the server state can import
:mod:`aicloud.gateway.registry` without pulling the server back in.
"""
