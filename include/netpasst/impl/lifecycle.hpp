#pragma once
// Implementation of netpasst/lifecycle.hpp.

#include <netpasst/lifecycle.hpp>

#include <asio/basic_waitable_timer.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/compose.hpp>
#include <asio/error.hpp>
#include <asio/post.hpp>

#include <algorithm>
#include <deque>
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

/// Everything a lifecycle owns. Callbacks of the launcher, process and
/// session carry the attempt they belong to; `attempt_` moves on whenever an
/// attempt ends, so a late callback of an old passt changes nothing.
template <class Session, class Launcher, class Builder>
class lifecycle_impl : public std::enable_shared_from_this<lifecycle_impl<Session, Launcher, Builder>> {
public:
  using executor_type = typename Launcher::executor_type;
  using process_type = typename Launcher::process_type;
  using clock = std::chrono::steady_clock;
  using timer_type = asio::basic_waitable_timer<clock, asio::wait_traits<clock>, executor_type>;

  template <class... SessionArgs>
  lifecycle_impl(Launcher launcher, options opts, const lifecycle_config& config, Builder builder,
                 SessionArgs&&... session_args)
      : launcher_(std::move(launcher)), session_(std::forward<SessionArgs>(session_args)...),
        options_(std::move(opts)), config_(config), builder_(std::move(builder)),
        executor_(launcher_.get_executor()), backoff_(executor_), settle_(executor_), changed_(executor_) {
    changed_.expires_at(clock::time_point::max());
  }

  Launcher launcher_;
  Session session_;
  options options_;
  lifecycle_config config_;
  Builder builder_;
  executor_type executor_;
  timer_type backoff_, settle_;
  timer_type changed_;  ///< Never expires: cancelled on every state change to wake the start/stop waiters.

  lifecycle_state state_ = lifecycle_state::idle;
  std::optional<process_type> process_;
  std::vector<std::string> argv_;
  std::uint64_t generation_ = 0, start_generation_ = 0, attempt_ = 0;
  unsigned consecutive_failures_ = 0, ops_pending_ = 0;
  /// Old passts being terminated in the background, and when each gets SIGKILL.
  std::vector<std::pair<std::shared_ptr<process_type>, clock::time_point>> terminating_;
  clock::time_point started_at_{};
  bool admin_up_ = true, backoff_armed_ = false;
  bool attempt_active_ = false;  ///< A launch, handshake or running passt belongs to `attempt_`.
  std::error_code last_error_, cleanup_error_;
  std::string last_message_;
  lifecycle_counters counters_;
  std::vector<std::weak_ptr<asio::cancellation_signal>> cancels_;
  struct subscriber {
    std::uint64_t id;
    std::function<void(const lifecycle_event&)> handler;
    bool active = true;  ///< Cleared by unsubscribe: a delivery under way skips it.
  };
  std::vector<std::shared_ptr<subscriber>> subscribers_;
  std::uint64_t last_subscription_ = 0;
  std::deque<lifecycle_event> events_;  ///< Raised during a delivery, delivered after it.
  bool delivering_ = false;

  // ---- observers ---------------------------------------------------------

  pid_t pid() const noexcept { return state_ == lifecycle_state::running && process_ ? process_->pid() : 0; }
  bool visible_link_up() const noexcept { return state_ == lifecycle_state::running && admin_up_; }

  std::string status() const {
    std::string s(to_string(Session::mode));
    s += ',';
    switch (state_) {
      case lifecycle_state::idle: return s + "not started";
      case lifecycle_state::starting: return s + "starting";
      case lifecycle_state::running:
        return s + (admin_up_ ? "connected to pid " : "link down, pid ") + std::to_string(pid());
      case lifecycle_state::restarting:
        if (backoff_armed_ || attempt_active_)
          return s + "restarting (attempt " + std::to_string(consecutive_failures_) + " of " +
                 std::to_string(config_.restart.max_attempts) + "): " + last_message_;
        return s + "link down, restarting: " + last_message_;
      case lifecycle_state::stopping: return s + "stopping";
      case lifecycle_state::stopped: return s + "stopped";
      case lifecycle_state::failed: return s + "failed: " + last_message_;
    }
    return s;
  }

