#pragma once
/// @file launcher/daemon.hpp
/// `netpasst::basic_daemon_launcher` (alias `daemon_launcher`): starts passt
/// the way QEMU does, letting it daemonize, but holds the result by pidfd.
/// Also `launcher_config` and `launch_error`, shared with foreground.hpp.
///
/// Steps: a private directory (mkdtemp, 0700; when we are root, handed to the
/// user passt will drop to: `--runas`, else nobody, so passt can still write
/// its pidfile), a socketpair, spawn `argv --pid DIR/passt.pid --fd 3` with
/// only fds 0-3 open, wait for the parent passt to exit (its pidfd, without
/// blocking the executor), exit status != 0 -> error with passt's message,
/// read the pid (> 1), pidfd_open it, check the pidfile still names it and
/// the process is a passt (its comm; /usr/bin/passt may exec passt.avx2).
/// Any failure or the deadline kills what we started and removes everything.

#include <netpasst/error.hpp>
#include <netpasst/launcher/process.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <system_error>
#include <type_traits>
#include <vector>

namespace netpasst {

/// Settings shared by both launchers. Every field has a sensible default.
struct launcher_config {
  /// How long passt may take to become ready (daemonized, or pidfile written
  /// in foreground mode); then `errc::start_timeout`.
  std::chrono::milliseconds start_timeout{10000};
  /// Parent of the private directory. Empty: $XDG_RUNTIME_DIR, else /tmp
  /// (and /tmp when passt drops to another user that could not enter it).
  std::filesystem::path runtime_directory;
  /// The most bytes of passt's stderr kept in `passt_process::error_output`.
  std::size_t error_output_limit = 64 * 1024;
  /// SO_SNDBUF/SO_RCVBUF for both ends of the socketpair (SO_*BUFFORCE tried
  /// first); 0 leaves the defaults.
  int socket_buffer_bytes = 4 << 20;
};

/// Thrown by the launchers' throwing `launch`: the error code, plus passt's
/// exit status (when known) and the one-line failure message as `what()`.
class launch_error : public std::system_error {
public:
  launch_error(std::error_code ec, const std::string& message, std::optional<int> exit_status, std::string output)
      : std::system_error(ec, message), exit_status_(exit_status), error_output_(std::move(output)) {}
  /// passt's exit status, when it exited as our child.
  std::optional<int> exit_status() const noexcept { return exit_status_; }
  /// passt's captured stderr (without syslog noise).
  const std::string& error_output() const noexcept { return error_output_; }

private:
  std::optional<int> exit_status_;
  std::string error_output_;
};

namespace detail {
enum class launch_mode { daemon, foreground };
template <class Executor>
passt_process launch(const Executor& executor, const std::vector<std::string>& argv, const launcher_config& config,
                     launch_mode mode, std::error_code& ec);
template <class Executor, class Token>
auto async_launch(const Executor& executor, const std::vector<std::string>& argv, const launcher_config& config,
                  launch_mode mode, Token&& token);
} // namespace detail

/// The DaemonLauncher of QEMU's design (see the file comment).
///
/// Errors of `launch`/`async_launch` (the failed `passt_process` then carries
/// `failure_message()`, `error_output()` and, when known, `exit_status()`):
/// - `errc::passt_not_found`: argv[0] not found on PATH or not executable.
/// - `errc::passt_exited` / `errc::passt_killed`: the parent passt exited
///   non-zero / was killed (e.g. "unrecognized option '--fqdn'").
/// - `errc::start_timeout`: passt did not daemonize within `start_timeout`.
/// - `errc::bad_pidfile`: no pidfile, or it does not hold a pid above 1.
/// - `errc::process_gone`: the pid names no process, or not a passt.
/// - `asio::error::operation_aborted`: the async launch was cancelled.
/// - OS errors (mkdtemp, chown, socketpair, pipe2, fork).
template <class Executor = asio::any_io_executor>
class basic_daemon_launcher {
public:
  using executor_type = Executor;

  /// A launcher whose completions and stderr draining run on `executor`.
  explicit basic_daemon_launcher(const executor_type& executor, const launcher_config& config = {})
      : executor_(executor), config_(config) {}
  /// As above, with the execution context's executor.
  template <class ExecutionContext>
    requires std::is_convertible_v<ExecutionContext&, asio::execution_context&>
  explicit basic_daemon_launcher(ExecutionContext& context, const launcher_config& config = {})
      : basic_daemon_launcher(executor_type(context.get_executor()), config) {}

  executor_type get_executor() const noexcept { return executor_; }
  const launcher_config& config() const noexcept { return config_; }

  /// Starts passt with `argv` (from an OptionsToArgv model: argv[0] is the
  /// binary, resolved on PATH when it has no '/'; no --pid/--fd in it) and
  /// blocks until it is ready or failed. The waits run on a private
  /// io_context; afterwards passt's stderr is drained on `get_executor()`.
  passt_process launch(const std::vector<std::string>& argv, std::error_code& ec) {
    return detail::launch(executor_, argv, config_, detail::launch_mode::daemon, ec);
  }
  /// Throwing form of `launch`. @throws launch_error
  passt_process launch(const std::vector<std::string>& argv) {
    std::error_code ec;
    passt_process p = launch(argv, ec);
    if (ec) throw launch_error(ec, p.failure_message(), p.exit_status(), p.error_output());
    return p;
  }

  /// `launch` without blocking the executor.
  /// Completion signature: `void(std::error_code, passt_process)`.
  template <asio::completion_token_for<void(std::error_code, passt_process)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_launch(const std::vector<std::string>& argv,
                    Token&& token = asio::default_completion_token_t<executor_type>{}) {
    return detail::async_launch(executor_, argv, config_, detail::launch_mode::daemon, std::forward<Token>(token));
  }

private:
  executor_type executor_;
  launcher_config config_;
};

/// The usual daemon launcher.
using daemon_launcher = basic_daemon_launcher<>;

} // namespace netpasst

#include <netpasst/launcher/impl/launch.hpp>
