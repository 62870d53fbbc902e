#pragma once
/// @file testing/memory_session.hpp
/// `netpasst::testing::basic_memory_session`: a BackendSession (and
/// FrameTransport) whose frames travel through `memory_transport` pairs
/// instead of passt's socket, for deterministic tests of a lifecycle or of
/// code above it. Each attach makes a new pair: the session keeps one end
/// (as a `basic_persistent_transport`, so traffic survives restarts exactly
/// as with the stream session) and hands the other to the test through
/// `on_attach`, where a `scripted_passt` can answer. The socket the
/// lifecycle hands over is held until the session is detached, so the
/// launcher side sees what it would with a real session.
///
/// Scripting: `script_handshake(error)` makes the next attach fail; the
/// memory options (with a `fail_count`) inject faults into every frame
/// operation of the session's ends, so one loop over N walks every failure
/// point of a scenario.

#include <netpasst/concepts.hpp>
#include <netpasst/testing/memory_transport.hpp>
#include <netpasst/transport/persistent.hpp>
#include <netpasst/unique_fd.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/compose.hpp>
#include <asio/execution_context.hpp>
#include <asio/post.hpp>

#include <deque>
#include <functional>
#include <system_error>
#include <type_traits>

namespace netpasst::testing {

/// A session over memory transports, speaking `Mode` as far as the
/// lifecycle can tell (see the file comment).
template <passt_mode Mode = passt_mode::stream, class Executor = asio::any_io_executor>
class basic_memory_session : public basic_persistent_transport<basic_memory_transport<Executor>> {
  using base = basic_persistent_transport<basic_memory_transport<Executor>>;

public:
  using executor_type = Executor;
  using peer_type = basic_memory_transport<Executor>;
  static constexpr passt_mode mode = Mode;

  /// `ours`: options of the session's end of each pair; `peer`: of the end
  /// handed to the test.
  explicit basic_memory_session(const executor_type& executor, const memory_transport_options& ours = {},
                                const memory_transport_options& peer = {})
      : base(executor), ours_(ours), peer_(peer) {}
  template <class ExecutionContext>
    requires std::is_convertible_v<ExecutionContext&, asio::execution_context&>
  explicit basic_memory_session(ExecutionContext& context, const memory_transport_options& ours = {},
                                const memory_transport_options& peer = {})
      : basic_memory_session(executor_type(context.get_executor()), ours, peer) {}

  /// Called at each successful attach with passt's end of the new pair.
  void on_attach(std::function<void(peer_type peer)> handler) { on_attach_ = std::move(handler); }
  /// The next attach fails with `error` (queued; later ones succeed).
  void script_handshake(std::error_code error) { handshakes_.push_back(error); }
  /// Attaches asked for so far.
  std::size_t attaches() const noexcept { return attaches_; }
  /// The socket held from the last attach (-1 once detached).
  int held_socket() const noexcept { return socket_.get(); }

  /// Takes `socket`, makes a memory pair, attaches our end, hands the other
  /// to `on_attach`; completes (never inside this call) with the scripted
  /// handshake result. Signature `void(std::error_code)`.
  template <asio::completion_token_for<void(std::error_code)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_attach(unique_fd socket, Token&& token = asio::default_completion_token_t<executor_type>{}) {
    ++attaches_;
    std::error_code result;
    if (!handshakes_.empty()) result = handshakes_.front(), handshakes_.pop_front();
    if (!result) {
      socket_ = std::move(socket);
      auto [ours, theirs] = make_memory_transport_pair(this->get_executor(), ours_, this->get_executor(), peer_);
      this->attach(std::move(ours));
      if (on_attach_) on_attach_(std::move(theirs));
    }
    return asio::async_compose<Token, void(std::error_code)>(
        [result, posted = false, executor = this->get_executor()](auto& self) mutable {
          if (!posted) return posted = true, asio::post(executor, std::move(self));
          self.complete(result);
        },
        token, this->get_executor());
  }

  /// As `basic_persistent_transport::detach`, and closes the held socket.
  void detach(std::error_code reason = {}) {
    socket_.reset();
    base::detach(reason);
  }

private:
  memory_transport_options ours_, peer_;
  std::function<void(peer_type)> on_attach_;
  std::deque<std::error_code> handshakes_;
  std::size_t attaches_ = 0;
  unique_fd socket_;
};

/// A stream-mode memory session on `asio::any_io_executor`.
using memory_session = basic_memory_session<>;

} // namespace netpasst::testing
