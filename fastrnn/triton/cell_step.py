"""One time step of a cell, forward and backward, as ``@triton.jit`` helpers used by both regimes.

The small-H kernels (forward.py, backward.py) and the large-H kernels (large_h.py) differ in
who owns which hidden units and how h / dh cross programs; the step itself is the same and lives
here. A caller works on the hidden units ``offs`` it owns (all of them in the small-H regime,
its slice in the large-H one) for the rows ``row = t*B + b`` (int64) of one batch tile, with
``mask`` = valid (b, unit) pairs. ``CELL`` is a constexpr cell id, compared with the names below (LSTM, GRU, RNN_RELU): the branches of the
other cells compile away. The pointwise formulas are in cell_pointwise.py; what stays in the
kernels is who owns what, the time loop, how h / dh reach other programs, and (backward) the
recurrent dot dh_{t-1} += dgh @ W_hh, which the large-H kernel runs a phase later.

Gate order (that of :mod:`fastrnn.cells`): Elman [a], LSTM [i, f, g, o], GRU [r, z, n]. Gate k
occupies columns k*H .. k*H+H-1 of ``gx`` / ``dgx`` (T, B, G*H) and rows k*H .. of W_hh (G*H, H).

Saved buffer ``saved`` (T, B, S*H) fp32, S = cell_ids.NUM_SAVED, written by the forward step and
read by the backward step (this is where cell_ids.NUM_SAVED comes from); block k occupies
columns k*H .. k*H+H-1:

    Elman: h                      (act' is a function of h: 1 - h^2, or [h > 0])
    LSTM:  i, f, g, o, c          (c is the state, frozen past a sequence's end like h)
    GRU:   r, z, n, gh_n          (gh_n = W_hn h_prev + b_hn, needed for da_r)

Rows past a sequence's end (``active`` false) keep h and c, write a zero output and zero gate
gradients, and carry dh, dc unchanged.
"""

import triton
import triton.language as tl

from . import cell_ids
from .cell_pointwise import elman_backward, elman_forward, gru_backward, gru_forward, lstm_backward, lstm_forward

# The cells by name, for the kernels' constexpr ``CELL`` (ids from cell_ids.py, i.e. fastrnn/cells.py):
# kernels compare CELL with these, never with a number. Elman tanh is the remaining case.
RNN_RELU = tl.constexpr(cell_ids.RNN_RELU)
LSTM = tl.constexpr(cell_ids.LSTM)
GRU = tl.constexpr(cell_ids.GRU)


@triton.jit
def load_gate_tile(w_ptr, gate, H: tl.constexpr, offs_k, mask_k, offs_j, mask_j, TRANSPOSE: tl.constexpr):
    """W_hh's block for ``gate`` (rows gate*H + j): with TRANSPOSE tile[k, j] = W_g[j, k]
    (forward: gates = h @ W_g^T over all k, for the owned units j); else tile[k, j] = W_g[k, j]
    (backward: dh[:, j] = dgates @ W_g[:, j] over all gate units k, for the owned units j)."""
    if TRANSPOSE:
        ptrs = w_ptr + (gate * H + offs_j[None, :]) * H + offs_k[:, None]
    else:
        ptrs = w_ptr + (gate * H + offs_k[:, None]) * H + offs_j[None, :]
    return tl.load(ptrs, mask=mask_k[:, None] & mask_j[None, :], other=0.0)


