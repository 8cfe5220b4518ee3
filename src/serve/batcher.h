// Dynamic batching: jobs that ask the same model the same thing (same methods, layers, targets and
// settings: the same `key`) are gathered, up to max_batch or until the first has waited batch_wait,
// into one Explainer::explain call, whose one forward pass serves them all. `workers` threads per model
// run batches side by side. A batch of a few small images leaves cores idle inside LibTorch's parallel
// loops (many small operators, each waiting for its slowest thread), so under load each running batch
// gets its share of the intra-op threads (cores / workers) and the batches fill the cores; a batch
// that runs alone gets them all, so that one person's long method is not slowed. Jobs can be cancelled
// and time out; a batch stops early (through the engine's progress callback) only when none of its
// jobs is still wanted.
#pragma once

#include <lumen/explain.h>

#include <opencv2/core.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace lumen::serve {

using Clock = std::chrono::steady_clock;

struct Job {
  cv::Mat image;                                 // BGR, decoded
  torch::Tensor input;                           // [1, C, H, W]: the image preprocessed for the model
  std::string source;                            // file name or data id
  std::shared_ptr<const ExplainOptions> options;
  std::string key;                               // jobs with equal keys may share a batch
  Clock::time_point deadline;
  std::promise<ImageExplanation> result;         // an exception when it failed or was cancelled

  std::atomic<bool> cancelled{false};
  // Progress as the engine reports it, for GET /api/jobs/{id}.
  std::atomic<int64_t> done{0}, total{0};
  std::atomic<int> state{0};                     // 0 queued, 1 running, 2 finished
  std::atomic<int> batched_with{0};              // images in the batch it ran in
  bool wanted() const { return !cancelled && Clock::now() < deadline; }
};

// Thrown into a job's future: it was cancelled or ran out of time (the message says which).
struct Cancelled : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// Thrown by submit: the queue is full.
struct Busy : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Batcher {
 public:
  Batcher(const Explainer& explainer, int max_batch, std::chrono::microseconds wait, size_t queue_limit, int workers = 1);
  ~Batcher();  // stop()
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Queues a request's jobs together, so that one worker finds them all (throws Busy, queueing none,
  // when they do not fit).
  void submit(const std::vector<std::shared_ptr<Job>>& jobs);
  size_t queued() const;
  // Calls `run(images)` on this thread for every batch size the batcher forms, at each intra-op thread
  // count its workers run with: each shape and thread count makes LibTorch and oneDNN build and keep
  // kernels and buffers, which would otherwise show as memory growing during the first minutes.
  void warm_up(const std::function<void(int images)>& run) const;
  // Refuses new jobs, cancels the queued ones, lets the running batches finish, joins the workers.
  void stop();

 private:
  void work();
  int shared_threads() const { return std::max(1, threads_ / worker_count_); }  // a batch's share under load
  std::deque<std::shared_ptr<Job>> take_batch(std::unique_lock<std::mutex>& lock);
  void run_batch(std::deque<std::shared_ptr<Job>>& batch);

  const Explainer& explainer_;
  const size_t max_batch_;
  const std::chrono::microseconds wait_;
  const size_t queue_limit_;
  const int threads_;                 // intra-op threads of the process when the batcher was made
  const int worker_count_;
  std::atomic<int> running_{0};       // batches running now
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace lumen::serve
