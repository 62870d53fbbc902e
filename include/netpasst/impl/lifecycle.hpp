#pragma once
// Implementation of lifecycle.hpp.

#include <netpasst/detail/erased_handler.hpp>

#include <asio/associated_executor.hpp>
#include <asio/dispatch.hpp>
#include <asio/error.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>

#include <algorithm>
#include <optional>
#include <utility>

namespace netpasst {

inline std::string_view to_string(lifecycle_event_kind kind) noexcept {
  switch (kind) {
    case lifecycle_event_kind::starting: return "starting";
    case lifecycle_event_kind::link_up: return "link_up";
    case lifecycle_event_kind::link_down: return "link_down";
    case lifecycle_event_kind::restarting: return "restarting";
    case lifecycle_event_kind::failed: return "failed";
    case lifecycle_event_kind::stopped: return "stopped";
  }
  return "unknown";
}

inline std::string_view to_string(lifecycle_state state) noexcept {
  switch (state) {
    case lifecycle_state::idle: return "idle";
    case lifecycle_state::starting: return "starting";
    case lifecycle_state::running: return "running";
    case lifecycle_state::restarting: return "restarting";
    case lifecycle_state::stopping: return "stopping";
    case lifecycle_state::stopped: return "stopped";
    case lifecycle_state::failed: return "failed";
  }
  return "unknown";
}

namespace detail {

// Completes `handler` on its associated executor (inline when already there).
template <class Handler, class Executor, class... Args>
void complete_now(Handler&& handler, const Executor& fallback, Args... args) {
  auto executor = asio::get_associated_executor(handler, fallback);
  asio::dispatch(executor, [h = std::forward<Handler>(handler), ... a = std::move(args)]() mutable {
    std::move(h)(std::move(a)...);
  });
}

// Completes `handler` later, never inside the calling function.
template <class Handler, class Executor, class... Args>
void complete_later(Handler&& handler, const Executor& fallback, Args... args) {
  auto executor = asio::get_associated_executor(handler, fallback);
  asio::post(executor, [h = std::forward<Handler>(handler), ... a = std::move(args)]() mutable {
    std::move(h)(std::move(a)...);
  });
}

inline bool is_connection_error(const std::error_code& ec) noexcept {
  return ec && ec != make_error_code(errc::would_block) && ec != make_error_code(errc::frame_too_short) &&
         ec != make_error_code(errc::frame_too_long);
}

template <class Builder, class Launcher, class Transport>
class lifecycle_state_impl : public std::enable_shared_from_this<lifecycle_state_impl<Builder, Launcher, Transport>> {
public:
  using executor_type = typename Launcher::executor_type;
  using clock = std::chrono::steady_clock;
  using completion = erased_handler<void(std::error_code)>;
  using receive_completion = erased_handler<void(std::error_code, frame_batch)>;

  lifecycle_state_impl(Launcher launcher, options opts, const lifecycle_config& config, Builder builder,
                       const typename Transport::config_type& transport_config)
      : launcher_(std::move(launcher)), options_(std::move(opts)), config_(config), builder_(std::move(builder)),
        transport_config_(transport_config), executor_(launcher_.get_executor()), timer_(executor_) {}

  // Forwards one user receive to a transport of generation `generation`.
  template <class Handler> struct forwarded_receive {
    std::weak_ptr<lifecycle_state_impl> owner;
    std::uint64_t generation;
    Handler handler;
    void operator()(std::error_code ec, frame_batch batch) {
      if (auto self = owner.lock()) self->on_receive_done(generation, ec, batch, std::move(handler));
      else std::move(handler)(make_error_code(errc::stopped), frame_batch{});
    }
  };

  template <class Handler> struct forwarded_writable {
    std::weak_ptr<lifecycle_state_impl> owner;
    std::uint64_t generation;
    Handler handler;
    void operator()(std::error_code ec) {
      if (auto self = owner.lock()) self->on_writable_done(generation, ec, std::move(handler));
      else std::move(handler)(make_error_code(errc::stopped));
    }
  };

  // ---- start and stop --------------------------------------------------

