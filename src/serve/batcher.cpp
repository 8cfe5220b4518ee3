#include "serve/batcher.h"

#include <lumen/error.h>
#include <lumen/runtime.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <set>

namespace lumen::serve {

namespace {

// A model that takes one image per forward gets batches of one.
size_t batch_limit(const Model& model, int max_batch) {
  const int64_t per = model.images_per_forward();
  return static_cast<size_t>(std::max<int64_t>(1, per > 0 ? std::min<int64_t>(max_batch, per) : max_batch));
}

}  // namespace

Batcher::Batcher(const Explainer& explainer, int max_batch, std::chrono::microseconds wait, size_t queue_limit, int workers)
    : explainer_(explainer), max_batch_(batch_limit(explainer.model(), max_batch)), wait_(wait), queue_limit_(queue_limit),
      threads_(at::get_num_threads()), worker_count_(std::max(1, workers)) {
  for (int i = 0; i < worker_count_; ++i) workers_.emplace_back([this] { work(); });
}

Batcher::~Batcher() { stop(); }

void Batcher::submit(const std::vector<std::shared_ptr<Job>>& jobs) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) throw Busy("the server is stopping");
    if (queue_.size() + jobs.size() > queue_limit_) throw Busy("the queue is full (" + std::to_string(queue_limit_) + " jobs waiting; --queue)");
    queue_.insert(queue_.end(), jobs.begin(), jobs.end());
  }
  wake_.notify_all();
}

void Batcher::warm_up(const std::function<void(int images)>& run) const {
  for (const int threads : std::set<int>{threads_, shared_threads()}) {
    set_this_thread_threads(threads);
    for (int n = 1; n <= static_cast<int>(max_batch_); ++n) run(n);
  }
  set_this_thread_threads(threads_);
}

size_t Batcher::queued() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return queue_.size();
}

void Batcher::stop() {
  std::deque<std::shared_ptr<Job>> dropped;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_ && workers_.empty()) return;
    stopping_ = true;
    dropped.swap(queue_);
  }
  wake_.notify_all();
  for (auto& job : dropped) job->result.set_exception(std::make_exception_ptr(Cancelled("the server stopped before the job ran")));
  for (auto& worker : workers_) worker.join();
  workers_.clear();
}

// The first queued job, and every queued job with its key, up to max_batch; while the batch is short,
// waits for more until the first job has waited `wait_`.
std::deque<std::shared_ptr<Job>> Batcher::take_batch(std::unique_lock<std::mutex>& lock) {
  std::deque<std::shared_ptr<Job>> batch;
  batch.push_back(queue_.front());
  queue_.pop_front();
  const auto gather = [&] {
    for (auto it = queue_.begin(); it != queue_.end() && batch.size() < max_batch_;) {
      if ((*it)->key == batch.front()->key) {
        batch.push_back(*it);
        it = queue_.erase(it);
      } else {
        ++it;
      }
    }
  };
  const auto until = Clock::now() + wait_;
  gather();
  while (batch.size() < max_batch_ && !stopping_) {
    const bool timed_out = wake_.wait_until(lock, until) == std::cv_status::timeout;
    gather();  // after a timeout too: jobs that came with it
    if (timed_out) break;
  }
  return batch;
}

void Batcher::work() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping
    auto batch = take_batch(lock);
    lock.unlock();
    const int others = running_++;
    set_this_thread_threads(others == 0 ? threads_ : shared_threads());
    run_batch(batch);
    --running_;
    lock.lock();
  }
}

void Batcher::run_batch(std::deque<std::shared_ptr<Job>>& batch) {
  // Jobs no longer wanted are answered now and left out.
  std::vector<std::shared_ptr<Job>> jobs;
  for (auto& job : batch) {
    if (job->wanted()) {
      jobs.push_back(job);
    } else {
      job->state = 2;
      job->result.set_exception(std::make_exception_ptr(Cancelled(job->cancelled ? "cancelled" : "timed out before it ran (--timeout)")));
    }
  }
  if (jobs.empty()) return;
  std::vector<torch::Tensor> inputs;
  std::vector<cv::Size> sizes;
  std::vector<std::string> sources;
  for (auto& job : jobs) {
    inputs.push_back(job->input);
    sizes.push_back(job->image.size());
    sources.push_back(job->source);
    job->state = 1;
    job->batched_with = static_cast<int>(jobs.size());
  }
  ExplainOptions options = *jobs.front()->options;
  // The engine reports long work here; this is also where a batch that nobody wants any more stops.
  options.shared.progress = [&jobs](const std::string&, int64_t done, int64_t total) {
    bool wanted = false;
    for (auto& job : jobs) {
      job->done = done;
      job->total = total;
      wanted |= job->wanted();
    }
    if (!wanted) throw Cancelled("cancelled");
  };
  try {
    auto explained = explainer_.explain_tensor(torch::cat(inputs), options, sizes, sources);
    for (size_t i = 0; i < jobs.size(); ++i) {
      jobs[i]->state = 2;
      if (jobs[i]->wanted()) jobs[i]->result.set_value(std::move(explained[i]));
      else jobs[i]->result.set_exception(std::make_exception_ptr(Cancelled(jobs[i]->cancelled ? "cancelled" : "timed out (--timeout)")));
    }
  } catch (...) {
    const auto error = std::current_exception();
    for (auto& job : jobs) {
      job->state = 2;
      if (!job->wanted()) job->result.set_exception(std::make_exception_ptr(Cancelled(job->cancelled ? "cancelled" : "timed out (--timeout)")));
      else job->result.set_exception(error);
    }
  }
}

}  // namespace lumen::serve
