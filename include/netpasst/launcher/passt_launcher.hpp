#pragma once
/// @file launcher/passt_launcher.hpp
/// `netpasst::basic_passt_launcher`: the DaemonLauncher model. One
/// implementation, two policies for the two ways to start passt:
/// - `launch_policy::daemonize` (alias `daemon_launcher`), QEMU's way: passt
///   forks into the background and its parent exits once the daemon's pid is
///   in the pidfile. The daemon is not our child: it is held by a pidfd and
///   adopted only after it is proven to hold passt's end of our socket.
/// - `launch_policy::foreground` (alias `foreground_launcher`): passt runs
///   with `--foreground` and stays our child, held by the pidfd born with it
///   (clone3 CLONE_PIDFD) and always reaped by us, even where pid 1 never
///   reaps. It is ready when its pidfile names it (passt writes it once
///   initialised; a steady_timer polls for it, 1 ms doubling to 20 ms).
/// - `launch_policy::either` (alias `passt_launcher`): one of the two, chosen
///   per launcher at run time (`launch_mode`). A lifecycle is a template over
///   its launcher, so a VMM that reads the choice from its configuration
///   compiles one lifecycle instead of two.
///
/// Steps of a launch:
/// 1. Private directory `netpasst-<our pid>.<our start time>-XXXXXX` (mkdtemp,
///    ours, 0700), held locked (flock, exclusive) until the process is
///    cleaned up. Directories of that form left by an owner that no longer
///    runs (a VMM that was SIGKILLed) are removed first; a directory whose
///    named owner we cannot see but whose lock is held (a VMM in another PID
///    namespace sharing the runtime directory) is kept. When we are root and
///    passt will drop to another user (`--runas`, else nobody), the directory
///    stays ours (0711, so that user can only reach the pidfile) and the
///    pidfile is created beforehand, owned by that user and our group, 0660
///    (passt opens it after dropping privileges in Debian 12's build, before
///    in newer ones): no other file can appear in the directory, and only
///    passt's user and we can write the pidfile.
/// 2. A socketpair; passt's end is sized (`peer_socket_buffer_bytes`).
/// 3. Spawn `argv --pid DIR/passt.pid --fd 3` (`--foreground` before them in
///    foreground mode) with only fds 0-3 open, in a process group of its own.
/// 4. Wait for readiness (above) under `start_timeout`, never blocking the
///    executor. A failure, the deadline or a cancellation kills the whole
///    process group we started (while its leader is unreaped, so the group
///    id cannot name anyone else) and removes everything.
/// 5. Daemon mode: the pid in the pidfile is pinned with pidfd_open, then
///    accepted only if that process's fd 3 is passt's end of our socket (the
///    socket's inode, through /proc/PID/fd/3) and it is still alive after
///    the check. A pidfile naming any other process (another VM's passt)
///    is `errc::process_gone`, and that process is never signalled.
///
/// Errors of `launch`/`async_launch` (the failed `passt_process` then carries
/// `failure_message()`, `error_output()` and, when known, `exit_status()`):
/// - `errc::passt_not_found`: argv[0] is missing, a directory, not
///   executable, or not on PATH (the message says which).
/// - `errc::passt_exited` / `errc::passt_killed`: passt (the parent, in
///   daemon mode) exited non-zero / was killed before it was ready
///   (e.g. "passt exited with status 1: unrecognized option '--fqdn'").
///   When the embedding process ignores SIGCHLD the status is lost (the
///   kernel reaps passt): a daemon-mode parent is then judged by step 5
///   alone, and a failure reads "passt exited: <passt's message>".
/// - `errc::start_timeout`: not ready within `start_timeout`.
/// - `errc::bad_pidfile`: daemon mode, no pidfile or no pid above 1 in it.
/// - `errc::process_gone`: daemon mode, the pid names no process, or one
///   that does not hold our socket.
/// - `asio::error::operation_aborted`: the async launch was cancelled
///   (terminal cancellation).
/// - OS errors; the message names the step (e.g. "socketpair: Too many open
///   files").

#include <netpasst/error.hpp>
#include <netpasst/launcher/config.hpp>
#include <netpasst/launcher/process.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/execution_context.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

