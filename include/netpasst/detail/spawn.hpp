#pragma once
/// @file detail/spawn.hpp
/// Private process primitives shared by the launchers and the options probe:
/// binary lookup on PATH, a spawn that hands the child exactly fds 0-3, pidfd
/// helpers, reaping, and `run_and_capture` (run a short command to completion).
///
/// Every descriptor created here is close-on-exec. The child runs only
/// async-signal-safe code between fork and exec; everything it needs (paths,
/// argv pointers) is prepared before the fork.

#include <netpasst/error.hpp>
#include <netpasst/unique_fd.hpp>

#include <fcntl.h>
#include <sched.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

/// Test seam: how the spawn code names the system calls that can fail for
/// reasons outside the caller's control (`pipe2`, `open`, `fork`). A test may
/// define it before including any netpasst header to make them fail, as
/// {fmt} does with FMT_SYSTEM.
#ifndef NETPASST_SPAWN_SYSCALL
#define NETPASST_SPAWN_SYSCALL(name) ::name
#endif

extern char** environ;

namespace netpasst::detail {

inline std::error_code last_os_error() { return {errno, std::system_category()}; }

/// pidfd_open(2): a close-on-exec descriptor that refers to process `pid`.
/// Returns -1 and sets errno on failure (ESRCH: no such process).
inline int pidfd_open(pid_t pid) noexcept { return int(::syscall(SYS_pidfd_open, pid, 0u)); }

/// pidfd_send_signal(2): signals the process `pidfd` refers to, never a
/// recycled pid. Returns -1 and sets errno on failure (ESRCH: already exited).
inline int pidfd_send_signal(int pidfd, int sig) noexcept {
  return int(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0u));
}

/// True when the process `pidfd` refers to has exited (its pidfd is readable).
inline bool pidfd_exited(int pidfd, int timeout_ms = 0) noexcept {
  pollfd p{pidfd, POLLIN, 0};
  int n;
  while ((n = ::poll(&p, 1, timeout_ms)) < 0 && errno == EINTR) {}
  return n > 0;
}

/// now() + `d`, saturating at the clock's limits (`milliseconds::max()`
/// means no limit); a negative `d` is now().
inline std::chrono::steady_clock::time_point deadline_after(std::chrono::milliseconds d) noexcept {
  using clock = std::chrono::steady_clock;
  const auto now = clock::now();
  const auto room = std::chrono::duration_cast<std::chrono::milliseconds>(clock::time_point::max() - now);
  return d <= d.zero() ? now : d >= room ? clock::time_point::max() : now + d;
}

