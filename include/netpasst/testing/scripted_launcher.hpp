#pragma once
/// @file testing/scripted_launcher.hpp
/// `netpasst::testing::basic_scripted_launcher`: a DaemonLauncher that starts
/// nothing, for fast, deterministic tests of anything that supervises passt
/// (a lifecycle, an embedder's own supervisor). Each launch makes a
/// socketpair: the launched "process" (`basic_scripted_process`, a
/// PasstProcess) hands our end to the session, and the test gets the other
/// end, "passt's fd 3", to play passt on (with `testing::scripted_passt`
/// over a stream transport, say). The test also decides:
/// - how each launch ends (`launch_script`): ready, failed with a chosen
///   error and message, or never ready (until cancelled);
/// - when and how the process exits (`scripted_exit::exit(status)`), and how
///   it answers termination (exits at SIGTERM, or only at SIGKILL).
///
/// Thread safety: like an Asio I/O object; use one executor (thread).

#include <netpasst/concepts.hpp>
#include <netpasst/error.hpp>
#include <netpasst/unique_fd.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/execution_context.hpp>

#include <sys/types.h>

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <type_traits>
#include <vector>

namespace netpasst::testing {

namespace detail {
template <class Executor> struct scripted_launcher_state;
template <class Executor> struct scripted_launch_op;
} // namespace detail

/// How one scripted launch ends.
struct launch_script {
  enum class outcome {
    ready,       ///< Completes with a running process and a connected socket.
    fail,        ///< Completes with `error`; the process's `failure_message()` is `message`.
    never_ready, ///< Stays pending until cancelled (terminal): then `operation_aborted`.
  };
  outcome result = outcome::ready;
  std::error_code error = make_error_code(errc::passt_exited);
  std::string message = "passt exited with status 1: scripted failure";
  /// false: SIGTERM from a terminate is ignored; only the SIGKILL after the
  /// grace period ends the process.
  bool exits_on_sigterm = true;
};

/// The test's handle on a scripted process's end (shared with the process).
class scripted_exit {
public:
  /// Makes the process exit with `status` (an exit code, or 128 + signal):
  /// its `async_wait_exit` waits complete. Its socket is the test's to close
  /// (passt's end, handed over in `scripted_launch`). Later calls do nothing.
  void exit(int status);
  /// The status it exited with, once it has.
  std::optional<int> status() const noexcept { return status_; }
  /// Signals a terminate delivered (SIGTERM, SIGKILL), in order.
  const std::vector<int>& signals() const noexcept { return signals_; }
  /// The pid the process reports.
  pid_t pid() const noexcept { return pid_; }
  /// Whether a SIGTERM ends it (else only the SIGKILL after the grace does).
  bool exits_on_sigterm() const noexcept { return exits_on_sigterm_; }
  /// Records a delivered signal and, if it ends the process, exits with
  /// 128 + `sig`. Returns true when the process has exited.
  bool deliver(int sig);
  /// Calls `wake` once, at the exit (at once if it already exited).
  void on_exit(std::function<void()> wake);

private:
  template <class> friend struct detail::scripted_launch_op;
  std::optional<int> status_;
  std::vector<int> signals_;
  bool exits_on_sigterm_ = true;
  pid_t pid_ = 0;
  std::vector<std::function<void()>> waiters_;
};

/// What the test gets for each launch (through `on_launch`).
struct scripted_launch {
  std::vector<std::string> argv;         ///< The argv the launcher was given.
  unique_fd passt_end;                   ///< The other end of the session's socket: passt's fd 3.
  std::shared_ptr<scripted_exit> process; ///< Ends the process.
};

/// The PasstProcess a scripted launch hands over. Move-only; destroying it
/// ends the process (as SIGKILL would).
template <class Executor = asio::any_io_executor>
class basic_scripted_process {
public:
  basic_scripted_process() = default;
  basic_scripted_process(basic_scripted_process&&) noexcept = default;
  basic_scripted_process& operator=(basic_scripted_process&& other) noexcept {
    if (this != &other) end_now(), executor_ = std::move(other.executor_), exit_ = std::move(other.exit_),
                                   socket_ = std::move(other.socket_), failure_ = std::move(other.failure_);
    return *this;
  }
  ~basic_scripted_process() { end_now(); }

