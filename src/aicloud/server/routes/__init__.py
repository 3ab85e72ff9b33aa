"""The HTTP API: one router per resource, and the request and response bodies they stream.

A route reads the request, checks the caller (:mod:`aicloud.server.deps`) and calls a service
(:mod:`aicloud.server.services`); only routes import from here.

* :mod:`._uploads`: request bodies (multipart or raw) streamed into the blob store.
* :mod:`._streaming`: a stored blob streamed back, decrypted on the fly.
"""
