#pragma once
// Implementation of netpasst/transport/persistent.hpp.

#include <netpasst/transport/persistent.hpp>

#include <asio/basic_waitable_timer.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/compose.hpp>
#include <asio/error.hpp>
#include <asio/post.hpp>

#include <chrono>
#include <optional>
#include <utility>

namespace netpasst::detail {

/// True for an error that means the connection under a transport is gone.
inline bool is_connection_error(const std::error_code& ec) noexcept {
  return ec && ec != errc::would_block && ec != errc::frame_too_short && ec != errc::frame_too_long &&
         ec != errc::operation_in_progress && ec != asio::error::operation_aborted;
}

inline void add_counters(transport_counters& sum, const transport_counters& c) noexcept {
  sum.frames_sent += c.frames_sent;
  sum.bytes_sent += c.bytes_sent;
  sum.frames_received += c.frames_received;
  sum.bytes_received += c.bytes_received;
  sum.frames_refused += c.frames_refused;
}

/// What a persistent transport and its pending operations share. Parked
/// operations wait on `wakeup`, a timer that never expires: every change of
/// connection cancels it, and each waiter looks again.
template <class Transport> class persistent_state {
public:
  using executor_type = typename Transport::executor_type;
  using clock = std::chrono::steady_clock;
  using timer_type = asio::basic_waitable_timer<clock, asio::wait_traits<clock>, executor_type>;

  explicit persistent_state(const executor_type& e) : executor(e), wakeup(e) {
    wakeup.expires_at(clock::time_point::max());
  }

  executor_type executor;
  timer_type wakeup;
  std::optional<Transport> current;
  std::optional<Transport> batch_holder;  // a replaced connection whose batch the user may still read
  std::uint64_t connection = 0;           // id of the latest attached connection
  std::uint64_t batch_connection = 0;     // id of the connection that delivered the last batch
  std::uint64_t lost_connection = 0;
  std::error_code lost_reason;
  std::error_code ended;
  std::uint64_t cancels = 0;
  bool link_up = true;
  bool receive_busy = false;
  persistent_transport_counters totals;

  void wake() { wakeup.cancel(); }

  void attach(Transport t) {
    retire();
    current.emplace(std::move(t));
    ++connection;
    ++totals.connections;
    ended.clear();
    wake();
  }

  void retire() {
    if (!current) return;
    add_counters(totals, current->counters());
    current->close();
    if (batch_connection == connection) batch_holder.emplace(std::move(*current));
    current.reset();
  }

  void detach(std::error_code reason) {
    retire();
    ended = reason;
    wake();
  }

  void lose(std::uint64_t id, std::error_code ec) {
    if (id != connection || !current) return;
    lost_connection = id;
    lost_reason = ec;
    ++totals.losses;
    retire();
    wake();
  }

  persistent_transport_counters counters() const noexcept {
    persistent_transport_counters c = totals;
    if (current) add_counters(c, current->counters());
    return c;
  }
};

/// Shared shape of the three operations: `next` decides; a result known
/// during the initiating call is posted, so nothing completes inside it.
template <class Transport, class Derived> struct persistent_op_base {
  explicit persistent_op_base(std::shared_ptr<persistent_state<Transport>> state) : s(std::move(state)) {}
  std::shared_ptr<persistent_state<Transport>> s;
  bool started = false, posted = false;
  std::error_code result;

  template <class Self> bool slot_cancelled(Self& self) const {
    return self.get_cancellation_state().cancelled() != asio::cancellation_type::none;
  }
  template <class Self> void finish(Self& self, std::error_code ec, bool initiating) {
    if (initiating) {
      result = ec;
      posted = true;
      return asio::post(s->executor, std::move(self));
    }
    static_cast<Derived*>(this)->complete(self, ec);
  }
};

template <class Transport>
struct persistent_receive_op : persistent_op_base<Transport, persistent_receive_op<Transport>> {
  using persistent_op_base<Transport, persistent_receive_op<Transport>>::persistent_op_base;
  std::uint64_t cancels = 0, conn = 0;
  bool owns_busy = false, forwarded = false;

