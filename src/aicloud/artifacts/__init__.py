"""The model artifact: the one home of its format, its loader and code-archive extraction.

A model version is a folder: ``config.json`` plus ``model.safetensors`` (a built-in architecture,
rebuilt from the config) or ``model.onnx`` (any other ``torch.nn.Module``). Never pickle.

* :mod:`aicloud.artifacts.format`: the on-disk format (``MODEL_FORMAT``, the file names,
  :func:`~aicloud.artifacts.format.read_config`) and its writers (``save_builtin``, ``save_onnx``);
  reading a config imports neither torch nor pandas, so a numpy replica reads it as it is;
* :mod:`aicloud.artifacts.loader`: :func:`~aicloud.artifacts.loader.load_model` →
  :class:`~aicloud.artifacts.loader.LoadedModel` (torch, ONNX Runtime);
* :mod:`aicloud.artifacts.architectures`: the built-in architectures (MLP, CNN) a config rebuilds;
* :mod:`aicloud.artifacts.preprocess`: the fitted preprocessing and label/target encoding a config
  stores, applied again to raw rows;
* :mod:`aicloud.artifacts.archive`: safe extraction of a code archive (command jobs, Service code).

Training writes artifacts, serving and the SDK read them; this package imports none of them (only
``aicloud.errors``), and importing it imports nothing heavy.
"""
