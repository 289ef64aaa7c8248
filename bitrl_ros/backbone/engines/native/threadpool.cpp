// ThreadPool (threadpool.h).
#include "threadpool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define BITRL_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define BITRL_CPU_RELAX() __asm__ __volatile__("yield")
#else
#define BITRL_CPU_RELAX() ((void)0)
#endif

namespace bitrl {

ThreadPool::ThreadPool(int threads, int spin_us) : n_(std::max(1, threads)), spin_us_(std::max(0, spin_us)) {
  for (int i = 1; i < n_; ++i) workers_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_start_.notify_all();
  for (auto& t : workers_) t.join();
}

template <class P>
bool ThreadPool::spin_until(P&& pred) const {
  const int us = spin_us();
  if (us == 0) return pred();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(us);
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (pred()) return true;
      BITRL_CPU_RELAX();
    }
    if (std::chrono::steady_clock::now() >= deadline) return pred();
  }
}

void ThreadPool::take_chunks(uint64_t job, int worker) {
  for (;;) {
    int chunk;
    void (*fn)(void*, int, int);
    void* ctx;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (job != job_.load(std::memory_order_relaxed) || next_ >= total_) return;  // newer job, or all claimed
      chunk = next_++;
      fn = fn_;
      ctx = ctx_;
    }
    fn(ctx, chunk, worker);
    std::lock_guard<std::mutex> lock(mu_);
    if (done_.fetch_add(1, std::memory_order_release) + 1 == total_ && caller_sleeping_) cv_done_.notify_all();
  }
}

void ThreadPool::dispatch(void (*fn)(void*, int, int), void* ctx, int n_chunks) {
  uint64_t job;
  bool wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = fn;
    ctx_ = ctx;
    total_ = n_chunks;
    next_ = 0;
    done_.store(0, std::memory_order_relaxed);
    job = job_.load(std::memory_order_relaxed) + 1;
    job_.store(job, std::memory_order_release);
    wake = sleeping_workers_ > 0;
  }
  if (wake) cv_start_.notify_all();
  take_chunks(job, 0);  // the caller works too; a worker the OS has not scheduled yet is never waited for
  const int total = n_chunks;
  if (spin_until([&] { return done_.load(std::memory_order_acquire) == total; })) return;
  std::unique_lock<std::mutex> lock(mu_);
  caller_sleeping_ = true;
  cv_done_.wait(lock, [&] { return done_.load(std::memory_order_relaxed) == total_; });
  caller_sleeping_ = false;
}

void ThreadPool::worker(int index) {
  uint64_t seen = 0;
  for (;;) {
    spin_until([&] { return job_.load(std::memory_order_acquire) != seen; });
    uint64_t job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (!stop_ && job_.load(std::memory_order_relaxed) == seen) {
        ++sleeping_workers_;
        cv_start_.wait(lock, [&] { return stop_ || job_.load(std::memory_order_relaxed) != seen; });
        --sleeping_workers_;
      }
      if (stop_) return;
      job = seen = job_.load(std::memory_order_relaxed);
    }
    take_chunks(job, index);
  }
}

}  // namespace bitrl
