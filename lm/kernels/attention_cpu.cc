// Fused prefix-LM attention for CPUs: forward and backward as XLA FFI custom calls.
//
// The same math as lm/attention.py's "blockwise" implementation (softmax(q k^T) v under the
// prefix-LM rule, a backward that recomputes the probabilities from the saved log-sum-exp),
// but each 64-query tile runs start to finish in cache: its scores, mask, softmax and
// products never leave the core's L2, and key chunks past a tile's last visible key are
// skipped, so a causal sequence costs about half the full T x S work. XLA's CPU backend runs
// the same steps as separate ops that each read and write the full scores from memory.
//
// Layouts (all contiguous, float32 unless noted), the model's own, so no transposes:
//   q [B, T, N, K], k and v [B, S, G, K] (S = T), the attribute `scale` (q k^T is scaled by it),
//   segment ids [B, T] int32 (0 = padding), prefix [B, T] int32 (1 = bidirectional prefix),
//   o [B, T, N, K], lse [B, N, T] (log-sum-exp of each query's scores; -inf: no visible key).
// Rows are gathered into zero-padded tiles ([QT, KP] queries, [KP, SP] / [SP, KP] keys) first.
// Query head n reads kv head n / (N / G) (grouped-query attention).
//
// Visibility, as in lm/attention.py:
//   visible(q, k) = seg[q] == seg[k] != 0 and (k <= q or prefix[q] and prefix[k]).
//
// Matmuls use one register-blocked micro-kernel written with GCC vector extensions; built
// with -march=native it compiles to AVX-512 (or AVX2) FMAs. Work is split over (batch, head)
// items on XLA's intra-op thread pool.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"
#include "parallel.h"

namespace ffi = xla::ffi;

