#pragma once
/// @file launcher/foreground.hpp
/// `netpasst::basic_foreground_launcher` (alias `foreground_launcher`):
/// starts passt with `--foreground`, so it stays our child: held by the
/// pidfd born with it (clone3 CLONE_PIDFD) and always reaped by us, even
/// where pid 1 never reaps.
///
/// Steps: private directory, socketpair and spawn as `daemon_launcher`
/// (see daemon.hpp), with `argv --foreground --pid DIR/passt.pid --fd 3`.
/// passt is ready when its pidfile names our child (passt writes it after
/// initialising); a steady_timer polls for it (1 ms, doubling to 20 ms), so
/// the executor is never blocked. If the child exits first, the launch fails
/// with its exit status and message.

#include <netpasst/launcher/daemon.hpp>

namespace netpasst {

/// The foreground DaemonLauncher. Same API, configuration and errors as
/// `basic_daemon_launcher`, except: `errc::start_timeout` means the pidfile
/// did not name our child in time, and `bad_pidfile`/`process_gone` do not
/// occur (the pid is known from the spawn).
template <class Executor = asio::any_io_executor>
class basic_foreground_launcher {
public:
  using executor_type = Executor;

  /// A launcher whose completions and stderr draining run on `executor`.
  explicit basic_foreground_launcher(const executor_type& executor, const launcher_config& config = {})
      : executor_(executor), config_(config) {}
  /// As above, with the execution context's executor.
  template <class ExecutionContext>
    requires std::is_convertible_v<ExecutionContext&, asio::execution_context&>
  explicit basic_foreground_launcher(ExecutionContext& context, const launcher_config& config = {})
      : basic_foreground_launcher(executor_type(context.get_executor()), config) {}

  executor_type get_executor() const noexcept { return executor_; }
  const launcher_config& config() const noexcept { return config_; }

  /// Starts passt in the foreground and blocks until its pidfile names it
  /// (ready) or it failed. See `basic_daemon_launcher::launch`.
  passt_process launch(const std::vector<std::string>& argv, std::error_code& ec) {
    return detail::launch(executor_, argv, config_, detail::launch_mode::foreground, ec);
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
    return detail::async_launch(executor_, argv, config_, detail::launch_mode::foreground,
                                std::forward<Token>(token));
  }

private:
  executor_type executor_;
  launcher_config config_;
};

/// The usual foreground launcher.
using foreground_launcher = basic_foreground_launcher<>;

} // namespace netpasst
