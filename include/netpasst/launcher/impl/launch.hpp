#pragma once
// The launch operation shared by daemon.hpp and foreground.hpp; include
// one of those instead.

#include <netpasst/launcher/daemon.hpp>
#include <netpasst/launcher/process.hpp>
#include <netpasst/detail/spawn.hpp>

#include <asio/compose.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

namespace netpasst::detail {

/// The user passt will run as when we are root: `--runas`/`-U` if given, else
/// nobody (passt's own default). Returns false when no chown is needed.
inline bool passt_user(const std::vector<std::string>& argv, uid_t& uid, gid_t& gid) {
  if (::geteuid() != 0) return false;
  std::string spec = "nobody";
  for (std::size_t i = 1; i < argv.size(); ++i) {
    if ((argv[i] == "--runas" || argv[i] == "-U") && i + 1 < argv.size()) spec = argv[i + 1];
    else if (argv[i].starts_with("--runas=")) spec = argv[i].substr(8);
  }
  const auto colon = spec.find(':');
  const std::string user = spec.substr(0, colon), group = colon == std::string::npos ? "" : spec.substr(colon + 1);
  char buffer[4096];
  auto numeric = [](const std::string& s, unsigned& out) {
    char* end = nullptr;
    out = unsigned(std::strtoul(s.c_str(), &end, 10));
    return !s.empty() && end && *end == '\0';
  };
  unsigned u = 0, g = 0;
  passwd pw{}, *pwr = nullptr;
  if (numeric(user, u)) g = u;
  else if (::getpwnam_r(user.c_str(), &pw, buffer, sizeof buffer, &pwr) == 0 && pwr) u = pwr->pw_uid, g = pwr->pw_gid;
  else return false;
  if (!group.empty() && !numeric(group, g)) {
    ::group gr{}, *grr = nullptr;
    if (::getgrnam_r(group.c_str(), &gr, buffer, sizeof buffer, &grr) != 0 || !grr) return false;
    g = grr->gr_gid;
  }
  uid = u, gid = g;
  return u != 0;
}

/// Everything done before the wait: private directory, socketpair, spawn.
/// Returns the state; on error `ec` is set and the state is cleaned up and
/// carries the failure message.
inline std::shared_ptr<process_state> start_passt(const std::vector<std::string>& argv, const launcher_config& config,
                                                  launch_mode mode, std::error_code& ec) {
  ec.clear();
  auto state = std::make_shared<process_state>();
  state->output_limit = config.error_output_limit;
  auto fail = [&](std::error_code e, std::string message) {
    ec = e;
    state->failure = std::move(message);
    state->cleanup();
    return state;
  };
  if (argv.empty()) return fail(errc::passt_not_found, "empty argv: no passt binary named");
  state->argv0 = argv[0];

  uid_t uid = 0;
  gid_t gid = 0;
  const bool chown_needed = passt_user(argv, uid, gid);
  std::filesystem::path parent = config.runtime_directory;
  if (parent.empty()) {
    const char* xdg = std::getenv("XDG_RUNTIME_DIR");
    parent = xdg && *xdg ? xdg : "/tmp";
    struct stat st {};
    // passt drops to another user: it must be able to reach the directory.
    if (chown_needed && (::stat(parent.c_str(), &st) != 0 || !(st.st_mode & S_IXOTH))) parent = "/tmp";
  }
  std::string dir = (parent / "netpasst-XXXXXX").string();
  if (!::mkdtemp(dir.data())) return fail(last_os_error(), "cannot create a private directory in " + parent.string());
  state->directory = dir;
  if (chown_needed && ::chown(dir.c_str(), uid, gid) != 0)
    return fail(last_os_error(), "cannot hand " + dir + " to the user passt runs as");
  state->pidfile = state->directory / "passt.pid";

  int pair[2];
  if (NETPASST_SPAWN_SYSCALL(socketpair)(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0)
    return fail(last_os_error(), "socketpair failed");
  state->socket.reset(pair[0]);
  unique_fd theirs(pair[1]);
  if (const int size = config.socket_buffer_bytes; size > 0)
    for (int fd : pair)
      for (auto [forced, plain] : {std::pair{SO_SNDBUFFORCE, SO_SNDBUF}, std::pair{SO_RCVBUFFORCE, SO_RCVBUF}})
        if (::setsockopt(fd, SOL_SOCKET, forced, &size, sizeof size) != 0)
          ::setsockopt(fd, SOL_SOCKET, plain, &size, sizeof size);

  std::vector<std::string> full = argv;
  if (mode == launch_mode::foreground) full.push_back("--foreground");
  full.insert(full.end(), {"--pid", state->pidfile.string(), "--fd", "3"});
  std::string message;
  child_process child = spawn(full, spawn_options{.fd3 = theirs.get(), .separate_stdout = false}, ec, &message);
  if (ec) return fail(ec, message);
  state->pid = child.pid;
  state->pidfd = std::move(child.pidfd);
  state->child = true;
  state->err_fd = std::move(child.err);
  return state;
}

/// Reads a pid from `path`: decimal digits, optional surrounding whitespace.
/// Returns 0 when missing, empty or not a number (`text` gets the content).
inline pid_t read_pidfile(const std::filesystem::path& path, std::string& text) {
  text.clear();
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return 0;
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

/// Whether the live process `pid` is a passt: its comm (or, when readable,
/// its executable's name) starts with "passt" or with the name of the binary
/// we started (the first 15 characters, as comm keeps).
inline bool looks_like_passt(pid_t pid, const std::string& argv0) {
  const std::string proc = "/proc/" + std::to_string(pid);
  std::string comm;
  if (unique_fd fd(::open((proc + "/comm").c_str(), O_RDONLY | O_CLOEXEC)); fd) {
    char buffer[32];
    const ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n > 0) comm.assign(buffer, std::size_t(n));
    while (!comm.empty() && comm.back() == '\n') comm.pop_back();
  }
  const std::string own = std::filesystem::path(argv0).filename().string().substr(0, 15);
  auto matches = [&](const std::string& name) { return !name.empty() && (name.starts_with("passt") || (!own.empty() && name.starts_with(own))); };
  if (matches(comm)) return true;
  std::error_code ignored;
  return matches(std::filesystem::read_symlink(proc + "/exe", ignored).filename().string());
}

/// Daemon mode, after the parent passt exited with status 0: take the pid
/// from the pidfile, hold it by pidfd, check it again. On success the state
/// holds the daemon (not our child).
inline std::error_code adopt_daemon(process_state& s) {
  std::string text;
  const pid_t pid = read_pidfile(s.pidfile, text);
  if (pid <= 1) {
    s.failure = text.empty() ? "passt exited with status 0 but wrote no pidfile " + s.pidfile.string()
                             : "passt's pidfile holds '" + text.substr(0, text.find('\n')) + "', not a pid above 1";
    return errc::bad_pidfile;
  }
  unique_fd pidfd(pidfd_open(pid));
  if (!pidfd) {
    s.failure = "the pid passt wrote (" + std::to_string(pid) + ") names no running process";
    return errc::process_gone;
  }
  // Now that the process is pinned by the pidfd, make sure it is the one.
  std::string again;
  if (read_pidfile(s.pidfile, again) != pid || !looks_like_passt(pid, s.argv0) || pidfd_exited(pidfd.get(), 0)) {
    s.failure = "the pid passt wrote (" + std::to_string(pid) + ") is not a running passt";
    return errc::process_gone;
  }
  s.pid = pid;
  s.pidfd = std::move(pidfd);
  s.child = false;
  s.gone = false;
  s.status.reset();
  return {};
}

/// What a timeout, exit or other failure leaves: no process (our child is
/// killed and reaped), no socket, no files; passt's output and the message.
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
/// polled with a timer), under the deadline.
template <class Executor> struct launch_op {
  std::vector<std::string> argv;
  launcher_config config;
  launch_mode mode;
  Executor executor;
  std::shared_ptr<process_state> state;
  std::shared_ptr<asio::posix::stream_descriptor> watch;
  std::shared_ptr<asio::steady_timer> timer;     // daemon: the deadline; foreground: the poll tick
  std::shared_ptr<bool> timed_out = std::make_shared<bool>(false);
  std::chrono::steady_clock::time_point deadline{};
  std::chrono::milliseconds tick{1};
  int step = 0;
  std::error_code immediate;

  launch_op(std::vector<std::string> a, const launcher_config& c, launch_mode m, const Executor& e)
      : argv(std::move(a)), config(c), mode(m), executor(e) {}

  template <class Self> void operator()(Self& self, std::error_code ec = {}) {
    switch (step) {
      case 0: {
        step = 1;
        deadline = std::chrono::steady_clock::now() + config.start_timeout;
        state = start_passt(argv, config, mode, immediate);
        if (!immediate) {
          state->start_drain(executor);
          if (mode == launch_mode::daemon) {
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
          fail_launch(*state, "");
        }
        step = 2;
        return asio::post(executor, std::move(self));
      }
      case 1:
        return mode == launch_mode::daemon ? on_parent_exit(self, ec) : on_tick(self, ec);
      default:
        return finish(self, immediate);
    }
  }

  template <class Self> void on_parent_exit(Self& self, std::error_code ec) {
    timer->cancel();
    watch->close();
    if (*timed_out) return fail(self, errc::start_timeout, timeout_message());
    if (ec) return fail(self, ec, "launch cancelled");
    state->check_exited();
    if (state->signal) return fail(self, errc::passt_killed, "");
    if (state->status.value_or(-1) != 0) return fail(self, errc::passt_exited, "");
    if (const auto e = adopt_daemon(*state)) return fail(self, e, state->failure);
    finish(self, {});
  }

  template <class Self> void on_tick(Self& self, std::error_code ec) {
    if (ec) return fail(self, ec, "launch cancelled");
    std::string text;
    if (read_pidfile(state->pidfile, text) == state->pid && !state->check_exited()) return finish(self, {});
    if (state->check_exited())
      return fail(self, state->signal ? errc::passt_killed : errc::passt_exited, "");
    if (std::chrono::steady_clock::now() >= deadline) return fail(self, errc::start_timeout, timeout_message());
    tick = std::min(tick * 2, std::chrono::milliseconds(20));
    timer->expires_after(tick);
    timer->async_wait(std::move(self));
  }

  std::string timeout_message() const {
    return std::string(mode == launch_mode::daemon ? "passt did not daemonize" : "passt did not write its pidfile") +
           " within " + std::to_string(config.start_timeout.count()) + " ms";
  }

  template <class Self> void fail(Self& self, std::error_code ec, const std::string& message) {
    fail_launch(*state, message);
    finish(self, ec);
  }

  template <class Self> void finish(Self& self, std::error_code ec) {
    timer.reset();
    watch.reset();
    auto s = std::move(state);
    self.complete(ec, passt_process(std::move(s)));
  }
};

/// Starts the launch on `executor`.
template <class Executor, class Token>
auto async_launch(const Executor& executor, const std::vector<std::string>& argv, const launcher_config& config,
                  launch_mode mode, Token&& token) {
  return asio::async_compose<Token, void(std::error_code, passt_process)>(
      launch_op<Executor>{argv, config, mode, executor}, token, executor);
}

/// The blocking launch: runs the asynchronous one on a private io_context,
/// then moves the stderr drain to `executor`.
template <class Executor>
passt_process launch(const Executor& executor, const std::vector<std::string>& argv, const launcher_config& config,
                     launch_mode mode, std::error_code& ec) {
  passt_process result;
  {
    asio::io_context context;
    async_launch(context.get_executor(), argv, config, mode, [&](std::error_code e, passt_process p) {
      ec = e;
      result = std::move(p);
      // The stderr reader would keep `context` running while passt lives.
      if (const auto& s = process_access::state(result)) s->stop_drain();
    });
    context.run();
  }
  if (const auto& s = process_access::state(result); s && !ec) s->start_drain(executor);
  return result;
}

} // namespace netpasst::detail