@triton.jit
def load_gate_tiles(w_ptr, G: tl.constexpr, H: tl.constexpr, offs_k, mask_k, offs_j, mask_j,
                    TRANSPOSE: tl.constexpr, WIDEN_WEIGHTS: tl.constexpr):
    """-> (w0, w1, w2, w3), one ``load_gate_tile`` per gate, loaded once before the time loop.
    Gates beyond G reuse tile 0 and are never used, so the compiler drops them. WIDEN_WEIGHTS:
    interpreter-only bf16 workaround (autograd._widen_weights), exact (bf16 values are fp32 values)."""
    w0 = load_gate_tile(w_ptr, 0, H, offs_k, mask_k, offs_j, mask_j, TRANSPOSE)
    w1 = load_gate_tile(w_ptr, 1 % G, H, offs_k, mask_k, offs_j, mask_j, TRANSPOSE)
    w2 = load_gate_tile(w_ptr, 2 % G, H, offs_k, mask_k, offs_j, mask_j, TRANSPOSE)
    w3 = load_gate_tile(w_ptr, 3 % G, H, offs_k, mask_k, offs_j, mask_j, TRANSPOSE)
    if WIDEN_WEIGHTS:
        w0 = w0.to(tl.float32)
        w1 = w1.to(tl.float32)
        w2 = w2.to(tl.float32)
        w3 = w3.to(tl.float32)
    return w0, w1, w2, w3


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def recurrent_dot(hd, w, DOT_PRECISION: tl.constexpr, SPLIT_K: tl.constexpr):
    """``hd @ w`` in fp32. SPLIT_K = False: one tl.dot of (BLOCK_B, K) by (K, N). SPLIT_K = True
    (the large-H forward): hd (KS, BLOCK_B, KC) and w (KS, KC, N) hold K = KS*KC in KS chunks; a
    batched dot gives each chunk to its own warp, then the chunks' products are summed. A single
    (16 x K) by (K x 16) tl.dot makes every warp hold all of the (16 x K) operand and compute the
    same 16 x 16 tile (the large-H forward had 255 registers and spilled); split, a warp holds
    1/KS of it and no work is repeated. The chunks are summed by tl.reduce with this module's
    own combine function, not tl.sum: Triton builds its library's jit functions (tl.sum among
    them) when it is imported, and under the CPU interpreter they fail if Triton was imported
    before TRITON_INTERPRET was set (as in a test session)."""
    if SPLIT_K:
        return tl.reduce(tl.dot(hd, w, input_precision=DOT_PRECISION), 0, _add)
    else:
        return tl.dot(hd, w, input_precision=DOT_PRECISION)


@triton.jit
def forward_step(hd, h, c, gx_offs, sv_offs, mask, active, w0, w1, w2, w3, b_hn, gx_ptr, saved_ptr,
                 H: tl.constexpr, CELL: tl.constexpr, DOT_PRECISION: tl.constexpr, SPLIT_K: tl.constexpr):
    """Step t for the owned units: -> (h_t, c) before masking h; writes saved[t].

    ``gx_offs`` = row*(G*H) + offs and ``sv_offs`` = row*(S*H) + offs address gate 0 / saved
    block 0 of step t (computed by the caller, before its loads of h: that order keeps the
    large-H forward at its register count). ``hd`` is all of h_{t-1} in the weights' dtype (the
    dot operand, (BLOCK_B, BLOCK_H)), ``h`` / ``c`` the owned units of h_{t-1} / c_{t-1} in fp32,
    ``w*`` from ``load_gate_tiles`` with TRANSPOSE, ``b_hn`` (GRU) b_hn of the owned units;
    with SPLIT_K, ``hd`` and ``w*`` in the chunked 3-D form of ``recurrent_dot``.

        gates = gx[t] + hd @ W_hh^T          (tl.dot, fp32 accumulate; GRU: gx[t] and
                                              gh = hd @ W_hh^T + b_hn kept apart, r multiplies gh_n)
        h_t, c_t = cell update               (cell_pointwise.py)

    The returned c is c_t where active, else c_{t-1} (LSTM; the other cells return c unchanged).
    The caller freezes h (h = where(active, h_t, h_{t-1})), writes out[t] = where(active, h_t, 0)
    and passes h on (kept apart from this helper: moving those stores in here reorders them and
    costs the large-H forward registers and spill).
    """
    if CELL == LSTM:
        a_i = tl.load(gx_ptr + gx_offs, mask=mask, other=0.0).to(tl.float32)
        a_f = tl.load(gx_ptr + gx_offs + H, mask=mask, other=0.0).to(tl.float32)
        a_g = tl.load(gx_ptr + gx_offs + 2 * H, mask=mask, other=0.0).to(tl.float32)
        a_o = tl.load(gx_ptr + gx_offs + 3 * H, mask=mask, other=0.0).to(tl.float32)
        a_i += recurrent_dot(hd, w0, DOT_PRECISION, SPLIT_K)
        a_f += recurrent_dot(hd, w1, DOT_PRECISION, SPLIT_K)
        a_g += recurrent_dot(hd, w2, DOT_PRECISION, SPLIT_K)
        a_o += recurrent_dot(hd, w3, DOT_PRECISION, SPLIT_K)
        i, f, g, o, c_new, h_new = lstm_forward(a_i, a_f, a_g, a_o, c)
        c = tl.where(active, c_new, c)
        tl.store(saved_ptr + sv_offs, i, mask=mask)
        tl.store(saved_ptr + sv_offs + H, f, mask=mask)
        tl.store(saved_ptr + sv_offs + 2 * H, g, mask=mask)
        tl.store(saved_ptr + sv_offs + 3 * H, o, mask=mask)
        tl.store(saved_ptr + sv_offs + 4 * H, c, mask=mask)
    elif CELL == GRU:
        # The dots before the loads of gx: three (BLOCK_B, units) gx tiles live across the dots
        # push the fp32 large-H forward into local memory (56 B at H=512 in 16 chunks; 0 so).
        gh_r = recurrent_dot(hd, w0, DOT_PRECISION, SPLIT_K)
        gh_z = recurrent_dot(hd, w1, DOT_PRECISION, SPLIT_K)
        gh_n = recurrent_dot(hd, w2, DOT_PRECISION, SPLIT_K) + b_hn[None, :]
        gx_r = tl.load(gx_ptr + gx_offs, mask=mask, other=0.0).to(tl.float32)
        gx_z = tl.load(gx_ptr + gx_offs + H, mask=mask, other=0.0).to(tl.float32)
        gx_n = tl.load(gx_ptr + gx_offs + 2 * H, mask=mask, other=0.0).to(tl.float32)
        r, z, n, h_new = gru_forward(gx_r, gx_z, gx_n, gh_r, gh_z, gh_n, h)
        tl.store(saved_ptr + sv_offs, r, mask=mask)
        tl.store(saved_ptr + sv_offs + H, z, mask=mask)
        tl.store(saved_ptr + sv_offs + 2 * H, n, mask=mask)
        tl.store(saved_ptr + sv_offs + 3 * H, gh_n, mask=mask)
    else:  # Elman tanh / relu
        a = tl.load(gx_ptr + gx_offs, mask=mask, other=0.0).to(tl.float32)
        a += recurrent_dot(hd, w0, DOT_PRECISION, SPLIT_K)
        h_new = elman_forward(a, CELL == RNN_RELU)
        tl.store(saved_ptr + sv_offs, h_new, mask=mask)

    return h_new, c


