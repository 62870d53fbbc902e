#pragma once
/// @file launcher/process.hpp
/// `netpasst::passt_process`: a started (or failed) passt, held by pidfd. The
/// PasstProcess model (concepts.hpp) of the library's launcher.
///
/// It owns: the pidfd of passt (so no signal can reach a recycled pid), our
/// end of the socket passt got as fd 3, the pipe carrying passt's stderr
/// (drained on the process's executor for as long as passt runs, keeping the
/// latest bytes up to a limit), and the private directory with passt's
/// pidfile. A failed launch still returns one, not running, with passt's exit
/// status, stderr and a one-line failure message.
///
/// An embedder's own launcher (a privileged helper, a sandbox, a system
/// service) makes one with `passt_process::adopt` from a pidfd and a socket it
/// obtained itself; the lifecycle then supervises it like its own.
///
/// Thread safety: like an Asio I/O object. Distinct objects: safe. One
/// object: calls and its completion handlers must not run concurrently.
/// That includes the handler that drains passt's stderr: it runs on the
/// process's executor at any time while passt runs (after a successful
/// launch, or an `adopt` given a pipe) and writes the state behind
/// `error_output`, `exit_description`, `terminate` and the destructor.
/// So when that executor runs in a thread other than the caller's (the
/// blocking `launch` called from outside it, say), use the object only from
/// within the executor (`asio::post` to it, or its strand), destruction and
/// move assignment included; or stop the executor's threads first.

#include <netpasst/error.hpp>
#include <netpasst/unique_fd.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <system_error>

namespace netpasst {

namespace detail {
struct process_state;
struct process_access;
} // namespace detail

/// What `passt_process::adopt` takes over: a passt somebody else started.
struct adopted_passt {
  /// Where the process's waits complete and its stderr is drained.
  asio::any_io_executor executor;
  /// Refers to the running passt (pidfd_open(2) or clone3 CLONE_PIDFD).
  /// Required: every wait and signal goes through it.
  unique_fd pidfd;
  /// Our end of the connected socket passt has as fd 3. Required.
  unique_fd socket;
  /// Optional: the read end of a pipe carrying passt's stderr.
  unique_fd error_output;
  /// True when passt is our child: its exit status is then collected
  /// (reaped) through the pidfd. False for a daemonized passt.
  bool is_child = false;
  /// Optional: a directory of the launcher's, removed (recursively) when the
  /// process is cleaned up.
  std::filesystem::path private_directory;
};

/// A passt process started by a launcher. Move-only; the state lives on the
/// heap, so an operation still pending keeps working after the handle moved.
/// A default-constructed or moved-from handle holds nothing (`pid()` 0).
class passt_process {
public:
  /// Holds nothing.
  passt_process() noexcept = default;
  passt_process(passt_process&&) noexcept = default;
  /// Terminates what this handle held (as the destructor), then takes `other`'s.
  passt_process& operator=(passt_process&& other) noexcept;
  passt_process(const passt_process&) = delete;
  passt_process& operator=(const passt_process&) = delete;

  /// If passt still runs: `terminate` with a 500 ms grace (blocking, usually
  /// ~3 ms: passt exits promptly on SIGTERM). Then closes every descriptor
  /// and removes the pidfile and private directory (a passt it may not
  /// signal is left running). Pending asynchronous operations complete with
  /// `asio::error::operation_aborted`.
  ~passt_process();

  /// Takes over a running passt that an embedder's launcher started. The pid
  /// is read from the pidfd (/proc/self/fdinfo), never from a file. The
  /// stderr pipe, when given, is drained on `what.executor`.
  /// Errors: `std::errc::invalid_argument` (no executor),
  /// `std::errc::bad_file_descriptor` (no pidfd or no socket, or the pidfd
  /// is not one), `errc::process_gone` (the process already exited).
  /// On error nothing is kept: every descriptor given is closed.
  static passt_process adopt(adopted_passt what, std::error_code& ec);
  /// Throwing form of `adopt`. @throws std::system_error
  static passt_process adopt(adopted_passt what);

  /// The executor the process's waits complete on (the launcher's); an
  /// empty one when the handle holds nothing.
  asio::any_io_executor get_executor() const noexcept;

  /// passt's pid; 0 when there is none (failed launch, empty handle).
  /// Informational only: every signal goes through the pidfd.
  pid_t pid() const noexcept;

  /// The pidfd referring to passt (still owned by this object), -1 if none.
  int pidfd() const noexcept;

  /// True while passt has not exited (checked on the pidfd, no reaping).
  bool running() const noexcept;

  /// Our end of the connected AF_UNIX SOCK_STREAM socketpair (close-on-exec)
  /// whose other end is passt's fd 3. The first call hands it over; later
  /// calls (and calls after a failed launch) return an empty `unique_fd`.
  /// passt exits once every copy of its peer end is closed.
  unique_fd take_socket() noexcept;

  /// passt's stderr (and stdout) captured so far, without the "Failed to
  /// send N bytes to syslog" lines Debian's passt prints when no syslog
  /// runs: the latest `error_output_limit` bytes (whole lines; older lines
  /// are dropped first). Complete after a failed launch; while passt runs,
  /// grows as the executor drains the pipe (a daemonized passt closes it
  /// once it is in the background).
  const std::string& error_output() const noexcept;