  void start(completion handler) {
    switch (state_) {
      case lifecycle_state::running: handler.post({}); return;
      case lifecycle_state::starting:
      case lifecycle_state::restarting: start_waiters_.push_back(std::move(handler)); return;
      case lifecycle_state::stopping: handler.post(make_error_code(errc::stopped)); return;
      default: break;
    }
    start_waiters_.push_back(std::move(handler));
    consecutive_failures_ = 0;
    last_error_ = {};
    last_message_.clear();
    std::vector<diagnostic> problems;
    argv_ = builder_.build(options_, problems);
    if (argv_.empty()) {
      std::string message = "invalid options:";
      for (const auto& p : problems) message += " " + (p.pointer.empty() ? "/" : p.pointer) + ": " + p.message + ";";
      if (problems.empty()) message += " the builder made no argv";
      fail(make_error_code(errc::invalid_options), message);
      return;
    }
    state_ = lifecycle_state::starting;
    emit(event(lifecycle_event_kind::starting));
    if (state_ == lifecycle_state::starting) launch();
  }

  void stop(completion handler) {
    switch (state_) {
      case lifecycle_state::stopped: handler.post({}); return;
      case lifecycle_state::idle:
        state_ = lifecycle_state::stopped;
        fail_parked(make_error_code(errc::stopped));
        handler.post({});
        return;
      case lifecycle_state::failed:
        state_ = lifecycle_state::stopped;
        handler.post({});
        emit(event(lifecycle_event_kind::stopped));
        return;
      case lifecycle_state::stopping: stop_waiters_.push_back(std::move(handler)); return;
      default: break;
    }
    stop_waiters_.push_back(std::move(handler));
    const bool was_up = visible_link_up();
    const pid_t old_pid = pid();
    state_ = lifecycle_state::stopping;
    timer_.cancel();
    retire_transport();
    if (process_) terminate_async(take_process());
    if (was_up)
      emit(event(lifecycle_event_kind::link_down, old_pid, make_error_code(errc::stopped), "stopped"));
    finish_stop_if_done();
  }

  // Blocking stop for stop() and the destructor.
  void stop_now(bool with_events) noexcept {
    if (state_ == lifecycle_state::idle || state_ == lifecycle_state::stopped) {
      state_ = lifecycle_state::stopped;
      fail_parked(make_error_code(errc::stopped));
      return;
    }
    const bool was_up = visible_link_up();
    const pid_t old_pid = pid();
    state_ = lifecycle_state::stopped;
    timer_.cancel();
    retire_transport();
    retired_.clear();
    if (process_) {
      std::error_code ignored;
      process_->terminate(config_.stop_grace, ignored);
      process_.reset();
    }
    fail_parked(make_error_code(errc::stopped));
    for (auto& w : std::exchange(stop_waiters_, {})) w.post({});
    if (!with_events) return;
    if (was_up)
      emit(event(lifecycle_event_kind::link_down, old_pid, make_error_code(errc::stopped), "stopped"));
    emit(event(lifecycle_event_kind::stopped));
  }

  void set_link(bool up) {
    if (up == admin_up_) return;
    const bool connected = state_ == lifecycle_state::running;
    admin_up_ = up;
    if (!connected) return;
    if (up) emit(event(lifecycle_event_kind::link_up, pid()));
    else emit(event(lifecycle_event_kind::link_down, pid(), {}, "link set down"));
  }

  // ---- frames ------------------------------------------------------------

  template <class Send>
  auto send(std::error_code& ec, std::size_t count, Send&& send_through) -> decltype(send_through(ec)) {
    using result = decltype(send_through(ec));
    ec = {};
    if (state_ == lifecycle_state::running && transport_) {
      if (!admin_up_) {
        counters_.frames_dropped += count;
        return result(count);
      }
      auto taken = send_through(ec);
      if (is_connection_error(ec)) {
        report_loss_later(generation_, ec, "sending to passt: " + ec.message());
        ec = make_error_code(errc::would_block);
      }
      return taken;
    }
    ec = unavailable_error();
    return result{};
  }

  bool try_send(frame f, std::error_code& ec) {
    return send(ec, 1, [&](std::error_code& e) { return transport_->try_send(f, e); });
  }

  std::size_t try_send(std::span<const frame> frames, std::error_code& ec) {
    return send(ec, frames.size(), [&](std::error_code& e) { return transport_->try_send(frames, e); });
  }