  lifecycle_counters counters() const noexcept {
    lifecycle_counters c = counters_;
    if constexpr (requires { session_.counters(); }) {
      const auto t = session_.counters();
      static_cast<transport_counters&>(c) = static_cast<const transport_counters&>(t);
      if constexpr (requires { t.frames_dropped; }) c.frames_dropped = t.frames_dropped;
    }
    return c;
  }

  std::uint64_t subscribe(std::function<void(const lifecycle_event&)> handler) {
    subscribers_.push_back(std::make_shared<subscriber>(subscriber{++last_subscription_, std::move(handler)}));
    return last_subscription_;
  }
  void unsubscribe(std::uint64_t id) noexcept {
    const auto it = std::find_if(subscribers_.begin(), subscribers_.end(), [id](const auto& s) { return s->id == id; });
    if (it == subscribers_.end()) return;
    (*it)->active = false;
    subscribers_.erase(it);
  }
  void unsubscribe_all() noexcept {
    for (auto& s : std::exchange(subscribers_, {})) s->active = false;
    events_.clear();
  }

  // ---- start and stop ------------------------------------------------------

  void start() {
    switch (state_) {
      case lifecycle_state::idle:
      case lifecycle_state::stopped:
      case lifecycle_state::failed: break;
      default: return;
    }
    consecutive_failures_ = 0;
    start_generation_ = generation_;
    last_error_ = {};
    last_message_.clear();
    std::vector<diagnostic> problems;
    options o = options_;
    constexpr bool vhost_user = Session::mode == passt_mode::vhost_user;
    if (o.vhost_user && *o.vhost_user != vhost_user)
      problems.push_back({"/vhost-user", vhost_user ? "must be true (or absent): the session speaks vhost-user"
                                                    : "must be false (or absent): the session speaks the stream "
                                                      "protocol; use a vhost-user session"});
    o.vhost_user = vhost_user ? std::optional<bool>(true) : std::nullopt;
    argv_.clear();
    if (problems.empty()) argv_ = builder_.build(o, problems);
    if (argv_.empty()) {
      std::string message = "invalid options:";
      for (const auto& p : problems) message += " " + (p.pointer.empty() ? "/" : p.pointer) + ": " + p.message + ";";
      if (problems.empty()) message += " the builder made no argv";
      return fail(errc::invalid_options, message);
    }
    set_state(lifecycle_state::starting);
    emit(event(lifecycle_event_kind::starting));
    if (state_ == lifecycle_state::starting && terminating_.empty()) launch();  // else once they are gone
  }

  void stop() {
    switch (state_) {
      case lifecycle_state::stopped:
      case lifecycle_state::stopping: return;
      case lifecycle_state::idle:
        session_.detach(errc::stopped);
        return set_state(lifecycle_state::stopped);
      case lifecycle_state::failed:
        session_.detach(errc::stopped);
        set_state(lifecycle_state::stopping);
        return finish_stop_if_done();
      default: break;
    }
    const bool was_up = visible_link_up();
    const pid_t old_pid = pid();
    stopped_before_up();
    set_state(lifecycle_state::stopping);
    abandon_attempt();
    session_.detach(errc::stopped);
    if (process_) terminate_async(take_process());
    if (was_up) emit(event(lifecycle_event_kind::link_down, old_pid, errc::stopped, "stopped"));
    finish_stop_if_done();
  }