@triton.jit
def backward_rows(k, T, B, offs_b, lengths, REVERSE: tl.constexpr):
    """Step k of the backward order (t = T-1 .. 0 for a forward-direction layer, 0 .. T-1 for a
    reverse one) -> (active, row, prev_row, has_prev). The state a step started from is the one
    after the previous *active* step: saved/out at t-1 (forward direction, t > 0) or t+1 (reverse
    direction, when t+1 < lengths[b]) where ``has_prev``, else the initial state."""
    if REVERSE:
        t = k
        has_prev = (t + 1 < lengths) & ((offs_b * 0 + t + 1) < T)
        prev_row = (t + 1) * B + offs_b
    else:
        t = T - 1 - k
        has_prev = (offs_b * 0 + t) > 0
        prev_row = (t - 1) * B + offs_b
    active = (t < lengths)[:, None]
    row = t * B + offs_b
    return active, row, prev_row, has_prev


@triton.jit
def store_gate_grad(ptr, offs, da, active, mask):
    """Store where(active, da, 0) in ``ptr``'s dtype at ``offs``; -> the masked fp32 value."""
    da = tl.where(active, da, 0.0)
    tl.store(ptr + offs, da.to(ptr.dtype.element_ty), mask=mask)
    return da


@triton.jit
def backward_step(dh, dc, row, prev_row, has_prev, active, state_offs, offs, mask, dout_ptr, saved_ptr,
                  out_ptr, h0_ptr, c0_ptr, dgx_ptr, dghn_ptr, H: tl.constexpr, G: tl.constexpr,
                  S: tl.constexpr, CELL: tl.constexpr):
    """Gate gradients of step t for units ``offs`` (rows/has_prev from ``backward_rows``):
    -> (dg0, dg1, dg2, dg3, dh_direct, dc).

    ``dh`` / ``dc`` (fp32, owned units) are the gradients reaching h_t from step t+1 / c_t;
    ``state_offs`` = b*H + offs addresses h0 / c0. With dh_tot = dh + dout[t] it writes
    dgx[t] = d(pre-activations) (GRU also dgh_n[t] = da_n * r), zero where not active, and returns

        dg0..dg3  the gradient of gh = h_{t-1} @ W_hh^T per gate, zero where not active (Elman
                  [da], LSTM [da_i, da_f, da_g, da_o], GRU [da_r, da_z, dgh_n]; unused ones repeat
                  dg0): the caller adds dh_{t-1} += dg_k @ W_k
        dh_direct GRU: dh_tot * z, the part of dh_{t-1} not through W_hh (other cells: unused)
        dc        LSTM: dc_{t-1} where active, else dc unchanged (other cells: dc unchanged)
    """
    gx_offs = row[:, None] * (G * H) + offs[None, :]
    sv_offs = row[:, None] * (S * H) + offs[None, :]
    prev_mask = mask & has_prev[:, None]
    dh_tot = dh + tl.load(dout_ptr + row[:, None] * H + offs[None, :], mask=mask, other=0.0).to(tl.float32)
    dh_direct = dh_tot
    if CELL == LSTM:
        i = tl.load(saved_ptr + sv_offs, mask=mask, other=0.0)
        f = tl.load(saved_ptr + sv_offs + H, mask=mask, other=0.0)
        g = tl.load(saved_ptr + sv_offs + 2 * H, mask=mask, other=0.0)
        o = tl.load(saved_ptr + sv_offs + 3 * H, mask=mask, other=0.0)
        c = tl.load(saved_ptr + sv_offs + 4 * H, mask=mask, other=0.0)
        c_prev = tl.load(saved_ptr + prev_row[:, None] * (S * H) + offs[None, :] + 4 * H, mask=prev_mask, other=0.0)
        c0 = tl.load(c0_ptr + state_offs, mask=mask, other=0.0).to(tl.float32)
        c_prev = tl.where(has_prev[:, None], c_prev, c0)
        da_i, da_f, da_g, da_o, dc_prev = lstm_backward(dh_tot, dc, i, f, g, o, c, c_prev)
        dg0 = store_gate_grad(dgx_ptr, gx_offs, da_i, active, mask)
        dg1 = store_gate_grad(dgx_ptr, gx_offs + H, da_f, active, mask)
        dg2 = store_gate_grad(dgx_ptr, gx_offs + 2 * H, da_g, active, mask)
        dg3 = store_gate_grad(dgx_ptr, gx_offs + 3 * H, da_o, active, mask)
        dc = tl.where(active, dc_prev, dc)
    elif CELL == GRU:
        r = tl.load(saved_ptr + sv_offs, mask=mask, other=0.0)
        z = tl.load(saved_ptr + sv_offs + H, mask=mask, other=0.0)
        n = tl.load(saved_ptr + sv_offs + 2 * H, mask=mask, other=0.0)
        gh_n = tl.load(saved_ptr + sv_offs + 3 * H, mask=mask, other=0.0)
        h_prev = tl.load(out_ptr + prev_row[:, None] * H + offs[None, :], mask=prev_mask, other=0.0)
        h0 = tl.load(h0_ptr + state_offs, mask=mask, other=0.0)
        h_prev = tl.where(has_prev[:, None], h_prev.to(tl.float32), h0.to(tl.float32))
        da_r, da_z, da_n, dgh_n, dh_direct = gru_backward(dh_tot, r, z, n, gh_n, h_prev)
        dg0 = store_gate_grad(dgx_ptr, gx_offs, da_r, active, mask)
        dg1 = store_gate_grad(dgx_ptr, gx_offs + H, da_z, active, mask)
        store_gate_grad(dgx_ptr, gx_offs + 2 * H, da_n, active, mask)
        dg2 = store_gate_grad(dghn_ptr, row[:, None] * H + offs[None, :], dgh_n, active, mask)
        dg3 = dg0
    else:  # Elman tanh / relu
        h = tl.load(saved_ptr + sv_offs, mask=mask, other=0.0)
        dg0 = store_gate_grad(dgx_ptr, gx_offs, elman_backward(dh_tot, h, CELL == RNN_RELU), active, mask)
        dg1 = dg0
        dg2 = dg0
        dg3 = dg0
    return dg0, dg1, dg2, dg3, dh_direct, dc

