"""Persistent forward kernel: one launch runs all T steps of one layer-direction (design.md §4).

Small-H regime: program ``pid`` owns sequences ``pid*BLOCK_B .. pid*BLOCK_B+BLOCK_B-1`` and the
whole hidden state; programs never communicate, so the grid is ``cdiv(B, BLOCK_B)``. Before the
time loop each program loads ``W_hh^T`` once, one (BLOCK_H, BLOCK_H) tile per gate, and keeps it
on chip for every step. Per step t it runs ``cell_step.forward_step`` (gates = gx[t] + h_{t-1} @
W_hh^T, the cell update, the saved values) on the whole hidden state; rows with t >= lengths[b]
keep h, c and write a zero output.

``gx`` (T, B, G*H) = x @ W_ih^T + biases is computed beforehand by one torch GEMM. The reverse
direction walks t = T-1 .. 0 under the same rule, so each sequence starts at its own last step.

Hidden sizes that are not powers of two are padded to BLOCK_H: padded weight rows/columns load
as 0, so padded hidden units stay exactly 0 (tanh(0)=0, relu(0)=0, LSTM c=0.5*0+0.5*0=0, h=0.5*0;
GRU n=0, h=z*0) and never leak into real units; their stores are masked anyway.

B and T are run-time arguments (``do_not_specialize``): a new batch size or length does not
recompile.

The kernels use only Triton builtins (``tl.full``, not ``tl.zeros``/``tl.cdiv``, which are
``@jit`` functions of triton.language.standard): when Triton itself was imported before
TRITON_INTERPRET=1 was set, those library functions are compiled-mode objects that the
interpreter cannot call, while builtins work either way. H, the cell and the direction are compile-time. Offsets into (T, B, *) buffers are
64-bit (the row index t*B + b is promoted to int64 before it is multiplied by the row width);
the launcher checks T*B < 2^31.
"""

import triton
import triton.language as tl

from .cell_step import LSTM, GRU, forward_step, load_gate_tiles


@triton.jit
def batch_tile(B, H: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """Program pid owns sequences pid*BLOCK_B .. and all hidden units: -> (offs_b (int64), mask_b,
    offs_h, mask_h, mask (BLOCK_B, BLOCK_H), state_offs = b*H + h into (B, H) state buffers)."""
    pid = tl.program_id(0)
    offs_b = pid.to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = tl.arange(0, BLOCK_H)
    mask_b = offs_b < B
    mask_h = offs_h < H
    mask = mask_b[:, None] & mask_h[None, :]
    state_offs = offs_b[:, None] * H + offs_h[None, :]
    return offs_b, mask_b, offs_h, mask_h, mask, state_offs


@triton.jit(do_not_specialize=["T", "B"])
def recurrent_forward_kernel(
    gx_ptr,  # (T, B, G*H) x @ W_ih^T + b_ih (+ b_hh for cells that sum them; GRU: + b_hr, b_hz)
    w_ptr,  # (G*H, H) W_hh, contiguous
    bhn_ptr,  # (H,) GRU only: b_hn (zeros without bias)
    h0_ptr,  # (B, H)
    c0_ptr,  # (B, H) LSTM only
    len_ptr,  # (B,) int32 lengths (T for every row when the layer has no lengths)
    out_ptr,  # (T, B, H) outputs, zero past each length
    hT_ptr,  # (B, H) final h
    cT_ptr,  # (B, H) LSTM only: final c
    saved_ptr,  # (T, B, NUM_SAVED*H) fp32, see cell_ids.NUM_SAVED
    T,
    B,
    H: tl.constexpr,
    G: tl.constexpr,  # number of gates
    S: tl.constexpr,  # NUM_SAVED
    CELL: tl.constexpr,  # cell id: compared with cell_step's LSTM, GRU, RNN_RELU
    REVERSE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    DOT_PRECISION: tl.constexpr,  # "ieee" or "tf32" (only matters for fp32 operands)
    WIDEN_WEIGHTS: tl.constexpr,  # interpreter-only bf16 workaround, see autograd._widen_weights
    FMA_KS: tl.constexpr,  # K chunks of the fp32 FMA dot (launch.kernel_shape); 1: one 2-D dot
):
    offs_b, mask_b, offs_h, mask_h, mask, state_offs = batch_tile(B, H, BLOCK_B, BLOCK_H)

    # W_hh^T on chip for all steps, one tile per gate.
    w0, w1, w2, w3 = load_gate_tiles(w_ptr, G, H, offs_h, mask_h, offs_h, mask_h, True, WIDEN_WEIGHTS)
    # An fp32 FMA dot over all of K = BLOCK_H spills at BLOCK_H = 128 (each thread holds its
    # operands over all of K): cut K into FMA_KS chunks of KC, cell_step.recurrent_dot's batched
    # form (W as (FMA_KS, KC, BLOCK_H), h as (FMA_KS, BLOCK_B, KC)). Tensor-core dots keep one dot.
    SPLIT_K: tl.constexpr = FMA_KS > 1 and DOT_PRECISION == "ieee"
    KC: tl.constexpr = BLOCK_H // FMA_KS
    if SPLIT_K:
        w0 = tl.reshape(w0, (FMA_KS, KC, BLOCK_H))
        w1 = tl.reshape(w1, (FMA_KS, KC, BLOCK_H))
        w2 = tl.reshape(w2, (FMA_KS, KC, BLOCK_H))
        w3 = tl.reshape(w3, (FMA_KS, KC, BLOCK_H))

    h = tl.load(h0_ptr + state_offs, mask=mask, other=0.0).to(tl.float32)
    c = tl.full((BLOCK_B, BLOCK_H), 0.0, tl.float32)
    if CELL == LSTM:
        c = tl.load(c0_ptr + state_offs, mask=mask, other=0.0).to(tl.float32)
    b_hn = tl.full((BLOCK_H,), 0.0, tl.float32)
    if CELL == GRU:
        b_hn = tl.load(bhn_ptr + offs_h, mask=mask_h, other=0.0).to(tl.float32)
    lengths = tl.load(len_ptr + offs_b, mask=mask_b, other=0)

    for k in range(0, T):
        if REVERSE:
            t = T - 1 - k
        else:
            t = k
        active = (t < lengths)[:, None]
        row = t * B + offs_b  # int64 (offs_b is)
        gx_offs = row[:, None] * (G * H) + offs_h[None, :]
        sv_offs = row[:, None] * (S * H) + offs_h[None, :]
        hd = h.to(w0.dtype)  # the dot runs in the weights' dtype, accumulates in fp32
        if SPLIT_K:  # (FMA_KS, BLOCK_B, KC): hd[s, b, i] = h[b, s*KC + i]
            hd = tl.permute(tl.reshape(hd, (BLOCK_B, FMA_KS, KC)), (1, 0, 2))
        h_new, c = forward_step(hd, h, c, gx_offs, sv_offs, mask, active, w0, w1, w2, w3, b_hn, gx_ptr, saved_ptr,
                                H, CELL, DOT_PRECISION, SPLIT_K)
        h = tl.where(active, h_new, h)
        out = tl.where(active, h_new, 0.0)
        tl.store(out_ptr + row[:, None] * H + offs_h[None, :], out.to(out_ptr.dtype.element_ty), mask=mask)

    tl.store(hT_ptr + state_offs, h.to(hT_ptr.dtype.element_ty), mask=mask)
    if CELL == LSTM:
        tl.store(cT_ptr + state_offs, c.to(cT_ptr.dtype.element_ty), mask=mask)
