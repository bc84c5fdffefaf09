"""Host-side pieces shared by the fused-kernel backends (Triton, CUDA and CPU).

Both backends run one layer-direction as: torch GEMM for the input projection of all steps ->
one persistent forward kernel -> (backward) one persistent reverse-time kernel -> torch GEMMs
for the weight and input gradients. Everything around the kernels is the same math and lives
here once:

    gx    = x @ W_ih^T + b       b = b_ih + b_hh, except the GRU's n block, which gets b_in only
                                 (b_hn goes to the kernel, because r multiplies W_hn h + b_hn)
    dgh   = dgx, except the GRU's n block: dgh_n = da_n * r (returned by the backward kernel)
    dx    = dgx @ W_ih                       (T*B, G*H) x (G*H, I)
    dW_ih = dgx^T @ x                        (G*H, T*B) x (T*B, I)
    dW_hh = dgh^T @ h_prev                   h_prev[t] = state before step t
    db_ih = sum_{t,b} dgx,   db_hh = sum_{t,b} dgh

Also shared: what the autograd Functions save (the caller's own input tensors, so that a graph of
the backward stays connected to them; the kernels get contiguous copies, made where they are
used), double backward (:func:`differentiable_backward`), and empty problems (no kernel work:
the reference builds their graph, so gradients come out as zeros, not None).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .cells import CELLS


def uses_tf32(dtype: torch.dtype) -> bool:
    """Whether a float32 recurrent product may run on TF32 tensor cores: exactly when torch allows
    TF32 for matmuls (``torch.backends.cuda.matmul.allow_tf32``, off by default), so the fused
    kernels round like torch's own GEMMs under the same setting. 16-bit dtypes ignore it."""
    return dtype == torch.float32 and bool(torch.backends.cuda.matmul.allow_tf32)


def run_layer(function, backend_name: str, cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh,
              weight_hr, lengths, reverse):
    """Backend entry point (signature of :func:`fastrnn.reference.reference_layer`) around the
    autograd ``function``, whose apply takes (cell name, reverse, int32 lengths, x, h0, c0,
    w_ih, w_hh, b_ih, b_hh) and returns (out, h_T[, c_T])."""
    if weight_hr is not None:  # the backends' unsupported() rejects this before we get here
        raise NotImplementedError(f"the {backend_name} backend does not implement proj_size > 0")
    if x.shape[0] == 0 or x.shape[1] == 0 or weight_hh.shape[0] == 0:
        # Nothing for a kernel to compute, but the result must still be part of the graph
        # (zero gradients for the weights and states, as torch.nn gives): the reference's
        # graph of an empty problem is exactly that.
        from .reference import reference_layer

        return reference_layer(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, None, lengths, reverse)
    lengths = kernel_lengths(lengths, x)
    res = function.apply(cell.name, reverse, lengths, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh)
    return (res[0], res[1], res[2] if cell.has_cell_state else None)


def kernel_lengths(lengths: Optional[Tensor], x: Tensor) -> Tensor:
    """The (B,) int32 lengths the kernels read, clamped to [0, T] (all T without lengths)."""
    seq_len, batch = x.shape[0], x.shape[1]
    if lengths is None:
        return torch.full((batch,), seq_len, dtype=torch.int32, device=x.device)
    return lengths.to(device=x.device, dtype=torch.int32).clamp(0, seq_len).contiguous()


