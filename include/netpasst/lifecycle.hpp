#pragma once
/// @file lifecycle.hpp
/// `netpasst::basic_lifecycle`: the Lifecycle component. It supervises a
/// DaemonLauncher and a BackendSession: it turns the options into passt's
/// argv once (with an OptionsToArgv builder), starts passt, attaches the
/// session to each new passt, restarts passt when it dies, and stops
/// cleanly. `netpasst::lifecycle` is the usual combination: the stream
/// session, passt daemonized QEMU's way, `argv_builder`.
///
/// States (`lifecycle_state`) and what moves between them:
///
/// | state | meaning | leaves on |
/// |---|---|---|
/// | idle | constructed, never started | `async_start` -> starting |
/// | starting | first launch and handshake | link up -> running; launch or handshake failed -> failed (or restarting with `retry_first_start`) |
/// | running | passt up, session attached | passt exited or connection lost -> restarting (or failed when restarts are off) |
/// | restarting | old passt being terminated, backoff, relaunch, handshake | link up -> running; too many failures -> failed |
/// | stopping | stop in progress | passt gone, pending launch ended -> stopped |
/// | stopped | stopped by the embedder | `async_start` -> starting |
/// | failed | gave up (`last_error()`); a passt of the last attempt may still be terminating | `async_start` -> starting; stop -> stopping (-> stopped once that passt is gone) |
///
/// How it behaves:
/// - Start: the options are turned into argv once. `--vhost-user` follows
///   from the session's `mode`; options whose `vhost-user` asks for the
///   other mode are refused (`errc::invalid_options`, naming
///   `/vhost-user`) before anything is spawned, like any invalid option.
///   A start from `failed` launches once the passt the failure left
///   terminating is gone.
/// - passt dies (its pidfd) or the session reports its connection lost: the
///   link goes down (`link_down`, whose `reason` says how passt ended when
///   it is known within `loss_settle`), the session is detached (it keeps
///   its state), the old passt is terminated and waited for (its pidfd), so
///   the ports it forwarded are free, then passt is launched again and the
///   session attached to it. The first restart after a healthy run is
///   immediate; each further consecutive failure (a launch or handshake
///   that fails, or a passt that dies within `restart_policy::min_uptime`)
///   waits twice as long as the one before, up to `max_backoff`. After
///   `max_attempts` consecutive failures the lifecycle gives up (`failed`,
///   `errc::restart_limit_reached`). All waits are timers and pidfd waits on
///   the executor: nothing blocks it.
/// - Stop (`async_stop`, `stop`, the destructor): link down, a pending
///   launch is cancelled (the launcher kills what it started), the session
///   is detached with `errc::stopped`, passt gets SIGTERM, then SIGKILL after
///   `stop_grace`, is reaped and its pidfile and directory removed; so are
///   old passts still being terminated after a restart or a failed attempt
///   (also in `failed`), each within its own grace. Safe from any state and
///   idempotent. A stop before the first link up since `async_start` (also
///   while `retry_first_start` retries) leaves `last_error()`
///   `errc::stopped` with a message saying so.
/// - Frames: when the session is a FrameTransport (the stream session is),
///   the lifecycle is one too, forwarding to the session: while passt is
///   being replaced, sends are refused with `errc::would_block` and receives
///   wait; while the link is administratively down (`set_link(false)`) frames
///   are dropped both ways, as QEMU does for a NIC whose link is off; after a
///   stop or failure every operation ends with `errc::stopped` or the
///   failure's error.
///
/// Thread safety: like an Asio I/O object. Use it from the executor's thread
/// (or a strand); event callbacks run there too.

#include <netpasst/argv.hpp>
#include <netpasst/concepts.hpp>
#include <netpasst/error.hpp>
#include <netpasst/frame.hpp>
#include <netpasst/launcher/passt_launcher.hpp>
#include <netpasst/options.hpp>
#include <netpasst/session/stream.hpp>

#include <asio/async_result.hpp>
#include <asio/execution_context.hpp>