  template <class Handler> void receive(Handler&& handler) {
    if (receive_busy_) {
      complete_later(std::forward<Handler>(handler), executor_, make_error_code(errc::operation_in_progress),
                     frame_batch{});
      return;
    }
    retired_.clear();
    receive_cancelled_ = false;
    switch (state_) {
      case lifecycle_state::running:
        receive_busy_ = true;
        transport_->async_receive(forwarded_receive<std::decay_t<Handler>>{this->weak_from_this(), generation_,
                                                                           std::forward<Handler>(handler)});
        return;
      case lifecycle_state::idle:
      case lifecycle_state::starting:
      case lifecycle_state::restarting:
        receive_busy_ = true;
        parked_receive_ = receive_completion(std::forward<Handler>(handler), executor_);
        return;
      default: complete_later(std::forward<Handler>(handler), executor_, terminal_error(), frame_batch{});
    }
  }

  template <class Handler> void wait_writable(Handler&& handler) {
    if (writable_busy_) {
      complete_later(std::forward<Handler>(handler), executor_, make_error_code(errc::operation_in_progress));
      return;
    }
    writable_cancelled_ = false;
    switch (state_) {
      case lifecycle_state::running:
        writable_busy_ = true;
        transport_->async_wait_writable(forwarded_writable<std::decay_t<Handler>>{
            this->weak_from_this(), generation_, std::forward<Handler>(handler)});
        return;
      case lifecycle_state::idle:
      case lifecycle_state::starting:
      case lifecycle_state::restarting:
        writable_busy_ = true;
        parked_writable_ = completion(std::forward<Handler>(handler), executor_);
        return;
      default: complete_later(std::forward<Handler>(handler), executor_, terminal_error());
    }
  }

  void cancel() {
    if (parked_receive_) {
      receive_busy_ = false;
      parked_receive_.post(make_error_code(asio::error::operation_aborted), frame_batch{});
    } else if (receive_busy_) {
      receive_cancelled_ = true;
    }
    if (parked_writable_) {
      writable_busy_ = false;
      parked_writable_.post(make_error_code(asio::error::operation_aborted));
    } else if (writable_busy_) {
      writable_cancelled_ = true;
    }
    if (transport_) transport_->cancel();
  }

  template <class Handler>
  void on_receive_done(std::uint64_t generation, std::error_code ec, frame_batch batch, Handler&& handler) {
    const bool current = generation == generation_ && state_ == lifecycle_state::running;
    if (!ec && current && !admin_up_) {  // link down: discard and keep reading
      counters_.frames_dropped += batch.size();
      transport_->async_receive(
          forwarded_receive<std::decay_t<Handler>>{this->weak_from_this(), generation, std::forward<Handler>(handler)});
      return;
    }
    if (!ec || (ec == asio::error::operation_aborted && receive_cancelled_ && current)) {
      receive_busy_ = false;
      complete_now(std::forward<Handler>(handler), executor_, ec, ec ? frame_batch{} : batch);
      return;
    }
    if (current) report_loss(generation, ec, "receiving from passt: " + ec.message());
    park_or_end_receive(std::forward<Handler>(handler));
  }

  template <class Handler> void on_writable_done(std::uint64_t generation, std::error_code ec, Handler&& handler) {
    const bool current = generation == generation_ && state_ == lifecycle_state::running;
    if (!ec || (ec == asio::error::operation_aborted && writable_cancelled_ && current)) {
      writable_busy_ = false;
      complete_now(std::forward<Handler>(handler), executor_, ec);
      return;
    }
    if (current) report_loss(generation, ec, "sending to passt: " + ec.message());
    if (awaiting_link()) {
      parked_writable_ = completion(std::forward<Handler>(handler), executor_);
    } else {
      writable_busy_ = false;
      complete_now(std::forward<Handler>(handler), executor_,
                   state_ == lifecycle_state::running ? std::error_code{} : terminal_error());
    }
  }

  // ---- observers -----------------------------------------------------------

  pid_t pid() const noexcept { return process_ ? process_->pid() : 0; }

  bool visible_link_up() const noexcept { return state_ == lifecycle_state::running && admin_up_; }

  std::string status() const {
    std::string s(transport_kind<Transport>());
    s += ',';
    switch (state_) {
      case lifecycle_state::idle: return s + "not started";
      case lifecycle_state::starting: return s + "starting";
      case lifecycle_state::running:
        return s + (admin_up_ ? "connected to pid " : "link down, pid ") + std::to_string(pid());
      case lifecycle_state::restarting: return s + "restarting (attempt " + std::to_string(consecutive_failures_) + ")";
      case lifecycle_state::stopping: return s + "stopping";
      case lifecycle_state::stopped: return s + "stopped";
      case lifecycle_state::failed: return s + "failed: " + last_message_;
    }
    return s;
  }