  /// The blocking stop of stop() and the destructor.
  void stop_now(bool with_events) noexcept {
    if (state_ == lifecycle_state::idle || state_ == lifecycle_state::stopped) {
      session_.detach(errc::stopped);
      return set_state(lifecycle_state::stopped);
    }
    const bool was_up = visible_link_up();
    const pid_t old_pid = pid();
    stopped_before_up();
    abandon_attempt();
    session_.detach(errc::stopped);
    std::error_code ignored;
    if (process_) {
      process_->terminate(config_.stop_grace, ignored);
      process_.reset();
    }
    for (auto& [p, kill_at] : std::exchange(terminating_, {}))
      p->terminate(std::max(std::chrono::ceil<std::chrono::milliseconds>(kill_at - clock::now()),
                            std::chrono::milliseconds(0)),
                   ignored);
    set_state(lifecycle_state::stopped);
    if (!with_events) return;
    if (was_up) emit(event(lifecycle_event_kind::link_down, old_pid, errc::stopped, "stopped"));
    emit(event(lifecycle_event_kind::stopped));
  }

  void set_link(bool up) {
    if (up == admin_up_) return;
    admin_up_ = up;
    if constexpr (requires { session_.set_link(up); }) session_.set_link(up);
    if (state_ != lifecycle_state::running) return;
    if (up) emit(event(lifecycle_event_kind::link_up, pid()));
    else emit(event(lifecycle_event_kind::link_down, pid(), {}, "link set down"));
  }

private:
  // ---- the attempt -----------------------------------------------------------

  /// Wraps `f` as a completion handler with a cancellation slot of its own,
  /// emitted (terminal) when the attempt is abandoned.
  template <class F> auto cancellable(F&& f) {
    auto signal = std::make_shared<asio::cancellation_signal>();
    std::erase_if(cancels_, [](const auto& w) { return w.expired(); });
    cancels_.push_back(signal);
    auto slot = signal->slot();
    return asio::bind_cancellation_slot(
        slot, [signal = std::move(signal), f = std::forward<F>(f)](auto&&... args) mutable {
          f(std::forward<decltype(args)>(args)...);
        });
  }

  /// Ends every pending operation of the current attempt and its timers.
  void abandon_attempt() {
    ++attempt_;
    attempt_active_ = false;
    backoff_.cancel();
    settle_.cancel();
    backoff_armed_ = false;
    for (auto& weak : std::exchange(cancels_, {}))
      if (auto signal = weak.lock()) signal->emit(asio::cancellation_type::terminal);
  }

  void launch() {
    const auto attempt = ++attempt_;
    attempt_active_ = true;
    ++ops_pending_;
    launcher_.async_launch(argv_, cancellable([self = this->shared_from_this(), attempt](std::error_code ec,
                                                                                           process_type p) {
                             --self->ops_pending_;
                             self->on_launched(attempt, ec, std::move(p));
                           }));
  }

  bool attempting(std::uint64_t attempt) const noexcept {
    return attempt == attempt_ && (state_ == lifecycle_state::starting || state_ == lifecycle_state::restarting);
  }

  void on_launched(std::uint64_t attempt, std::error_code ec, process_type p) {
    if (!attempting(attempt)) {
      if (!ec) terminate_async(std::move(p));
      return finish_stop_if_done();
    }
    if (ec) {
      std::string message = p.failure_message();
      return failed_attempt(ec, message.empty() ? "launching passt: " + ec.message() : message);
    }
    process_.emplace(std::move(p));
    process_->async_wait_exit(cancellable([self = this->shared_from_this(), attempt](std::error_code e, int) {
      if (!e) self->on_exit(attempt);
    }));
    ++ops_pending_;
    session_.async_attach(process_->take_socket(),
                          cancellable([self = this->shared_from_this(), attempt](std::error_code e) {
                            --self->ops_pending_;
                            self->on_attached(attempt, e);
                          }));
  }

