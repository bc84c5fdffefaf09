// GRU cell, one vector of hidden units (see vec.h for where this is compiled).
//   forward:  r = s(gx_r + gh_r), z = s(gx_z + gh_z), n = tanh(gx_n + r gh_n),
//             h' = n + z (h - n)                gh_n = W_hn h + b_hn;   saved: r, z, n, gh_n
//   backward: da_n = dh' (1 - z) (1 - n^2),  da_z = dh' (h - n) z (1 - z),
//             da_r = da_n gh_n r (1 - r);   dgx = (da_r, da_z, da_n),  dgh = (da_r, da_z, da_n r)
//             dh = dh' z (direct) + dgh W_hh (by the caller)
#pragma once

struct Gru {
  static constexpr int G = 3, S = 4;
  static constexpr bool needs_out = false, needs_hprev = true, has_c = false, gru = true;

  // gh[2] already includes b_hn.
  static inline vf forward(const vf* gx, const vf* gh, vf h, vf& /*c*/, vf* saved) {
    vf r = vsigmoid(gx[0] + gh[0]);
    vf z = vsigmoid(gx[1] + gh[1]);
    vf n = vtanh(gx[2] + r * gh[2]);
    saved[0] = r, saved[1] = z, saved[2] = n, saved[3] = gh[2];
    return n + z * (h - n);
  }

  static inline void backward(vf dh, vf& /*dc*/, const vf* saved, vf /*h_new*/, vf h, vf /*c*/, vf* dgx,
                              vf& dghn, vf& direct) {
    vf r = saved[0], z = saved[1], n = saved[2], ghn = saved[3];
    vf da_n = dh * (1.0f - z) * (1.0f - n * n);
    dgx[0] = da_n * ghn * r * (1.0f - r);
    dgx[1] = dh * (h - n) * z * (1.0f - z);
    dgx[2] = da_n;
    dghn = da_n * r;
    direct = dh * z;
  }
};
