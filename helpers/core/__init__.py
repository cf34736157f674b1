"""The measurement core: which models exist and how they are installed (``registry``, ``assemble``,
``onnx_bert``, ``packed_e5``), loading them (``models``), the metrics (``metrics``), the streaming
measurement (``streaming``: ``measure``) and the one-pass attention kernels (``kernels``).

Importing this package imports nothing: ``registry``, ``assemble``, ``onnx_bert`` and ``packed_e5`` stay free
of torch, so the name checks and the installer run without it.
"""