  lifecycle_counters counters() const noexcept {
    lifecycle_counters c = counters_;
    if (transport_) add(c, transport_->counters());
    return c;
  }

  std::uint64_t subscribe(std::function<void(const lifecycle_event&)> handler) {
    subscribers_.emplace_back(++last_subscription_, std::move(handler));
    return last_subscription_;
  }

  void unsubscribe(std::uint64_t id) noexcept {
    std::erase_if(subscribers_, [id](const auto& s) { return s.first == id; });
  }

  Launcher launcher_;
  options options_;
  lifecycle_config config_;
  Builder builder_;
  typename Transport::config_type transport_config_;
  executor_type executor_;
  asio::basic_waitable_timer<clock, asio::wait_traits<clock>, executor_type> timer_;

  lifecycle_state state_ = lifecycle_state::idle;
  bool admin_up_ = true;
  std::vector<std::string> argv_;
  std::optional<passt_process> process_;
  std::unique_ptr<Transport> transport_;
  std::vector<std::unique_ptr<Transport>> retired_;
  std::uint64_t generation_ = 0;
  clock::time_point started_at_{};
  unsigned consecutive_failures_ = 0;
  bool launch_pending_ = false;
  unsigned terminations_pending_ = 0;
  std::error_code last_error_;
  std::string last_message_;
  lifecycle_counters counters_;

  std::vector<completion> start_waiters_;
  std::vector<completion> stop_waiters_;
  receive_completion parked_receive_;
  completion parked_writable_;
  bool receive_busy_ = false, receive_cancelled_ = false;
  bool writable_busy_ = false, writable_cancelled_ = false;

  std::vector<std::pair<std::uint64_t, std::function<void(const lifecycle_event&)>>> subscribers_;
  std::uint64_t last_subscription_ = 0;

private:
  static void add(transport_counters& sum, const transport_counters& c) noexcept {
    sum.frames_sent += c.frames_sent;
    sum.bytes_sent += c.bytes_sent;
    sum.frames_received += c.frames_received;
    sum.bytes_received += c.bytes_received;
    sum.frames_refused += c.frames_refused;
  }

  bool awaiting_link() const noexcept {
    return state_ == lifecycle_state::idle || state_ == lifecycle_state::starting ||
           state_ == lifecycle_state::restarting;
  }

  std::error_code terminal_error() const noexcept {
    return state_ == lifecycle_state::failed ? last_error_ : make_error_code(errc::stopped);
  }

  std::error_code unavailable_error() const noexcept {
    if (awaiting_link()) return state_ == lifecycle_state::idle ? make_error_code(errc::not_running)
                                                                 : make_error_code(errc::would_block);
    return terminal_error();
  }

  template <class Handler> void park_or_end_receive(Handler&& handler) {
    if (awaiting_link()) {
      parked_receive_ = receive_completion(std::forward<Handler>(handler), executor_);
    } else if (state_ == lifecycle_state::running) {  // a newer passt is already up
      transport_->async_receive(forwarded_receive<std::decay_t<Handler>>{this->weak_from_this(), generation_,
                                                                         std::forward<Handler>(handler)});
    } else {
      receive_busy_ = false;
      complete_now(std::forward<Handler>(handler), executor_, terminal_error(), frame_batch{});
    }
  }

  static lifecycle_event event(lifecycle_event_kind kind, pid_t pid = 0, std::error_code error = {},
                               std::string reason = {}) {
    lifecycle_event e;
    e.kind = kind;
    e.pid = pid;
    e.error = error;
    e.reason = std::move(reason);
    return e;
  }

  static lifecycle_event restarting_event(unsigned attempt, std::chrono::milliseconds delay) {
    lifecycle_event e = event(lifecycle_event_kind::restarting);
    e.attempt = attempt;
    e.delay = delay;
    return e;
  }

  void emit(const lifecycle_event& e) noexcept {
    auto subscribers = subscribers_;  // a callback may subscribe or unsubscribe
    for (auto& [id, callback] : subscribers) callback(e);
  }

  passt_process take_process() {
    passt_process p = std::move(*process_);
    process_.reset();
    return p;
  }