class TrainingForm(NamedTuple):
    """A fused backend's training form for compiled training (:mod:`fastrnn.ops`): its kernel
    forward and backward called directly, no autograd graph in between.

    ``forward_pass(cell, reverse, int32 lengths, x, h0, c0, w_ih, w_hh, b_ih, b_hh)`` returns
    (out, h_T, c_T, saved); ``backward_pass(cell, reverse, dout, dh_t, dc_t, x, h0, c0, w_hh, int32
    lengths, out, saved)`` returns (dgx, dgh_n, dh0, dc0), ``saved`` shaped (T, B, -1) as the
    forward made it. The GEMMs around them are this module's."""

    forward_pass: Callable
    backward_pass: Callable

    def unsupported(self, problem) -> Optional[str]:
        """Why the form cannot run ``problem`` (None: it can). An empty problem has no kernel work
        (:func:`run_layer` builds the reference's graph for it): the caller records that graph."""
        if problem.seq_len == 0 or problem.batch_size == 0 or problem.hidden_size == 0:
            return "an empty problem has no kernel work"
        return None

    def forward(self, cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse):
        """-> (out, h_T, c_T or None, workspace): ``workspace`` (1-D float32) is the kernel's saved
        activations, what :meth:`backward` needs beyond the inputs and ``out``."""
        out, h_t, c_t, saved = self.forward_pass(cell, reverse, kernel_lengths(lengths, x), x, h0, c0, w_ih, w_hh,
                                                 b_ih, b_hh)
        return out, h_t, (c_t if cell.has_cell_state else None), saved.reshape(-1)

    def backward(self, cell, inputs, lengths, reverse, out, workspace, dout, dh_t, dc_t, needs):
        """Gradients of ``inputs`` = (x, h0, c0, w_ih, w_hh, b_ih, b_hh) (None for an absent input
        or one whose flag in ``needs`` is off) from what :meth:`forward` returned."""
        x, h0, c0, w_ih, w_hh, b_ih, b_hh = inputs
        lengths = kernel_lengths(lengths, x)
        saved = workspace.view(x.shape[0], x.shape[1], -1)
        dgx, dghn, dh0, dc0 = self.backward_pass(cell, reverse, dout, dh_t, dc_t, x, h0, c0, w_hh, lengths, out, saved)
        dx, dw_ih, dw_hh, db_ih, db_hh = input_and_weight_grads(
            (needs[0], *needs[3:7]), not cell.sums_preactivations, b_ih is not None, dgx, dghn, x, w_ih, out, h0,
            lengths, reverse)
        return dx, dh0, (dc0 if cell.has_cell_state else None), dw_ih, dw_hh, db_ih, db_hh


def input_projection(is_gru: bool, x: Tensor, w_ih: Tensor, b_ih: Optional[Tensor],
                     b_hh: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor]]:
    """-> (gx (T, B, G*H) contiguous, b_hn (H,) for the GRU with bias, else None)."""
    bias, b_hn = None, None
    if b_ih is not None:
        if is_gru:
            hidden = b_hh.shape[0] // 3
            bias = b_ih + torch.cat([b_hh[: 2 * hidden], b_hh.new_zeros(hidden)])
            b_hn = b_hh[2 * hidden:].contiguous()
        else:
            bias = b_ih + b_hh
    return F.linear(x, w_ih, bias).contiguous(), b_hn


def prev_state(out: Tensor, h0: Tensor, lengths: Tensor, reverse: bool) -> Tensor:
    """(T, B, H): the state each step started from (only read where the step is active)."""
    if not reverse:
        return torch.cat([h0.unsqueeze(0), out[:-1]])
    seq_len = out.shape[0]
    shifted = torch.cat([out[1:], h0.unsqueeze(0)])
    # The reverse direction's first active step (t = len-1) starts from h0; out[len] is 0 there.
    has_prev = (torch.arange(1, seq_len + 1, device=out.device)[:, None] < lengths[None, :]).unsqueeze(-1)
    return torch.where(has_prev, shifted, h0.unsqueeze(0))


