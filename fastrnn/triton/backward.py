"""Persistent backward kernel: one launch walks all T steps of one layer-direction in reverse.

Same split as the forward (small-H regime): a program owns BLOCK_B sequences and the whole hidden
state, keeps ``W_hh`` on chip (one (BLOCK_H, BLOCK_H) tile per gate, loaded once), and carries
``dh`` (and ``dc`` for the LSTM) in fp32 registers from step to step. It visits the steps in the
opposite order of the forward (t = T-1 .. 0 for the forward direction, 0 .. T-1 for the reverse
one). Per step, for active rows (t < lengths[b]):

    dh_tot = dh + dout[t]
    d(pre-activations) from the cell's backward formulas (cell_pointwise.py)
    dh     = dgh @ W_hh  (+ dh * z for the GRU),   dc = dc * f  (LSTM)

and it writes the pre-activation gradients ``dgx[t]`` (T, B, G*H) (for the GRU also
``dgh_n[t] = da_n * r`` (T, B, H); its other blocks of dgh equal dgx). Inactive rows write zero
gradients and carry dh, dc unchanged (their state was frozen and their output is a constant 0).
At the end dh, dc are the gradients of h0, c0. Everything else (dW_ih, dW_hh, biases, dx) is
large GEMMs/reductions over dgx in torch (autograd.py).

The previous state that the LSTM (c_prev) and GRU (h_prev) backward needs is the state after the
previous *active* step: from the forward's saved c / outputs at t-1 (forward direction, t > 0) or
t+1 (reverse direction, when t+1 < lengths[b]), else c0 / h0.
"""

import triton
import triton.language as tl

