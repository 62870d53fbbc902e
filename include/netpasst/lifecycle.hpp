#pragma once
/// @file lifecycle.hpp
/// `netpasst::basic_lifecycle`: the Lifecycle component. It assembles an
/// OptionsToArgv builder, a DaemonLauncher and a FrameTransport into one
/// passt link that starts, restarts passt when it dies, and stops cleanly;
/// `netpasst::lifecycle` is the usual combination (argv_builder,
/// daemon_launcher, stream_transport).
///
/// How it behaves:
/// - Start: the options are turned into argv once (invalid options fail the
///   start with `errc::invalid_options`), passt is launched, a transport is
///   made on its socket, and the link is up (`lifecycle_event_kind::link_up`).
/// - passt dies or its connection breaks (pidfd readable, end of stream,
///   a transport error): the link goes down, the old passt is terminated and
///   waited for (its pidfd), so the ports it forwarded are free, then passt
///   is launched again. The first restart after a healthy run is immediate;
///   each further consecutive failure (a launch that fails, or a passt that
///   dies within `restart_policy::min_uptime`) waits twice as long as the one
///   before, up to `max_backoff`. After `max_attempts` consecutive failures
///   the lifecycle gives up (`failed`, `errc::restart_limit_reached`). All
///   waits are timers and pidfd waits on the executor: nothing blocks it.
/// - Stop (`async_stop`, `stop`, the destructor): link down, the socket is
///   closed, passt gets SIGTERM, then SIGKILL after `stop_grace`, is reaped
///   and its pidfile and directory removed. Safe from any state (also while
///   a launch or a restart is pending) and idempotent.
///
/// The lifecycle is itself a FrameTransport: a VMM's NIC model (or a
/// `mini_guest`) talks to it and never sees a restart except as link events.
/// While passt is (re)starting, `try_send` refuses with `errc::would_block`
/// and `async_wait_writable`/`async_receive` wait until the link is up again.
/// While the link is administratively down (`set_link(false)`), sent frames
/// are dropped (counted) and received frames are discarded, as QEMU does for
/// a NIC whose link is off. After stop or failure every operation ends with
/// `errc::stopped` or the failure's error.
///
/// Thread safety: like an Asio I/O object. Use it from the executor's thread
/// (or a strand); event callbacks run there too.

#include <netpasst/argv.hpp>
#include <netpasst/concepts.hpp>
#include <netpasst/error.hpp>
#include <netpasst/frame.hpp>
#include <netpasst/launcher/daemon.hpp>
#include <netpasst/launcher/process.hpp>
#include <netpasst/options.hpp>
#include <netpasst/transport/stream.hpp>
#include <netpasst/unique_fd.hpp>

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
};

/// Where a lifecycle is.
enum class lifecycle_state {
  idle,       ///< Constructed, never started.
  starting,   ///< First launch in progress.
  running,    ///< passt is up and connected.
  restarting, ///< passt was lost; waiting for it to be gone, for the backoff, or for the relaunch.
  stopping,   ///< Stop in progress.
  stopped,    ///< Stopped; `async_start` starts again.
  failed,     ///< Gave up (see `last_error()`); `async_start` starts again.
};

/// The kinds of `lifecycle_event`.
enum class lifecycle_event_kind {
  starting,   ///< `async_start` began a first launch.
  link_up,    ///< passt is connected; `pid` is its pid.
  link_down,  ///< The link went down; `error`/`reason` say why, `pid` is the old passt.
  restarting, ///< A relaunch is scheduled: `attempt` (1-based) after `delay`.
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
  unsigned attempt = 0;                ///< restarting.
  std::chrono::milliseconds delay{0};  ///< restarting.
  std::error_code error;               ///< link_down, failed.
  std::string reason;                  ///< link_down, failed: one line, passt's own words when it said any.
};

/// Frame counters of all transports the lifecycle has had, and its own.
struct lifecycle_counters : transport_counters {
  std::uint64_t restarts = 0;          ///< Relaunches after passt was lost.
  std::uint64_t failed_launches = 0;   ///< Launches that failed.
  std::uint64_t frames_dropped = 0;    ///< Frames dropped while the link was administratively down.
};

namespace detail {
template <class Builder, class Launcher, class Transport> class lifecycle_state_impl;

/// How a transport names itself in a status line: `Transport::kind` if it
/// has one.
template <class Transport> constexpr std::string_view transport_kind() {
  if constexpr (requires { std::string_view(Transport::kind); }) return Transport::kind;
  else return "transport";
}
} // namespace detail

/// A passt link that starts, restarts and stops passt (see the file comment).
/// `Transport` is made from (executor, our end of passt's socket,
/// `Transport::config_type`).
template <OptionsToArgv Builder, DaemonLauncher Launcher, FrameTransport Transport>
  requires std::constructible_from<Transport, typename Launcher::executor_type, unique_fd,
                                   const typename Transport::config_type&>
