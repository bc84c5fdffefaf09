"""Triton backend of fastrnn: persistent recurrent kernels for Elman (tanh/relu), LSTM and GRU.

Files (one fact per place):

- ``capacity.py``      the largest hidden size the kernels take, per cell, dtype and regime, and why
- ``cell_ids.py``      cell ids and what the forward saves for the backward (no Triton import)
- ``cell_pointwise.py`` the per-cell pointwise forward/backward formulas as ``@triton.jit`` helpers
                       (the equations of :mod:`fastrnn.cells`, differentiated by hand)
- ``cell_step.py``     one time step of a cell, forward and backward, shared by both regimes: gate
                       order, loads of gx, the recurrent dots of the forward, the saved-buffer
                       layout, the gate gradients and their stores
- ``forward.py``       small-H persistent forward kernel (all T steps in one launch, one program
                       per batch tile holding all of W_hh)
- ``backward.py``      small-H persistent reverse-time backward kernel
- ``large_h.py``       large-H forward and backward kernels (W_hh split across programs, a grid
                       barrier per step, or one launch per step)
- ``launch.py``        launching the large-H kernels: grid size from the compiled kernel's
                       occupancy, cooperative launch, the stall fallback to one launch per step
- ``autograd.py``      the ``torch.autograd.Function``: regime choice, launches, torch GEMMs
- ``backend.py``       registration as backend ``"triton"`` and the support checks
- ``resources.py``     compiles the kernels for sm_90 without a GPU and reports regs/shared memory

Importing this package (and ``backend.py``) does not import Triton: ``import fastrnn`` stays fast
and works where Triton is missing. The kernel modules import Triton and are only loaded when a
layer actually runs on this backend. Note that Triton decides at kernel *definition* time whether
to interpret (``TRITON_INTERPRET=1``, runs on the CPU) or compile, so the variable must be set
before the first Triton layer runs in a process.

``backend="auto"`` picks it only for configurations in :data:`fastrnn.measured.FASTER_THAN_TORCH`
(passed the equivalence tests on that GPU and measured faster than torch's kernels there; empty
until a GPU run fills it in); ``backend="triton"`` runs it.
"""