  void on_attached(std::uint64_t attempt, std::error_code ec) {
    if (!attempting(attempt)) return finish_stop_if_done();
    if (ec) {
      session_.detach({});
      return failed_attempt(ec, "handshake with passt failed: " + ec.message());
    }
    const bool first = state_ == lifecycle_state::starting;
    ++generation_;
    ++counters_.link_ups;
    started_at_ = clock::now();
    if (first) consecutive_failures_ = 0;
    set_state(lifecycle_state::running);
    session_.async_wait_lost(cancellable([self = this->shared_from_this(), attempt](std::error_code e) {
      if (e != asio::error::operation_aborted) self->on_lost(attempt, e);
    }));
    if (admin_up_) emit(event(lifecycle_event_kind::link_up, pid()));
  }

  /// passt of `attempt` exited.
  void on_exit(std::uint64_t attempt) {
    if (attempt != attempt_ || !process_) return;
    if (state_ == lifecycle_state::running) return report_loss(errc::passt_terminated, process_->exit_description());
    if (attempting(attempt)) {  // died during the handshake
      session_.detach({});
      failed_attempt(errc::passt_terminated, process_->exit_description());
    }
  }

  /// The session of `attempt` lost its connection: wait briefly for passt's
  /// exit, which says more than the socket does.
  void on_lost(std::uint64_t attempt, std::error_code ec) {
    if (attempt != attempt_ || state_ != lifecycle_state::running) return;
    settle_.expires_after(config_.loss_settle);
    settle_.async_wait([self = this->shared_from_this(), attempt, ec](std::error_code e) {
      if (e || attempt != self->attempt_ || self->state_ != lifecycle_state::running) return;
      self->report_loss(ec, "connection to passt (pid " + std::to_string(self->pid()) + ") lost: " + ec.message());
    });
  }

  /// A launch or handshake failed (or passt died during it).
  void failed_attempt(std::error_code ec, std::string message) {
    ++counters_.failed_launches;
    last_error_ = ec;
    last_message_ = std::move(message);
    const bool first = state_ == lifecycle_state::starting;
    abandon_attempt();
    if (process_) terminate_async(take_process());
    if (first && !config_.restart.retry_first_start) return fail(ec, last_message_);
    set_state(lifecycle_state::restarting);
    if (terminating_.empty()) schedule_attempt();
  }

  /// The running passt is lost: link down, terminate it, then restart.
  void report_loss(std::error_code ec, std::string reason) {
    last_error_ = ec;
    last_message_ = reason;
    if (clock::now() - started_at_ >= config_.restart.min_uptime) consecutive_failures_ = 0;
    const bool was_up = admin_up_;
    const pid_t old_pid = pid();
    abandon_attempt();
    const bool restart = config_.restart.enabled;
    set_state(restart ? lifecycle_state::restarting : lifecycle_state::failed);
    session_.detach({});
    terminate_async(take_process());
    if (was_up) emit(event(lifecycle_event_kind::link_down, old_pid, ec, std::move(reason)));
    // Unless a link_down callback stopped or restarted it meanwhile.
    if (!restart && state_ == lifecycle_state::failed) fail(ec, last_message_);
  }

  /// Ends `p` without blocking; once every old passt is gone, launches,
  /// restarts or finishes a stop.
  void terminate_async(process_type p) {
    auto held = std::make_shared<process_type>(std::move(p));
    terminating_.emplace_back(held, clock::now() + config_.stop_grace);
    held->async_terminate(config_.stop_grace, [self = this->shared_from_this(), held](std::error_code ec) {
      if (!std::erase_if(self->terminating_, [&](const auto& t) { return t.first == held; }))
        return;  // a blocking stop ended it
      if (ec && !self->cleanup_error_) self->cleanup_error_ = ec;
      if (!self->terminating_.empty()) return;
      if (self->state_ == lifecycle_state::stopping) self->finish_stop_if_done();
      else if (self->state_ == lifecycle_state::starting && !self->attempt_active_) self->launch();
      else if (self->state_ == lifecycle_state::restarting && !self->backoff_armed_ && !self->attempt_active_)
        self->schedule_attempt();
    });
  }

