// A float32 matmul for CPUs as an XLA FFI custom call, computed by the BLAS that numpy
// ships (OpenBLAS, its ILP64 `cblas_sgemm`), whose address Python hands over once with
// `KinetoSetBlas`.
//
// The rows of the product are split over XLA's intra-op thread pool, each part one
// single-threaded BLAS call: BLAS's own threads would compete with the ops XLA runs beside
// the matmul (measured: slower than XLA's matmul), while XLA's pool is sized to the cores.
// Python sets OpenBLAS to one thread once, before the first call (matmul_cpu.py); nothing here
// touches OpenBLAS's global state, so these calls only share its buffer table, which OpenBLAS
// guards for concurrent callers.
//
// c [M, N] = op(a) op(b), where op(a) is a [M, K] or, with trans_a, a^T for a [K, M]; op(b)
// is b [K, N] or, with trans_b, b^T for b [N, K]. BLAS reads the transposed operands in place,
// where XLA's CPU backend first copies them into a transposed layout (the weight gradients
// x^T dy and the input gradients dy w^T of every dense layer).

#include <algorithm>
#include <cstdint>

#include "xla/ffi/api/ffi.h"
#include "parallel.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kRowMajor = 101, kNoTrans = 111, kTrans = 112;  // cblas enum values
using Sgemm = void (*)(int32_t order, int32_t trans_a, int32_t trans_b, int64_t m, int64_t n,
                       int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                       int64_t ldb, float beta, float* c, int64_t ldc);
Sgemm sgemm = nullptr;

ffi::Error Matmul(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                  int32_t trans_a, int32_t trans_b, ffi::ResultBuffer<ffi::F32> c) {
  if (sgemm == nullptr) return ffi::Error::Internal("kineto matmul: no sgemm was set");
  auto ad = a.dimensions(), bd = b.dimensions(), cd = c->dimensions();
  if (ad.size() != 2 || bd.size() != 2 || cd.size() != 2)
    return ffi::Error::InvalidArgument("kineto matmul: operands must be 2-D");
  const int64_t m = trans_a ? ad[1] : ad[0], k = trans_a ? ad[0] : ad[1];
  const int64_t n = trans_b ? bd[0] : bd[1], kb = trans_b ? bd[1] : bd[0];
  if (k != kb || cd[0] != m || cd[1] != n)
    return ffi::Error::InvalidArgument("kineto matmul: shapes do not agree");
  if (m == 0 || n == 0) return ffi::Error::Success();
  const float *a_data = a.typed_data(), *b_data = b.typed_data();
  float* c_data = c->typed_data();
  const int64_t lda = ad[1], ldb = bd[1];

  // Rows [r0, r1) of the product: rows of a, or columns of a when it is read transposed.
  auto rows = [=](int64_t r0, int64_t r1) {
    const float* a_part = trans_a ? a_data + r0 : a_data + r0 * lda;
    sgemm(kRowMajor, trans_a ? kTrans : kNoTrans, trans_b ? kTrans : kNoTrans, r1 - r0, n, k, 1.0f,
          a_part, lda, b_data, ldb, 0.0f, c_data + r0 * n, n);
  };
  // Parts of 64 rows or more, at most one per thread; part p covers rows [p * m / parts,
  // (p + 1) * m / parts), rounded to 16 rows.
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), m / 64));
  auto bound = [=](int64_t p) { return p == parts ? m : p * m / parts / 16 * 16; };
  kineto::parallel_for(pool, parts, [&](int64_t p) { rows(bound(p), bound(p + 1)); });
  return ffi::Error::Success();
}

}  // namespace

extern "C" void KinetoSetBlas(void* sgemm_fn) { sgemm = reinterpret_cast<Sgemm>(sgemm_fn); }

XLA_FFI_DEFINE_HANDLER_SYMBOL(KinetoMatmul, Matmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Attr<int32_t>("trans_a")
                                  .Attr<int32_t>("trans_b")
                                  .Ret<ffi::Buffer<ffi::F32>>());
