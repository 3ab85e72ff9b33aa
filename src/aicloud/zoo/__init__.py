"""The model zoo (docs/zoo.md): pretrained entries every workspace can use as ``zoo/<entry>``.

:mod:`aicloud.zoo.catalog` reads the entries (one JSON file each under ``entries/``, files shipped
under ``data/`` or taken from an installed package); :mod:`aicloud.zoo.minilm` converts the MiniLM
encoder to a text-embedding model in the compression worker (it imports torch; the control plane
never imports it).
"""