  void schedule_attempt() {
    if (!config_.restart.enabled) return fail(last_error_, last_message_);
    const unsigned attempt = ++consecutive_failures_;
    if (attempt > config_.restart.max_attempts)
      return fail(errc::restart_limit_reached, "gave up after " + std::to_string(config_.restart.max_attempts) +
                                                   " attempts; last error: " + last_message_);
    std::chrono::milliseconds delay{0};
    if (attempt > 1) {
      delay = config_.restart.initial_backoff;
      for (unsigned i = 2; i < attempt && delay < config_.restart.max_backoff; ++i) delay *= 2;
      delay = std::min(delay, config_.restart.max_backoff);
    }
    backoff_armed_ = true;
    backoff_.expires_after(delay);
    backoff_.async_wait([self = this->shared_from_this(), owner = attempt_](std::error_code ec) {
      if (ec || owner != self->attempt_ || self->state_ != lifecycle_state::restarting) return;
      self->backoff_armed_ = false;
      ++self->counters_.restarts;
      self->launch();
    });
    lifecycle_event e = event(lifecycle_event_kind::restarting, 0, last_error_, last_message_);
    e.attempt = attempt;
    e.delay = delay;
    emit(std::move(e));
  }

  void fail(std::error_code ec, std::string reason) {
    last_error_ = ec;
    last_message_ = reason;
    abandon_attempt();
    session_.detach(ec);
    if (process_) terminate_async(take_process());
    set_state(lifecycle_state::failed);
    emit(event(lifecycle_event_kind::failed, 0, ec, std::move(reason)));
  }

  /// A stop while no link came up since start() says so in last_error().
  void stopped_before_up() {
    if ((state_ != lifecycle_state::starting && state_ != lifecycle_state::restarting) ||
        generation_ != start_generation_)
      return;
    last_error_ = errc::stopped;
    last_message_ = "stopped before passt was up";
  }

  void finish_stop_if_done() {
    if (state_ != lifecycle_state::stopping || ops_pending_ != 0 || !terminating_.empty()) return;
    set_state(lifecycle_state::stopped);
    emit(event(lifecycle_event_kind::stopped));
  }

  // ---- helpers --------------------------------------------------------------

  void set_state(lifecycle_state s) {
    state_ = s;
    changed_.cancel();
  }

  process_type take_process() {
    process_type p = std::move(*process_);
    process_.reset();
    return p;
  }

  lifecycle_event event(lifecycle_event_kind kind, pid_t pid = 0, std::error_code error = {},
                        std::string reason = {}) const {
    lifecycle_event e;
    e.kind = kind;
    e.pid = pid;
    if (kind == lifecycle_event_kind::link_up || kind == lifecycle_event_kind::link_down) e.generation = generation_;
    e.error = error;
    e.reason = std::move(reason);
    return e;
  }

  /// Delivers `e` to every subscriber before the next event, also when a
  /// callback raises one.
  void emit(lifecycle_event e) noexcept {
    events_.push_back(std::move(e));
    if (delivering_) return;
    const auto keep = this->shared_from_this();  // a callback may destroy the lifecycle
    delivering_ = true;
    while (!events_.empty()) {
      const lifecycle_event next = std::move(events_.front());
      events_.pop_front();
      const auto subscribers = subscribers_;  // a callback may subscribe and unsubscribe
      for (const auto& s : subscribers)
        if (s->active) s->handler(next);
    }
    delivering_ = false;
  }
};

