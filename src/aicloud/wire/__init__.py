"""The gateway ↔ replica channel: the one home of what both ends of that connection share.

- :mod:`aicloud.wire.frames`: the channel's wire format (the upgrade hello, frames, their decoder
  and the write coalescer); :mod:`aicloud.gateway.channel` is the gateway's end,
  :mod:`aicloud.serving.channel` the replica's.
- :mod:`aicloud.wire.tcp`: TCP helpers: keep-alive settings (:func:`~aicloud.wire.tcp.probe_liveness`)
  and :func:`~aicloud.wire.tcp.free_port`.

It imports nothing of aicloud, so the control plane's gateway and the in-workload replica can both
depend on it.
"""