namespace {

#if defined(__AVX512F__)
constexpr int W = 16;  // floats per vector register
constexpr int MR = 8;  // rows of a micro-kernel tile
#else
constexpr int W = 8;
constexpr int MR = 4;
#endif
constexpr int NV = 2;        // vectors per micro-kernel row
constexpr int NR = NV * W;   // columns of a micro-kernel tile
constexpr int QT = 64;       // query rows per tile (a multiple of MR)
constexpr float NEG_INF = -std::numeric_limits<float>::infinity();

typedef float vf __attribute__((vector_size(W * 4)));
typedef float vfu __attribute__((vector_size(W * 4), aligned(4)));
typedef int32_t vi __attribute__((vector_size(W * 4)));

inline vf load(const float* p) { return *reinterpret_cast<const vfu*>(p); }
inline void store(float* p, vf x) { *reinterpret_cast<vfu*>(p) = x; }
inline vf splat(float x) { return x - vf{}; }  // x - 0 folds to a broadcast; 0 + x would not (-0)

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// exp(x) for x <= 0 (x = -inf gives 0): Cody-Waite range reduction and a degree-6
// polynomial, relative error ~2e-7 down to x = -87.
inline vf exp_nonpositive(vf x) {
  vi finite = x > splat(-87.0f);
  x = finite ? x : splat(-87.0f);
  const vf magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  vf n = (x * splat(1.44269504f) + magic) - magic;
  vf r = x - n * splat(0.693359375f) - n * splat(-2.12194440e-4f);
  vf p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  p = p * r * r + r + splat(1.0f);
  vi bits = (__builtin_convertvector(n, vi) + 127) << 23;
  vf scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  vf y = p * scale;
  return finite ? y : splat(0.0f);
}

// C[MR, NR] (+)= A[MR, kdim] B[kdim, NR]. A is read through strides (row, k), so the same
// kernel serves A and A^T; B rows are contiguous.
template <bool kAccumulate>
inline void micro(const float* a, int64_t a_row, int64_t a_k, const float* b, int64_t ldb,
                  int64_t kdim, float* c, int64_t ldc) {
  vf acc[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = kAccumulate ? load(c + i * ldc + v * W) : vf{};
  for (int64_t k = 0; k < kdim; ++k) {
    vf bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = load(b + k * ldb + v * W);
    for (int i = 0; i < MR; ++i) {
      vf av = splat(a[i * a_row + k * a_k]);
      for (int v = 0; v < NV; ++v) acc[i][v] += av * bv[v];
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) store(c + i * ldc + v * W, acc[i][v]);
}

// C[M, N] (+)= A[M, kdim] B[kdim, N] with M a multiple of MR and N of NR.
template <bool kAccumulate>
void gemm(int64_t m, int64_t n, int64_t kdim, const float* a, int64_t a_row, int64_t a_k,
          const float* b, int64_t ldb, float* c, int64_t ldc) {
  for (int64_t j = 0; j < n; j += NR)
    for (int64_t i = 0; i < m; i += MR)
      micro<kAccumulate>(a + i * a_row, a_row, a_k, b + j, ldb, kdim, c + i * ldc + j, ldc);
}

// A 64-byte-aligned scratch array that lives as long as its thread and only grows, so
// steady-state calls neither allocate nor page-fault.
struct Scratch {
  std::vector<float> data;
  float* get(int64_t n) {
    if (static_cast<int64_t>(data.size()) < n + 16) data.resize(n + 16);
    auto p = reinterpret_cast<uintptr_t>(data.data());
    return reinterpret_cast<float*>((p + 63) & ~uintptr_t{63});
  }
};

struct Shapes {
  int64_t b, n, g, t, s, k;  // batch, heads, kv heads, queries, keys, head dim
  int64_t kp, sp;            // head dim padded to NR, keys padded to NR
};

// Per batch row, what the mask needs: the run of equal segment ids each position is in,
// each segment's first position and last prefix position.
struct RowInfo {
  std::vector<int32_t> run_start;  // first index of the run of equal seg ids containing i
  std::vector<int64_t> seg_first;  // by segment id: first position (T if absent)
  std::vector<int64_t> seg_last_prefix;  // by segment id: last prefix position (-1 if none)
  std::vector<int32_t> prefix_before;    // number of prefix positions before i (T + 1 entries)
};

RowInfo row_info(const int32_t* seg, const int32_t* pre, int64_t t) {
  RowInfo info;
  info.run_start.resize(t);
  info.prefix_before.assign(t + 1, 0);
  int32_t max_seg = 0;
  for (int64_t i = 0; i < t; ++i) {
    info.run_start[i] = (i > 0 && seg[i] == seg[i - 1]) ? info.run_start[i - 1] : i;
    max_seg = std::max(max_seg, seg[i]);
    info.prefix_before[i + 1] = info.prefix_before[i] + (pre[i] != 0);
  }
  info.seg_first.assign(max_seg + 1, t);
  info.seg_last_prefix.assign(max_seg + 1, -1);
  for (int64_t i = 0; i < t; ++i) {
    if (seg[i] <= 0) continue;
    info.seg_first[seg[i]] = std::min(info.seg_first[seg[i]], i);
    if (pre[i]) info.seg_last_prefix[seg[i]] = i;
  }
  return info;
}

// The keys [kb, ke) a query tile [qs, qe) may see, rounded out to NR (empty: kb >= ke).
void key_range(const int32_t* seg, const int32_t* pre, const RowInfo& info, const Shapes& sh,
               int64_t qs, int64_t qe, int64_t* kb, int64_t* ke) {
  int64_t lo = sh.s, hi = 0;
  for (int64_t q = qs; q < qe; ++q) {
    if (seg[q] <= 0) continue;
    lo = std::min(lo, info.seg_first[seg[q]]);
    int64_t last = q;
    if (pre[q]) last = std::max(last, info.seg_last_prefix[seg[q]]);
    hi = std::max(hi, last + 1);
  }
  *kb = lo / NR * NR;
  *ke = std::min(round_up(hi, NR), sh.sp);
}

// Sets every score the mask hides to -inf. When the whole tile and a chunk of NR keys lie in
// one segment, the chunk needs no per-element test: below the diagonal it is wholly visible,
// and on it (with no prefix query in the tile) only the keys past each query are hidden.
void apply_mask(float* s_qc, int64_t ld, const int32_t* seg, const int32_t* pre,
                const RowInfo& info, const Shapes& sh, int64_t qs, int64_t kb, int64_t ke) {
  const int64_t qe = std::min(qs + QT, sh.t);
  const bool one_segment = seg[qs] > 0 && info.run_start[qe - 1] <= qs;
  const bool causal_only = one_segment && qe == qs + QT &&
                           info.prefix_before[qe] == info.prefix_before[qs];
  for (int64_t c0 = kb; c0 < ke; c0 += NR) {
    const int64_t c1 = c0 + NR;
    const bool same_segment = one_segment && c1 <= sh.s && seg[c0] == seg[qs] &&
                              info.run_start[c1 - 1] <= c0;
    if (same_segment && c1 - 1 <= qs) continue;
    if (same_segment && causal_only) {
      for (int64_t r = 0; r < QT; ++r) {
        float* row = s_qc + r * ld + (c0 - kb);
        for (int64_t j = std::max<int64_t>(0, qs + r + 1 - c0); j < NR; ++j) row[j] = NEG_INF;
      }
      continue;
    }
    for (int64_t r = 0; r < QT; ++r) {
      float* row = s_qc + r * ld + (c0 - kb);
      const int64_t q = qs + r;
      for (int64_t j = 0; j < NR; ++j) {
        const int64_t key = c0 + j;
        const bool visible = q < sh.t && key < sh.s && seg[key] > 0 && seg[key] == seg[q] &&
                             (key <= q || (pre[q] && pre[key]));
        if (!visible) row[j] = NEG_INF;
      }
    }
  }
}

// Copies rows [r0, r0 + QT) of x (row i at x + i * stride, k floats) times `scale` into
// tile [QT, kp], zero-padded.
void pack_rows(const float* x, int64_t stride, int64_t rows, int64_t k, int64_t r0, int64_t kp,
               float scale, float* tile) {
  std::memset(tile, 0, sizeof(float) * QT * kp);
  for (int64_t r = 0; r < QT && r0 + r < rows; ++r)
    for (int64_t d = 0; d < k; ++d) tile[r * kp + d] = x[(r0 + r) * stride + d] * scale;
}

// One head's keys (key j at x + j * stride) -> x^T [kp, sp] and x [sp, kp], zero-padded
// (either output may be null).
void pack_keys(const float* x, int64_t stride, const Shapes& sh, float* xt, float* xp) {
  if (xt) {
    std::memset(xt, 0, sizeof(float) * sh.kp * sh.sp);
    for (int64_t j0 = 0; j0 < sh.s; j0 += 16)  // 16 keys at a time: their rows stay in L1
      for (int64_t d = 0; d < sh.k; ++d)
        for (int64_t j = j0; j < std::min(j0 + 16, sh.s); ++j) xt[d * sh.sp + j] = x[j * stride + d];
  }
  if (xp) {
    std::memset(xp, 0, sizeof(float) * sh.sp * sh.kp);
    for (int64_t j = 0; j < sh.s; ++j) std::memcpy(xp + j * sh.kp, x + j * stride, sizeof(float) * sh.k);
  }
}

ffi::Error check_shapes(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                        ffi::Buffer<ffi::S32> seg, ffi::Buffer<ffi::S32> pre, Shapes* sh) {
  auto qd = q.dimensions(), kd = k.dimensions(), vd = v.dimensions();
  if (qd.size() != 4 || kd.size() != 4 || vd.size() != 4)
    return ffi::Error::InvalidArgument("kineto attention: q, k, v must be rank 4");
  *sh = Shapes{qd[0], qd[2], kd[2], qd[1], kd[1], qd[3], round_up(qd[3], NR), round_up(kd[1], NR)};
  if (kd[0] != sh->b || kd[3] != sh->k || sh->g == 0 || sh->n % sh->g != 0 || sh->s != sh->t ||
      vd[0] != kd[0] || vd[1] != kd[1] || vd[2] != kd[2] || vd[3] != kd[3] ||
      seg.element_count() != sh->b * sh->t || pre.element_count() != sh->b * sh->t)
    return ffi::Error::InvalidArgument("kineto attention: inconsistent q [B,T,N,K], k/v [B,T,G,K], "
                                       "segment ids and prefix [B,T]");
  return ffi::Error::Success();
}

std::vector<RowInfo> all_row_info(const int32_t* seg, const int32_t* pre, const Shapes& sh) {
  std::vector<RowInfo> rows;
  for (int64_t b = 0; b < sh.b; ++b) rows.push_back(row_info(seg + b * sh.t, pre + b * sh.t, sh.t));
  return rows;
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                   ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::S32> seg, ffi::Buffer<ffi::S32> pre,
                   float scale, ffi::ResultBuffer<ffi::F32> o, ffi::ResultBuffer<ffi::F32> lse) {
  Shapes sh;
  if (auto err = check_shapes(q, k, v, seg, pre, &sh); !err.success()) return err;
  const float *q_all = q.typed_data(), *k_all = k.typed_data(), *v_all = v.typed_data();
  const int32_t *seg_all = seg.typed_data(), *pre_all = pre.typed_data();
  float *o_all = o->typed_data(), *lse_all = lse->typed_data();
  const auto rows = all_row_info(seg_all, pre_all, sh);
  const int64_t r_per_g = sh.n / sh.g;

  kineto::parallel_for(pool, sh.b * sh.n, [&](int64_t item) {
    const int64_t b = item / sh.n, n = item % sh.n, g = n / r_per_g;
    thread_local Scratch kt_buf, vp_buf, q_buf, s_buf, o_buf;
    float* kt = kt_buf.get(sh.kp * sh.sp);
    float* vp = vp_buf.get(sh.sp * sh.kp);
    float* qtile = q_buf.get(QT * sh.kp);
    float* s_qc = s_buf.get(QT * sh.sp);
    float* otile = o_buf.get(QT * sh.kp);
    const int64_t kv_off = b * sh.s * sh.g * sh.k + g * sh.k, kv_stride = sh.g * sh.k;
    pack_keys(k_all + kv_off, kv_stride, sh, kt, nullptr);
    pack_keys(v_all + kv_off, kv_stride, sh, nullptr, vp);
    const int32_t* sg = seg_all + b * sh.t;
    const int32_t* pr = pre_all + b * sh.t;
    const int64_t q_stride = sh.n * sh.k;  // one query row of this head to the next
    const float* qx = q_all + b * sh.t * q_stride + n * sh.k;
    float* ox = o_all + b * sh.t * q_stride + n * sh.k;
    float* lx = lse_all + (b * sh.n + n) * sh.t;

    for (int64_t qs = 0; qs < sh.t; qs += QT) {
      const int64_t rows_here = std::min<int64_t>(QT, sh.t - qs);
      int64_t kb, ke;
      key_range(sg, pr, rows[b], sh, qs, qs + rows_here, &kb, &ke);
      if (kb >= ke) {
        for (int64_t r = 0; r < rows_here; ++r) std::memset(ox + (qs + r) * q_stride, 0, sizeof(float) * sh.k);
        std::fill(lx + qs, lx + qs + rows_here, NEG_INF);
        continue;
      }
      const int64_t len = ke - kb;
      pack_rows(qx, q_stride, sh.t, sh.k, qs, sh.kp, scale, qtile);
      gemm<false>(QT, len, sh.kp, qtile, sh.kp, 1, kt + kb, sh.sp, s_qc, len);
      apply_mask(s_qc, len, sg, pr, rows[b], sh, qs, kb, ke);
      float lse_r[QT], inv_l[QT];
      for (int64_t r = 0; r < QT; ++r) {
        float* row = s_qc + r * len;
        vf mv = splat(NEG_INF);
        for (int64_t j = 0; j < len; j += W) {
          vf x = load(row + j);
          mv = x > mv ? x : mv;
        }
        float m = NEG_INF;
        for (int i = 0; i < W; ++i) m = std::max(m, mv[i]);
        if (m == NEG_INF) {  // no visible key: the output row is 0
          std::memset(row, 0, sizeof(float) * len);
          lse_r[r] = NEG_INF;
          inv_l[r] = 0.0f;
          continue;
        }
        vf sv = vf{};
        for (int64_t j = 0; j < len; j += W) {
          vf p = exp_nonpositive(load(row + j) - m);
          store(row + j, p);
          sv += p;
        }
        float l = 0;
        for (int i = 0; i < W; ++i) l += sv[i];
        lse_r[r] = m + std::log(l);
        inv_l[r] = 1.0f / l;
      }
      // o = (p v) / l: normalizing the [QT, K] product, not the [QT, len] probabilities.
      gemm<false>(QT, sh.kp, len, s_qc, len, 1, vp + kb * sh.kp, sh.kp, otile, sh.kp);
      for (int64_t r = 0; r < rows_here; ++r) {
        for (int64_t d = 0; d < sh.k; ++d) ox[(qs + r) * q_stride + d] = otile[r * sh.kp + d] * inv_l[r];
        lx[qs + r] = lse_r[r];
      }
    }
  });
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                    ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::S32> seg, ffi::Buffer<ffi::S32> pre,
                    ffi::Buffer<ffi::F32> o, ffi::Buffer<ffi::F32> lse, ffi::Buffer<ffi::F32> d_o,
                    float scale, ffi::ResultBuffer<ffi::F32> dq, ffi::ResultBuffer<ffi::F32> dk,
                    ffi::ResultBuffer<ffi::F32> dv) {
  Shapes sh;
  if (auto err = check_shapes(q, k, v, seg, pre, &sh); !err.success()) return err;
  const float *q_all = q.typed_data(), *k_all = k.typed_data(), *v_all = v.typed_data();
  const float *o_all = o.typed_data(), *lse_all = lse.typed_data(), *do_all = d_o.typed_data();
  const int32_t *seg_all = seg.typed_data(), *pre_all = pre.typed_data();
  float *dq_all = dq->typed_data(), *dk_all = dk->typed_data(), *dv_all = dv->typed_data();
  const auto rows = all_row_info(seg_all, pre_all, sh);
  const int64_t r_per_g = sh.n / sh.g;

  // One item per (batch, kv head): it owns that head's dk and dv, summed over its query heads.
  kineto::parallel_for(pool, sh.b * sh.g, [&](int64_t item) {
    const int64_t b = item / sh.g, g = item % sh.g;
    thread_local Scratch kt_buf, vt_buf, kp_buf, dk_buf, dv_buf, q_buf, do_buf, p_buf, ds_buf, dq_buf;
    float* kt = kt_buf.get(sh.kp * sh.sp);
    float* vt = vt_buf.get(sh.kp * sh.sp);
    float* kpk = kp_buf.get(sh.sp * sh.kp);
    float* dk_acc = dk_buf.get(sh.sp * sh.kp);
    float* dv_acc = dv_buf.get(sh.sp * sh.kp);
    float* qtile = q_buf.get(QT * sh.kp);
    float* dotile = do_buf.get(QT * sh.kp);
    float* p_qc = p_buf.get(QT * sh.sp);
    float* ds_qc = ds_buf.get(QT * sh.sp);
    float* dqtile = dq_buf.get(QT * sh.kp);
    const int64_t kv_off = b * sh.s * sh.g * sh.k + g * sh.k, kv_stride = sh.g * sh.k;
    pack_keys(k_all + kv_off, kv_stride, sh, kt, kpk);
    pack_keys(v_all + kv_off, kv_stride, sh, vt, nullptr);
    std::memset(dk_acc, 0, sizeof(float) * sh.sp * sh.kp);
    std::memset(dv_acc, 0, sizeof(float) * sh.sp * sh.kp);
    const int32_t* sg = seg_all + b * sh.t;
    const int32_t* pr = pre_all + b * sh.t;

    for (int64_t n = g * r_per_g; n < (g + 1) * r_per_g; ++n) {
      const int64_t q_stride = sh.n * sh.k, head = b * sh.t * q_stride + n * sh.k;
      const float *qx = q_all + head, *ox = o_all + head, *dox = do_all + head;
      const float* lx = lse_all + (b * sh.n + n) * sh.t;
      float* dqx = dq_all + head;
      for (int64_t qs = 0; qs < sh.t; qs += QT) {
        const int64_t rows_here = std::min<int64_t>(QT, sh.t - qs);
        int64_t kb, ke;
        key_range(sg, pr, rows[b], sh, qs, qs + rows_here, &kb, &ke);
        if (kb >= ke) {
          for (int64_t r = 0; r < rows_here; ++r) std::memset(dqx + (qs + r) * q_stride, 0, sizeof(float) * sh.k);
          continue;
        }
        const int64_t len = ke - kb;
        pack_rows(qx, q_stride, sh.t, sh.k, qs, sh.kp, scale, qtile);
        pack_rows(dox, q_stride, sh.t, sh.k, qs, sh.kp, 1.0f, dotile);
        // p = exp(q k^T - lse): the forward's probabilities, recomputed.
        gemm<false>(QT, len, sh.kp, qtile, sh.kp, 1, kt + kb, sh.sp, p_qc, len);
        apply_mask(p_qc, len, sg, pr, rows[b], sh, qs, kb, ke);
        // dp = do v^T; ds = p * (dp - delta), delta = sum(do * o) per query.
        gemm<false>(QT, len, sh.kp, dotile, sh.kp, 1, vt + kb, sh.sp, ds_qc, len);
        for (int64_t r = 0; r < QT; ++r) {
          float* prow = p_qc + r * len;
          float* dsrow = ds_qc + r * len;
          if (r >= rows_here || lx[qs + r] == NEG_INF) {
            std::memset(prow, 0, sizeof(float) * len);
            std::memset(dsrow, 0, sizeof(float) * len);
            continue;
          }
          float delta = 0;
          for (int64_t d = 0; d < sh.k; ++d) delta += dotile[r * sh.kp + d] * ox[(qs + r) * q_stride + d];
          const vf lse_v = splat(lx[qs + r]), delta_v = splat(delta);
          for (int64_t j = 0; j < len; j += W) {
            vf p = exp_nonpositive(load(prow + j) - lse_v);
            store(prow + j, p);
            store(dsrow + j, p * (load(dsrow + j) - delta_v));
          }
        }
        // dq = scale * ds k (the tiles hold q already scaled); dv += p^T do; dk += ds^T q.
        gemm<false>(QT, sh.kp, len, ds_qc, len, 1, kpk + kb * sh.kp, sh.kp, dqtile, sh.kp);
        for (int64_t r = 0; r < rows_here; ++r)
          for (int64_t d = 0; d < sh.k; ++d) dqx[(qs + r) * q_stride + d] = dqtile[r * sh.kp + d] * scale;
        gemm<true>(len, sh.kp, QT, p_qc, 1, len, dotile, sh.kp, dv_acc + kb * sh.kp, sh.kp);
        gemm<true>(len, sh.kp, QT, ds_qc, 1, len, qtile, sh.kp, dk_acc + kb * sh.kp, sh.kp);
      }
    }
    for (int64_t j = 0; j < sh.s; ++j) {
      std::memcpy(dk_all + kv_off + j * kv_stride, dk_acc + j * sh.kp, sizeof(float) * sh.k);
      std::memcpy(dv_all + kv_off + j * kv_stride, dv_acc + j * sh.kp, sizeof(float) * sh.k);
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(KinetoAttentionForward, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Attr<float>("scale")
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(KinetoAttentionBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("scale")
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
