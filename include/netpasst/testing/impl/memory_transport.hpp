#pragma once
// Implementation of netpasst/testing/memory_transport.hpp; include that header instead.

#include <netpasst/testing/memory_transport.hpp>

#include <asio/basic_waitable_timer.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/compose.hpp>
#include <asio/error.hpp>
#include <asio/post.hpp>

#include <algorithm>
#include <chrono>
#include <deque>
#include <functional>
#include <mutex>
#include <vector>

namespace netpasst::testing::detail {

/// What the two ends share, guarded by `mutex`. Direction i carries the
/// frames end i sent.
struct memory_link {
  std::mutex mutex;
  std::deque<std::vector<std::byte>> queue[2];
  std::size_t capacity[2] = {1, 1};
  bool closed[2] = {false, false};
  std::vector<std::vector<std::byte>> spare; // recycled frame buffers
  std::function<void()> wake[2];             // posts a wake-up to end i; set once at creation
};

/// One end. Waits are waits on `signal_` (a timer that never expires): the
/// peer wakes them by posting its cancellation, and they check again.
template <class Executor>
class memory_end : public std::enable_shared_from_this<memory_end<Executor>> {
public:
  using timer_type =
      asio::basic_waitable_timer<std::chrono::steady_clock, asio::wait_traits<std::chrono::steady_clock>, Executor>;

  memory_end(const Executor& executor, std::shared_ptr<memory_link> link, int side,
             const memory_transport_options& options)
      : options_(options), link_(std::move(link)), side_(side), executor_(executor), signal_(executor) {
    options_.queue_frames = std::max<std::size_t>(options_.queue_frames, 1);
    options_.max_batch_frames = std::max<std::size_t>(options_.max_batch_frames, 1);
    link_->capacity[side] = options_.queue_frames;
    signal_.expires_at(std::chrono::steady_clock::time_point::max()); // once: re-arming would cancel waits
    batch_.reserve(options_.max_batch_frames);
    held_.reserve(options_.max_batch_frames);
  }

  Executor executor() const { return executor_; }
  timer_type& signal() noexcept { return signal_; }
  const memory_transport_options& options() const noexcept { return options_; }
  const transport_counters& counters() const noexcept { return counters_; }
  frame_batch batch() const noexcept { return batch_; }
  bool receive_pending = false, writable_pending = false;
  bool abort_receive = false, abort_writable = false;

  bool is_open() {
    std::lock_guard lock(link_->mutex);
    return !link_->closed[side_] && !link_->closed[1 - side_];
  }

  std::size_t queued() {
    std::lock_guard lock(link_->mutex);
    return link_->queue[side_].size();
  }

  /// Counts one operation against the fail_count, if any.
  bool inject(std::error_code& ec) { return options_.faults && options_.faults->fail(ec); }

  bool try_send(frame f, std::error_code& ec) {
    ec.clear();
    if (inject(ec)) return false;
    {
      std::lock_guard lock(link_->mutex);
      if (std::error_code e = connection_error()) return ec = e, false;
      if (f.size() < min_frame_size || f.size() > max_frame_size) {
        ++counters_.frames_refused;
        ec = f.size() < min_frame_size ? errc::frame_too_short : errc::frame_too_long;
        return false;
      }
      auto& queue = link_->queue[side_];
      if (queue.size() >= options_.queue_frames) return ec = errc::would_block, false;
      std::vector<std::byte> buffer;
      if (!link_->spare.empty()) buffer = std::move(link_->spare.back()), link_->spare.pop_back();
      buffer.assign(f.begin(), f.end());
      queue.push_back(std::move(buffer));
    }
    ++counters_.frames_sent;
    counters_.bytes_sent += f.size();
    link_->wake[1 - side_]();
    return true;
  }

  /// Takes up to max_batch_frames frames into batch_; 0 with ec clear means
  /// "wait".
  std::size_t take(std::error_code& ec) {
    ec.clear();
    bool wake_peer = false;
    {
      std::lock_guard lock(link_->mutex);
      if (link_->closed[side_]) return ec = errc::transport_closed, 0;
      auto& queue = link_->queue[1 - side_];
      if (queue.empty()) {
        if (link_->closed[1 - side_]) ec = errc::connection_closed;
        return 0;
      }
      recycle();
      wake_peer = queue.size() >= link_->capacity[1 - side_];
      while (!queue.empty() && held_.size() < options_.max_batch_frames) {
        held_.push_back(std::move(queue.front()));
        queue.pop_front();
      }
    }
    batch_.clear();
    for (const auto& buffer : held_) {
      batch_.emplace_back(buffer.data(), buffer.size());
      counters_.bytes_received += buffer.size();
    }
    counters_.frames_received += batch_.size();
    if (wake_peer) link_->wake[1 - side_]();
    return batch_.size();
  }

  /// True when a frame would be taken now; ec set for a closed connection.
  bool writable(std::error_code& ec) {
    std::lock_guard lock(link_->mutex);
    ec = connection_error();
    return !ec && link_->queue[side_].size() < options_.queue_frames;
  }

  void cancel() {
    abort_receive = receive_pending;
    abort_writable = writable_pending;
    signal_.cancel();
  }

  void close() noexcept {
    {
      std::lock_guard lock(link_->mutex);
      if (link_->closed[side_]) return;
      link_->closed[side_] = true;
      link_->queue[1 - side_].clear();
    }
    // The current batch's buffers stay: its views are valid until destruction.
    signal_.cancel();
    link_->wake[1 - side_]();
  }

private:
  /// Caller holds the lock.
  std::error_code connection_error() const {
    if (link_->closed[side_]) return errc::transport_closed;
    if (link_->closed[1 - side_]) return errc::connection_closed;
    return {};
  }
  /// Caller holds the lock: the previous batch's buffers go back to the pool.
  void recycle() {
    for (auto& buffer : held_)
      if (link_->spare.size() < 256) link_->spare.push_back(std::move(buffer));
    held_.clear();
  }

