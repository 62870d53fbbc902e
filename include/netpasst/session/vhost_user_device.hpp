#pragma once
/// @file session/vhost_user_device.hpp
/// `netpasst::basic_vhost_user_device_session` (alias
/// `vhost_user_device_session`): the BackendSession for a VMM that owns its
/// virtio-net device, so that a lifecycle supervises passt `--vhost-user`
/// behind the VMM's own guest memory and rings. Each new passt gets a
/// `vhost_user_frontend` on its socket: open, then the device as the VMM's
/// `describe` function gives it at that moment, then start. Frames never
/// pass through the session; there is nothing to send or receive here.
///
/// A restart brings a new passt, which knows nothing of the rings: the
/// backend's own position died with the old one. `describe` is called again
/// and should resume each queue where its used ring stands (the used index
/// as `next_available`), as QEMU does when its backend reconnects;
/// descriptors the dead passt had taken but not returned are then taken
/// again.
///
/// While attached, `frontend()` is the connection, for the requests a device
/// reset or pause needs (`async_stop_queue`, then `async_start`).

#include <netpasst/concepts.hpp>
#include <netpasst/transport/vhost_user_frontend.hpp>
#include <netpasst/unique_fd.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/compose.hpp>
#include <asio/error.hpp>
#include <asio/execution_context.hpp>
#include <asio/post.hpp>

#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

namespace netpasst {

/// The session of the file comment.
template <class Executor = asio::any_io_executor>
class basic_vhost_user_device_session {
public:
  using executor_type = Executor;
  /// What passt speaks: vhost-user.
  static constexpr passt_mode mode = passt_mode::vhost_user;
  /// Gives the device to hand the backend that offered what `negotiation`
  /// says (features a subset of `offered_features`). Called on the executor
  /// at each attach. An exception (`std::system_error` carries its code,
  /// anything else reads as `errc::invalid_device_setup`) fails the attach.
  using describe_function = std::function<vhost_user_device_setup(const vhost_user_negotiation& negotiation)>;

  /// A session that describes the device with `describe` and makes each
  /// frontend with `config`.
  basic_vhost_user_device_session(const executor_type& executor, describe_function describe,
                                  const vhost_user_frontend_config& config = {})
      : executor_(executor), describe_(std::move(describe)), config_(config) {}
  /// As above, with the execution context's executor.
  template <class ExecutionContext>
    requires std::is_convertible_v<ExecutionContext&, asio::execution_context&>
  basic_vhost_user_device_session(ExecutionContext& context, describe_function describe,
                                  const vhost_user_frontend_config& config = {})
      : basic_vhost_user_device_session(executor_type(context.get_executor()), std::move(describe), config) {}

  basic_vhost_user_device_session(const basic_vhost_user_device_session&) = delete;
  basic_vhost_user_device_session& operator=(const basic_vhost_user_device_session&) = delete;
  /// Closes the connection and abandons an attach in progress: it then
  /// completes with `errc::transport_closed`, a pending `async_wait_lost`
  /// with `asio::error::operation_aborted`, neither using the session.
  ~basic_vhost_user_device_session() { detach(); }

  executor_type get_executor() const noexcept { return executor_; }

  /// Opens the backend on `socket`, describes the device and starts it.
  /// Completion signature `void(std::error_code)`, never inside this call;
  /// errors are the frontend's (its `failure_message()` is
  /// `failure_message()` here), `describe`'s, or
  /// `errc::operation_in_progress` while another attach is pending.
  template <asio::completion_token_for<void(std::error_code)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_attach(unique_fd socket, Token&& token = asio::default_completion_token_t<executor_type>{}) {
    return asio::async_compose<Token, void(std::error_code)>(attach_op{this, alive_, std::move(socket)}, token,
                                                             executor_);
  }

