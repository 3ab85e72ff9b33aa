"""The wire between aicloud's processes: the one home of what both ends of a connection share.

- :mod:`aicloud.wire.frames`: the channel's wire format (the upgrade hello, frames, their decoder
  and the write coalescer); :mod:`aicloud.gateway.channel` is the gateway's end,
  :mod:`aicloud.serving.channel` the replica's.
- :mod:`aicloud.wire.tcp`: TCP helpers: keep-alive settings (:func:`~aicloud.wire.tcp.probe_liveness`)
  and :func:`~aicloud.wire.tcp.free_port`.
- :mod:`aicloud.wire.http1`: the HTTP/1.1 server protocol that sends each response in one write,
  which the control plane and every replica serve with.

It imports nothing of aicloud, so the control plane's gateway and the in-workload replica can both
depend on it.
"""
