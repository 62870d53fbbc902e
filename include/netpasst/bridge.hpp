#pragma once
/// @file bridge.hpp
/// Forwarding frames both ways between two FrameTransports: `async_bridge`
/// and `basic_bridge` (a bridge you can stop and read counters from while it
/// runs). The usual pair is a tap device (the guest side) and a lifecycle
/// (passt), but any two models work: a NIC model and a transport, two memory
/// transports in a test, two taps.
///
/// How it forwards, in each direction independently:
/// 1. receive a batch from the source (`async_receive`);
/// 2. hand the batch's frames to the destination with `try_send` (the views
///    as received: the bridge copies nothing; each transport copies what it
///    must);
/// 3. a frame the destination refuses with `errc::would_block` is kept, the
///    bridge waits for `async_wait_writable` and offers it again, so the
///    source is not read while the destination is full (backpressure reaches
///    the source: a tap's queue fills, passt's socket fills). Nothing is
///    dropped for lack of room.
/// 4. a frame the destination refuses for its size (`errc::frame_too_short`,
///    `errc::frame_too_long`) cannot ever be sent: it is skipped and counted
///    in `dropped_invalid`;
/// 5. once the batch is done, receive again.
///
/// Fairness: a direction hands at most `frames_per_turn` frames and
/// `bytes_per_turn` bytes (a larger frame goes alone) to its destination per
/// turn, then posts the rest of its batch to the executor, so the other
/// direction's handlers (and any other work on the executor) run in between;
/// neither direction starves the other however much the first has to move.
///
/// How it ends: at the first error of either transport (a receive or wait
/// error, or a `try_send` error other than the refusals above), on `stop()`,
/// or on cancellation through the completion handler's cancellation slot.
/// The bridge then cancels both transports (`cancel()`), waits until its
/// own pending operations have completed, offers the frames it still held
/// once more to their destination without waiting, counts those not taken in
/// `dropped_at_end`, and completes with the ending error and the counters.
/// The transports stay open: a new bridge (or anything else) can use them.
///
/// Executors: the bridge's own work runs on the first transport's executor,
/// and it calls both transports from there, so both must be usable from it
/// (one thread, or a strand as the executor of both). The completion handler
/// runs on its associated executor (e.g. a strand it is bound to), and the
/// bridge's state is allocated with its associated allocator and freed
/// before it runs.

#include <netpasst/concepts.hpp>
#include <netpasst/error.hpp>
#include <netpasst/frame.hpp>

#include <asio/async_result.hpp>

#include <cstddef>
#include <cstdint>
#include <system_error>

namespace netpasst {

/// How much work a bridge direction does per turn (see the file comment).
struct bridge_config {
  /// The most frames handed to the destination per turn (at least 1).
  std::size_t frames_per_turn = 256;
  /// The most bytes handed to the destination per turn: a turn ends before
  /// the frame that would exceed it, but always hands over at least one
  /// frame (so a frame larger than this goes alone).
  std::size_t bytes_per_turn = std::size_t{1} << 20;
};

/// What one direction of a bridge did.
struct bridge_direction_counters {
  std::uint64_t frames = 0;          ///< Frames the destination took.
  std::uint64_t bytes = 0;           ///< Their bytes.
  std::uint64_t batches = 0;         ///< Batches received from the source.
  std::uint64_t refused = 0;         ///< `try_send` refusals with `errc::would_block` (the frame was kept).
  std::uint64_t waits = 0;           ///< `async_wait_writable` calls on the destination.
  std::uint64_t yields = 0;          ///< Turns ended by the per-turn bound with frames left.
  std::uint64_t dropped_invalid = 0; ///< Frames refused for their size (also in the destination's `frames_refused`).
  std::uint64_t dropped_at_end = 0;  ///< Frames received but not taken when the bridge ended.
};

/// What a bridge did, per direction: `a_to_b` is what the first transport
/// received and the second sent.
struct bridge_counters {
  bridge_direction_counters a_to_b;
  bridge_direction_counters b_to_a;
};

namespace detail {
class bridge_control;
}

/// Forwards frames both ways between `a` and `b` until an error or
/// cancellation (see the file comment). Both transports must outlive the
/// operation and have no `async_receive` or `async_wait_writable` of their
/// own pending while it runs.
///
/// Completion signature `void(std::error_code, bridge_counters)`. The error
/// is the one that ended the bridge: a transport's error (e.g.
/// `errc::connection_closed`, `errc::stopped` from a stopped lifecycle), or
/// `asio::error::operation_aborted` when the handler's cancellation slot was
/// emitted (any cancellation type), or when something else cancelled one of
/// the transports.
template <FrameTransport A, FrameTransport B,
          asio::completion_token_for<void(std::error_code, bridge_counters)> Token =
              asio::default_completion_token_t<typename A::executor_type>>
auto async_bridge(A& a, B& b, const bridge_config& config,
                  Token&& token = asio::default_completion_token_t<typename A::executor_type>{});

/// `async_bridge` with the default configuration.
template <FrameTransport A, FrameTransport B,
          asio::completion_token_for<void(std::error_code, bridge_counters)> Token =
              asio::default_completion_token_t<typename A::executor_type>>
auto async_bridge(A& a, B& b, Token&& token = asio::default_completion_token_t<typename A::executor_type>{});

/// A bridge between `a` and `b` that can be stopped and watched: each
/// `async_run` is one `async_bridge`, and `stop()` ends it without an error.
/// Runs one at a time; a new one may start once the last has completed.
template <FrameTransport A, FrameTransport B>
class basic_bridge {
public:
  using first_type = A;
  using second_type = B;
  using executor_type = typename A::executor_type;

  /// A bridge between `a` and `b` (not owned; they must outlive every run).
  basic_bridge(A& a, B& b, const bridge_config& config = {}) noexcept;

  basic_bridge(const basic_bridge&) = delete;
  basic_bridge& operator=(const basic_bridge&) = delete;

  /// Stops a run still going, as `stop()`; it completes later as usual.
  ~basic_bridge();

  /// The first transport's executor.
  executor_type get_executor() const;

  A& first() noexcept;
  B& second() noexcept;
  const bridge_config& config() const noexcept;

  /// Forwards until an error, `stop()` or cancellation. Completion signature
  /// `void(std::error_code, bridge_counters)`: after `stop()` the error is
  /// empty; otherwise as `async_bridge`. A run started while another is
  /// going completes at once (posted) with `errc::operation_in_progress`.
  template <asio::completion_token_for<void(std::error_code, bridge_counters)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_run(Token&& token = asio::default_completion_token_t<executor_type>{});

  /// Ends the current run, if any (it completes once the transports'
  /// pending operations have). Idempotent; call from the executor.
  void stop() noexcept;

  /// True from `async_run` until its completion.
  bool running() const noexcept;

  /// The counters of the current run, or of the last one once it completed.
  bridge_counters counters() const noexcept;

private:
  A* a_;
  B* b_;
  bridge_config config_;
  detail::bridge_control* run_ = nullptr;
  bridge_counters last_{};
};

/// A bridge whose transports use the same types as `a` and `b`.
template <FrameTransport A, FrameTransport B>
basic_bridge(A&, B&, const bridge_config& = {}) -> basic_bridge<A, B>;

} // namespace netpasst

#include <netpasst/impl/bridge.hpp>
