// Elman cell, one vector of hidden units (see vec.h for where this is compiled).
//   forward:  h' = act(gx + gh)                       act = tanh or relu
//   backward: da = dh' * act'(.) = dh' (1 - h'^2) (tanh), dh' [h' > 0] (relu);  dgx = dgh = da;
//             dh = da W_hh (the recurrent product, done by the caller); nothing passes directly.
#pragma once

template <bool Relu>
struct Elman {
  static constexpr int G = 1, S = 0;
  static constexpr bool needs_out = true, needs_hprev = false, has_c = false, gru = false;

  static inline vf forward(const vf* gx, const vf* gh, vf /*h*/, vf& /*c*/, vf* /*saved*/) {
    vf a = gx[0] + gh[0];
    return Relu ? vrelu(a) : vtanh(a);
  }

  static inline void backward(vf dh, vf& /*dc*/, const vf* /*saved*/, vf h_new, vf /*h*/, vf /*c*/, vf* dgx,
                              vf& /*dghn*/, vf& direct) {
    dgx[0] = Relu ? select(h_new > 0.0f, dh, splat(0.0f)) : dh * (1.0f - h_new * h_new);
    direct = splat(0.0f);
  }
};
