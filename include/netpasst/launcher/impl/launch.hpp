#pragma once
// Implementation of netpasst/launcher/passt_launcher.hpp.

#include <netpasst/argv.hpp>
#include <netpasst/detail/spawn.hpp>
#include <netpasst/launcher/passt_launcher.hpp>
#include <netpasst/launcher/process.hpp>

#include <asio/compose.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>

#include <fcntl.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace netpasst::detail {

/// The user passt will run as when we are root: `--runas X` or `--runas=X`
/// (a user name or uid, optionally with ":group"; the argv builder writes
/// options in full long form), else nobody (passt's own default). Returns
/// false when it is root or cannot be resolved.
inline bool passt_user(const std::vector<std::string>& argv, uid_t& uid) {
  if (::geteuid() != 0) return false;
  std::string spec = "nobody";
  for (std::size_t i = 1; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a == "--runas" && i + 1 < argv.size()) spec = argv[++i];
    else if (a.starts_with("--runas=")) spec = a.substr(8);
  }
  const std::string user = spec.substr(0, spec.find(':'));
  char* end = nullptr;
  const unsigned long numeric = std::strtoul(user.c_str(), &end, 10);
  if (!user.empty() && end && *end == '\0') {
    uid = uid_t(numeric);
  } else {
    char buffer[4096];
    passwd pw{}, *found = nullptr;
    if (::getpwnam_r(user.c_str(), &pw, buffer, sizeof buffer, &found) != 0 || !found) return false;
    uid = found->pw_uid;
  }
  return uid != 0;
}

/// Field 22 of /proc/PID/stat (start time in clock ticks); empty if none.
inline std::string process_start_time(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return {};
  auto at = line.rfind(')');
  if (at == std::string::npos) return {};
  for (int field = 2; field < 22 && at != std::string::npos; ++field) at = line.find(' ', at + 1);
  if (at == std::string::npos) return {};
  return line.substr(at + 1, line.find(' ', at + 1) - at - 1);
}

/// "netpasst-<pid>.<start time>-": the prefix of this process's private
/// directories. The pid alone cannot prove a directory stale: an owner in
/// another PID namespace sharing the parent has a pid we cannot see, so each
/// owner also holds an exclusive flock(2) on its directory for as long as it
/// uses it (`create_private_directory`).
inline std::string private_directory_prefix(pid_t pid) {
  return "netpasst-" + std::to_string(pid) + "." + process_start_time(pid) + "-";
}

