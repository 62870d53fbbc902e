#pragma once
// Implementation of netpasst/bridge.hpp; include that header instead.

#include <netpasst/bridge.hpp>

#include <asio/associated_allocator.hpp>
#include <asio/bind_executor.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/compose.hpp>
#include <asio/dispatch.hpp>
#include <asio/error.hpp>
#include <asio/post.hpp>

#include <algorithm>
#include <memory>
#include <utility>

namespace netpasst::detail {

/// What a basic_bridge sees of its current run.
class bridge_control {
public:
  /// Ends the run with `reason` (empty: a plain stop). Idempotent.
  virtual void stop(std::error_code reason) noexcept = 0;
  virtual bridge_counters counters() const noexcept = 0;

  /// The run reports its end into `*slot` (set to null) and `*last`.
  void attach(bridge_control** slot, bridge_counters* last) noexcept {
    owner_slot_ = slot;
    owner_last_ = last;
    if (slot) *slot = this;
  }
  void detach() noexcept { owner_slot_ = nullptr, owner_last_ = nullptr; }

protected:
  ~bridge_control() = default;
  void release_owner(const bridge_counters& counters) noexcept {
    if (!owner_slot_) return;
    *owner_slot_ = nullptr;
    *owner_last_ = counters;
    detach();
  }

private:
  bridge_control** owner_slot_ = nullptr;
  bridge_counters* owner_last_ = nullptr;
};

/// One direction: where frames come from and go, and the batch in hand.
template <class Source, class Destination>
struct bridge_direction {
  Source* source;
  Destination* destination;
  bridge_direction_counters* counters;
  frame_batch batch{};
  std::size_t next = 0; ///< First frame of `batch` not yet taken by the destination.
};

inline std::uint64_t total_bytes(frame_batch frames) noexcept {
  std::uint64_t sum = 0;
  for (frame f : frames) sum += f.size();
  return sum;
}

/// One run of a bridge: owns the composed operation (`Self`) until the end.
/// Allocated with the completion handler's allocator, kept alive by its
/// pending handlers, and freed before the completion handler is called. Its own handlers run on the first transport's
/// executor, where both transports are used; only the completion goes
/// through the handler's executor. Every operation it starts is counted in
/// `pending_`; the handler that brings `pending_` to zero once ending
/// completes the run.
template <class A, class B, class Self>
class bridge_run final : public bridge_control, public std::enable_shared_from_this<bridge_run<A, B, Self>> {
public:
  using executor_type = typename A::executor_type;

  bridge_run(A& a, B& b, const bridge_config& config, Self&& self)
      : config_(config), self_(std::move(self)), executor_(a.get_executor()),
        a_to_b_{&a, &b, &counters_.a_to_b}, b_to_a_{&b, &a, &counters_.b_to_a} {
    config_.frames_per_turn = std::max<std::size_t>(config_.frames_per_turn, 1);
    config_.bytes_per_turn = std::max<std::size_t>(config_.bytes_per_turn, 1);
  }

  /// Allocates a run with `self`'s allocator and starts it. The run lives as
  /// long as one of its handlers does: if the executor is destroyed with
  /// them, it goes too (and `self`'s handler with it, never called).
  static void launch(A& a, B& b, const bridge_config& config, Self&& self, bridge_control** owner_slot,
                     bridge_counters* owner_last) {
    run_allocator allocator(self.get_allocator());
    auto run = std::allocate_shared<bridge_run>(allocator, a, b, config, std::move(self));
    run->attach(owner_slot, owner_last);
    run->start();
  }

  ~bridge_run() { release_owner(counters_); }

  void stop(std::error_code reason) noexcept override { end(reason); }
  bridge_counters counters() const noexcept override { return counters_; }

private:
  using run_allocator =
      typename std::allocator_traits<typename Self::allocator_type>::template rebind_alloc<bridge_run>;

  void start() {
    auto slot = self_.get_cancellation_state().slot();
    if (slot.is_connected())
      slot.assign([this](asio::cancellation_type) { end(make_error_code(asio::error::operation_aborted)); });
    receive(a_to_b_);
    receive(b_to_a_);
  }

