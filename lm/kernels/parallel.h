// parallel_for over XLA's intra-op thread pool, shared by the CPU kernels of this folder.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace kineto {

// Runs fn(0..items-1) on the calling thread and the pool's other threads. Items are claimed
// one at a time, and the caller claims until none is left, so it never waits on a task that
// has not started: two kernels running side by side on a pool of two threads, each waiting
// for help from the other's thread, cannot deadlock.
inline void parallel_for(xla::ffi::ThreadPool& pool, int64_t items, std::function<void(int64_t)> fn) {
  struct Work {
    std::atomic<int64_t> next{0}, done{0};
    int64_t total;
    std::function<void(int64_t)> fn;
  };
  auto work = std::make_shared<Work>();
  work->total = items;
  work->fn = std::move(fn);
  auto loop = [work] {
    for (int64_t i; (i = work->next.fetch_add(1)) < work->total;) {
      work->fn(i);
      work->done.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), items) - 1;
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule([loop] { loop(); });
  loop();
  while (work->done.load(std::memory_order_acquire) < items) std::this_thread::yield();
}

}  // namespace kineto