/// async_start: start, then wait until the link came up after this call or
/// the start failed.
template <class Impl> struct lifecycle_start_op {
  explicit lifecycle_start_op(std::shared_ptr<Impl> i) : impl(std::move(i)) {}
  std::shared_ptr<Impl> impl;
  std::uint64_t generation = 0;
  bool started = false, posted = false;

  template <class Self> void operator()(Self& self, std::error_code = {}) {
    auto& s = *impl;
    if (posted) return self.complete(result(s));
    if (!started) {
      started = true;
      const bool up = s.state_ == lifecycle_state::running;
      generation = up ? s.generation_ - 1 : s.generation_;
      s.start();
      if (done(s)) return posted = true, asio::post(s.executor_, std::move(self));
      return s.changed_.async_wait(std::move(self));
    }
    if (self.get_cancellation_state().cancelled() != asio::cancellation_type::none) {
      s.stop();
      return self.complete(asio::error::operation_aborted);
    }
    if (done(s)) return self.complete(result(s));
    s.changed_.async_wait(std::move(self));
  }

  bool done(const Impl& s) const {
    return s.generation_ > generation || s.state_ == lifecycle_state::failed ||
           s.state_ == lifecycle_state::stopped || s.state_ == lifecycle_state::stopping;
  }
  std::error_code result(const Impl& s) const {
    if (s.generation_ > generation) return {};
    if (s.state_ == lifecycle_state::failed || s.last_error_ == errc::stopped) return s.last_error_;
    return errc::stopped;
  }
};

/// async_stop: stop, then wait until stopped.
template <class Impl> struct lifecycle_stop_op {
  explicit lifecycle_stop_op(std::shared_ptr<Impl> i) : impl(std::move(i)) {}
  std::shared_ptr<Impl> impl;
  bool started = false, posted = false;

  template <class Self> void operator()(Self& self, std::error_code = {}) {
    auto& s = *impl;
    if (posted) return self.complete(std::exchange(s.cleanup_error_, {}));
    if (!started) {
      started = true;
      self.reset_cancellation_state(asio::enable_total_cancellation());
      s.stop();
      if (s.state_ == lifecycle_state::stopped) return posted = true, asio::post(s.executor_, std::move(self));
      return s.changed_.async_wait(std::move(self));
    }
    if (self.get_cancellation_state().cancelled() != asio::cancellation_type::none)
      return self.complete(asio::error::operation_aborted);
    if (s.state_ == lifecycle_state::stopped) return self.complete(std::exchange(s.cleanup_error_, {}));
    s.changed_.async_wait(std::move(self));
  }
};

} // namespace detail

#define NETPASST_LIFECYCLE_TEMPLATE                                                                         \
  template <BackendSession S, DaemonLauncher L, OptionsToArgv B>
#define NETPASST_LIFECYCLE basic_lifecycle<S, L, B>

NETPASST_LIFECYCLE_TEMPLATE
template <class... SessionArgs>
  requires std::constructible_from<S, SessionArgs...>
NETPASST_LIFECYCLE::basic_lifecycle(L launcher, options opts, const lifecycle_config& config, B builder,
                                    SessionArgs&&... session_args)
    : impl_(std::make_shared<detail::lifecycle_impl<S, L, B>>(std::move(launcher), std::move(opts), config,
                                                              std::move(builder),
                                                              std::forward<SessionArgs>(session_args)...)) {}

NETPASST_LIFECYCLE_TEMPLATE NETPASST_LIFECYCLE::~basic_lifecycle() {
  impl_->unsubscribe_all();
  impl_->stop_now(false);
}