  /// passt's exit status once known: the exit code, or 128 + signal number
  /// when a signal killed it. Known only for our own child (the foreground
  /// launcher's passt, the daemon launcher's parent passt that failed); a
  /// daemonized passt is not our child, so its status stays unknown. Unknown
  /// too when the embedding process ignores SIGCHLD (SIG_IGN or
  /// SA_NOCLDWAIT): the kernel then reaps our children itself.
  std::optional<int> exit_status() const noexcept;

  /// One line describing why the launch failed, using passt's own message,
  /// e.g. "passt exited with status 1: unrecognized option '--fqdn'". Empty
  /// when the launch succeeded.
  std::string failure_message() const;

  /// One line describing how passt ended, once it has: "passt (pid 42) was
  /// killed by signal 9 (Killed)", "passt (pid 42) exited with status 1:
  /// <its last message>", or "passt (pid 42) exited" when the status is
  /// unknowable (a daemonized passt; our child when SIGCHLD is ignored, then
  /// followed by its last message). Empty while it runs.
  std::string exit_description() const;

  /// The private directory holding the pidfile (empty if none or removed).
  std::filesystem::path private_directory() const;

  /// Sends `sig` through the pidfd (pidfd_send_signal(2); never kill(2),
  /// never to a pid <= 1). Errors: `errc::not_running` when there is no
  /// process or it has exited (reaped or not); OS errors otherwise.
  void signal(int sig, std::error_code& ec) noexcept;

  /// Stops passt, blocking: SIGTERM, wait up to `grace` for it to exit,
  /// SIGKILL, wait until it is gone (at most 10 s more), reap it if it is
  /// our child, close the socket, remove the pidfile and the private
  /// directory. Idempotent; succeeds when passt already exited.
  /// Errors: `std::errc::timed_out` if passt survives SIGKILL for 10 s
  /// (stuck in the kernel); OS errors from pidfd_send_signal (e.g.
  /// `std::errc::operation_not_permitted` for a passt of another user),
  /// returned at once, without waiting: passt is left running, nothing is
  /// cleaned up.
  void terminate(std::chrono::milliseconds grace, std::error_code& ec) noexcept;
  /// Throwing form of `terminate`. @throws std::system_error
  void terminate(std::chrono::milliseconds grace = std::chrono::milliseconds(1000));

  /// Completes when passt has exited: the pidfd became readable. Reaps passt
  /// when it is our child. Completes at once (through the executor) when it
  /// already exited or there is no process (a failed launch).
  /// An empty handle (default-constructed, moved-from) has no executor to
  /// complete on: this overload then throws `std::system_error`
  /// (`errc::not_running`) before initiating anything; the overload taking
  /// an executor completes at once through it, with status -1.
  /// Completion signature: `void(std::error_code, int exit_status)`, the
  /// status as `exit_status()`, -1 when unknowable (daemonized passt).
  /// Cancellation (terminal, partial, total): `cancel()`, the token's
  /// cancellation slot, or destroying the handle complete it with
  /// `asio::error::operation_aborted`.
  template <asio::completion_token_for<void(std::error_code, int)> Token =
                asio::default_completion_token_t<asio::any_io_executor>>
  auto async_wait_exit(Token&& token = Token{});

  /// As above, waiting on `executor` instead of the process's own.
  template <class Executor, asio::completion_token_for<void(std::error_code, int)> Token>
  auto async_wait_exit(const Executor& executor, Token&& token);

  /// `terminate` without blocking: SIGTERM, a `steady_timer` of `grace`
  /// that sends SIGKILL if passt is still there, a pidfd wait for the exit,
  /// then reaping and cleanup as `terminate`. Idempotent; completes at once
  /// (through the executor) when passt already exited, and with the error
  /// when SIGTERM cannot be sent (as `terminate`: passt is left running).
  /// On an empty handle: as `async_wait_exit` (this overload throws
  /// `std::system_error` with `errc::not_running`; the one taking an
  /// executor completes at once through it, without error).
  /// Completion signature: `void(std::error_code)`. Cancellation as
  /// `async_wait_exit` (the SIGTERM already sent stays sent).
  template <asio::completion_token_for<void(std::error_code)> Token =
                asio::default_completion_token_t<asio::any_io_executor>>
  auto async_terminate(std::chrono::milliseconds grace, Token&& token = Token{});

  /// As above, waiting on `executor` instead of the process's own.
  template <class Executor, asio::completion_token_for<void(std::error_code)> Token>
  auto async_terminate(const Executor& executor, std::chrono::milliseconds grace, Token&& token);

  /// Cancels pending `async_wait_exit` and `async_terminate` operations: they
  /// complete with `asio::error::operation_aborted`. passt is not touched.
  void cancel() noexcept;

private:
  friend struct detail::process_access;
  explicit passt_process(std::shared_ptr<detail::process_state> state) noexcept : state_(std::move(state)) {}
  std::shared_ptr<detail::process_state> state_;
};

} // namespace netpasst

#include <netpasst/launcher/impl/process.hpp>
