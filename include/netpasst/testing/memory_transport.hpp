#pragma once
/// @file testing/memory_transport.hpp
/// `netpasst::testing::basic_memory_transport`: an in-memory FrameTransport,
/// created as a connected pair, for tests of anything that runs over a
/// transport (a guest, a fake passt, a lifecycle). Shipped so that users can
/// test their own code the same way, like Boost.Beast's test stream.
///
/// - Frames written on one end are received, whole and in order, on the other.
/// - Each direction holds at most `queue_frames` frames: `try_send` refuses
///   the next one with `errc::would_block` and `async_wait_writable` completes
///   once the peer has received some, so backpressure can be exercised.
/// - The same refusal rules as the real transport: a frame outside 14..65535
///   bytes is refused with `errc::frame_too_short`/`frame_too_long`, counted
///   in `counters().frames_refused`, never delivered.
/// - Fault injection: a `fail_count` makes the Nth operation, and every one
///   after it, fail with a chosen error, so one loop over N can walk every
///   failure point of a scenario.
/// - `close()` on one end: the other end still receives the frames already
///   queued, then `errc::connection_closed` (as on EOF); its sends fail with
///   `errc::connection_closed` at once.
///
/// Thread safety: the two ends may be used from different threads. One end
/// is like an Asio socket: its calls and completion handlers must not run
/// concurrently (one thread, or a strand as its executor). Wake-ups from the
/// peer are posted to an end's executor.

#include <netpasst/concepts.hpp>
#include <netpasst/error.hpp>
#include <netpasst/frame.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/execution_context.hpp>

#include <atomic>
#include <cstddef>
#include <memory>
#include <span>
#include <system_error>
#include <type_traits>
#include <utility>

namespace netpasst::testing {

/// Counts operations and fails the `n`th (0-based) and every later one with
/// `error`. One counter may be shared by several ends (it is atomic); it must
/// outlive every end that uses it.
class fail_count {
public:
  /// Fails operation `n` (0: the first) and all that follow with `error`.
  explicit fail_count(std::size_t n, std::error_code error = make_error_code(errc::connection_closed)) noexcept
      : n_(n), error_(error) {}

  fail_count(const fail_count&) = delete;
  fail_count& operator=(const fail_count&) = delete;

  /// Counts one operation. Returns true, with `ec` set to the error, if it
  /// must fail; false (and `ec` untouched) otherwise.
  bool fail(std::error_code& ec) noexcept {
    if (count_.fetch_add(1, std::memory_order_relaxed) < n_) return false;
    ec = error_;
    return true;
  }

  /// Operations counted so far.
  std::size_t count() const noexcept { return count_.load(std::memory_order_relaxed); }

  /// True once an operation was failed: a loop over `n` stops when a
  /// scenario ran to its end without tripping the counter.
  bool tripped() const noexcept { return count() > n_; }

private:
  std::size_t n_;
  std::error_code error_;
  std::atomic<std::size_t> count_{0};
};

/// Settings of one end of a memory transport pair.
struct memory_transport_options {
  /// Frames this end's outgoing direction holds before `try_send` refuses
  /// with `errc::would_block` (at least 1).
  std::size_t queue_frames = 64;
  /// The most frames one `async_receive` hands out (at least 1).
  std::size_t max_batch_frames = 16;
  /// Fault injection for this end's operations, not owned (may be null).
  /// Counted: each frame offered to `try_send`, each `async_wait_writable`
  /// and each `async_receive`. A failed operation has no other effect.
  fail_count* faults = nullptr;
};

namespace detail {
template <class Executor> class memory_end;
}

/// One end of an in-memory connected pair of FrameTransports; make them with
/// `make_memory_transport_pair`. Movable, not copyable.
///
/// Errors:
/// - `errc::frame_too_short` / `frame_too_long`: refused by `try_send`, counted.
/// - `errc::would_block`: the outgoing queue holds `queue_frames` frames.
/// - `errc::connection_closed`: the peer was closed (or destroyed); receives
///   still deliver the frames it queued before.
/// - `errc::transport_closed`: this end was closed; every operation fails so.
/// - `asio::error::operation_aborted`: `cancel()` ended a pending operation.
/// - Whatever a `fail_count` injects.
template <class Executor = asio::any_io_executor>
class basic_memory_transport {
public:
  using executor_type = Executor;

