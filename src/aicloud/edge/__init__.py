"""The edge: serving a signed model bundle offline (docs/edge.md).

:mod:`aicloud.edge.serve` verifies a bundle (:mod:`aicloud.artifacts.bundle`) and serves it with the
replica's own app (:mod:`aicloud.serving.app`): ``/predict`` and the Open Inference Protocol. It
needs ``aicloud[edge]`` (ONNX Runtime, numpy, FastAPI, uvicorn, cryptography) and never imports
torch or anything of the control plane. An edge node's state is :mod:`aicloud.edge.node`
(``aicloud edge join`` and ``pull``); its agent, :mod:`aicloud.edge.agent` (``aicloud edge agent``),
serves what the control plane placed on it, offline too.
"""