/// Removes the private directories in `parent` that are ours (same uid,
/// never through a symlink), whose named owner no longer runs here and that
/// no owner holds locked. The lock is held while removing, so an owner that
/// locks a directory afterwards finds it unlinked.
inline void remove_stale_private_directories(const std::filesystem::path& parent) {
  std::error_code ec;
  for (std::filesystem::directory_iterator it(parent, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!name.starts_with("netpasst-")) continue;
    const auto dot = name.find('.', 9), dash = name.find('-', 9);
    if (dot == std::string::npos || dash == std::string::npos || dot > dash) continue;
    char* end_of_pid = nullptr;
    const long pid = std::strtol(name.c_str() + 9, &end_of_pid, 10);
    if (end_of_pid != name.c_str() + dot || pid <= 0) continue;
    if (name.compare(0, dash + 1, private_directory_prefix(pid_t(pid))) == 0) continue;  // its owner still runs
    unique_fd directory(::open(it->path().c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
    struct stat st {};
    if (!directory || ::fstat(directory.get(), &st) != 0 || st.st_uid != ::geteuid()) continue;
    if (::flock(directory.get(), LOCK_EX | LOCK_NB) != 0) continue;  // an owner in another PID namespace
    std::error_code ignored;
    std::filesystem::remove_all(it->path(), ignored);
  }
}

/// Makes a private directory in `parent` and locks it (see
/// `private_directory_prefix`); `lock` keeps it locked until closed. A
/// sweeper that took the lock between mkdtemp and our flock is removing the
/// directory: then another is made.
inline std::string create_private_directory(const std::filesystem::path& parent, unique_fd& lock,
                                            std::error_code& ec) {
  for (int attempt = 0; attempt < 16; ++attempt) {
    std::string path = (parent / (private_directory_prefix(::getpid()) + "XXXXXX")).string();
    if (!::mkdtemp(path.data())) return ec = last_os_error(), std::string{};
    unique_fd directory(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!directory) return ec = last_os_error(), ::rmdir(path.c_str()), std::string{};
    struct stat st {};
    if (::flock(directory.get(), LOCK_EX | LOCK_NB) == 0 && ::fstat(directory.get(), &st) == 0 && st.st_nlink > 0) {
      lock = std::move(directory);
      return path;
    }
  }
  ec = std::make_error_code(std::errc::resource_unavailable_try_again);
  return {};
}

/// The inode of the socket `fd`, 0 on error.
inline ino_t socket_inode(int fd) {
  struct stat st {};
  return ::fstat(fd, &st) == 0 ? st.st_ino : 0;
}

/// True when process `pid`'s descriptor 3 is the socket with inode `inode`.
inline bool holds_socket(pid_t pid, ino_t inode) {
  std::error_code ec;
  const auto target = std::filesystem::read_symlink("/proc/" + std::to_string(pid) + "/fd/3", ec);
  return !ec && target.string() == "socket:[" + std::to_string(inode) + "]";
}

/// Everything done before the wait: private directory, socketpair, spawn.
/// Returns the state; on error `ec` is set and the state is cleaned up and
/// carries the failure message.
inline std::shared_ptr<process_state> start_passt(const asio::any_io_executor& executor,
                                                  const std::vector<std::string>& argv, const launcher_config& config,
                                                  bool foreground, ino_t& peer_inode, std::error_code& ec) {
  ec.clear();
  auto state = std::make_shared<process_state>();
  state->executor = executor;
  state->output_limit = config.error_output_limit;
  auto fail = [&](std::error_code e, std::string message) {
    ec = e;
    state->failure = std::move(message);
    state->cleanup();
    return state;
  };
  auto fail_os = [&](const std::string& step) {
    const auto e = last_os_error();
    return fail(e, step + ": " + e.message());
  };
  if (argv.empty()) return fail(errc::passt_not_found, "empty argv: no passt binary named");
  state->argv0 = argv[0];

  uid_t uid = 0;
  const bool other_user = passt_user(argv, uid);
  std::filesystem::path parent = config.runtime_directory;
  if (parent.empty()) {
    const char* xdg = std::getenv("XDG_RUNTIME_DIR");
    parent = xdg && *xdg ? xdg : "/tmp";
    struct stat st {};
    // passt drops to another user: it must be able to reach the directory.
    if (other_user && (::stat(parent.c_str(), &st) != 0 || !(st.st_mode & S_IXOTH))) parent = "/tmp";
  }
  remove_stale_private_directories(parent);
  const std::string dir = create_private_directory(parent, state->directory_lock, ec);
  if (ec) return fail(ec, "cannot create a private directory in " + parent.string() + ": " + ec.message());
  state->directory = dir;
  state->pidfile = state->directory / "passt.pid";
  if (other_user) {
    // Debian 12's passt opens its pidfile after dropping to `uid`; newer ones
    // open it earlier, still as uid 0 but without CAP_DAC_OVERRIDE: the
    // file's owner lets the first in, its group (ours) the second.
    unique_fd pidfile(::open(state->pidfile.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!pidfile) return fail_os("cannot create " + state->pidfile.string());
    if (::fchown(pidfile.get(), uid, ::getegid()) != 0 || ::fchmod(pidfile.get(), 0660) != 0)
      return fail_os("cannot hand " + state->pidfile.string() + " to uid " + std::to_string(uid));
    if (::chmod(dir.c_str(), 0711) != 0) return fail_os("chmod " + dir);
  }

  int pair[2];
  if (NETPASST_SPAWN_SYSCALL(socketpair)(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0)
    return fail_os("socketpair");
  state->socket.reset(pair[0]);
  unique_fd theirs(pair[1]);
  peer_inode = socket_inode(theirs.get());
  if (const int size = config.peer_socket_buffer_bytes; size > 0)
    for (auto [forced, plain] : {std::pair{SO_SNDBUFFORCE, SO_SNDBUF}, std::pair{SO_RCVBUFFORCE, SO_RCVBUF}})
      if (::setsockopt(theirs.get(), SOL_SOCKET, forced, &size, sizeof size) != 0)
        ::setsockopt(theirs.get(), SOL_SOCKET, plain, &size, sizeof size);

  std::vector<std::string> full = argv;
  append_launcher_arguments(full, state->pidfile.string(), 3, foreground);
  std::string message;
  child_process child =
      spawn(full, spawn_options{.fd3 = theirs.get(), .separate_stdout = false, .new_process_group = true}, ec,
            &message);
  if (ec) return fail(ec, message);
  state->pid = child.pid;
  state->pidfd = std::move(child.pidfd);
  state->child = true;
  state->group_leader = true;
  state->err_fd = std::move(child.err);
  return state;
}

/// Reads a pid from `path`: decimal digits, optional surrounding whitespace.
/// Returns 0 when missing, empty or not a number (`text` gets the content);
/// `open_error` gets errno when the file exists but cannot be opened.
inline pid_t read_pidfile(const std::filesystem::path& path, std::string& text, int& open_error) {
  text.clear();
  open_error = 0;
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (!fd) {
    if (errno != ENOENT) open_error = errno;
    return 0;
  }
  char buffer[64];
  const ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
  if (n <= 0) return 0;
  text.assign(buffer, std::size_t(n));
  const auto first = text.find_first_not_of(" \t\n"), last = text.find_last_not_of(" \t\n");
  if (first == std::string::npos) return 0;
  const std::string digits = text.substr(first, last - first + 1);
  if (digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) return 0;
  return pid_t(std::stol(digits));
}

inline pid_t read_pidfile(const std::filesystem::path& path, std::string& text) {
  int ignored = 0;
  return read_pidfile(path, text, ignored);
}

/// Quotes a short excerpt of untrusted text for a one-line message.
inline std::string quoted_excerpt(std::string_view text) {
  std::string out = "'";
  for (char c : text.substr(0, 32)) out += (c >= 0x20 && c < 0x7f && c != '\'') ? c : '?';
  return out + (text.size() > 32 ? "...'" : "'");
}

/// Daemon mode, after the parent passt exited with status 0 (or unknown): take the pid
/// from the pidfile, pin it by pidfd, prove it holds passt's end of our
/// socket. On success the state holds the daemon (not our child).
inline std::error_code adopt_daemon(process_state& s, ino_t peer_inode) {
  std::string text;
  int open_error = 0;
  const pid_t pid = read_pidfile(s.pidfile, text, open_error);
  if (pid <= 1) {
    s.failure = open_error ? "opening passt's pidfile " + s.pidfile.string() + ": " + std::strerror(open_error)
              : text.empty() ? "passt exited with status 0 but wrote no pidfile " + s.pidfile.string()
                             : "passt's pidfile holds " + quoted_excerpt(text) + ", not a pid above 1";
    return errc::bad_pidfile;
  }
  unique_fd pidfd(pidfd_open(pid));
  if (!pidfd) {
    s.failure = "the pid in passt's pidfile (" + std::to_string(pid) + ") names no running process";
    return errc::process_gone;
  }
  // Pinned: if it is still alive after the check, the check saw this process.
  if (!holds_socket(pid, peer_inode) || pidfd_exited(pidfd.get(), 0)) {
    s.failure = "the pid in passt's pidfile (" + std::to_string(pid) +
                ") is not the passt we started: it does not hold our socket";
    return errc::process_gone;
  }
  s.pid = pid;
  s.pidfd = std::move(pidfd);
  s.child = false;
  s.group_leader = false;
  s.gone = false;
  s.status.reset();
  s.signal = 0;
  return {};
}

/// What a timeout, exit, cancellation or other failure leaves: no process
/// (our child's group is killed and reaped), no socket, no files; passt's
/// output and the message.
inline void fail_launch(process_state& s, const std::string& message) {
  if (s.child) s.kill_now();
  s.drain_now();
  s.stop_drain();
  s.err_fd.reset();
  s.finish_output();
  if (s.failure.empty()) s.failure = message.empty() ? s.describe_exit() : message;
  s.pid = 0;
  s.pidfd.reset();
  s.gone = true;
  s.cleanup();
}

/// The asynchronous launch: waits for the daemonizing parent to exit (daemon
/// mode, pidfd wait) or for the pidfile to name our child (foreground mode,
/// polled with a timer), under the deadline and the cancellation slot.
template <class Executor> struct launch_op {
  std::vector<std::string> argv;
  launcher_config config;
  bool foreground;
  Executor executor;
  std::shared_ptr<process_state> state;
  std::shared_ptr<asio::posix::stream_descriptor> watch;
  std::shared_ptr<asio::steady_timer> timer;  // daemon: the deadline; foreground: the poll tick
  std::shared_ptr<bool> timed_out = std::make_shared<bool>(false);
  std::chrono::steady_clock::time_point deadline{};
  std::chrono::milliseconds tick{1};
  ino_t peer_inode = 0;
  int step = 0;
  std::error_code immediate;

  launch_op(std::vector<std::string> a, const launcher_config& c, bool f, const Executor& e)
      : argv(std::move(a)), config(c), foreground(f), executor(e) {}

  template <class Self> void operator()(Self& self, std::error_code ec = {}) {
    switch (step) {
      case 0:
        // Spawning starts passt's stderr reader on `executor`: the state it
        // shares is set up there, never in a thread that only initiated.
        step = 3;
        return asio::post(executor, std::move(self));
      case 3: {
        if (self.get_cancellation_state().cancelled() != asio::cancellation_type::none)
          return self.complete(asio::error::operation_aborted, passt_process{});
        step = 1;
        deadline = deadline_after(config.start_timeout);
        state = start_passt(asio::any_io_executor(executor), argv, config, foreground, peer_inode, immediate);
        if (!immediate) {
          state->start_drain(executor);
          if (!foreground) {
            watch = state->make_watch(executor, immediate);
            if (!immediate) {
              timer = std::make_shared<asio::steady_timer>(executor, deadline);
              timer->async_wait([w = std::weak_ptr(watch), flag = timed_out](std::error_code e) {
                if (auto d = w.lock(); d && !e) *flag = true, d->cancel();
              });
              return watch->async_wait(asio::posix::stream_descriptor::wait_read, std::move(self));
            }
          } else {
            timer = std::make_shared<asio::steady_timer>(executor, tick);
            return timer->async_wait(std::move(self));
          }
          fail_launch(*state, "watching passt: " + immediate.message());
        }
        step = 2;
        return asio::post(executor, std::move(self));
      }
      case 1:
        if (self.get_cancellation_state().cancelled() != asio::cancellation_type::none)
          return fail(self, asio::error::operation_aborted, "launch cancelled");
        return foreground ? on_tick(self, ec) : on_parent_exit(self, ec);
      default: return finish(self, immediate);
    }
  }

  template <class Self> void on_parent_exit(Self& self, std::error_code ec) {
    timer->cancel();
    watch->close();
    if (*timed_out) return fail(self, errc::start_timeout, timeout_message());
    if (ec) return fail(self, ec, "waiting for passt: " + ec.message());
    state->check_exited();
    if (state->signal) return fail(self, errc::passt_killed, "");
    if (state->status.value_or(0) != 0) return fail(self, errc::passt_exited, "");
    // An unknown status (SIGCHLD ignored: the kernel reaped it) may still be
    // a success: the pidfile and socket check decide.
    if (const auto e = adopt_daemon(*state, peer_inode)) {
      state->drain_now();
      if (!state->status && !state->passt_message().empty())
        return state->failure.clear(), fail(self, errc::passt_exited, "");
      return fail(self, e, state->failure);
    }
    finish(self, {});
  }

  template <class Self> void on_tick(Self& self, std::error_code ec) {
    if (ec) return fail(self, ec, "waiting for passt: " + ec.message());
    std::string text;
    int open_error = 0;
    if (read_pidfile(state->pidfile, text, open_error) == state->pid && !state->check_exited())
      return finish(self, {});
    if (open_error) {
      const std::error_code e(open_error, std::system_category());
      return fail(self, e, "opening passt's pidfile " + state->pidfile.string() + ": " + e.message());
    }
    if (state->check_exited()) return fail(self, state->signal ? errc::passt_killed : errc::passt_exited, "");
    if (std::chrono::steady_clock::now() >= deadline) return fail(self, errc::start_timeout, timeout_message());
    tick = std::min(tick * 2, std::chrono::milliseconds(20));
    timer->expires_after(tick);
    timer->async_wait(std::move(self));
  }

  std::string timeout_message() const {
    return std::string(foreground ? "passt did not write its pidfile" : "passt did not daemonize") + " within " +
           std::to_string(config.start_timeout.count()) + " ms";
  }

  template <class Self> void fail(Self& self, std::error_code ec, const std::string& message) {
    fail_launch(*state, message);
    finish(self, ec);
  }

  template <class Self> void finish(Self& self, std::error_code ec) {
    timer.reset();
    watch.reset();
    self.complete(ec, process_access::make(std::move(state)));
  }
};

/// Starts the launch on `executor`.
template <class Executor, class Token>
auto async_launch(const Executor& executor, const std::vector<std::string>& argv, const launcher_config& config,
                  bool foreground, Token&& token) {
  return asio::async_compose<Token, void(std::error_code, passt_process)>(
      launch_op<Executor>{argv, config, foreground, executor}, token, executor);
}

/// The blocking launch: runs the asynchronous one on a private io_context,
/// then moves the stderr drain to `executor`.
template <class Executor>
passt_process launch(const Executor& executor, const std::vector<std::string>& argv, const launcher_config& config,
                     bool foreground, std::error_code& ec) {
  passt_process result;
  {
    asio::io_context context;
    async_launch(context.get_executor(), argv, config, foreground, [&](std::error_code e, passt_process p) {
      ec = e;
      result = std::move(p);
      // The stderr reader would keep `context` running while passt lives.
      if (const auto& s = process_access::state(result)) s->stop_drain();
    });
    context.run();
  }
  if (const auto& s = process_access::state(result)) {
    s->executor = asio::any_io_executor(executor);
    if (!ec) s->start_drain(s->executor);
  }
  return result;
}

} // namespace netpasst::detail