#include <sys/types.h>

#include <chrono>
#include <concepts>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace netpasst {

/// When and how often a lifecycle restarts passt.
struct restart_policy {
  /// False: the first loss of passt ends the lifecycle (`failed`).
  bool enabled = true;
  /// Consecutive failed attempts after which the lifecycle gives up.
  unsigned max_attempts = 5;
  /// Delay before the second consecutive attempt; it doubles each time.
  std::chrono::milliseconds initial_backoff{100};
  /// Upper bound of the delay.
  std::chrono::milliseconds max_backoff{5000};
  /// A passt that dies sooner than this after link up counts as a failed
  /// attempt (crash-loop guard); one that ran longer resets the count.
  std::chrono::milliseconds min_uptime{1000};
  /// Also retry when the very first start fails. Off by default: a first
  /// start that fails usually fails for a reason a retry does not cure
  /// (unsupported option, missing binary), and the caller wants to know now.
  bool retry_first_start = false;
};

/// A lifecycle's settings.
struct lifecycle_config {
  restart_policy restart;
  /// Time between SIGTERM and SIGKILL when passt is stopped or replaced.
  std::chrono::milliseconds stop_grace{2000};
  /// When the session reports its connection lost while passt still runs,
  /// how long to wait for passt's exit so that `link_down` can say how passt
  /// ended (a SIGKILL closes the socket just before the exit is reported).
  std::chrono::milliseconds loss_settle{100};
};

/// Where a lifecycle is; see the table in the file comment.
enum class lifecycle_state { idle, starting, running, restarting, stopping, stopped, failed };

/// The kinds of `lifecycle_event`.
enum class lifecycle_event_kind {
  starting,   ///< `async_start` began a first launch.
  link_up,    ///< passt is up and the session attached; `pid`, `generation`.
  link_down,  ///< The link went down; `error`/`reason` say why, `pid`/`generation` are the old passt's.
  restarting, ///< A relaunch is scheduled: `attempt` (1-based) after `delay`; `reason` says why the last one ended.
  failed,     ///< The lifecycle gave up; `error` and `reason` say why.
  stopped,    ///< Stop completed; nothing of passt is left.
};

/// "starting", "link_up", "link_down", "restarting", "failed" or "stopped".
std::string_view to_string(lifecycle_event_kind kind) noexcept;
/// "idle", "starting", "running", "restarting", "stopping", "stopped" or "failed".
std::string_view to_string(lifecycle_state state) noexcept;

/// What a subscriber is told. Fields not listed for a kind are zero/empty.
struct lifecycle_event {
  lifecycle_event_kind kind{};
  pid_t pid = 0;                       ///< link_up, link_down.
  /// link_up, link_down: which passt of this lifecycle (1 for the first
  /// link up, 2 and more after restarts). A set_link(true) repeats the
  /// current one.
  std::uint64_t generation = 0;
  unsigned attempt = 0;                ///< restarting.
  std::chrono::milliseconds delay{0};  ///< restarting.
  std::error_code error;               ///< link_down, restarting, failed.
  std::string reason;                  ///< link_down, restarting, failed: one line, passt's own words when it said any.
  /// True for a link_up of a restarted passt.
  bool is_restart() const noexcept { return generation > 1; }
};

/// What a lifecycle counted, and its session's frame counters when it has any.
struct lifecycle_counters : transport_counters {
  std::uint64_t restarts = 0;          ///< Relaunches after passt was lost or an attempt failed.
  std::uint64_t failed_launches = 0;   ///< Launches or handshakes that failed.
  std::uint64_t link_ups = 0;          ///< passts that came up (the latest `generation`).
  std::uint64_t frames_dropped = 0;    ///< Frames the session dropped while the link was administratively down.
};

namespace detail {
template <class Session, class Launcher, class Builder> class lifecycle_impl;
}

