"""Per-cell pointwise forward and backward formulas as ``@triton.jit`` helpers.

The equations are those of :mod:`fastrnn.cells` (the one place that defines the cells; Triton
code cannot call the torch functions there, so they are restated here, in the same gate order,
together with their hand-derived derivatives). All arithmetic is fp32. Notation: ``s`` is the
logistic sigmoid, ``a_*`` a pre-activation, ``d*`` the gradient of the loss with respect to *;
``dh`` is the total gradient reaching h_t (from the output at t plus from step t+1).

Cell ids (constexpr ``CELL`` in the kernels) and saved values: see :mod:`.cell_ids`.

Elman (1 gate):   h = act(a),  a = gx + W_hh h_prev (+ b_hh folded into gx)
                  da = dh * (1 - h^2)  (tanh)    da = dh * [h > 0]  (relu)
                  dh_prev = da W_hh

LSTM (i, f, g, o): i = s(a_i), f = s(a_f), g = tanh(a_g), o = s(a_o)
                  c = f * c_prev + i * g,   h = o * tanh(c)
                  do = dh * tanh(c)
                  dc = dh * o * (1 - tanh(c)^2) + dc_next      (dc_next: carried from step t+1)
                  di = dc * g,  df = dc * c_prev,  dg = dc * i,  dc_prev = dc * f
                  da_i = di i (1-i),  da_f = df f (1-f),  da_g = dg (1-g^2),  da_o = do o (1-o)
                  dh_prev = [da_i da_f da_g da_o] W_hh

GRU (r, z, n):    r = s(gx_r + gh_r),  z = s(gx_z + gh_z),  n = tanh(gx_n + r * gh_n)
                  h = (1 - z) * n + z * h_prev = n + z * (h_prev - n)
                  with gh = W_hh h_prev + b_hh (the reset gate multiplies b_hn too)
                  dn = dh (1 - z),  dz = dh (h_prev - n)
                  da_n = dn (1 - n^2),  da_r = da_n * gh_n * r (1 - r),  da_z = dz z (1 - z)
                  gradient w.r.t. gx: [da_r, da_z, da_n]
                  gradient w.r.t. gh: [da_r, da_z, da_n * r]
                  dh_prev = dh * z + [da_r, da_z, da_n * r] W_hh
"""

import triton
import triton.language as tl



@triton.jit
def sigmoid(x):
    # exp(-x) overflows to inf for very negative x, and 1 / inf = 0: no NaN.
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def tanh(x):
    # tanh(|x|) = (1 - e) / (1 + e) with e = exp(-2|x|) in (0, 1]: never overflows.
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x >= 0, t, -t)


# ------------------------------------------------------------------------------------ forward


@triton.jit
def elman_forward(a, RELU: tl.constexpr):
    """h = tanh(a) or relu(a)."""
    if RELU:
        h = tl.maximum(a, 0.0)
    else:
        h = tanh(a)
    return h


@triton.jit
def lstm_forward(a_i, a_f, a_g, a_o, c_prev):
    """-> (i, f, g, o, c, h) with c = f*c_prev + i*g, h = o*tanh(c)."""
    i = sigmoid(a_i)
    f = sigmoid(a_f)
    g = tanh(a_g)
    o = sigmoid(a_o)
    c = f * c_prev + i * g
    h = o * tanh(c)
    return i, f, g, o, c, h


@triton.jit
def gru_forward(gx_r, gx_z, gx_n, gh_r, gh_z, gh_n, h_prev):
    """-> (r, z, n, h); gh_n = W_hn h_prev + b_hn is multiplied by r as a whole."""
    r = sigmoid(gx_r + gh_r)
    z = sigmoid(gx_z + gh_z)
    n = tanh(gx_n + r * gh_n)
    h = n + z * (h_prev - n)
    return r, z, n, h


# ----------------------------------------------------------------------------------- backward


@triton.jit
def elman_backward(dh, h, RELU: tl.constexpr):
    """-> da, the gradient of the pre-activation, from h = act(a)."""
    if RELU:
        da = tl.where(h > 0, dh, 0.0)
    else:
        da = dh * (1.0 - h * h)
    return da


@triton.jit
def lstm_backward(dh, dc_next, i, f, g, o, c, c_prev):
    """-> (da_i, da_f, da_g, da_o, dc_prev)."""
    tc = tanh(c)
    dc = dh * o * (1.0 - tc * tc) + dc_next
    da_i = dc * g * i * (1.0 - i)
    da_f = dc * c_prev * f * (1.0 - f)
    da_g = dc * i * (1.0 - g * g)
    da_o = dh * tc * o * (1.0 - o)
    return da_i, da_f, da_g, da_o, dc * f


@triton.jit
def gru_backward(dh, r, z, n, gh_n, h_prev):
    """-> (da_r, da_z, da_n, dgh_n, dh_direct); dgh_n = da_n * r, dh_direct = dh * z."""
    da_n = dh * (1.0 - z) * (1.0 - n * n)
    da_z = dh * (h_prev - n) * z * (1.0 - z)
    da_r = da_n * gh_n * r * (1.0 - r)
    return da_r, da_z, da_n, da_n * r, dh * z
