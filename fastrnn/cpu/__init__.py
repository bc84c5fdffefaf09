"""The fused CPU backend (``backend="cpu"``): the C++ recurrence of csrc/cpu/ via fastrnn._cpu.

Files:

- ``isa.py``       which instruction-set build runs: the CPU's best, or ``FASTRNN_CPU_ISA``
- ``weights.py``   W_hh packed into the kernels' panels, cached per weight version
- ``autograd.py``  the ``torch.autograd.Function``: input GEMM, fused recurrence, gradient GEMMs
- ``backend.py``   registration as backend ``"cpu"`` and the support checks

Importing this package does not import fastrnn._cpu (``import fastrnn`` stays fast and works
where the extension was not built); a layer that runs on it does.
"""