class basic_lifecycle {
public:
  using builder_type = Builder;
  using launcher_type = Launcher;
  using transport_type = Transport;
  using executor_type = typename Launcher::executor_type;
  /// Receives events; runs on the executor, may call any member (also stop).
  using event_handler = std::function<void(const lifecycle_event&)>;
  /// Identifies a subscription for `unsubscribe`.
  using subscription = std::uint64_t;

  /// A lifecycle that runs passt with `opts` through `launcher` (whose
  /// executor it uses). Nothing starts before `async_start`.
  basic_lifecycle(Launcher launcher, options opts, const lifecycle_config& config = {},
                  Builder builder = {}, const typename Transport::config_type& transport_config = {});

  /// As above, with a launcher made from `executor`.
  basic_lifecycle(const executor_type& executor, options opts, const lifecycle_config& config = {})
    requires std::constructible_from<Launcher, executor_type> && std::default_initializable<Builder>
      : basic_lifecycle(Launcher(executor), std::move(opts), config) {}

  /// As above, with the execution context's executor.
  template <class ExecutionContext>
    requires std::is_convertible_v<ExecutionContext&, asio::execution_context&> &&
             std::constructible_from<Launcher, executor_type> && std::default_initializable<Builder>
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
  /// The running passt's pid, 0 when there is none.
  pid_t pid() const noexcept;
  /// One line like QEMU's info string: "stream,connected to pid 1234",
  /// "stream,restarting (attempt 2)", "stream,link down", "stream,stopped",
  /// "stream,failed: <reason>".
  std::string status() const;
  /// The argv passt was last started with (launcher arguments excluded).
  const std::vector<std::string>& argv() const noexcept;
  const options& passt_options() const noexcept;
  /// The last error (launch failure, connection loss or the failure that
  /// ended the lifecycle) and its one-line description.
  std::error_code last_error() const noexcept;
  const std::string& last_error_message() const noexcept;
  lifecycle_counters counters() const noexcept;
  /// The current transport, or nullptr while passt is not connected.
  Transport* next_layer() noexcept;

  /// Calls `handler` for every later event until `unsubscribe`.
  subscription subscribe(event_handler handler);
  void unsubscribe(subscription id) noexcept;

  /// Starts passt. Completes with success at the first link up, or with the
  /// error that made the start fail: `errc::invalid_options` (with the
  /// problems in `last_error_message()`), a launcher error (passt's own
  /// message in `last_error_message()`), `errc::stopped` if stopped first.
  /// Running already: completes at once with success. Completion signature:
  /// `void(std::error_code)`.
  template <asio::completion_token_for<void(std::error_code)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_start(Token&& token = asio::default_completion_token_t<executor_type>{});

  /// Stops (see the file comment) and completes when passt is gone and
  /// cleaned up. Completion signature: `void(std::error_code)`; the error is
  /// the first cleanup error, if any.
  template <asio::completion_token_for<void(std::error_code)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_stop(Token&& token = asio::default_completion_token_t<executor_type>{});

  /// Stops synchronously: blocks until passt is gone (at most about
  /// `stop_grace` plus a reap). Emits `link_down` and `stopped`.
  void stop() noexcept;

  /// Administrative link state (QEMU's set_link). While down, frames are
  /// dropped both ways; passt keeps running. Emits link_down/link_up when it
  /// changes the visible link state.
  void set_link(bool up);
  /// True when passt is connected and the link is administratively up.
  bool link_up() const noexcept;

  // FrameTransport. See concepts.hpp for the contract and the file comment
  // for what happens while passt is not connected.

  /// Sends one frame through the current transport.
  bool try_send(frame f, std::error_code& ec);
  /// Sends a prefix of `frames` through the current transport.
  std::size_t try_send(std::span<const frame> frames, std::error_code& ec);
  /// Completes when a send would be taken again, waiting across restarts.
  template <asio::completion_token_for<void(std::error_code)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_wait_writable(Token&& token = asio::default_completion_token_t<executor_type>{});
  /// Receives frames from the current passt, waiting across restarts. The
  /// views stay valid until the next `async_receive`.
  template <asio::completion_token_for<void(std::error_code, frame_batch)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_receive(Token&& token = asio::default_completion_token_t<executor_type>{});
  /// Ends pending `async_receive`/`async_wait_writable` with
  /// `asio::error::operation_aborted`; passt keeps running.
  void cancel();
  /// False once stopped or failed (or before the first start).
  bool is_open() const noexcept;
  /// As `stop()`.
  void close() noexcept;

private:
  std::shared_ptr<detail::lifecycle_state_impl<Builder, Launcher, Transport>> impl_;
};

/// The usual lifecycle: argv_builder, daemon_launcher (QEMU's way) and the
/// stream transport.
using lifecycle = basic_lifecycle<argv_builder, daemon_launcher, stream_transport>;

} // namespace netpasst

#include <netpasst/impl/lifecycle.hpp>