  memory_transport_options options_;
  std::shared_ptr<memory_link> link_;
  int side_;
  Executor executor_;
  timer_type signal_;
  transport_counters counters_;
  std::vector<std::vector<std::byte>> held_; // the frames of the current batch
  std::vector<frame> batch_;
};

/// async_receive: post (so it never completes inside the call and runs on
/// the executor), then take or wait on the signal and take again.
template <class Executor>
struct memory_receive_op {
  explicit memory_receive_op(std::shared_ptr<memory_end<Executor>> e) : end(std::move(e)) {}
  std::shared_ptr<memory_end<Executor>> end;
  bool started = false;
  std::error_code injected;

  template <class Self> void operator()(Self& self, std::error_code = {}) {
    if (!started) {
      started = true;
      self.reset_cancellation_state(asio::enable_total_cancellation());
      end->receive_pending = true;
      end->inject(injected);
      return asio::post(end->executor(), std::move(self));
    }
    std::error_code ec = injected;
    std::size_t n = 0;
    if (!ec && (end->abort_receive || self.get_cancellation_state().cancelled() != asio::cancellation_type::none))
      ec = asio::error::operation_aborted;
    if (!ec) n = end->take(ec);
    if (!ec && n == 0) {
      return end->signal().async_wait(std::move(self));
    }
    end->receive_pending = end->abort_receive = false;
    self.complete(ec, ec ? frame_batch{} : end->batch());
  }
};

/// async_wait_writable, shaped like memory_receive_op.
template <class Executor>
struct memory_writable_op {
  explicit memory_writable_op(std::shared_ptr<memory_end<Executor>> e) : end(std::move(e)) {}
  std::shared_ptr<memory_end<Executor>> end;
  bool started = false;
  std::error_code injected;

  template <class Self> void operator()(Self& self, std::error_code = {}) {
    if (!started) {
      started = true;
      self.reset_cancellation_state(asio::enable_total_cancellation());
      end->writable_pending = true;
      end->inject(injected);
      return asio::post(end->executor(), std::move(self));
    }
    std::error_code ec = injected;
    if (!ec && (end->abort_writable || self.get_cancellation_state().cancelled() != asio::cancellation_type::none))
      ec = asio::error::operation_aborted;
    if (!ec && !end->writable(ec) && !ec) {
      return end->signal().async_wait(std::move(self));
    }
    end->writable_pending = end->abort_writable = false;
    self.complete(ec);
  }
};

} // namespace netpasst::testing::detail

namespace netpasst::testing {

template <class Executor>
std::pair<basic_memory_transport<Executor>, basic_memory_transport<Executor>>
make_memory_transport_pair(const Executor& first_executor, const memory_transport_options& first_options,
                           const Executor& second_executor, const memory_transport_options& second_options) {
  using end = detail::memory_end<Executor>;
  auto link = std::make_shared<detail::memory_link>();
  auto first = std::make_shared<end>(first_executor, link, 0, first_options);
  auto second = std::make_shared<end>(second_executor, link, 1, second_options);
  auto waker = [](const std::shared_ptr<end>& e) {
    return [weak = std::weak_ptr<end>(e), executor = e->executor()] {
      asio::post(executor, [weak] {
        if (auto e = weak.lock()) e->signal().cancel();
      });
    };
  };
  link->wake[0] = waker(first);
  link->wake[1] = waker(second);
  return {basic_memory_transport<Executor>(std::move(first)), basic_memory_transport<Executor>(std::move(second))};
}

template <class Executor> auto basic_memory_transport<Executor>::get_executor() const noexcept -> executor_type {
  return end_->executor();
}

template <class Executor>
const memory_transport_options& basic_memory_transport<Executor>::options() const noexcept {
  return end_->options();
}

template <class Executor> bool basic_memory_transport<Executor>::is_open() const noexcept {
  return end_ && end_->is_open();
}

template <class Executor> std::size_t basic_memory_transport<Executor>::queued_frames() const noexcept {
  return end_ ? end_->queued() : 0;
}

template <class Executor> transport_counters basic_memory_transport<Executor>::counters() const noexcept {
  return end_ ? end_->counters() : transport_counters{};
}

template <class Executor> bool basic_memory_transport<Executor>::try_send(frame f, std::error_code& ec) {
  return end_->try_send(f, ec);
}

template <class Executor>
std::size_t basic_memory_transport<Executor>::try_send(std::span<const frame> frames, std::error_code& ec) {
  ec.clear();
  std::size_t n = 0;
  while (n < frames.size() && end_->try_send(frames[n], ec)) ++n;
  return n;
}

template <class Executor>
template <asio::completion_token_for<void(std::error_code)> Token>
auto basic_memory_transport<Executor>::async_wait_writable(Token&& token) {
  return asio::async_compose<Token, void(std::error_code)>(detail::memory_writable_op<Executor>(end_), token,
                                                           end_->signal());
}

template <class Executor>
template <asio::completion_token_for<void(std::error_code, frame_batch)> Token>
auto basic_memory_transport<Executor>::async_receive(Token&& token) {
  return asio::async_compose<Token, void(std::error_code, frame_batch)>(detail::memory_receive_op<Executor>(end_),
                                                                        token, end_->signal());
}

template <class Executor> void basic_memory_transport<Executor>::cancel() {
  if (end_) end_->cancel();
}

template <class Executor> void basic_memory_transport<Executor>::close() noexcept {
  if (end_) end_->close();
}

} // namespace netpasst::testing
