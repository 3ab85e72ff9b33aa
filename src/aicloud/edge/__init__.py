"""The edge: serving a signed model bundle offline (docs/edge.md).

:mod:`aicloud.edge.serve` verifies a bundle (:mod:`aicloud.artifacts.bundle`) and serves it with the
replica's own app (:mod:`aicloud.serving.app`): ``/predict`` and the Open Inference Protocol. It
needs ``aicloud[edge]`` (ONNX Runtime, numpy, FastAPI, uvicorn, cryptography) and never imports
torch or anything of the control plane.
"""
