"""Model compression: ONNX export, int8 quantization, structured pruning and the comparison of a
model's variants (docs/compression.md).

Loading a model means importing torch and ONNX Runtime, which the control plane never does: the
work runs in a worker process in the workload sandbox, one per request.

* :mod:`aicloud.compression.runner`: starts the worker (confined), hands it a request and reads its
  answer; standard library only, what the control plane imports;
* :mod:`aicloud.compression.worker`: the worker (``python -m aicloud.compression.worker``);
* :mod:`aicloud.compression.export`: a built-in model (safetensors + JSON) to ``model.onnx``, checked
  against the parent on examples built from the signature;
* :mod:`aicloud.compression.quantize`: ONNX Runtime's dynamic and static int8 quantization;
* :mod:`aicloud.compression.prune`: structured pruning of a built-in model, and a short fine-tune;
* :mod:`aicloud.compression.compare`: size, latency and accuracy of several variants.
"""