from .cell_pointwise import elman_backward, gru_backward, lstm_backward
from .forward import load_gate_tile


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
    CELL: tl.constexpr,  # 0 rnn_tanh, 1 rnn_relu, 2 lstm, 3 gru
    REVERSE: tl.constexpr,  # direction of the *forward* pass
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    WIDEN_WEIGHTS: tl.constexpr,  # interpreter-only bf16 workaround, see autograd._widen_weights
):
    pid = tl.program_id(0)
    offs_b = pid.to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = tl.arange(0, BLOCK_H)
    mask_b = offs_b < B
    mask_h = offs_h < H
    mask = mask_b[:, None] & mask_h[None, :]
    state_offs = offs_b[:, None] * H + offs_h[None, :]

    # W_hh (not transposed): dh_prev[b, k] = sum_j dgh[b, j] W_hh[j, k], gate by gate.
    w0 = load_gate_tile(w_ptr, 0, H, offs_h, mask_h, False)
    w1 = load_gate_tile(w_ptr, 1 % G, H, offs_h, mask_h, False)
    w2 = load_gate_tile(w_ptr, 2 % G, H, offs_h, mask_h, False)
    w3 = load_gate_tile(w_ptr, 3 % G, H, offs_h, mask_h, False)
    if WIDEN_WEIGHTS:  # exact: every bf16 value is an fp32 value
        w0 = w0.to(tl.float32)
        w1 = w1.to(tl.float32)
        w2 = w2.to(tl.float32)
        w3 = w3.to(tl.float32)
    wdt = w0.dtype

    dh = tl.load(dhT_ptr + state_offs, mask=mask, other=0.0).to(tl.float32)
    dc = tl.full((BLOCK_B, BLOCK_H), 0.0, tl.float32)
    if CELL == 2:
        dc = tl.load(dcT_ptr + state_offs, mask=mask, other=0.0).to(tl.float32)
    lengths = tl.load(len_ptr + offs_b, mask=mask_b, other=0)

    for k in range(0, T):
        if REVERSE:
            t = k
            has_prev = (t + 1 < lengths) & ((offs_b * 0 + t + 1) < T)
            prev_row = (t + 1) * B + offs_b
        else:
            t = T - 1 - k
            has_prev = (offs_b * 0 + t) > 0
            prev_row = (t - 1) * B + offs_b
        active = (t < lengths)[:, None]
        prev_mask = mask & has_prev[:, None]
        row = t * B + offs_b  # int64
        gx_offs = row[:, None] * (G * H) + offs_h[None, :]
        sv_offs = row[:, None] * (S * H) + offs_h[None, :]
        dh_tot = dh + tl.load(dout_ptr + row[:, None] * H + offs_h[None, :], mask=mask, other=0.0).to(tl.float32)

        if CELL <= 1:
            h = tl.load(saved_ptr + sv_offs, mask=mask, other=0.0)
            da = tl.where(active, elman_backward(dh_tot, h, CELL == 1), 0.0)
            tl.store(dgx_ptr + gx_offs, da.to(dgx_ptr.dtype.element_ty), mask=mask)
            dh_prev = tl.dot(da.to(wdt), w0, input_precision=DOT_PRECISION)
        elif CELL == 2:
            i = tl.load(saved_ptr + sv_offs, mask=mask, other=0.0)
            f = tl.load(saved_ptr + sv_offs + H, mask=mask, other=0.0)
            g = tl.load(saved_ptr + sv_offs + 2 * H, mask=mask, other=0.0)
            o = tl.load(saved_ptr + sv_offs + 3 * H, mask=mask, other=0.0)
            c = tl.load(saved_ptr + sv_offs + 4 * H, mask=mask, other=0.0)
            c_prev = tl.load(saved_ptr + prev_row[:, None] * (S * H) + offs_h[None, :] + 4 * H,
                             mask=prev_mask, other=0.0)
            c0 = tl.load(c0_ptr + state_offs, mask=mask, other=0.0).to(tl.float32)
            c_prev = tl.where(has_prev[:, None], c_prev, c0)
            da_i, da_f, da_g, da_o, dc_prev = lstm_backward(dh_tot, dc, i, f, g, o, c, c_prev)
            da_i = tl.where(active, da_i, 0.0)
            da_f = tl.where(active, da_f, 0.0)
            da_g = tl.where(active, da_g, 0.0)
            da_o = tl.where(active, da_o, 0.0)
            tl.store(dgx_ptr + gx_offs, da_i.to(dgx_ptr.dtype.element_ty), mask=mask)
            tl.store(dgx_ptr + gx_offs + H, da_f.to(dgx_ptr.dtype.element_ty), mask=mask)
            tl.store(dgx_ptr + gx_offs + 2 * H, da_g.to(dgx_ptr.dtype.element_ty), mask=mask)
            tl.store(dgx_ptr + gx_offs + 3 * H, da_o.to(dgx_ptr.dtype.element_ty), mask=mask)
            dh_prev = tl.dot(da_i.to(wdt), w0, input_precision=DOT_PRECISION)
            dh_prev += tl.dot(da_f.to(wdt), w1, input_precision=DOT_PRECISION)
            dh_prev += tl.dot(da_g.to(wdt), w2, input_precision=DOT_PRECISION)
            dh_prev += tl.dot(da_o.to(wdt), w3, input_precision=DOT_PRECISION)
            dc = tl.where(active, dc_prev, dc)
        else:
            r = tl.load(saved_ptr + sv_offs, mask=mask, other=0.0)
            z = tl.load(saved_ptr + sv_offs + H, mask=mask, other=0.0)
            n = tl.load(saved_ptr + sv_offs + 2 * H, mask=mask, other=0.0)
            gh_n = tl.load(saved_ptr + sv_offs + 3 * H, mask=mask, other=0.0)
            h_prev = tl.load(out_ptr + prev_row[:, None] * H + offs_h[None, :], mask=prev_mask, other=0.0)
            h0 = tl.load(h0_ptr + state_offs, mask=mask, other=0.0)
            h_prev = tl.where(has_prev[:, None], h_prev.to(tl.float32), h0.to(tl.float32))
            da_r, da_z, da_n, dgh_n, dh_direct = gru_backward(dh_tot, r, z, n, gh_n, h_prev)
            da_r = tl.where(active, da_r, 0.0)
            da_z = tl.where(active, da_z, 0.0)
            da_n = tl.where(active, da_n, 0.0)
            dgh_n = tl.where(active, dgh_n, 0.0)
            tl.store(dgx_ptr + gx_offs, da_r.to(dgx_ptr.dtype.element_ty), mask=mask)
            tl.store(dgx_ptr + gx_offs + H, da_z.to(dgx_ptr.dtype.element_ty), mask=mask)
            tl.store(dgx_ptr + gx_offs + 2 * H, da_n.to(dgx_ptr.dtype.element_ty), mask=mask)
            tl.store(dghn_ptr + row[:, None] * H + offs_h[None, :], dgh_n.to(dghn_ptr.dtype.element_ty), mask=mask)
            dh_prev = dh_direct + tl.dot(da_r.to(wdt), w0, input_precision=DOT_PRECISION)
            dh_prev += tl.dot(da_z.to(wdt), w1, input_precision=DOT_PRECISION)
            dh_prev += tl.dot(dgh_n.to(wdt), w2, input_precision=DOT_PRECISION)

        dh = tl.where(active, dh_prev, dh)

    tl.store(dh0_ptr + state_offs, dh.to(dh0_ptr.dtype.element_ty), mask=mask)
    if CELL == 2:
        tl.store(dc0_ptr + state_offs, dc.to(dc0_ptr.dtype.element_ty), mask=mask)