def input_and_weight_grads(needs, is_gru: bool, has_bias: bool, dgx: Tensor, dghn: Optional[Tensor],
                           x: Tensor, w_ih: Tensor, out: Tensor, h0: Tensor, lengths: Tensor,
                           reverse: bool):
    """-> (dx, dW_ih, dW_hh, db_ih, db_hh), None where ``needs`` (needs_input_grad of x, w_ih,
    w_hh, b_ih, b_hh) says the gradient is not wanted. ``dghn`` is the GRU's dgh_n block."""
    need_x, need_w_ih, need_w_hh, need_b_ih, need_b_hh = needs
    seq_len, batch, input_size = x.shape
    hidden = h0.shape[-1]
    dgx2 = dgx.view(seq_len * batch, -1)
    dgh2 = dgx2
    if is_gru:
        dgh2 = torch.cat([dgx[..., : 2 * hidden], dghn], dim=-1).view(seq_len * batch, -1)
    dx = (dgx2 @ w_ih).view(seq_len, batch, input_size) if need_x else None
    dw_ih = dgx2.t() @ x.reshape(seq_len * batch, input_size) if need_w_ih else None
    dw_hh = None
    if need_w_hh:
        dw_hh = dgh2.t() @ prev_state(out, h0, lengths, reverse).reshape(seq_len * batch, hidden)
    db_ih = dgx2.sum(0) if has_bias and need_b_ih else None
    db_hh = dgh2.sum(0) if has_bias and need_b_hh else None
    return dx, dw_ih, dw_hh, db_ih, db_hh


def save_inputs(ctx, cell_name: str, reverse: bool, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, *extra):
    """Save what every fused backward needs: the Function's own inputs (not contiguous copies
    of them: a double backward must reach the caller's tensors through them), the int32
    lengths, then ``extra`` (outputs and kernel buffers). Read back with :func:`saved_inputs`."""
    ctx.cell_name, ctx.reverse, ctx.has_bias = cell_name, reverse, b_ih is not None
    ctx.save_for_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, *extra)


def saved_inputs(ctx):
    """-> ((x, h0, c0, w_ih, w_hh, b_ih, b_hh), lengths, extra tuple) as saved by save_inputs."""
    saved = ctx.saved_tensors
    return saved[:7], saved[7], saved[8:]


def differentiable_backward(ctx, grads):
    """The backward of a fused layer Function when autograd records it (``create_graph=True``,
    i.e. grad mode is on inside ``backward``): the layer is recomputed by the reference from
    the saved inputs and differentiated with ``create_graph=True``, so second derivatives (a
    gradient penalty, ``gradgradcheck``) are the reference's, exact to its precision. The
    kernels have no differentiable backward; this path never runs them.

    ``grads`` are the gradients of (out, h_T[, c_T]). Returns the Function's gradient tuple."""
    from .reference import reference_layer

    inputs, lengths, _ = saved_inputs(ctx)
    cell = CELLS[ctx.cell_name]
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = inputs
    with torch.enable_grad():
        out, h_t, c_t = reference_layer(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, None, lengths, ctx.reverse)
    outputs = (out, h_t, c_t) if cell.has_cell_state else (out, h_t)
    # Unused outputs may bring None gradients (set_materialize_grads off elsewhere): zeros then.
    grads = [g if g is not None else torch.zeros_like(y) for g, y in zip(grads, outputs)]
    wanted = [k for k, tensor in enumerate(inputs) if tensor is not None and ctx.needs_input_grad[3 + k]]
    found = torch.autograd.grad(outputs, [inputs[k] for k in wanted], grads, create_graph=True, allow_unused=True)
    result = [None] * 10
    for k, grad in zip(wanted, found):
        result[3 + k] = grad if grad is not None else torch.zeros_like(inputs[k])
    return tuple(result)


def backward_outputs(ctx, is_gru: bool, is_lstm: bool, dgx: Tensor, dghn: Optional[Tensor],
                     dh0: Tensor, dc0: Optional[Tensor], x: Tensor, w_ih: Tensor, out: Tensor,
                     h0: Tensor, lengths: Tensor):
    """The gradient tuple of a fused layer Function whose forward took (cell, reverse, lengths,
    x, h0, c0, w_ih, w_hh, b_ih, b_hh), from what its backward kernel returned."""
    need = ctx.needs_input_grad
    dx, dw_ih, dw_hh, db_ih, db_hh = input_and_weight_grads(
        need[3:4] + need[6:10], is_gru, ctx.has_bias, dgx, dghn, x, w_ih, out, h0, lengths, ctx.reverse
    )
    return (None, None, None, dx, dh0 if need[4] else None,
            dc0 if is_lstm and need[5] else None, dw_ih, dw_hh, db_ih, db_hh)
