// The persistent thread pool the model code splits its GEMMs and attention over.
#pragma once

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
class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  int size() const { return n_; }

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

  int n_;
  std::vector<std::thread> workers_;
  // The current job, all under mu_: a chunk is claimed and counted done under the lock, so a job cannot end
  // (and its fields cannot change) while one of its chunks is still running. Only fn_ runs outside the lock.
  std::mutex mu_;
  std::condition_variable cv_start_;
  std::condition_variable cv_done_;
  void (*fn_)(void*, int, int) = nullptr;
  void* ctx_ = nullptr;
  int total_ = 0;
  int next_ = 0;
  int done_ = 0;
  uint64_t job_ = 0;
  bool stop_ = false;
};

}  // namespace bitrl