  /// Completes when the attached backend closes the connection or breaks
  /// the protocol, with the reason; with `asio::error::operation_aborted`
  /// when the session is detached first or nothing is attached. At most
  /// one pending. Signature `void(std::error_code)`.
  template <asio::completion_token_for<void(std::error_code)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_wait_lost(Token&& token = asio::default_completion_token_t<executor_type>{}) {
    return asio::async_compose<Token, void(std::error_code)>(lost_op{this, alive_}, token, executor_);
  }

  /// passt is gone or being replaced: closes the connection (and an attach
  /// in progress). The next attach describes the device again.
  void detach(std::error_code = {}) {
    if (attaching_) attaching_->close();
    if (attached_) attached_->close();
    attached_.reset();
  }

  /// True while a backend is attached.
  bool attached() const noexcept { return attached_ && attached_->is_open(); }
  /// The attached backend's frontend, or nullptr.
  basic_vhost_user_frontend<Executor>* frontend() noexcept { return attached_ ? &*attached_ : nullptr; }
  /// Why the last attach failed, in words (empty if it did not).
  std::string_view failure_message() const noexcept { return failure_; }

private:
  struct attach_op {
    basic_vhost_user_device_session* session;
    std::weak_ptr<void> alive;
    unique_fd socket;
    enum { begin, opened, started, posted } stage = begin;
    std::error_code result = {};

    template <class Self> void operator()(Self& self, std::error_code ec = {}) {
      if ((stage == opened || stage == started) && alive.expired())
        return self.complete(make_error_code(errc::transport_closed));
      auto& s = *session;
      switch (stage) {
      case begin:
        if (s.attaching_) {
          result = errc::operation_in_progress;
        } else {
          try {
            s.failure_.clear();
            s.attaching_.emplace(s.executor_, std::move(socket), s.config_);
            stage = opened;
            return s.attaching_->async_open(std::move(self));
          } catch (const std::system_error& e) {
            result = e.code();
          }
        }
        stage = posted;
        return asio::post(s.executor_, std::move(self));
      case opened:
        if (!ec) {
          try {
            const vhost_user_device_setup setup = s.describe_(s.attaching_->negotiation());
            stage = started;
            return s.attaching_->async_start(setup, std::move(self));
          } catch (const std::system_error& e) {
            ec = e.code();
            s.failure_ = std::string("describing the device: ") + e.what();
          } catch (const std::exception& e) {
            ec = errc::invalid_device_setup;
            s.failure_ = std::string("describing the device: ") + e.what();
          }
        }
        return finish(self, ec);
      case started: return finish(self, ec);
      case posted: return self.complete(result);
      }
    }

    template <class Self> void finish(Self& self, std::error_code ec) {
      auto& s = *session;
      if (s.failure_.empty()) s.failure_ = s.attaching_->failure_message();
      if (!ec) s.attached_ = std::move(s.attaching_);
      else s.attaching_->close();
      s.attaching_.reset();
      self.complete(ec);
    }
  };

  struct lost_op {
    basic_vhost_user_device_session* session;
    std::weak_ptr<void> alive;
    enum { begin, waiting, posted } stage = begin;

    template <class Self> void operator()(Self& self, std::error_code ec = {}) {
      switch (stage) {
      case begin:
        if (!session->attached_) {
          stage = posted;
          return asio::post(session->executor_, std::move(self));
        }
        stage = waiting;
        return session->attached_->async_wait_closed(std::move(self));
      case waiting:
        // Closed by detach (which drops the frontend) or the session's end: not a loss.
        if (ec == errc::transport_closed && (alive.expired() || !session->attached_))
          ec = asio::error::operation_aborted;
        return self.complete(ec);
      case posted: return self.complete(make_error_code(asio::error::operation_aborted));
      }
    }
  };

  executor_type executor_;
  describe_function describe_;
  vhost_user_frontend_config config_;
  std::optional<basic_vhost_user_frontend<Executor>> attaching_, attached_;
  std::string failure_;
  std::shared_ptr<void> alive_ = std::make_shared<char>(); // expires with the session, for pending operations
};

/// The device session on `asio::any_io_executor`.
using vhost_user_device_session = basic_vhost_user_device_session<>;

} // namespace netpasst