/// Exit status of a `waitpid` status word: the exit code, or 128 + signal
/// number when the process was killed (the shell's convention).
inline int decode_wait_status(int status) noexcept {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

/// Reaps our child `pid`: waits for it when `block`, else only when it has
/// already exited. Returns its decoded status, or nothing when it is still
/// running (non-blocking) or not our child (already reaped elsewhere).
inline std::optional<int> reap_child(pid_t pid, bool block) noexcept {
  if (pid <= 1) return std::nullopt;
  int status = 0;
  pid_t r;
  while ((r = ::waitpid(pid, &status, block ? 0 : WNOHANG)) < 0 && errno == EINTR) {}
  if (r != pid) return std::nullopt;
  return decode_wait_status(status);
}

/// Why `name` cannot be executed, in a few words ("no such file", "is a
/// directory", "not executable: permission denied"...); empty when it can.
inline std::string unusable_reason(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    return errno == ENOENT ? "no such file" : std::system_category().message(errno);
  if (S_ISDIR(st.st_mode)) return "is a directory";
  if (!S_ISREG(st.st_mode)) return "not a regular file";
  if (::access(path.c_str(), X_OK) != 0) return "not executable: " + std::system_category().message(errno);
  return {};
}

/// Resolves `name` like execvp: used as is when it holds a '/', otherwise
/// searched in $PATH (default "/usr/local/bin:/usr/bin:/bin"). Returns the
/// first regular executable file, or an empty string with
/// `errc::passt_not_found` in `ec` and, in `why` when given, a one-line
/// reason naming the file or the directories searched.
inline std::string resolve_binary(const std::string& name, std::error_code& ec, std::string* why = nullptr) {
  ec.clear();
  auto refuse = [&](std::string reason) {
    if (why) *why = std::move(reason);
    ec = errc::passt_not_found;
    return std::string{};
  };
  if (name.empty()) return refuse("no passt binary named (empty path)");
  if (name.find('/') != std::string::npos) {
    if (std::string reason = unusable_reason(name); !reason.empty()) return refuse("cannot execute '" + name + "': " + reason);
    return name;
  }
  const char* env = std::getenv("PATH");
  std::string_view path = env && *env ? env : "/usr/local/bin:/usr/bin:/bin";
  const std::string searched(path);
  std::string first_reason;
  while (true) {
    const auto colon = path.find(':');
    std::string dir(path.substr(0, colon));
    std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + name;
    std::string reason = unusable_reason(candidate);
    if (reason.empty()) return candidate;
    if (first_reason.empty() && reason != "no such file") first_reason = "'" + candidate + "': " + reason;
    if (colon == std::string_view::npos) break;
    path.remove_prefix(colon + 1);
  }
  return refuse("cannot execute '" + name + "': " +
                (first_reason.empty() ? "not found in PATH (" + searched + ")" : first_reason));
}

/// How `spawn` wires the child.
struct spawn_options {
  /// Descriptor that becomes fd 3 in the child (it stays open here); -1: the
  /// child gets only fds 0-2.
  int fd3 = -1;
  /// true: stdout gets its own pipe (`child_process::out`); false: stdout
  /// goes to the stderr pipe, so `err` carries both.
  bool separate_stdout = true;
  /// true: the child leads a new process group (its pid is the group id), so
  /// whatever it starts before it is ready can be killed with it.
  bool new_process_group = false;
};

/// A spawned child. The pipes are the read ends (close-on-exec, blocking).
struct child_process {
  pid_t pid = 0;      ///< 0 when the spawn failed.
  unique_fd pidfd;    ///< Refers to the child; close-on-exec.
  unique_fd out;      ///< The child's stdout (empty unless `separate_stdout`).
  unique_fd err;      ///< The child's stderr (and stdout unless `separate_stdout`).
};

namespace spawn_impl {

/// The child between fork and exec: async-signal-safe calls only, no
/// allocation. Reports errno on `report` (close-on-exec) if exec fails.
[[noreturn]] inline void child(const char* path, char* const* argv, int fds[5], int report, int fd_limit,
                               bool new_group) noexcept {
  auto fail = [report]() {
    const int e = errno;
    [[maybe_unused]] auto n = ::write(report, &e, sizeof e);
    ::_exit(127);
  };
  // Lift every source descriptor above 3 so that the dup2 calls below cannot
  // clobber one another; the copies are close-on-exec and closed below.
  for (int i = 0; i < 4; ++i)
    if (fds[i] >= 0 && fds[i] < 4 && (fds[i] = ::fcntl(fds[i], F_DUPFD_CLOEXEC, 4)) < 0) fail();
  for (int i = 0; i < 4; ++i)
    if (fds[i] >= 0 && ::dup2(fds[i], i) < 0) fail();  // dup2 clears FD_CLOEXEC on the target
  // Close everything else but the report pipe (which closes itself at exec).
  const unsigned first = fds[3] >= 0 ? 4u : 3u;
  const unsigned r = unsigned(report);
  // The report pipe may sit right at `first` (fds 0-3 were free in the
  // parent): then there is nothing below it, and close_range(first, first - 1)
  // would fail with EINVAL.
  if ((r > first && ::syscall(SYS_close_range, first, r - 1, 0u) < 0) ||
      ::syscall(SYS_close_range, r + 1, ~0u, 0u) < 0) {
    if (errno != ENOSYS) fail();
    for (int fd = int(first); fd < fd_limit; ++fd)
      if (fd != report) ::close(fd);
  }
  // Default signal handling: an empty mask, no inherited SIG_IGN.
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig = 1; sig < NSIG; ++sig) {
    struct sigaction old {};
    if (sig != SIGKILL && sig != SIGSTOP && ::sigaction(sig, nullptr, &old) == 0 && old.sa_handler == SIG_IGN) {
      struct sigaction dfl {};
      dfl.sa_handler = SIG_DFL;
      ::sigaction(sig, &dfl, nullptr);
    }
  }
  if (new_group && ::setpgid(0, 0) != 0) fail();
  ::execve(path, argv, environ);
  fail();
  ::_exit(127);
}

/// clone3 with CLONE_PIDFD (the pidfd is born with the child, so no window
/// for pid reuse); falls back to fork + pidfd_open where clone3 is refused
/// (old kernels, container seccomp profiles). Like fork: returns 0 in the child.
inline pid_t fork_with_pidfd(int& pidfd) noexcept {
  pidfd = -1;
#ifdef SYS_clone3
  struct { std::uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls; } args{};
  args.flags = 0x00001000;  // CLONE_PIDFD
  args.pidfd = std::uint64_t(reinterpret_cast<std::uintptr_t>(&pidfd));
  args.exit_signal = SIGCHLD;
  const long r = ::syscall(SYS_clone3, &args, sizeof args);
  if (r >= 0) return pid_t(r);
  if (errno != ENOSYS && errno != EPERM) return -1;
#endif
  const pid_t pid = NETPASST_SPAWN_SYSCALL(fork)();
  if (pid > 0) pidfd = pidfd_open(pid);  // our unreaped child: the pid cannot be reused yet
  return pid;
}

inline bool make_pipe(unique_fd& read_end, unique_fd& write_end, std::error_code& ec) {
  int p[2];
  if (NETPASST_SPAWN_SYSCALL(pipe2)(p, O_CLOEXEC) < 0) return ec = last_os_error(), false;
  read_end.reset(p[0]);
  write_end.reset(p[1]);
  return true;
}

} // namespace spawn_impl

