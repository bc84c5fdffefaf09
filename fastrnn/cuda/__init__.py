"""The CUDA C++ backend (``backend="cuda"``): persistent kernels from kernels/ via fastrnn._C.

Importing this package does not import fastrnn._C; see :mod:`.backend`.
"""
