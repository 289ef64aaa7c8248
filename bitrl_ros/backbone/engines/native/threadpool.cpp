// ThreadPool (threadpool.h).
#include "threadpool.h"

#include <algorithm>

namespace bitrl {

ThreadPool::ThreadPool(int threads) : n_(std::max(1, threads)) {
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

void ThreadPool::take_chunks(uint64_t job, int worker) {
  for (;;) {
    int chunk;
    void (*fn)(void*, int, int);
    void* ctx;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (job != job_ || next_ >= total_) return;  // a newer job, or every chunk of this one is claimed
      chunk = next_++;
      fn = fn_;
      ctx = ctx_;
    }
    fn(ctx, chunk, worker);
    std::lock_guard<std::mutex> lock(mu_);
    if (++done_ == total_) cv_done_.notify_all();
  }
}

void ThreadPool::dispatch(void (*fn)(void*, int, int), void* ctx, int n_chunks) {
  uint64_t job;
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = fn;
    ctx_ = ctx;
    total_ = n_chunks;
    next_ = 0;
    done_ = 0;
    job = ++job_;
  }
  cv_start_.notify_all();
  take_chunks(job, 0);  // the caller works too; a worker the OS has not scheduled yet is never waited for
  std::unique_lock<std::mutex> lock(mu_);
  cv_done_.wait(lock, [&] { return done_ == total_; });
}

void ThreadPool::worker(int index) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_start_.wait(lock, [&] { return stop_ || job_ != seen; });
      if (stop_) return;
      job = seen = job_;
    }
    take_chunks(job, index);
  }
}

}  // namespace bitrl
