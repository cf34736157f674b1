"""The measurement core: which models exist and how they are installed (``registry``, ``assemble``,
``onnx_bert``), loading them (``models``), the metrics (``metrics``), the streaming measurement
(``streaming``: ``measure``) and the one-pass attention kernels (``kernels``).

Importing this package imports nothing: ``registry``, ``assemble`` and ``onnx_bert`` stay free of
torch, so the name checks and the installer run without it.
"""