  /// A pid that no real process has (above the kernel's pid_max), 0 after a failed launch.
  pid_t pid() const noexcept { return exit_ ? exit_->pid() : 0; }
  unique_fd take_socket() noexcept { return std::move(socket_); }
  std::string failure_message() const { return failure_; }
  /// "passt (pid N) exited with status S" or "... was killed by signal S"
  /// once it exited; empty before.
  std::string exit_description() const;
  /// The test's handle (null after a failed launch).
  const std::shared_ptr<scripted_exit>& control() const noexcept { return exit_; }

  template <asio::completion_token_for<void(std::error_code, int)> Token =
                asio::default_completion_token_t<Executor>>
  auto async_wait_exit(Token&& token = asio::default_completion_token_t<Executor>{});
  template <asio::completion_token_for<void(std::error_code)> Token = asio::default_completion_token_t<Executor>>
  auto async_terminate(std::chrono::milliseconds grace, Token&& token = asio::default_completion_token_t<Executor>{});
  /// Ends it at once (SIGTERM, or SIGKILL when scripted to ignore SIGTERM).
  void terminate(std::chrono::milliseconds grace, std::error_code& ec) noexcept;

private:
  template <class> friend struct detail::scripted_launch_op;
  void end_now() noexcept {
    if (exit_ && !exit_->status()) exit_->exit(128 + 9);
  }
  Executor executor_;
  std::shared_ptr<scripted_exit> exit_;
  unique_fd socket_;
  std::string failure_;
};

/// The scripted DaemonLauncher (see the file comment). Copies share their
/// script and counters, so a test can keep one while a lifecycle owns another.
template <class Executor = asio::any_io_executor>
class basic_scripted_launcher {
public:
  using executor_type = Executor;
  using process_type = basic_scripted_process<Executor>;

  explicit basic_scripted_launcher(const executor_type& executor);
  template <class ExecutionContext>
    requires std::is_convertible_v<ExecutionContext&, asio::execution_context&>
  explicit basic_scripted_launcher(ExecutionContext& context)
      : basic_scripted_launcher(executor_type(context.get_executor())) {}

  executor_type get_executor() const noexcept;

  /// Queues how the next launches end; once the queue is empty, launches
  /// are `ready`.
  void script(launch_script next);
  /// Called for every launch that becomes ready, with passt's end of the
  /// socket and the process handle.
  void on_launch(std::function<void(scripted_launch)> handler);
  /// Launches asked for so far (ready, failed and cancelled alike).
  std::size_t launches() const noexcept;
  /// The argv of the last launch.
  const std::vector<std::string>& last_argv() const noexcept;
  /// The handles of every ready launch so far, oldest first.
  const std::vector<std::shared_ptr<scripted_exit>>& processes() const noexcept;

  /// Completes (never inside this call) as the next `launch_script` says.
  /// Signature `void(std::error_code, process_type)`. Terminal cancellation
  /// completes a `never_ready` launch with `asio::error::operation_aborted`.
  template <asio::completion_token_for<void(std::error_code, process_type)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_launch(const std::vector<std::string>& argv,
                    Token&& token = asio::default_completion_token_t<executor_type>{});

private:
  std::shared_ptr<detail::scripted_launcher_state<Executor>> state_;
};

/// The scripted launcher on `asio::any_io_executor`.
using scripted_launcher = basic_scripted_launcher<>;
using scripted_process = basic_scripted_process<>;

} // namespace netpasst::testing

#include <netpasst/testing/impl/scripted_launcher.hpp>