  template <class Self> void operator()(Self& self, std::error_code ec = {}, frame_batch batch = {}) {
    auto& st = *this->s;
    if (this->posted) return complete(self, this->result);
    if (!this->started) {
      this->started = true;
      self.reset_cancellation_state(asio::enable_total_cancellation());
      if (st.receive_busy) return this->finish(self, errc::operation_in_progress, true);
      st.receive_busy = owns_busy = true;
      cancels = st.cancels;
      st.batch_holder.reset();
      return next(self, true);
    }
    if (forwarded) {
      forwarded = false;
      if (!ec) {
        if (!st.link_up) {
          st.totals.frames_dropped += batch.size();
          return next(self, false);
        }
        st.batch_connection = conn;
        return complete(self, {}, batch);
      }
      if (conn == st.connection && detail::is_connection_error(ec)) st.lose(conn, ec);
    }
    next(self, false);
  }

  template <class Self> void next(Self& self, bool initiating) {
    auto& st = *this->s;
    if (this->slot_cancelled(self) || st.cancels != cancels)
      return this->finish(self, asio::error::operation_aborted, initiating);
    if (st.current) {
      forwarded = true;
      conn = st.connection;
      return st.current->async_receive(std::move(self));
    }
    if (st.ended) return this->finish(self, st.ended, initiating);
    st.wakeup.async_wait(std::move(self));
  }

  template <class Self> void complete(Self& self, std::error_code ec, frame_batch batch = {}) {
    if (owns_busy) this->s->receive_busy = false;
    self.complete(ec, ec ? frame_batch{} : batch);
  }
};

template <class Transport>
struct persistent_writable_op : persistent_op_base<Transport, persistent_writable_op<Transport>> {
  using persistent_op_base<Transport, persistent_writable_op<Transport>>::persistent_op_base;
  std::uint64_t cancels = 0, conn = 0;
  bool forwarded = false;

  template <class Self> void operator()(Self& self, std::error_code ec = {}) {
    auto& st = *this->s;
    if (this->posted) return complete(self, this->result);
    if (!this->started) {
      this->started = true;
      self.reset_cancellation_state(asio::enable_total_cancellation());
      cancels = st.cancels;
      return next(self, true);
    }
    if (forwarded) {
      forwarded = false;
      if (!ec) return complete(self, {});
      if (conn == st.connection && detail::is_connection_error(ec)) st.lose(conn, ec);
    }
    next(self, false);
  }

  template <class Self> void next(Self& self, bool initiating) {
    auto& st = *this->s;
    if (this->slot_cancelled(self) || st.cancels != cancels)
      return this->finish(self, asio::error::operation_aborted, initiating);
    if (st.current && !st.link_up) return this->finish(self, std::error_code{}, initiating);
    if (st.current) {
      forwarded = true;
      conn = st.connection;
      return st.current->async_wait_writable(std::move(self));
    }
    if (st.ended) return this->finish(self, st.ended, initiating);
    st.wakeup.async_wait(std::move(self));
  }

  template <class Self> void complete(Self& self, std::error_code ec) { self.complete(ec); }
};

template <class Transport>
struct persistent_lost_op : persistent_op_base<Transport, persistent_lost_op<Transport>> {
  using persistent_op_base<Transport, persistent_lost_op<Transport>>::persistent_op_base;
  std::uint64_t conn = 0;

  template <class Self> void operator()(Self& self, std::error_code = {}) {
    auto& st = *this->s;
    if (this->posted) return complete(self, this->result);
    if (!this->started) {
      this->started = true;
      self.reset_cancellation_state(asio::enable_total_cancellation());
      conn = st.connection;
      if (conn != 0 && st.lost_connection == conn) return this->finish(self, st.lost_reason, true);
      if (!st.current) return this->finish(self, asio::error::operation_aborted, true);
      return st.wakeup.async_wait(std::move(self));
    }
    if (this->slot_cancelled(self)) return complete(self, asio::error::operation_aborted);
    if (st.lost_connection == conn) return complete(self, st.lost_reason);
    if (st.connection != conn || !st.current) return complete(self, asio::error::operation_aborted);
    st.wakeup.async_wait(std::move(self));
  }

