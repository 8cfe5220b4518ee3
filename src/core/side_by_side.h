// Internal: independent pieces of work side by side on LibTorch's intra-op threads, each piece on one
// thread (inside a parallel region ATen and oneDNN run every op serially on the calling thread).
//
// Why: a CPU forward of a small network keeps its intra-op threads busy only part of the time (small
// convolutions, memory-bound elementwise ops, the serial stretches between them). Two pieces at once,
// one thread each, keep both cores busy: MobileNetV2 at 224 px, channels-last, on two cores, two
// single-threaded batches of 4 ran 9.6 ms per image against 12.9 ms for one two-threaded batch of 8;
// docs/performance.md ("Work side by side") has lumen's own numbers. at::parallel_for is LibTorch's
// own pool, so no second thread pool competes with it.
#pragma once

#include <lumen/error.h>

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <torch/torch.h>

#include <algorithm>
#include <functional>
#include <vector>

namespace lumen::detail {

// The threads pieces can spread over now: 1 with one intra-op thread, or inside a parallel region
// (a piece of side-by-side work does not split again), or where lumen is compiled without OpenMP (the
// fuzz build), whose at::parallel_for runs on the calling thread alone.
inline int side_by_side_threads() {
#ifdef _OPENMP
  return at::in_parallel_region() ? 1 : std::max(1, at::get_num_threads());
#else
  return 1;
#endif
}

// fn(k) for every k in [0, count), spread over the threads, each call under the caller's thread-local
// state (grad mode and inference mode are per thread). The first exception is rethrown here.
inline void side_by_side(int64_t count, const std::function<void(int64_t)>& fn) {
  if (side_by_side_threads() < 2 || count < 2) {
    for (int64_t k = 0; k < count; ++k) fn(k);
    return;
  }
  const at::ThreadLocalState caller;
  at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
    at::ThreadLocalStateGuard guard(caller);
    for (int64_t k = begin; k < end; ++k) fn(k);
  });
}

// `rows` in chunks through fn: with several threads, chunks of rows_per_pass / threads rows side by
// side, so that the chunks in flight hold rows_per_pass rows as one pass did (memory stays what the
// caller sized its passes for); otherwise, or when rows_per_pass has fewer rows than there are
// threads (a budget that allows one row at a time), chunks of rows_per_pass one after another.
template <class Part>
std::vector<Part> chunks_side_by_side(const torch::Tensor& rows, int64_t rows_per_pass, const std::function<Part(const torch::Tensor&)>& fn) {
  if (rows_per_pass < 1) throw Error("batch size must be at least 1");
  const int64_t threads = side_by_side_threads(), n = rows.size(0);
  const bool apart = threads >= 2 && n >= 2 && rows_per_pass >= threads;
  const int64_t chunk = apart ? rows_per_pass / threads : rows_per_pass;
  std::vector<Part> parts(static_cast<size_t>((n + chunk - 1) / chunk));
  const auto part = [&](int64_t k) { parts[static_cast<size_t>(k)] = fn(rows.slice(0, k * chunk, std::min(n, (k + 1) * chunk))); };
  if (apart) {
    side_by_side(static_cast<int64_t>(parts.size()), part);
  } else {
    for (int64_t k = 0; k < static_cast<int64_t>(parts.size()); ++k) part(k);
  }
  return parts;
}

// The same, for a function of rows that gives one value per row: the chunks' results in one tensor.
inline torch::Tensor rows_side_by_side(const torch::Tensor& rows, int64_t rows_per_pass, const std::function<torch::Tensor(const torch::Tensor&)>& fn) {
  return torch::cat(chunks_side_by_side<torch::Tensor>(rows, rows_per_pass, fn));
}

}  // namespace lumen::detail