  void retire_transport() {
    if (!transport_) return;
    add(counters_, transport_->counters());
    transport_->close();
    retired_.push_back(std::move(transport_));
  }

  void launch() {
    launch_pending_ = true;
    launcher_.async_launch(argv_, [self = this->shared_from_this()](std::error_code ec, passt_process p) {
      self->on_launched(ec, std::move(p));
    });
  }

  void on_launched(std::error_code ec, passt_process p) {
    launch_pending_ = false;
    if (state_ != lifecycle_state::starting && state_ != lifecycle_state::restarting) {
      if (!ec) terminate_async(std::move(p));
      finish_stop_if_done();
      return;
    }
    if (!ec) {
      try {
        process_.emplace(std::move(p));
        transport_ = std::make_unique<Transport>(executor_, process_->take_socket(), transport_config_);
      } catch (const std::system_error& e) {
        ec = e.code();
        last_message_ = std::string("connecting to passt: ") + e.what();
        if (process_) terminate_async(take_process());
      }
    } else {
      last_message_ = p.failure_message();
      if (last_message_.empty()) last_message_ = ec.message();
    }
    if (ec) {
      ++counters_.failed_launches;
      last_error_ = ec;
      if (state_ == lifecycle_state::starting && !config_.restart.retry_first_start) fail(ec, last_message_);
      else if (terminations_pending_ == 0) schedule_attempt();
      return;
    }
    const bool first = state_ == lifecycle_state::starting;
    ++generation_;
    started_at_ = clock::now();
    state_ = lifecycle_state::running;
    if (first) consecutive_failures_ = 0;
    if (retired_.size() > 1) retired_.erase(retired_.begin(), retired_.end() - 1);
    watch_exit();
    const auto generation = generation_;
    for (auto& w : std::exchange(start_waiters_, {})) w.post({});
    if (admin_up_) emit(event(lifecycle_event_kind::link_up, pid()));
    if (state_ != lifecycle_state::running || generation != generation_) return;
    if (parked_receive_)
      transport_->async_receive(
          forwarded_receive<receive_completion>{this->weak_from_this(), generation_, std::move(parked_receive_)});
    if (parked_writable_) {
      writable_busy_ = false;
      parked_writable_({});
    }
  }

  void watch_exit() {
    process_->async_wait_exit(executor_, [owner = this->weak_from_this(), generation = generation_](
                                             std::error_code ec, int status) {
      auto self = owner.lock();
      if (!self || ec == asio::error::operation_aborted) return;
      std::string reason = "passt (pid " + std::to_string(self->pid()) + ") exited";
      if (status >= 0) reason += " with status " + std::to_string(status);
      self->report_loss(generation, make_error_code(errc::process_gone), reason);
    });
  }

  void report_loss_later(std::uint64_t generation, std::error_code ec, std::string reason) {
    asio::post(executor_, [owner = this->weak_from_this(), generation, ec, reason = std::move(reason)]() mutable {
      if (auto self = owner.lock()) self->report_loss(generation, ec, std::move(reason));
    });
  }

  // passt of `generation` is lost: link down, terminate it, then restart.
  void report_loss(std::uint64_t generation, std::error_code ec, std::string reason) {
    if (generation != generation_ || state_ != lifecycle_state::running) return;
    last_error_ = ec;
    last_message_ = reason;
    if (clock::now() - started_at_ >= config_.restart.min_uptime) consecutive_failures_ = 0;
    const bool was_up = admin_up_;
    const pid_t old_pid = pid();
    state_ = lifecycle_state::restarting;
    retire_transport();
    terminate_async(take_process());
    if (was_up)
      emit(event(lifecycle_event_kind::link_down, old_pid, ec, std::move(reason)));
  }

  // Ends `p` without blocking; restarts or finishes a stop once it is gone.
  void terminate_async(passt_process p) {
    ++terminations_pending_;
    auto held = std::make_shared<passt_process>(std::move(p));
    held->async_terminate(executor_, config_.stop_grace, [self = this->shared_from_this(), held](std::error_code ec) {
      --self->terminations_pending_;
      if (ec && !self->cleanup_error_) self->cleanup_error_ = ec;
      if (self->terminations_pending_ != 0) return;
      if (self->state_ == lifecycle_state::stopping) self->finish_stop_if_done();
      else if (self->state_ == lifecycle_state::restarting && !self->launch_pending_ && !self->timer_armed_)
        self->schedule_attempt();
    });
  }