  /// A handler for one of our operations, run on our executor: it keeps the
  /// run alive, uncounts the operation, does `f`, and completes the run if
  /// it was the last one.
  template <class F> auto entry(F f) {
    ++pending_;
    return asio::bind_executor(executor_, [keep = this->shared_from_this(), f = std::move(f)](auto&&... args) mutable {
      bridge_run& run = *keep;
      --run.pending_;
      f(std::forward<decltype(args)>(args)...);
      if (run.ending_ && run.pending_ == 0) run.finish(std::move(keep));
    });
  }

  template <class S, class D> void receive(bridge_direction<S, D>& d) {
    d.batch = {};
    d.next = 0;
    d.source->async_receive(entry([this, &d](std::error_code ec, frame_batch batch) {
      if (!ec) {
        ++d.counters->batches;
        d.batch = batch;
      }
      if (ending_) return;
      if (ec) return end(ec);
      pump(d);
    }));
  }

  template <class S, class D> void wait_writable(bridge_direction<S, D>& d) {
    ++d.counters->waits;
    d.destination->async_wait_writable(entry([this, &d](std::error_code ec) {
      if (ending_) return;
      if (ec) return end(ec);
      pump(d);
    }));
  }

  template <class S, class D> void yield(bridge_direction<S, D>& d) {
    ++d.counters->yields;
    asio::post(entry([this, &d] {
      if (!ending_) pump(d);
    }));
  }

  /// Hands the batch to the destination within one turn's bound.
  template <class S, class D> void pump(bridge_direction<S, D>& d) {
    std::size_t turn_frames = 0, turn_bytes = 0;
    while (d.next < d.batch.size()) {
      // The frames this turn may still hand over: within both bounds, and
      // at least one per turn.
      std::size_t last = d.next, bytes = 0;
      while (last < d.batch.size() && turn_frames + (last - d.next) < config_.frames_per_turn) {
        const std::size_t size = d.batch[last].size();
        if (turn_frames + (last - d.next) > 0 && turn_bytes + bytes + size > config_.bytes_per_turn) break;
        bytes += size;
        ++last;
      }
      if (last == d.next) return yield(d);
      const std::size_t offered = last - d.next;
      std::error_code ec;
      const std::size_t taken = std::min(d.destination->try_send(d.batch.subspan(d.next, offered), ec), offered);
      const std::uint64_t taken_bytes = total_bytes(d.batch.subspan(d.next, taken));
      d.counters->frames += taken;
      d.counters->bytes += taken_bytes;
      d.next += taken;
      turn_frames += taken;
      turn_bytes += taken_bytes;
      if (taken == offered) continue;
      if (ec == errc::frame_too_short || ec == errc::frame_too_long) {
        ++d.counters->dropped_invalid;
        ++d.next;
        ++turn_frames;
        continue;
      }
      if (ec && ec != errc::would_block) return end(ec);
      ++d.counters->refused;
      return wait_writable(d);
    }
    receive(d);
  }

  /// First call: remember why, cancel both transports' pending operations.
  void end(std::error_code reason) noexcept {
    if (ending_) return;
    ending_ = true;
    result_ = reason;
    a_to_b_.source->cancel();
    b_to_a_.source->cancel();
  }

  /// The frames still held get one more offer, without waiting.
  template <class S, class D> void last_offer(bridge_direction<S, D>& d) {
    while (d.next < d.batch.size()) {
      std::error_code ec;
      const frame_batch rest = d.batch.subspan(d.next);
      const std::size_t taken = std::min(d.destination->try_send(rest, ec), rest.size());
      d.counters->frames += taken;
      d.counters->bytes += total_bytes(rest.first(taken));
      d.next += taken;
      if (taken == rest.size()) break;
      if (ec == errc::frame_too_short || ec == errc::frame_too_long) {
        ++d.counters->dropped_invalid;
        ++d.next;
        continue;
      }
      d.counters->dropped_at_end += d.batch.size() - d.next;
      break;
    }
    d.batch = {};
    d.next = 0;
  }