/// Starts `argv` (argv[0] resolved like `resolve_binary`) with stdin from
/// /dev/null, stdout/stderr to pipes, `options.fd3` as fd 3 and no other
/// descriptor. Returns once the child has exec'd (or failed to).
///
/// Errors: `errc::passt_not_found` when argv[0] cannot be found or executed
/// (missing, not executable, not a valid executable), OS errors otherwise
/// (pipe2, fork, pidfd_open). On error nothing is left: no child, no fd.
/// `message`, when given, receives a one-line description of a failure
/// naming the binary.
inline child_process spawn(const std::vector<std::string>& argv, const spawn_options& options,
                           std::error_code& ec, std::string* message = nullptr) {
  ec.clear();
  child_process result;
  if (argv.empty()) return ec = errc::passt_not_found, child_process{};
  const std::string path = resolve_binary(argv[0], ec, message);
  if (ec) return child_process{};
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);

  auto fail_step = [&](const char* step) {
    ec = last_os_error();
    if (message) *message = "cannot start '" + path + "': " + step + ": " + ec.message();
    return child_process{};
  };
  unique_fd devnull(NETPASST_SPAWN_SYSCALL(open)("/dev/null", O_RDWR | O_CLOEXEC));
  if (!devnull) return fail_step("open /dev/null");
  unique_fd out_r, out_w, err_r, err_w, report_r, report_w;
  if (!spawn_impl::make_pipe(err_r, err_w, ec) || !spawn_impl::make_pipe(report_r, report_w, ec))
    return fail_step("pipe2");
  if (options.separate_stdout && !spawn_impl::make_pipe(out_r, out_w, ec)) return fail_step("pipe2");
  rlimit limit{};
  const int fd_limit = ::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY
                           ? int(std::min<rlim_t>(limit.rlim_cur, 1 << 20)) : 1 << 16;

  int fds[5] = {devnull.get(), options.separate_stdout ? out_w.get() : err_w.get(), err_w.get(), options.fd3, -1};
  int pidfd = -1;
  const pid_t pid = spawn_impl::fork_with_pidfd(pidfd);
  if (pid == 0) spawn_impl::child(path.c_str(), args.data(), fds, report_w.get(), fd_limit, options.new_process_group);
  if (pid < 0) {
    ec = last_os_error();
    if (message) *message = "cannot start '" + path + "': fork: " + ec.message();
    return child_process{};
  }
  unique_fd child_pidfd(pidfd);
  report_w.reset();
  out_w.reset();
  err_w.reset();

  int child_errno = 0;
  ssize_t n;
  while ((n = ::read(report_r.get(), &child_errno, sizeof child_errno)) < 0 && errno == EINTR) {}
  if (n > 0 || !child_pidfd) {
    const int e = n > 0 ? child_errno : errno;
    if (!child_pidfd) ::kill(pid, SIGKILL);  // our unreaped child: pid cannot be recycled yet
    reap_child(pid, true);
    if (e == ENOENT || e == EACCES || e == ENOEXEC || e == ENOTDIR || e == ELOOP) {
      ec = errc::passt_not_found;
      if (message) *message = "cannot execute '" + path + "': " + std::system_category().message(e);
    } else {
      ec = {e, std::system_category()};
      if (message) *message = "cannot start '" + path + "': " + ec.message();
    }
    return child_process{};
  }
  result.pid = pid;
  result.pidfd = std::move(child_pidfd);
  result.out = std::move(out_r);
  result.err = std::move(err_r);
  return result;
}