  void schedule_attempt() {
    if (!config_.restart.enabled) return fail(last_error_, last_message_);
    const unsigned attempt = ++consecutive_failures_;
    if (attempt > config_.restart.max_attempts)
      return fail(make_error_code(errc::restart_limit_reached),
                  "gave up after " + std::to_string(config_.restart.max_attempts) + " attempts; last error: " +
                      last_message_);
    std::chrono::milliseconds delay{0};
    if (attempt > 1) {
      delay = config_.restart.initial_backoff;
      for (unsigned i = 2; i < attempt && delay < config_.restart.max_backoff; ++i) delay *= 2;
      delay = std::min(delay, config_.restart.max_backoff);
    }
    state_ = lifecycle_state::restarting;
    timer_armed_ = true;
    timer_.expires_after(delay);
    timer_.async_wait([owner = this->weak_from_this()](std::error_code ec) {
      auto self = owner.lock();
      if (!self) return;
      self->timer_armed_ = false;
      if (ec || self->state_ != lifecycle_state::restarting) return;
      ++self->counters_.restarts;
      self->launch();
    });
    emit(restarting_event(attempt, delay));
  }

  void fail(std::error_code ec, std::string reason) {
    state_ = lifecycle_state::failed;
    last_error_ = ec;
    last_message_ = reason;
    timer_.cancel();
    retire_transport();
    if (process_) terminate_async(take_process());
    for (auto& w : std::exchange(start_waiters_, {})) w.post(ec);
    fail_parked(ec);
    emit(event(lifecycle_event_kind::failed, 0, ec, std::move(reason)));
  }

  void fail_parked(std::error_code ec) {
    if (parked_receive_) {
      receive_busy_ = false;
      parked_receive_.post(ec, frame_batch{});
    }
    if (parked_writable_) {
      writable_busy_ = false;
      parked_writable_.post(ec);
    }
  }

  void finish_stop_if_done() {
    if (state_ != lifecycle_state::stopping || launch_pending_ || terminations_pending_ != 0) return;
    state_ = lifecycle_state::stopped;
    retired_.clear();
    const auto stopped = make_error_code(errc::stopped);
    for (auto& w : std::exchange(start_waiters_, {})) w.post(stopped);
    fail_parked(stopped);
    const auto result = std::exchange(cleanup_error_, {});
    for (auto& w : std::exchange(stop_waiters_, {})) w.post(result);
    emit(event(lifecycle_event_kind::stopped));
  }

