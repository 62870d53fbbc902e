#pragma once
/// @file session/stream.hpp
/// `netpasst::basic_stream_session` (alias `stream_session`): the
/// BackendSession for passt's default mode, the stream protocol (4-byte
/// big-endian length, then the Ethernet frame). Attaching makes a
/// `basic_stream_transport` on the new socket; there is no handshake.
///
/// It is also the FrameTransport the embedder's NIC model talks to: a
/// `basic_persistent_transport` whose frames survive restarts (while passt
/// is being replaced, sends are refused with `errc::would_block` and
/// receives wait; see transport/persistent.hpp).

#include <netpasst/concepts.hpp>
#include <netpasst/transport/persistent.hpp>
#include <netpasst/transport/stream.hpp>
#include <netpasst/unique_fd.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/execution_context.hpp>

#include <system_error>
#include <type_traits>

namespace netpasst {

/// The stream-protocol session (see the file comment).
template <class Executor = asio::any_io_executor>
class basic_stream_session : public basic_persistent_transport<basic_stream_transport<Executor>> {
  using base = basic_persistent_transport<basic_stream_transport<Executor>>;

public:
  using executor_type = Executor;
  /// What passt speaks: its default stream protocol.
  static constexpr passt_mode mode = passt_mode::stream;

  /// A session whose connections are stream transports made with `config`.
  explicit basic_stream_session(const executor_type& executor, const stream_transport_config& config = {})
      : base(executor), config_(config) {}
  /// As above, with the execution context's executor.
  template <class ExecutionContext>
    requires std::is_convertible_v<ExecutionContext&, asio::execution_context&>
  explicit basic_stream_session(ExecutionContext& context, const stream_transport_config& config = {})
      : basic_stream_session(executor_type(context.get_executor()), config) {}

  /// The configuration each connection's transport is made with.
  const stream_transport_config& config() const noexcept { return config_; }

  /// Makes a stream transport on `socket` and attaches it. Completion
  /// signature `void(std::error_code)`, never inside this call; errors are
  /// those of the transport's constructor (the socket is not a connected
  /// stream socket, a socket option failed).
  template <asio::completion_token_for<void(std::error_code)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_attach(unique_fd socket, Token&& token = asio::default_completion_token_t<executor_type>{});

  /// As `basic_persistent_transport::detach`.
  using base::detach;
  using base::async_wait_lost;

private:
  stream_transport_config config_;
};

/// The stream session on `asio::any_io_executor`.
using stream_session = basic_stream_session<>;

} // namespace netpasst

#include <netpasst/session/impl/stream.hpp>