  /// Every operation has completed: free the run (`keep` is its last
  /// reference), then complete through the handler's executor.
  void finish(std::shared_ptr<bridge_run> keep) {
    last_offer(a_to_b_);
    last_offer(b_to_a_);
    const bridge_counters counters = counters_;
    const std::error_code result = result_;
    release_owner(counters);
    auto slot = self_.get_cancellation_state().slot();
    if (slot.is_connected()) slot.clear();
    Self self(std::move(self_));
    keep.reset(); // `this` is gone from here on
    auto handler_executor = self.get_executor();
    asio::dispatch(handler_executor, [self = std::move(self), result, counters]() mutable {
      self.complete(result, counters);
    });
  }

  bridge_config config_;
  Self self_;
  executor_type executor_;
  bridge_counters counters_{};
  bridge_direction<A, B> a_to_b_;
  bridge_direction<B, A> b_to_a_;
  std::size_t pending_ = 0;
  bool ending_ = false;
  std::error_code result_;
};

/// The composed operation's entry: starts a run, or refuses a second one.
template <class A, class B>
struct bridge_op {
  A* a;
  B* b;
  bridge_config config;
  bridge_control** owner_slot = nullptr;
  bridge_counters* owner_last = nullptr;
  bool refused = false;

  template <class Self> void operator()(Self& self) {
    if (refused) return self.complete(make_error_code(errc::operation_in_progress), bridge_counters{});
    if (owner_slot && *owner_slot) {
      refused = true;
      return asio::post(a->get_executor(), std::move(self));
    }
    self.reset_cancellation_state(asio::enable_total_cancellation());
    bridge_run<A, B, Self>::launch(*a, *b, config, std::move(self), owner_slot, owner_last);
  }
};

} // namespace netpasst::detail

namespace netpasst {

template <FrameTransport A, FrameTransport B,
          asio::completion_token_for<void(std::error_code, bridge_counters)> Token>
auto async_bridge(A& a, B& b, const bridge_config& config, Token&& token) {
  return asio::async_compose<Token, void(std::error_code, bridge_counters)>(
      detail::bridge_op<A, B>{&a, &b, config}, token, a.get_executor(), b.get_executor());
}

template <FrameTransport A, FrameTransport B,
          asio::completion_token_for<void(std::error_code, bridge_counters)> Token>
auto async_bridge(A& a, B& b, Token&& token) {
  return async_bridge(a, b, bridge_config{}, std::forward<Token>(token));
}

template <FrameTransport A, FrameTransport B>
basic_bridge<A, B>::basic_bridge(A& a, B& b, const bridge_config& config) noexcept
    : a_(&a), b_(&b), config_(config) {}

template <FrameTransport A, FrameTransport B> basic_bridge<A, B>::~basic_bridge() {
  if (!run_) return;
  detail::bridge_control* run = std::exchange(run_, nullptr);
  run->detach();
  run->stop(make_error_code(asio::error::operation_aborted));
}

template <FrameTransport A, FrameTransport B>
auto basic_bridge<A, B>::get_executor() const -> executor_type {
  return a_->get_executor();
}

template <FrameTransport A, FrameTransport B> A& basic_bridge<A, B>::first() noexcept {
  return *a_;
}

template <FrameTransport A, FrameTransport B> B& basic_bridge<A, B>::second() noexcept {
  return *b_;
}

template <FrameTransport A, FrameTransport B>
const bridge_config& basic_bridge<A, B>::config() const noexcept {
  return config_;
}

template <FrameTransport A, FrameTransport B>
template <asio::completion_token_for<void(std::error_code, bridge_counters)> Token>
auto basic_bridge<A, B>::async_run(Token&& token) {
  return asio::async_compose<Token, void(std::error_code, bridge_counters)>(
      detail::bridge_op<A, B>{a_, b_, config_, &run_, &last_}, token, a_->get_executor(), b_->get_executor());
}

template <FrameTransport A, FrameTransport B> void basic_bridge<A, B>::stop() noexcept {
  if (run_) run_->stop({});
}

template <FrameTransport A, FrameTransport B>
bool basic_bridge<A, B>::running() const noexcept {
  return run_ != nullptr;
}

template <FrameTransport A, FrameTransport B>
bridge_counters basic_bridge<A, B>::counters() const noexcept {
  return run_ ? run_->counters() : last_;
}

} // namespace netpasst