NETPASST_LIFECYCLE_TEMPLATE auto NETPASST_LIFECYCLE::get_executor() const -> executor_type { return impl_->executor_; }
NETPASST_LIFECYCLE_TEMPLATE lifecycle_state NETPASST_LIFECYCLE::state() const noexcept { return impl_->state_; }
NETPASST_LIFECYCLE_TEMPLATE pid_t NETPASST_LIFECYCLE::pid() const noexcept { return impl_->pid(); }
NETPASST_LIFECYCLE_TEMPLATE std::uint64_t NETPASST_LIFECYCLE::generation() const noexcept {
  return impl_->generation_;
}
NETPASST_LIFECYCLE_TEMPLATE std::string NETPASST_LIFECYCLE::status() const { return impl_->status(); }
NETPASST_LIFECYCLE_TEMPLATE const std::vector<std::string>& NETPASST_LIFECYCLE::argv() const noexcept {
  return impl_->argv_;
}
NETPASST_LIFECYCLE_TEMPLATE const options& NETPASST_LIFECYCLE::passt_options() const noexcept {
  return impl_->options_;
}
NETPASST_LIFECYCLE_TEMPLATE std::error_code NETPASST_LIFECYCLE::last_error() const noexcept {
  return impl_->last_error_;
}
NETPASST_LIFECYCLE_TEMPLATE const std::string& NETPASST_LIFECYCLE::last_error_message() const noexcept {
  return impl_->last_message_;
}
NETPASST_LIFECYCLE_TEMPLATE lifecycle_counters NETPASST_LIFECYCLE::counters() const noexcept {
  return impl_->counters();
}
NETPASST_LIFECYCLE_TEMPLATE S& NETPASST_LIFECYCLE::next_layer() noexcept { return impl_->session_; }
NETPASST_LIFECYCLE_TEMPLATE const S& NETPASST_LIFECYCLE::next_layer() const noexcept { return impl_->session_; }
NETPASST_LIFECYCLE_TEMPLATE L& NETPASST_LIFECYCLE::launcher() noexcept { return impl_->launcher_; }
NETPASST_LIFECYCLE_TEMPLATE auto NETPASST_LIFECYCLE::subscribe(event_handler handler) -> subscription {
  return impl_->subscribe(std::move(handler));
}
NETPASST_LIFECYCLE_TEMPLATE void NETPASST_LIFECYCLE::unsubscribe(subscription id) noexcept { impl_->unsubscribe(id); }
NETPASST_LIFECYCLE_TEMPLATE void NETPASST_LIFECYCLE::stop() noexcept { impl_->stop_now(true); }
NETPASST_LIFECYCLE_TEMPLATE void NETPASST_LIFECYCLE::close() noexcept { impl_->stop_now(true); }
NETPASST_LIFECYCLE_TEMPLATE void NETPASST_LIFECYCLE::set_link(bool up) { impl_->set_link(up); }
NETPASST_LIFECYCLE_TEMPLATE bool NETPASST_LIFECYCLE::link_up() const noexcept { return impl_->visible_link_up(); }
NETPASST_LIFECYCLE_TEMPLATE bool NETPASST_LIFECYCLE::is_open() const noexcept {
  const auto s = impl_->state_;
  return s != lifecycle_state::idle && s != lifecycle_state::stopped && s != lifecycle_state::failed &&
         s != lifecycle_state::stopping;
}

NETPASST_LIFECYCLE_TEMPLATE
bool NETPASST_LIFECYCLE::try_send(frame f, std::error_code& ec)
  requires FrameTransport<S>
{
  return impl_->session_.try_send(f, ec);
}

NETPASST_LIFECYCLE_TEMPLATE
std::size_t NETPASST_LIFECYCLE::try_send(std::span<const frame> frames, std::error_code& ec)
  requires FrameTransport<S>
{
  return impl_->session_.try_send(frames, ec);
}

NETPASST_LIFECYCLE_TEMPLATE
void NETPASST_LIFECYCLE::cancel()
  requires FrameTransport<S>
{
  impl_->session_.cancel();
}

NETPASST_LIFECYCLE_TEMPLATE
template <asio::completion_token_for<void(std::error_code)> Token>
auto NETPASST_LIFECYCLE::async_start(Token&& token) {
  return asio::async_compose<Token, void(std::error_code)>(
      detail::lifecycle_start_op<detail::lifecycle_impl<S, L, B>>(impl_), token, impl_->changed_);
}

NETPASST_LIFECYCLE_TEMPLATE
template <asio::completion_token_for<void(std::error_code)> Token>
auto NETPASST_LIFECYCLE::async_stop(Token&& token) {
  return asio::async_compose<Token, void(std::error_code)>(
      detail::lifecycle_stop_op<detail::lifecycle_impl<S, L, B>>(impl_), token, impl_->changed_);
}

#undef NETPASST_LIFECYCLE_TEMPLATE
#undef NETPASST_LIFECYCLE

} // namespace netpasst
