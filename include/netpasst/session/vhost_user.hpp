#pragma once
/// @file session/vhost_user.hpp
/// `netpasst::basic_vhost_user_session` (alias `vhost_user_session`): the
/// BackendSession for passt started with `--vhost-user`. Attaching makes a
/// `basic_vhost_user_transport` on the new socket (fresh shared memory and
/// rings for each passt) and does its handshake; the lifecycle adds
/// `--vhost-user` to passt's argv because `mode` says so.
///
/// It is also the FrameTransport the embedder's NIC model talks to, a
/// `basic_persistent_transport` whose operations wait across restarts (see
/// transport/persistent.hpp). A passt in vhost-user mode started with
/// `--fd` exits when its socket closes, so a restart always brings a new
/// passt, never a reconnection.
///
/// The attach does the transport's `async_handshake`: nothing blocks the
/// executor while passt answers. `detach` during a handshake closes the
/// half-made connection, and the attach completes with
/// `errc::transport_closed`.

#include <netpasst/concepts.hpp>
#include <netpasst/transport/persistent.hpp>
#include <netpasst/transport/vhost_user.hpp>
#include <netpasst/unique_fd.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/compose.hpp>
#include <asio/execution_context.hpp>
#include <asio/post.hpp>

#include <optional>
#include <system_error>
#include <type_traits>

namespace netpasst {

/// The vhost-user session (see the file comment).
template <class Executor = asio::any_io_executor>
class basic_vhost_user_session : public basic_persistent_transport<basic_vhost_user_transport<Executor>> {
  using base = basic_persistent_transport<basic_vhost_user_transport<Executor>>;

public:
  using executor_type = Executor;
  /// What passt speaks: vhost-user.
  static constexpr passt_mode mode = passt_mode::vhost_user;

  /// A session whose connections are vhost-user transports made with `config`.
  explicit basic_vhost_user_session(const executor_type& executor, const vhost_user_transport_config& config = {})
      : base(executor), config_(config) {}
  /// As above, with the execution context's executor.
  template <class ExecutionContext>
    requires std::is_convertible_v<ExecutionContext&, asio::execution_context&>
  explicit basic_vhost_user_session(ExecutionContext& context, const vhost_user_transport_config& config = {})
      : basic_vhost_user_session(executor_type(context.get_executor()), config) {}

  /// The configuration each connection's transport is made with.
  const vhost_user_transport_config& config() const noexcept { return config_; }

  /// Makes a vhost-user transport on `socket`, does its handshake and
  /// attaches it. Completion signature `void(std::error_code)`, never inside
  /// this call; errors are the transport's constructor's and handshake's,
  /// or `errc::operation_in_progress` while another attach is pending.
  template <asio::completion_token_for<void(std::error_code)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_attach(unique_fd socket, Token&& token = asio::default_completion_token_t<executor_type>{}) {
    return asio::async_compose<Token, void(std::error_code)>(attach_op{this, std::move(socket), attach_op::initiating, {}}, token,
                                                             this->get_executor());
  }

  /// As `basic_persistent_transport::detach`; also abandons a handshake in
  /// progress.
  void detach(std::error_code reason = {}) {
    if (handshaking_) handshaking_->close();
    base::detach(reason);
  }

  using base::async_wait_lost;

  /// Closes the connection and abandons a handshake in progress (a pending
  /// attach must not outlive the session: its completion uses it).
  ~basic_vhost_user_session() {
    if (handshaking_) handshaking_->close();
  }

private:
  struct attach_op {
    basic_vhost_user_session* session;
    unique_fd socket;
    enum { initiating, handshaking, posted } stage = initiating;
    std::error_code result;

    template <class Self> void operator()(Self& self, std::error_code ec = {}) {
      if (stage == posted) return self.complete(result);
      if (stage == handshaking) {
        if (!ec) session->attach(std::move(*session->handshaking_));
        session->handshaking_.reset();
        return self.complete(ec);
      }
      if (session->handshaking_) {
        result = errc::operation_in_progress;
      } else {
        try {
          session->handshaking_.emplace(session->get_executor(), std::move(socket), session->config_);
          stage = handshaking;
          return session->handshaking_->async_handshake(std::move(self));
        } catch (const std::system_error& e) {
          result = e.code();
        }
      }
      stage = posted;
      asio::post(session->get_executor(), std::move(self));
    }
  };

  std::optional<basic_vhost_user_transport<Executor>> handshaking_;
  vhost_user_transport_config config_;
};

/// The vhost-user session on `asio::any_io_executor`.
using vhost_user_session = basic_vhost_user_session<>;

} // namespace netpasst
