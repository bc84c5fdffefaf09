// LSTM cell, one vector of hidden units (see vec.h for where this is compiled).
//   forward:  i = s(a_i), f = s(a_f), g = tanh(a_g), o = s(a_o)     a = gx + gh
//             c' = f c + i g,  h' = o tanh(c');   saved: i, f, g, o, c'
//   backward: dc* = dc' + dh' o (1 - tanh(c')^2)
//             da_i = dc* g i (1 - i),  da_f = dc* c f (1 - f),  da_g = dc* i (1 - g^2),
//             da_o = dh' tanh(c') o (1 - o);   dc = dc* f;   dh = da W_hh (by the caller)
#pragma once

struct Lstm {
  static constexpr int G = 4, S = 5;
  static constexpr bool needs_out = false, needs_hprev = false, has_c = true, gru = false;

  static inline vf forward(const vf* gx, const vf* gh, vf /*h*/, vf& c, vf* saved) {
    vf i = vsigmoid(gx[0] + gh[0]);
    vf f = vsigmoid(gx[1] + gh[1]);
    vf g = vtanh(gx[2] + gh[2]);
    vf o = vsigmoid(gx[3] + gh[3]);
    c = f * c + i * g;
    saved[0] = i, saved[1] = f, saved[2] = g, saved[3] = o, saved[4] = c;
    return o * vtanh(c);
  }

  // c_prev: the cell state before the step; saved[4] is the one after it.
  static inline void backward(vf dh, vf& dc, const vf* saved, vf /*h_new*/, vf /*h*/, vf c_prev, vf* dgx,
                              vf& /*dghn*/, vf& direct) {
    vf i = saved[0], f = saved[1], g = saved[2], o = saved[3];
    vf tc = vtanh(saved[4]);
    vf dct = dc + dh * o * (1.0f - tc * tc);
    dgx[0] = dct * g * i * (1.0f - i);
    dgx[1] = dct * c_prev * f * (1.0f - f);
    dgx[2] = dct * i * (1.0f - g * g);
    dgx[3] = dh * tc * o * (1.0f - o);
    dc = dct * f;
    direct = splat(0.0f);
  }
};
