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
/// The handshake is synchronous (see transport/vhost_user.hpp): the attach
/// runs it on the executor and blocks it for at most the configured reply
/// timeout per message.

#include <netpasst/concepts.hpp>
#include <netpasst/transport/persistent.hpp>
#include <netpasst/transport/vhost_user.hpp>
#include <netpasst/unique_fd.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/compose.hpp>
#include <asio/execution_context.hpp>
#include <asio/post.hpp>

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

  /// Makes a vhost-user transport on `socket`, does the handshake and
  /// attaches it. Completion signature `void(std::error_code)`, never inside
  /// this call; errors are the transport's constructor's and handshake's.
  template <asio::completion_token_for<void(std::error_code)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_attach(unique_fd socket, Token&& token = asio::default_completion_token_t<executor_type>{}) {
    return asio::async_compose<Token, void(std::error_code)>(attach_op{this, std::move(socket), false, {}}, token,
                                                             this->get_executor());
  }

  using base::async_wait_lost;
  using base::detach;

private:
  struct attach_op {
    basic_vhost_user_session* session;
    unique_fd socket;
    bool attached = false;
    std::error_code result;

    template <class Self> void operator()(Self& self) {
      if (attached) return self.complete(result);
      attached = true;
      try {
        basic_vhost_user_transport<Executor> transport(session->get_executor(), std::move(socket), session->config_);
        transport.handshake(result);
        if (!result) session->attach(std::move(transport));
      } catch (const std::system_error& e) {
        result = e.code();
      }
      asio::post(session->get_executor(), std::move(self));
    }
  };

  vhost_user_transport_config config_;
};

/// The vhost-user session on `asio::any_io_executor`.
using vhost_user_session = basic_vhost_user_session<>;

} // namespace netpasst