  template <class Self> void complete(Self& self, std::error_code ec) { self.complete(ec); }
};

} // namespace netpasst::detail

namespace netpasst {

template <FrameTransport T>
basic_persistent_transport<T>::basic_persistent_transport(const executor_type& executor)
    : state_(std::make_shared<detail::persistent_state<T>>(executor)) {}

template <FrameTransport T> basic_persistent_transport<T>::~basic_persistent_transport() {
  state_->detach(errc::transport_closed);
  state_->batch_holder.reset();
}

template <FrameTransport T> auto basic_persistent_transport<T>::get_executor() const noexcept -> executor_type {
  return state_->executor;
}

template <FrameTransport T> void basic_persistent_transport<T>::attach(T connection) {
  state_->attach(std::move(connection));
}
template <FrameTransport T> void basic_persistent_transport<T>::detach(std::error_code reason) {
  state_->detach(reason);
}
template <FrameTransport T> bool basic_persistent_transport<T>::attached() const noexcept {
  return state_->current.has_value();
}
template <FrameTransport T> T* basic_persistent_transport<T>::connection() noexcept {
  return state_->current ? &*state_->current : nullptr;
}
template <FrameTransport T> void basic_persistent_transport<T>::set_link(bool up) noexcept {
  state_->link_up = up;
  state_->wake();
}
template <FrameTransport T> bool basic_persistent_transport<T>::link() const noexcept { return state_->link_up; }

template <FrameTransport T> bool basic_persistent_transport<T>::try_send(frame f, std::error_code& ec) {
  return try_send(std::span<const frame>(&f, 1), ec) == 1;
}

template <FrameTransport T>
std::size_t basic_persistent_transport<T>::try_send(std::span<const frame> frames, std::error_code& ec) {
  auto& st = *state_;
  ec.clear();
  if (frames.empty()) return 0;
  if (st.ended) return ec = st.ended, 0;
  if (!st.current) return ec = errc::would_block, 0;
  if (!st.link_up) {
    st.totals.frames_dropped += frames.size();
    return frames.size();
  }
  const std::size_t taken = st.current->try_send(frames, ec);
  if (taken < frames.size() && detail::is_connection_error(ec)) {
    st.lose(st.connection, ec);
    ec = errc::would_block;
  }
  return taken;
}

template <FrameTransport T>
template <asio::completion_token_for<void(std::error_code)> Token>
auto basic_persistent_transport<T>::async_wait_writable(Token&& token) {
  return asio::async_compose<Token, void(std::error_code)>(detail::persistent_writable_op<T>(state_), token,
                                                           state_->wakeup);
}

template <FrameTransport T>
template <asio::completion_token_for<void(std::error_code, frame_batch)> Token>
auto basic_persistent_transport<T>::async_receive(Token&& token) {
  return asio::async_compose<Token, void(std::error_code, frame_batch)>(detail::persistent_receive_op<T>(state_),
                                                                        token, state_->wakeup);
}

template <FrameTransport T>
template <asio::completion_token_for<void(std::error_code)> Token>
auto basic_persistent_transport<T>::async_wait_lost(Token&& token) {
  return asio::async_compose<Token, void(std::error_code)>(detail::persistent_lost_op<T>(state_), token,
                                                           state_->wakeup);
}

template <FrameTransport T> void basic_persistent_transport<T>::cancel() {
  auto& st = *state_;
  ++st.cancels;
  if (st.current) st.current->cancel();
  st.wake();
}

template <FrameTransport T> bool basic_persistent_transport<T>::is_open() const noexcept {
  return !state_->ended;
}

template <FrameTransport T> void basic_persistent_transport<T>::close() noexcept {
  state_->detach(errc::transport_closed);
}

template <FrameTransport T> persistent_transport_counters basic_persistent_transport<T>::counters() const noexcept {
  return state_->counters();
}

} // namespace netpasst
