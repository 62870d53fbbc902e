#pragma once
// A FrameTransport that passes everything to another one and knows when it
// has no operation of its own pending there. netpasst_tap lends the
// lifecycle to a mini_guest through it for a DHCP exchange, and starts the
// bridge (which needs the lifecycle's receive side to itself) only once the
// guest's last receive has completed.

#include <netpasst/concepts.hpp>

#include <asio/associated_cancellation_slot.hpp>
#include <asio/async_result.hpp>
#include <asio/bind_cancellation_slot.hpp>

#include <functional>
#include <span>
#include <system_error>
#include <utility>

namespace tap_example {

template <netpasst::FrameTransport Transport>
class guest_port {
public:
  using executor_type = typename Transport::executor_type;

  explicit guest_port(Transport& transport) : transport_(&transport) {}
  guest_port(const guest_port&) = delete;
  guest_port& operator=(const guest_port&) = delete;

  executor_type get_executor() const { return transport_->get_executor(); }
  bool try_send(netpasst::frame f, std::error_code& ec) { return transport_->try_send(f, ec); }
  std::size_t try_send(std::span<const netpasst::frame> frames, std::error_code& ec) {
    return transport_->try_send(frames, ec);
  }
  bool is_open() const { return transport_->is_open(); }
  /// Ends this port's pending operations; the transport itself stays up.
  void close() { cancel(); }
  void cancel() {
    if (pending_ != 0) transport_->cancel();
  }
  auto counters() const { return transport_->counters(); }

  template <asio::completion_token_for<void(std::error_code)> Token>
  auto async_wait_writable(Token&& token) {
    return asio::async_initiate<Token, void(std::error_code)>(
        [this](auto handler) {
          ++pending_;
          auto slot = asio::get_associated_cancellation_slot(handler);
          transport_->async_wait_writable(
              asio::bind_cancellation_slot(slot, [this, h = std::move(handler)](std::error_code ec) mutable {
                std::move(h)(ec);
                done();
              }));
        },
        token);
  }

  template <asio::completion_token_for<void(std::error_code, netpasst::frame_batch)> Token>
  auto async_receive(Token&& token) {
    return asio::async_initiate<Token, void(std::error_code, netpasst::frame_batch)>(
        [this](auto handler) {
          ++pending_;
          auto slot = asio::get_associated_cancellation_slot(handler);
          transport_->async_receive(asio::bind_cancellation_slot(
              slot, [this, h = std::move(handler)](std::error_code ec, netpasst::frame_batch batch) mutable {
                std::move(h)(ec, batch);
                done();
              }));
        },
        token);
  }

  /// True when no operation started through this port is pending.
  bool idle() const noexcept { return pending_ == 0; }

  /// Calls `f` once no operation of this port is pending (now, if none is).
  void when_idle(std::function<void()> f) {
    if (pending_ == 0) return f();
    on_idle_ = std::move(f);
  }

private:
  void done() {
    if (--pending_ == 0 && on_idle_) std::exchange(on_idle_, nullptr)();
  }

  Transport* transport_;
  std::size_t pending_ = 0;
  std::function<void()> on_idle_;
};

} // namespace tap_example