  bool timer_armed_ = false;
  std::error_code cleanup_error_;
};

} // namespace detail

template <OptionsToArgv B, DaemonLauncher L, FrameTransport T>
  requires std::constructible_from<T, typename L::executor_type, unique_fd, const typename T::config_type&>
basic_lifecycle<B, L, T>::basic_lifecycle(L launcher, options opts, const lifecycle_config& config, B builder,
                                          const typename T::config_type& transport_config)
    : impl_(std::make_shared<detail::lifecycle_state_impl<B, L, T>>(std::move(launcher), std::move(opts), config,
                                                                    std::move(builder), transport_config)) {}

template <OptionsToArgv B, DaemonLauncher L, FrameTransport T>
  requires std::constructible_from<T, typename L::executor_type, unique_fd, const typename T::config_type&>
basic_lifecycle<B, L, T>::~basic_lifecycle() {
  impl_->subscribers_.clear();
  impl_->stop_now(false);
}

#define NETPASST_LIFECYCLE_MEMBER(...)                                                                    \
  template <OptionsToArgv B, DaemonLauncher L, FrameTransport T>                                          \
    requires std::constructible_from<T, typename L::executor_type, unique_fd, const typename T::config_type&> \
  __VA_ARGS__ basic_lifecycle<B, L, T>::

NETPASST_LIFECYCLE_MEMBER(typename L::executor_type) get_executor() const { return impl_->executor_; }
NETPASST_LIFECYCLE_MEMBER(lifecycle_state) state() const noexcept { return impl_->state_; }
NETPASST_LIFECYCLE_MEMBER(pid_t) pid() const noexcept { return impl_->pid(); }
NETPASST_LIFECYCLE_MEMBER(std::string) status() const { return impl_->status(); }
NETPASST_LIFECYCLE_MEMBER(const std::vector<std::string>&) argv() const noexcept { return impl_->argv_; }
NETPASST_LIFECYCLE_MEMBER(const options&) passt_options() const noexcept { return impl_->options_; }
NETPASST_LIFECYCLE_MEMBER(std::error_code) last_error() const noexcept { return impl_->last_error_; }
NETPASST_LIFECYCLE_MEMBER(const std::string&) last_error_message() const noexcept { return impl_->last_message_; }
NETPASST_LIFECYCLE_MEMBER(lifecycle_counters) counters() const noexcept { return impl_->counters(); }
NETPASST_LIFECYCLE_MEMBER(T*) next_layer() noexcept { return impl_->transport_.get(); }
NETPASST_LIFECYCLE_MEMBER(std::uint64_t) subscribe(event_handler handler) { return impl_->subscribe(std::move(handler)); }
NETPASST_LIFECYCLE_MEMBER(void) unsubscribe(subscription id) noexcept { impl_->unsubscribe(id); }
NETPASST_LIFECYCLE_MEMBER(void) stop() noexcept { impl_->stop_now(true); }
NETPASST_LIFECYCLE_MEMBER(void) close() noexcept { impl_->stop_now(true); }
NETPASST_LIFECYCLE_MEMBER(void) set_link(bool up) { impl_->set_link(up); }
NETPASST_LIFECYCLE_MEMBER(bool) link_up() const noexcept { return impl_->visible_link_up(); }
NETPASST_LIFECYCLE_MEMBER(bool) try_send(frame f, std::error_code& ec) { return impl_->try_send(f, ec); }
NETPASST_LIFECYCLE_MEMBER(std::size_t) try_send(std::span<const frame> frames, std::error_code& ec) {
  return impl_->try_send(frames, ec);
}
NETPASST_LIFECYCLE_MEMBER(void) cancel() { impl_->cancel(); }
NETPASST_LIFECYCLE_MEMBER(bool) is_open() const noexcept {
  return impl_->state_ != lifecycle_state::stopped && impl_->state_ != lifecycle_state::failed &&
         impl_->state_ != lifecycle_state::stopping;
}

template <OptionsToArgv B, DaemonLauncher L, FrameTransport T>
  requires std::constructible_from<T, typename L::executor_type, unique_fd, const typename T::config_type&>
template <asio::completion_token_for<void(std::error_code)> Token>
auto basic_lifecycle<B, L, T>::async_start(Token&& token) {
  return asio::async_initiate<Token, void(std::error_code)>(
      [impl = impl_](auto handler) {
        impl->start(detail::erased_handler<void(std::error_code)>(std::move(handler), impl->executor_));
      },
      token);
}

template <OptionsToArgv B, DaemonLauncher L, FrameTransport T>
  requires std::constructible_from<T, typename L::executor_type, unique_fd, const typename T::config_type&>
template <asio::completion_token_for<void(std::error_code)> Token>
auto basic_lifecycle<B, L, T>::async_stop(Token&& token) {
  return asio::async_initiate<Token, void(std::error_code)>(
      [impl = impl_](auto handler) {
        impl->stop(detail::erased_handler<void(std::error_code)>(std::move(handler), impl->executor_));
      },
      token);
}

template <OptionsToArgv B, DaemonLauncher L, FrameTransport T>
  requires std::constructible_from<T, typename L::executor_type, unique_fd, const typename T::config_type&>
template <asio::completion_token_for<void(std::error_code)> Token>
auto basic_lifecycle<B, L, T>::async_wait_writable(Token&& token) {
  return asio::async_initiate<Token, void(std::error_code)>(
      [impl = impl_](auto handler) { impl->wait_writable(std::move(handler)); }, token);
}

template <OptionsToArgv B, DaemonLauncher L, FrameTransport T>
  requires std::constructible_from<T, typename L::executor_type, unique_fd, const typename T::config_type&>
template <asio::completion_token_for<void(std::error_code, frame_batch)> Token>
auto basic_lifecycle<B, L, T>::async_receive(Token&& token) {
  return asio::async_initiate<Token, void(std::error_code, frame_batch)>(
      [impl = impl_](auto handler) { impl->receive(std::move(handler)); }, token);
}

#undef NETPASST_LIFECYCLE_MEMBER

} // namespace netpasst