  basic_memory_transport(basic_memory_transport&&) noexcept = default;
  /// Closes this end (as `close()`), then takes `other`'s.
  basic_memory_transport& operator=(basic_memory_transport&& other) noexcept {
    if (this != &other) close(), end_ = std::move(other.end_);
    return *this;
  }
  /// Closes this end: the peer sees `errc::connection_closed`.
  ~basic_memory_transport() { close(); }

  /// The executor completions run on.
  executor_type get_executor() const noexcept;

  /// This end's settings (after minimums were applied).
  const memory_transport_options& options() const noexcept;

  /// False once this end or its peer is closed.
  bool is_open() const noexcept;

  /// Frames sent by this end that the peer has not received yet.
  std::size_t queued_frames() const noexcept;

  /// What this end moved so far.
  transport_counters counters() const noexcept;

  /// Copies `f` into the outgoing queue (true), or refuses it (false) with
  /// `ec` as listed in the class comment. Never blocks.
  bool try_send(frame f, std::error_code& ec);

  /// Queues the longest prefix of `frames` that is taken; returns its length.
  /// When not all were taken, `ec` says why `frames[result]` was not.
  std::size_t try_send(std::span<const frame> frames, std::error_code& ec);

  /// Completes, with `void(std::error_code)`, once the outgoing queue has room
  /// (at once if it has). Never completes inside this call.
  template <asio::completion_token_for<void(std::error_code)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_wait_writable(Token&& token = asio::default_completion_token_t<executor_type>{});

  /// Receives 1 to `max_batch_frames` frames: `void(std::error_code,
  /// frame_batch)`. The views stay valid until this end's next
  /// `async_receive` (or its destruction). Never completes inside this call.
  /// At most one may be pending.
  template <asio::completion_token_for<void(std::error_code, frame_batch)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_receive(Token&& token = asio::default_completion_token_t<executor_type>{});

  /// Pending operations of this end complete with `asio::error::operation_aborted`.
  void cancel();

  /// Closes this end; frames it queued stay receivable by the peer, frames
  /// queued to it are dropped. Pending operations complete with
  /// `errc::transport_closed`. Idempotent.
  void close() noexcept;

private:
  template <class E>
  friend std::pair<basic_memory_transport<E>, basic_memory_transport<E>>
  make_memory_transport_pair(const E&, const memory_transport_options&, const E&, const memory_transport_options&);

  explicit basic_memory_transport(std::shared_ptr<detail::memory_end<Executor>> end) : end_(std::move(end)) {}
  std::shared_ptr<detail::memory_end<Executor>> end_;
};

/// The memory transport on `asio::any_io_executor`.
using memory_transport = basic_memory_transport<>;

/// Makes a connected pair: what `first` sends, `second` receives, and back.
/// Each end has its own executor (e.g. io_contexts run by two threads) and
/// options.
template <class Executor>
std::pair<basic_memory_transport<Executor>, basic_memory_transport<Executor>>
make_memory_transport_pair(const Executor& first_executor, const memory_transport_options& first_options,
                           const Executor& second_executor, const memory_transport_options& second_options);

/// Both ends on `executor`, with the same options (default: 64-frame
/// queues, batches of up to 16, no faults).
template <class Executor>
  requires(!std::is_convertible_v<Executor&, asio::execution_context&>)
std::pair<basic_memory_transport<Executor>, basic_memory_transport<Executor>>
make_memory_transport_pair(const Executor& executor, const memory_transport_options& options = {}) {
  return make_memory_transport_pair(executor, options, executor, options);
}

/// A pair on an execution context's executor (e.g. an `asio::io_context`).
template <class ExecutionContext>
  requires std::is_convertible_v<ExecutionContext&, asio::execution_context&>
std::pair<memory_transport, memory_transport> make_memory_transport_pair(ExecutionContext& context,
                                                                         const memory_transport_options& options = {}) {
  const asio::any_io_executor executor(context.get_executor());
  return make_memory_transport_pair(executor, options, executor, options);
}

} // namespace netpasst::testing

#include <netpasst/testing/impl/memory_transport.hpp>

