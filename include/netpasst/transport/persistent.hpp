#pragma once
/// @file transport/persistent.hpp
/// `netpasst::basic_persistent_transport`: a FrameTransport that outlives the
/// connections under it. It holds the current connection (a FrameTransport
/// of type `Transport`), or none while passt is being replaced, and keeps
/// every operation meaningful across the swap:
///
/// | state | `try_send` | `async_receive`, `async_wait_writable` |
/// |---|---|---|
/// | attached | the connection's | the connection's |
/// | waiting (before the first `attach`, after `detach()` or a loss) | refused, `errc::would_block` | wait for the next `attach` |
/// | ended (`detach(reason)`, `close()`) | refused with `reason` | complete with `reason` |
///
/// - A connection error seen by any operation (end of stream, reset, a bad
///   length) marks the connection lost: it is closed, the transport goes to
///   waiting, `async_wait_lost` completes with the error, and the operation
///   that saw it waits for the next connection instead of failing. A frame
///   refused that way was not taken (`errc::would_block`): nothing is lost
///   silently.
/// - Administrative link down (`set_link(false)`, QEMU's set_link): sent
///   frames are dropped and received ones discarded, both counted in
///   `frames_dropped`.
/// - The views of a received batch stay valid until the next
///   `async_receive`, even if the connection they came from was replaced.
///
/// Thread safety: like an Asio I/O object. The connections must use the same
/// executor (or one that runs on the same thread).

#include <netpasst/concepts.hpp>
#include <netpasst/error.hpp>
#include <netpasst/frame.hpp>

#include <asio/async_result.hpp>
#include <asio/execution_context.hpp>

#include <cstdint>
#include <memory>
#include <span>
#include <system_error>
#include <type_traits>

namespace netpasst {

/// What a persistent transport moved over all its connections.
struct persistent_transport_counters : transport_counters {
  std::uint64_t frames_dropped = 0; ///< Frames dropped while the link was administratively down.
  std::uint64_t connections = 0;    ///< Connections attached so far.
  std::uint64_t losses = 0;         ///< Connections lost (a connection error, not a detach).
};

namespace detail {
template <class Transport> class persistent_state;
}

/// A FrameTransport over a succession of `Transport` connections (see the
/// file comment).
template <FrameTransport Transport>
class basic_persistent_transport {
public:
  using executor_type = typename Transport::executor_type;
  using transport_type = Transport;

  /// Waiting for its first connection.
  explicit basic_persistent_transport(const executor_type& executor);
  /// As above, with the execution context's executor.
  template <class ExecutionContext>
    requires std::is_convertible_v<ExecutionContext&, asio::execution_context&>
  explicit basic_persistent_transport(ExecutionContext& context)
      : basic_persistent_transport(executor_type(context.get_executor())) {}
  basic_persistent_transport(const basic_persistent_transport&) = delete;
  basic_persistent_transport& operator=(const basic_persistent_transport&) = delete;
  /// Closes the connection; pending operations complete with `errc::transport_closed`.
  ~basic_persistent_transport();

  executor_type get_executor() const noexcept;

  /// Makes `connection` the current one (closing any previous one); waiting
  /// operations go on with it.
  void attach(Transport connection);
  /// Drops the current connection (closed, kept until the next receive so
  /// that views stay valid). `reason` empty: wait for the next `attach`;
  /// otherwise pending and later operations end with `reason` until then.
  void detach(std::error_code reason = {});
  /// True while a connection is attached.
  bool attached() const noexcept;
  /// The current connection, or nullptr.
  Transport* connection() noexcept;

  /// Completes with the connection error that made the current connection
  /// lost, or with `asio::error::operation_aborted` when it is detached (or
  /// none is attached) first, or on cancellation. Signature
  /// `void(std::error_code)`; at most one pending.
  template <asio::completion_token_for<void(std::error_code)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_wait_lost(Token&& token = asio::default_completion_token_t<executor_type>{});

  /// Administrative link state; while down frames are dropped both ways.
  void set_link(bool up) noexcept;
  bool link() const noexcept;

  // FrameTransport (see concepts.hpp and the file comment).
  bool try_send(frame f, std::error_code& ec);
  std::size_t try_send(std::span<const frame> frames, std::error_code& ec);
  template <asio::completion_token_for<void(std::error_code)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_wait_writable(Token&& token = asio::default_completion_token_t<executor_type>{});
  /// At most one pending; a second completes with `errc::operation_in_progress`.
  template <asio::completion_token_for<void(std::error_code, frame_batch)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_receive(Token&& token = asio::default_completion_token_t<executor_type>{});
  /// Pending receive and writable waits complete with
  /// `asio::error::operation_aborted`; the connection stays.
  void cancel();
  /// False once ended (`detach(reason)` or `close()`), until the next attach.
  bool is_open() const noexcept;
  /// As `detach(errc::transport_closed)`.
  void close() noexcept;
  /// Counters of every connection so far, plus drops and connection counts.
  persistent_transport_counters counters() const noexcept;

private:
  std::shared_ptr<detail::persistent_state<Transport>> state_;
};

} // namespace netpasst

#include <netpasst/transport/impl/persistent.hpp>
