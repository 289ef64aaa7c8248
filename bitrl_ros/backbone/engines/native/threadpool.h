// The persistent thread pool the model code splits its GEMMs and attention over.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace bitrl {

// A small persistent pool. run(n_chunks, f) calls f(chunk, worker) once for every chunk in [0, n_chunks); the
// caller is worker 0 and takes chunks too, the other workers join as they wake. A worker that the OS has not
// scheduled yet is never waited for: whoever is running takes the remaining chunks, so an oversubscribed machine
// degrades to one thread's speed instead of stalling. worker < size() indexes per-thread scratch. size() == 1
// means no threads at all.
//
// Waking a sleeping thread costs tens of microseconds (more on a VM, whose idle vCPU is halted), as much as a
// whole 30-token GEMM of the shipped encoder. So a worker that finished a job spins for spin_us() before it goes
// to sleep, and the caller spins as long for the last chunks: the GEMMs of one forward pass follow each other
// within microseconds, and only the first of them pays a wake-up.
class ThreadPool {
 public:
  static constexpr int kDefaultSpinUs = 200;

  explicit ThreadPool(int threads, int spin_us = kDefaultSpinUs);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  int size() const { return n_; }
  int spin_us() const { return spin_us_.load(std::memory_order_relaxed); }
  void set_spin_us(int us) { spin_us_.store(us < 0 ? 0 : us, std::memory_order_relaxed); }

  template <class F>
  void run(int n_chunks, F&& f) {
    if (n_chunks <= 0) return;
    if (n_ == 1 || n_chunks == 1) {
      for (int c = 0; c < n_chunks; ++c) f(c, 0);
      return;
    }
    using Fn = typename std::remove_reference<F>::type;
    dispatch([](void* ctx, int chunk, int worker) { (*static_cast<Fn*>(ctx))(chunk, worker); },
             static_cast<void*>(&f), n_chunks);
  }

 private:
  void dispatch(void (*fn)(void*, int, int), void* ctx, int n_chunks);
  void take_chunks(uint64_t job, int worker);
  void worker(int index);
  // Spins until pred() holds or spin_us() has passed; true when pred() held.
  template <class P>
  bool spin_until(P&& pred) const;

  int n_;
  std::atomic<int> spin_us_;
  std::vector<std::thread> workers_;
  // The current job, all under mu_: a chunk is claimed and counted done under the lock, so a job cannot end
  // (and its fields cannot change) while one of its chunks is still running. Only fn_ runs outside the lock.
  // job_ and done_ are atomics as well so that spinning threads can watch them without the lock.
  std::mutex mu_;
  std::condition_variable cv_start_;
  std::condition_variable cv_done_;
  void (*fn_)(void*, int, int) = nullptr;
  void* ctx_ = nullptr;
  int total_ = 0;
  int next_ = 0;
  std::atomic<int> done_{0};
  std::atomic<uint64_t> job_{0};
  int sleeping_workers_ = 0;  // under mu_: workers in cv_start_.wait
  bool caller_sleeping_ = false;  // under mu_: the caller in cv_done_.wait
  bool stop_ = false;
};

}  // namespace bitrl
