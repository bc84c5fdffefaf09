// exp, sigmoid and tanh of a vector (see vec.h for where this is compiled).
//
// exp: x = n ln2 + r with n = round(x / ln2), |r| <= ln2/2, exp(r) by Cephes' degree-7
// polynomial (relative error ~1e-7), times 2^n built in the exponent bits. The input is clamped
// to [-87.3, 88.3], where 2^n stays a normal float: exp saturates instead of overflowing.
//   sigmoid(x) = 1 / (1 + exp(-x))           tanh(x) = 2 sigmoid(2x) - 1
// Absolute errors ~1e-7, well inside fp32 tolerance against the float64 reference
// (design.md section 6).
#pragma once

static inline vf vexp(vf x) {
  x = vmin(vmax(x, splat(-87.3f)), splat(88.3f));
  vf fx = x * 1.44269504088896341f + 0.5f;
  vi n_int = __builtin_convertvector(fx, vi);  // truncates toward zero
  vf n = __builtin_convertvector(n_int, vf);
  vi above = n > fx;  // -1 where truncation rounded up (fx < 0): floor is one less
  n += __builtin_convertvector(above, vf);
  n_int += above;
  // r = x - n ln2, with ln2 split in two for an exact first product
  x = x - n * 0.693359375f;
  x = x - n * -2.12194440e-4f;
  vf z = x * x;
  vf y = splat(1.9875691500e-4f);
  y = y * x + 1.3981999507e-3f;
  y = y * x + 8.3334519073e-3f;
  y = y * x + 4.1665795894e-2f;
  y = y * x + 1.6666665459e-1f;
  y = y * x + 5.0000001201e-1f;
  y = y * z + x + 1.0f;
  vi two_n = (n_int + 127) << 23;
  return y * (vf)two_n;
}

static inline vf vsigmoid(vf x) { return 1.0f / (1.0f + vexp(-x)); }

static inline vf vtanh(vf x) { return 2.0f / (1.0f + vexp(-2.0f * x)) - 1.0f; }

static inline vf vrelu(vf x) { return vmax(x, splat(0.0f)); }