namespace netpasst {

/// The two ways to start passt; see the file comment.
namespace launch_policy {
/// passt daemonizes and writes a pidfile (QEMU's way).
struct daemonize {
  static constexpr bool stays_in_foreground = false;
};
/// passt runs with `--foreground` and stays our child.
struct foreground {
  static constexpr bool stays_in_foreground = true;
};
/// Either of the above, given to the launcher's constructor as a `launch_mode`.
struct either {};
} // namespace launch_policy

/// The two ways to start passt, as a value (see the file comment).
enum class launch_mode { daemonize, foreground };

/// "daemon" or "foreground": how a configuration or command line names a mode.
constexpr std::string_view to_string(launch_mode mode) noexcept {
  return mode == launch_mode::daemonize ? "daemon" : "foreground";
}
/// The mode that `to_string` names `name`, or nothing.
constexpr std::optional<launch_mode> launch_mode_from_string(std::string_view name) noexcept {
  for (const auto mode : {launch_mode::daemonize, launch_mode::foreground})
    if (to_string(mode) == name) return mode;
  return std::nullopt;
}

namespace detail {
template <class Executor>
passt_process launch(const Executor& executor, const std::vector<std::string>& argv, const launcher_config& config,
                     bool foreground, std::error_code& ec);
template <class Executor, class Token>
auto async_launch(const Executor& executor, const std::vector<std::string>& argv, const launcher_config& config,
                  bool foreground, Token&& token);
} // namespace detail

/// The DaemonLauncher of the library, with `Policy` one of `launch_policy`'s
/// (see the file comment).
template <class Policy, class Executor = asio::any_io_executor>
class basic_passt_launcher {
public:
  using executor_type = Executor;
  using policy_type = Policy;
  using process_type = passt_process;

  /// A launcher whose completions and stderr draining run on `executor`.
  explicit basic_passt_launcher(const executor_type& executor, const launcher_config& config = {})
    requires(!std::is_same_v<Policy, launch_policy::either>)
      : executor_(executor), config_(config),
        mode_(Policy::stays_in_foreground ? launch_mode::foreground : launch_mode::daemonize) {}
  /// As above, with the execution context's executor.
  template <class ExecutionContext>
    requires std::is_convertible_v<ExecutionContext&, asio::execution_context&> &&
             (!std::is_same_v<Policy, launch_policy::either>)
  explicit basic_passt_launcher(ExecutionContext& context, const launcher_config& config = {})
      : basic_passt_launcher(executor_type(context.get_executor()), config) {}

  /// `launch_policy::either`: a launcher that starts passt the way `mode` says.
  basic_passt_launcher(const executor_type& executor, launch_mode mode, const launcher_config& config = {})
    requires std::is_same_v<Policy, launch_policy::either>
      : executor_(executor), config_(config), mode_(mode) {}
  /// As above, with the execution context's executor.
  template <class ExecutionContext>
    requires std::is_convertible_v<ExecutionContext&, asio::execution_context&> &&
             std::is_same_v<Policy, launch_policy::either>
  basic_passt_launcher(ExecutionContext& context, launch_mode mode, const launcher_config& config = {})
      : basic_passt_launcher(executor_type(context.get_executor()), mode, config) {}

  executor_type get_executor() const noexcept { return executor_; }
  const launcher_config& config() const noexcept { return config_; }
  /// How this launcher starts passt.
  launch_mode mode() const noexcept { return mode_; }

  /// Starts passt with `argv` (from an OptionsToArgv model: argv[0] is the
  /// binary, resolved on PATH when it has no '/'; no launcher arguments in
  /// it) and blocks until it is ready or failed. The waits run on a private
  /// io_context; afterwards passt's stderr is drained on `get_executor()`.
  /// May be called from a thread outside that executor, but the process
  /// returned must then be used (and destroyed) only from within it: see
  /// the thread safety note of passt_process.
  passt_process launch(const std::vector<std::string>& argv, std::error_code& ec) {
    return detail::launch(executor_, argv, config_, mode_ == launch_mode::foreground, ec);
  }
  /// Throwing form of `launch`. @throws launch_error
  passt_process launch(const std::vector<std::string>& argv) {
    std::error_code ec;
    passt_process p = launch(argv, ec);
    if (ec) throw launch_error(ec, p.failure_message(), p.exit_status(), p.error_output());
    return p;
  }

  /// `launch` without waiting on the executor for passt to be ready. The
  /// spawn itself runs on the executor and, like posix_spawn, returns once
  /// the child has called exec (about a millisecond; more on a loaded host),
  /// so that a missing or unexecutable binary is reported with its errno.
  /// Completion signature: `void(std::error_code, passt_process)`.
  /// Terminal cancellation kills what was started and completes with
  /// `asio::error::operation_aborted`; before the spawn, nothing is started.
  template <asio::completion_token_for<void(std::error_code, passt_process)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_launch(const std::vector<std::string>& argv,
                    Token&& token = asio::default_completion_token_t<executor_type>{}) {
    return detail::async_launch(executor_, argv, config_, mode_ == launch_mode::foreground,
                                std::forward<Token>(token));
  }

private:
  executor_type executor_;
  launcher_config config_;
  launch_mode mode_;
};

/// QEMU's way: passt daemonizes.
using daemon_launcher = basic_passt_launcher<launch_policy::daemonize>;
/// passt stays our child.
using foreground_launcher = basic_passt_launcher<launch_policy::foreground>;
/// Daemonized or our child, as chosen at construction.
using passt_launcher = basic_passt_launcher<launch_policy::either>;

} // namespace netpasst

#include <netpasst/launcher/impl/launch.hpp>