/// A passt link that starts, restarts and stops passt (see the file comment).
template <BackendSession Session, DaemonLauncher Launcher = daemon_launcher, OptionsToArgv Builder = argv_builder>
class basic_lifecycle {
public:
  using session_type = Session;
  using launcher_type = Launcher;
  using builder_type = Builder;
  using executor_type = typename Launcher::executor_type;
  /// Receives events; runs on the executor, may call any member (also stop).
  /// An event raised inside a callback (a link_down and stopped by `stop()`)
  /// is delivered once the current one has reached every subscriber, so
  /// every subscriber sees the same events in the same order. `state()`,
  /// `pid()` and `status()` are always the current ones: a later subscriber
  /// may see them already past its event (stopped, in a link_up whose first
  /// subscriber called `stop()`).
  using event_handler = std::function<void(const lifecycle_event&)>;
  /// Identifies a subscription for `unsubscribe`.
  using subscription = std::uint64_t;

  /// A lifecycle that runs passt with `opts` through `launcher` (whose
  /// executor it uses), with a session made from `session_args`. Nothing
  /// starts before `async_start`.
  template <class... SessionArgs>
    requires std::constructible_from<Session, SessionArgs...>
  basic_lifecycle(Launcher launcher, options opts, const lifecycle_config& config, Builder builder,
                  SessionArgs&&... session_args);

  /// As above, with the session made from the launcher's executor.
  basic_lifecycle(Launcher launcher, options opts, const lifecycle_config& config = {})
    requires std::constructible_from<Session, executor_type> && std::default_initializable<Builder>
      : impl_(with_session_on_launcher_executor(std::move(launcher), std::move(opts), config)) {}

  /// As above, with launcher and session made from `executor`.
  basic_lifecycle(const executor_type& executor, options opts, const lifecycle_config& config = {})
    requires std::constructible_from<Launcher, executor_type> && std::constructible_from<Session, executor_type> &&
             std::default_initializable<Builder>
      : basic_lifecycle(Launcher(executor), std::move(opts), config, Builder{}, executor) {}

  /// As above, with the execution context's executor.
  template <class ExecutionContext>
    requires std::is_convertible_v<ExecutionContext&, asio::execution_context&> &&
             std::constructible_from<Launcher, executor_type> && std::constructible_from<Session, executor_type> &&
             std::default_initializable<Builder>
  basic_lifecycle(ExecutionContext& context, options opts, const lifecycle_config& config = {})
      : basic_lifecycle(executor_type(context.get_executor()), std::move(opts), config) {}

  basic_lifecycle(const basic_lifecycle&) = delete;
  basic_lifecycle& operator=(const basic_lifecycle&) = delete;

  /// Stops as `stop()` (blocking for at most about `stop_grace`), without
  /// events. Pending operations complete with `errc::stopped`.
  ~basic_lifecycle();

  /// The launcher's executor; completions run there unless a token says otherwise.
  executor_type get_executor() const;

  lifecycle_state state() const noexcept;
  /// The connected passt's pid, 0 when there is none (also inside a
  /// link_down callback: the event carries the old pid).
  pid_t pid() const noexcept;
  /// The latest link up's generation (see `lifecycle_event`), 0 before the first.
  std::uint64_t generation() const noexcept;
  /// One line like QEMU's info string: "stream,connected to pid 1234",
  /// "stream,link down, pid 1234" (administratively), "stream,link down,
  /// restarting: <why>", "stream,restarting (attempt 2 of 5): <why>",
  /// "stream,starting", "stream,stopped", "stream,failed: <why>".
  std::string status() const;
  /// The argv passt was last started with (launcher arguments excluded).
  const std::vector<std::string>& argv() const noexcept;
  const options& passt_options() const noexcept;
  /// The last error (invalid options, launch or handshake failure,
  /// connection loss, stop before link up, or the failure that ended the
  /// lifecycle) and its one-line description.
  std::error_code last_error() const noexcept;
  const std::string& last_error_message() const noexcept;
  lifecycle_counters counters() const noexcept;

  /// The session: for traffic, and for what only that backend offers.
  Session& next_layer() noexcept;
  const Session& next_layer() const noexcept;
  /// The launcher.
  Launcher& launcher() noexcept;