/// What `run_and_capture` collected.
struct captured_run {
  int exit_status = -1; ///< Exit code, or 128 + signal when killed; -1 on error.
  std::string out;      ///< Everything written to stdout.
  std::string err;      ///< Everything written to stderr.
};

/// Runs `argv` to completion with no descriptor but 0-2 (stdin /dev/null)
/// and collects its output. Blocks the calling thread (no executor involved)
/// for at most about `deadline`.
///
/// Errors: `errc::passt_not_found` (argv[0] missing or not executable),
/// `errc::start_timeout` (still running at the deadline: it is killed and
/// reaped, the output so far is returned), OS errors. A non-zero exit is not
/// an error: read `exit_status`.
inline captured_run run_and_capture(const std::vector<std::string>& argv, std::chrono::milliseconds deadline,
                                    std::error_code& ec) {
  captured_run run;
  child_process child = spawn(argv, spawn_options{}, ec);
  if (ec) return run;
  const auto until = deadline_after(deadline);
  char buffer[4096];
  while (child.out || child.err) {
    pollfd p[2] = {{child.out ? child.out.get() : -1, POLLIN, 0}, {child.err ? child.err.get() : -1, POLLIN, 0}};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      ec = errc::start_timeout;
      break;
    }
    const int n = ::poll(p, 2, int(std::min<long long>(left.count() + 1, 1 << 30)));
    if (n < 0 && errno != EINTR) {
      ec = last_os_error();
      break;
    }
    for (int i = 0; i < 2 && n > 0; ++i) {
      if (!p[i].revents) continue;
      unique_fd& fd = i == 0 ? child.out : child.err;
      const ssize_t got = ::read(fd.get(), buffer, sizeof buffer);
      if (got > 0) (i == 0 ? run.out : run.err).append(buffer, std::size_t(got));
      else if (got == 0 || errno != EINTR) fd.reset();
    }
  }
  // Pipes closed (or deadline): wait for the exit itself, within the deadline.
  if (!ec) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (!pidfd_exited(child.pidfd.get(), int(std::clamp<long long>(left.count() + 1, 0, 1 << 30))))
      ec = errc::start_timeout;
  }
  if (ec) pidfd_send_signal(child.pidfd.get(), SIGKILL);
  const auto status = reap_child(child.pid, true);
  if (!ec) run.exit_status = status.value_or(-1);
  return run;
}

/// Throwing form of `run_and_capture`: `std::system_error` on error.
inline captured_run run_and_capture(const std::vector<std::string>& argv, std::chrono::milliseconds deadline) {
  std::error_code ec;
  captured_run run = run_and_capture(argv, deadline, ec);
  if (ec) throw std::system_error(ec, "running " + (argv.empty() ? std::string("(empty argv)") : argv[0]));
  return run;
}

} // namespace netpasst::detail
