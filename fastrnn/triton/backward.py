"""Persistent backward kernel: one launch walks all T steps of one layer-direction in reverse.

Same split as the forward (small-H regime): a program owns BLOCK_B sequences and the whole hidden
state, keeps ``W_hh`` on chip (one (BLOCK_H, BLOCK_H) tile per gate, loaded once), and carries
``dh`` (and ``dc`` for the LSTM) in fp32 registers from step to step. It visits the steps in the
opposite order of the forward (t = T-1 .. 0 for the forward direction, 0 .. T-1 for the reverse
one; ``cell_step.backward_rows``). Per step:

    dgh    = cell_step.backward_step: writes dgx[t] (T, B, G*H) (GRU also dgh_n[t] = da_n * r
             (T, B, H); its other blocks of dgh equal dgx), carries dc (LSTM)
    dh     = dgh @ W_hh  (+ dh_tot * z for the GRU)     for active rows (t < lengths[b])

Inactive rows write zero gradients and carry dh, dc unchanged (their state was frozen and their
output is a constant 0). At the end dh, dc are the gradients of h0, c0. Everything else (dW_ih,
dW_hh, biases, dx) is large GEMMs/reductions over dgx in torch (autograd.py).
"""

import triton
import triton.language as tl

from .cell_step import LSTM, GRU, backward_rows, backward_step, load_gate_tiles
from .forward import batch_tile


@triton.jit(do_not_specialize=["T", "B"])
def recurrent_backward_kernel(
    dout_ptr,  # (T, B, H) gradient of the outputs
    dhT_ptr,  # (B, H) gradient of the final h
    dcT_ptr,  # (B, H) LSTM only: gradient of the final c
    w_ptr,  # (G*H, H) W_hh, contiguous
    saved_ptr,  # (T, B, S*H) fp32 from the forward kernel
    out_ptr,  # (T, B, H) forward outputs (GRU: h_prev)
    h0_ptr,  # (B, H) GRU only
    c0_ptr,  # (B, H) LSTM only
    len_ptr,  # (B,) int32
    dgx_ptr,  # (T, B, G*H) out: gradient of the pre-activations (= of gx)
    dghn_ptr,  # (T, B, H) out, GRU only: gradient of gh_n
    dh0_ptr,  # (B, H) out
    dc0_ptr,  # (B, H) out, LSTM only
    T,
    B,
    H: tl.constexpr,
    G: tl.constexpr,
    S: tl.constexpr,
    CELL: tl.constexpr,  # cell id: compared with cell_step's LSTM, GRU, RNN_RELU
    REVERSE: tl.constexpr,  # direction of the *forward* pass
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    WIDEN_WEIGHTS: tl.constexpr,  # interpreter-only bf16 workaround, see autograd._widen_weights
):
    offs_b, mask_b, offs_h, mask_h, mask, state_offs = batch_tile(B, H, BLOCK_B, BLOCK_H)

    # W_hh (not transposed): dh_prev[b, k] = sum_j dgh[b, j] W_hh[j, k], gate by gate.
    w0, w1, w2, w3 = load_gate_tiles(w_ptr, G, H, offs_h, mask_h, offs_h, mask_h, False, WIDEN_WEIGHTS)
    wdt = w0.dtype

    dh = tl.load(dhT_ptr + state_offs, mask=mask, other=0.0).to(tl.float32)
    dc = tl.full((BLOCK_B, BLOCK_H), 0.0, tl.float32)
    if CELL == LSTM:
        dc = tl.load(dcT_ptr + state_offs, mask=mask, other=0.0).to(tl.float32)
    lengths = tl.load(len_ptr + offs_b, mask=mask_b, other=0)

    for k in range(0, T):
        active, row, prev_row, has_prev = backward_rows(k, T, B, offs_b, lengths, REVERSE)
        dg0, dg1, dg2, dg3, dh_direct, dc = backward_step(
            dh, dc, row, prev_row, has_prev, active, state_offs, offs_h, mask, dout_ptr, saved_ptr, out_ptr, h0_ptr,
            c0_ptr, dgx_ptr, dghn_ptr, H, G, S, CELL
        )
        if CELL == GRU:  # dh_prev = dh_tot * z + dgh @ W_hh
            dh_prev = dh_direct + tl.dot(dg0.to(wdt), w0, input_precision=DOT_PRECISION)
        else:
            dh_prev = tl.dot(dg0.to(wdt), w0, input_precision=DOT_PRECISION)
        if G > 1:  # LSTM, GRU
            dh_prev += tl.dot(dg1.to(wdt), w1, input_precision=DOT_PRECISION)
            dh_prev += tl.dot(dg2.to(wdt), w2, input_precision=DOT_PRECISION)
        if CELL == LSTM:
            dh_prev += tl.dot(dg3.to(wdt), w3, input_precision=DOT_PRECISION)
        dh = tl.where(active, dh_prev, dh)

    tl.store(dh0_ptr + state_offs, dh.to(dh0_ptr.dtype.element_ty), mask=mask)
    if CELL == LSTM:
        tl.store(dc0_ptr + state_offs, dc.to(dc0_ptr.dtype.element_ty), mask=mask)