  /// Calls `handler` (this one, not a copy: a mutable handler keeps its
  /// state) for every later event until `unsubscribe` or the lifecycle's
  /// destruction, which take effect at once, also for an event being
  /// delivered when another subscriber unsubscribes it or destroys the
  /// lifecycle.
  subscription subscribe(event_handler handler);
  void unsubscribe(subscription id) noexcept;

  /// Starts passt. Completes with success at the first link up after this
  /// call (at once if the link is up), or with the error that made the start
  /// fail: `errc::invalid_options` (the problems in `last_error_message()`),
  /// a launcher error (passt's own message in `last_error_message()`), a
  /// handshake error, `errc::stopped` if stopped first.
  /// Completion signature: `void(std::error_code)`. Terminal cancellation
  /// abandons the start (the lifecycle stops) and completes with
  /// `asio::error::operation_aborted`.
  template <asio::completion_token_for<void(std::error_code)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_start(Token&& token = asio::default_completion_token_t<executor_type>{});

  /// Stops (see the file comment) and completes when passt is gone and
  /// cleaned up. Completion signature: `void(std::error_code)`; the error is
  /// the first cleanup error, if any. Cancellation (terminal, partial, total)
  /// only ends the wait, with `asio::error::operation_aborted`.
  template <asio::completion_token_for<void(std::error_code)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_stop(Token&& token = asio::default_completion_token_t<executor_type>{});

  /// Stops synchronously: blocks until passt and every old passt still
  /// being terminated are gone (at most about `stop_grace` plus a reap). A pending launch is cancelled; what it
  /// started is killed when its completion runs (or when the executor's
  /// context is destroyed). Emits `link_down` and `stopped`.
  void stop() noexcept;

  /// Administrative link state (QEMU's set_link). While down, the session
  /// drops frames (when it supports `set_link`); passt keeps running. Emits
  /// link_down/link_up when it changes the visible link state.
  void set_link(bool up);
  /// True when passt is connected and the link is administratively up.
  bool link_up() const noexcept;

  /// False once stopped or failed (or before the first start).
  bool is_open() const noexcept;
  /// As `stop()`.
  void close() noexcept;

  // FrameTransport, when the session is one: forwarded to the session (see
  // concepts.hpp and the file comment).

  bool try_send(frame f, std::error_code& ec)
    requires FrameTransport<Session>;
  std::size_t try_send(std::span<const frame> frames, std::error_code& ec)
    requires FrameTransport<Session>;
  template <asio::completion_token_for<void(std::error_code)> Token =
                asio::default_completion_token_t<executor_type>>
    requires FrameTransport<Session>
  auto async_wait_writable(Token&& token = asio::default_completion_token_t<executor_type>{}) {
    return next_layer().async_wait_writable(std::forward<Token>(token));
  }
  template <asio::completion_token_for<void(std::error_code, frame_batch)> Token =
                asio::default_completion_token_t<executor_type>>
    requires FrameTransport<Session>
  auto async_receive(Token&& token = asio::default_completion_token_t<executor_type>{}) {
    return next_layer().async_receive(std::forward<Token>(token));
  }
  /// Ends pending receives and writable waits with
  /// `asio::error::operation_aborted`; passt keeps running.
  void cancel()
    requires FrameTransport<Session>;

private:
  static auto with_session_on_launcher_executor(Launcher launcher, options opts, const lifecycle_config& config) {
    const executor_type executor = launcher.get_executor();
    return std::make_shared<detail::lifecycle_impl<Session, Launcher, Builder>>(std::move(launcher), std::move(opts),
                                                                                config, Builder{}, executor);
  }
  std::shared_ptr<detail::lifecycle_impl<Session, Launcher, Builder>> impl_;
};

/// The usual lifecycle: the stream session, passt daemonized QEMU's way,
/// `argv_builder`.
using lifecycle = basic_lifecycle<stream_session>;

} // namespace netpasst

#include <netpasst/impl/lifecycle.hpp>
