#pragma once
// Implementation of netpasst/launcher/process.hpp; include that header instead.

#include <netpasst/launcher/process.hpp>
#include <netpasst/detail/spawn.hpp>

#include <asio/compose.hpp>
#include <asio/error.hpp>
#include <asio/post.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/steady_timer.hpp>

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <string_view>
#include <vector>

namespace netpasst::detail {

inline int clamp_ms(std::chrono::milliseconds d) { return int(std::clamp<long long>(d.count(), 0, 1 << 30)); }

/// Everything a passt_process owns; shared with its pending operations.
struct process_state : std::enable_shared_from_this<process_state> {
  asio::any_io_executor executor;  // where waits complete and stderr is drained
  pid_t pid = 0;              // 0: no process
  unique_fd pidfd;
  bool child = false;         // pid is our child: we reap it
  bool group_leader = false;  // our child leads its own process group (a launch's wrapper and its children)
  bool gone = false;          // exited (and reaped when our child)
  std::optional<int> status;  // exit code or 128 + signal
  int signal = 0;             // the signal that killed it, if one did
  unique_fd socket;
  std::string argv0;
  std::string output, partial, failure;
  std::size_t output_limit = 64 * 1024;
  std::filesystem::path directory, pidfile;
  unique_fd directory_lock;   // flock on `directory` while it is ours
  unique_fd err_fd;           // stderr pipe while no reader drains it
  std::shared_ptr<asio::posix::stream_descriptor> reader;
  std::vector<std::weak_ptr<asio::posix::stream_descriptor>> watches;

  process_state() = default;
  process_state(const process_state&) = delete;
  process_state& operator=(const process_state&) = delete;

  ~process_state() {
    cancel();
    if (reader) reader->close();
    kill_now();
    cleanup();
  }

  // --- passt's stderr ---------------------------------------------------
  static bool is_noise(std::string_view line) {
    return line.starts_with("Failed to send ") && line.find(" bytes to syslog") != std::string_view::npos;
  }
  /// Appends a line, then drops the oldest whole lines beyond the limit.
  void keep(std::string_view line) {
    if (is_noise(line) || output_limit == 0) return;
    if (line.size() > output_limit) line = line.substr(line.size() - output_limit);
    output.append(line);
    if (output.size() <= output_limit) return;
    std::size_t cut = output.size() - output_limit;
    if (const auto nl = output.find('\n', cut - 1); nl != std::string::npos && nl + 1 < output.size()) cut = nl + 1;
    output.erase(0, cut);
  }
  void consume(const char* data, std::size_t n) {
    partial.append(data, n);
    std::size_t start = 0, nl;
    while ((nl = partial.find('\n', start)) != std::string::npos) {
      keep(std::string_view(partial).substr(start, nl + 1 - start));
      start = nl + 1;
    }
    partial.erase(0, start);
    if (partial.size() > 4096) keep(partial), partial.clear();
  }
  void finish_output() { keep(partial), partial.clear(); }
  int output_fd() const { return reader ? reader->native_handle() : err_fd.get(); }
  /// Reads what the pipe holds now, without blocking.
  void drain_now() {
    char buffer[4096];
    while (output_fd() >= 0 && pidfd_exited(output_fd(), 0)) {  // poll(POLLIN): readable or EOF
      const ssize_t n = ::read(output_fd(), buffer, sizeof buffer);
      if (n > 0) { consume(buffer, std::size_t(n)); continue; }
      if (n < 0 && (errno == EINTR)) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      stop_drain(), err_fd.reset(), finish_output();  // EOF or error
      break;
    }
  }
  // The reader waits for readiness and reads in its handler, never with
  // async_read_some: a read that completed but whose handler had not run
  // when the exit was handled (and the pipe taken back) would lose passt's
  // last lines, the ones that say why it failed.
  static void wait_output(const std::weak_ptr<process_state>& owner, std::shared_ptr<asio::posix::stream_descriptor> r) {
    auto& d = *r;
    d.async_wait(asio::posix::stream_descriptor::wait_read, [owner, r = std::move(r)](std::error_code ec) mutable {
      auto self = owner.lock();
      if (!self || self->reader != r) return;  // gone, or the pipe moved to another reader
      if (ec) return self->finish_output(), self->reader->close(), void(self->reader.reset());
      self->drain_now();
      if (self->reader == r) wait_output(owner, std::move(r));
    });
  }
  /// Drains the stderr pipe on `executor` until EOF.
  void start_drain(const asio::any_io_executor& executor) {
    if (!err_fd) return;
    reader = std::make_shared<asio::posix::stream_descriptor>(executor, err_fd.release());
    wait_output(weak_from_this(), reader);
  }
  /// Takes the pipe back from the reader (its pending wait is aborted).
  void stop_drain() {
    if (!reader) return;
    err_fd.reset(reader->release());
    reader.reset();
  }

  // --- the process -------------------------------------------------------
  /// True when there is no process or it exited; reaps our child then.
  bool check_exited() {
    if (gone || pid <= 1 || !pidfd) return true;
    if (!pidfd_exited(pidfd.get(), 0)) return false;
    gone = true;
    if (child) {
      siginfo_t info{};
      int r;
      while ((r = ::waitid(idtype_t(3) /* P_PIDFD */, id_t(pidfd.get()), &info, WEXITED)) < 0 && errno == EINTR) {}
      if (r < 0 && errno == EINVAL) {  // kernels before 5.4
        int raw = 0;
        if (::waitpid(pid, &raw, 0) == pid) {
          status = decode_wait_status(raw);
          signal = WIFSIGNALED(raw) ? WTERMSIG(raw) : 0;
        }
      } else if (r == 0) {
        const bool killed = info.si_code == CLD_KILLED || info.si_code == CLD_DUMPED;
        signal = killed ? info.si_status : 0;
        status = killed ? 128 + info.si_status : info.si_status;
      }
    }
    return true;
  }
  /// SIGKILL (our child only, or a validated passt) and wait for it, bounded.
  /// Our child's process group goes too while the child is unreaped (its
  /// pid, hence the group id, cannot have been reused): a wrapper script's
  /// own children are not left behind.
  void kill_now() {
    if (child && group_leader && pid > 1 && !gone) ::kill(-pid, SIGKILL);
    if (check_exited()) return;
    if (pidfd_send_signal(pidfd.get(), SIGKILL) == 0 || errno == ESRCH) pidfd_exited(pidfd.get(), 10000);
    check_exited();
  }
  /// Closes the socket, removes the pidfile and private directory.
  void cleanup() {
    socket.reset();
    std::error_code ignored;
    if (!pidfile.empty()) std::filesystem::remove(pidfile, ignored), pidfile.clear();
    if (!directory.empty()) std::filesystem::remove_all(directory, ignored), directory.clear();
    directory_lock.reset();
  }
  /// A fresh descriptor on a dup of the pidfd: each wait registers anew, so an
  /// exit that happened before is reported at once.
  std::shared_ptr<asio::posix::stream_descriptor> make_watch(const asio::any_io_executor& executor,
                                                             std::error_code& ec) {
    const int fd = ::fcntl(pidfd.get(), F_DUPFD_CLOEXEC, 3);
    if (fd < 0) return ec = last_os_error(), nullptr;
    auto watch = std::make_shared<asio::posix::stream_descriptor>(executor, fd);
    std::erase_if(watches, [](const auto& w) { return w.expired(); });
    watches.push_back(watch);
    return watch;
  }
  void cancel() noexcept {
    for (auto& w : watches)
      if (auto d = w.lock()) {
        std::error_code ignored;
        d->cancel(ignored);
      }
  }
  int status_or_unknown() const { return status.value_or(-1); }

  /// The line of passt's stderr that says what went wrong: the one before
  /// the usage text if there is one, else the last non-empty line; without
  /// the "argv0: " prefix getopt adds.
  std::string passt_message() const {
    std::vector<std::string_view> lines;
    std::string_view all = output;
    while (!all.empty()) {
      const auto nl = all.find('\n');
      auto line = all.substr(0, nl);
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
      if (line.starts_with("Usage:")) break;
      if (!line.empty()) lines.push_back(line);
      all.remove_prefix(nl == std::string_view::npos ? all.size() : nl + 1);
    }
    if (lines.empty()) return {};
    std::string_view line = lines.back();
    if (!argv0.empty() && line.starts_with(argv0 + ": ")) line.remove_prefix(argv0.size() + 2);
    return std::string(line);
  }
  /// "passt exited with status 1: <passt's message>", "passt was killed by
  /// signal 9 (Killed)", or "passt exited" when the status is unknowable
  /// (with passt's message when it was our child: SIGCHLD ignored); with
  /// " (pid N)" after "passt" when `with_pid`.
  std::string describe_exit(bool with_pid = false) const {
    std::string text = with_pid && pid > 0 ? "passt (pid " + std::to_string(pid) + ")" : "passt";
    if (signal) text += " was killed by signal " + std::to_string(signal) + " (" + ::strsignal(signal) + ")";
    else if (status) text += " exited with status " + std::to_string(*status);
    else text += " exited";
    // Its last words explain an exit status, not a signal someone sent it.
    if (auto m = passt_message(); !m.empty() && !signal && (status ? *status != 0 : child)) text += ": " + m;
    return text;
  }
};

/// Grants launchers access to a passt_process's state.
struct process_access {
  static const std::shared_ptr<process_state>& state(const passt_process& p) noexcept { return p.state_; }
  static passt_process make(std::shared_ptr<process_state> s) noexcept { return passt_process(std::move(s)); }
};

/// The pid a pidfd refers to, from /proc/self/fdinfo; 0 when it is not a
/// pidfd, -1 when the process has exited (and been reaped).
inline pid_t pid_of_pidfd(int pidfd) {
  unique_fd info(::open(("/proc/self/fdinfo/" + std::to_string(pidfd)).c_str(), O_RDONLY | O_CLOEXEC));
  if (!info) return 0;
  char buffer[1024];
  const ssize_t n = ::read(info.get(), buffer, sizeof buffer - 1);
  if (n <= 0) return 0;
  buffer[n] = '\0';
  const char* line = ::strstr(buffer, "\nPid:");
  if (!line) return 0;
  return pid_t(std::strtol(line + 5, nullptr, 10));
}

template <class Executor> struct wait_exit_op {
  std::shared_ptr<process_state> state;
  Executor executor;
  std::shared_ptr<asio::posix::stream_descriptor> watch;
  bool started = false;
  std::error_code immediate;

  wait_exit_op(std::shared_ptr<process_state> s, const Executor& e) : state(std::move(s)), executor(e) {}

  template <class Self> void operator()(Self& self, std::error_code ec = {}) {
    if (!started) {
      started = true;
      self.reset_cancellation_state(asio::enable_total_cancellation());
      if (state && !state->check_exited()) watch = state->make_watch(executor, ec);
      if (watch) return watch->async_wait(asio::posix::stream_descriptor::wait_read, std::move(self));
      immediate = ec;
      return asio::post(executor, std::move(self));  // never complete inside the initiating call
    }
    if (watch) watch->close(), watch.reset();
    if (!ec) ec = immediate;
    if (ec) return self.complete(ec, -1);
    if (state) state->check_exited();
    self.complete(std::error_code{}, state ? state->status_or_unknown() : -1);
  }
};

template <class Executor> struct terminate_op {
  std::shared_ptr<process_state> state;
  Executor executor;
  std::chrono::milliseconds grace;
  std::shared_ptr<asio::posix::stream_descriptor> watch;
  std::shared_ptr<asio::steady_timer> kill_timer;
  bool started = false;
  std::error_code immediate;

  terminate_op(std::shared_ptr<process_state> s, const Executor& e, std::chrono::milliseconds g)
      : state(std::move(s)), executor(e), grace(g) {}

  template <class Self> void operator()(Self& self, std::error_code ec = {}) {
    if (!started) {
      started = true;
      self.reset_cancellation_state(asio::enable_total_cancellation());
      if (state && !state->check_exited()) {
        if (pidfd_send_signal(state->pidfd.get(), SIGTERM) == 0) {
          kill_timer = std::make_shared<asio::steady_timer>(executor, grace);
          kill_timer->async_wait([owner = std::weak_ptr<process_state>(state)](std::error_code e) {
            if (auto s = owner.lock(); s && !e && !s->check_exited()) pidfd_send_signal(s->pidfd.get(), SIGKILL);
          });
        } else if (errno != ESRCH) {
          ec = last_os_error();
        }
        if (!ec) watch = state->make_watch(executor, ec);
      }
      if (watch) return watch->async_wait(asio::posix::stream_descriptor::wait_read, std::move(self));
      immediate = ec;
      return asio::post(executor, std::move(self));
    }
    if (kill_timer) kill_timer->cancel();
    if (watch) watch->close(), watch.reset();
    if (!ec) ec = immediate;
    if (!ec && state) state->check_exited(), state->cleanup();
    self.complete(ec);
  }
};

} // namespace netpasst::detail

namespace netpasst {

inline passt_process& passt_process::operator=(passt_process&& other) noexcept {
  if (this != &other) {
    if (state_) {
      std::error_code ignored;
      terminate(std::chrono::milliseconds(500), ignored);
      state_->cancel();
    }
    state_ = std::move(other.state_);
  }
  return *this;
}

inline passt_process::~passt_process() {
  if (!state_) return;
  std::error_code ignored;
  terminate(std::chrono::milliseconds(500), ignored);
  state_->cancel();
}

inline passt_process passt_process::adopt(adopted_passt what, std::error_code& ec) {
  ec.clear();
  if (!what.executor) return ec = std::make_error_code(std::errc::invalid_argument), passt_process{};
  if (!what.pidfd || !what.socket) return ec = std::make_error_code(std::errc::bad_file_descriptor), passt_process{};
  const pid_t pid = detail::pid_of_pidfd(what.pidfd.get());
  if (pid == 0) return ec = std::make_error_code(std::errc::bad_file_descriptor), passt_process{};
  if (pid < 0 || detail::pidfd_exited(what.pidfd.get(), 0)) return ec = errc::process_gone, passt_process{};
  auto s = std::make_shared<detail::process_state>();
  s->executor = what.executor;
  s->pid = pid;
  s->pidfd = std::move(what.pidfd);
  s->socket = std::move(what.socket);
  s->child = what.is_child;
  s->directory = std::move(what.private_directory);
  s->err_fd = std::move(what.error_output);
  if (s->err_fd) s->start_drain(s->executor);
  return passt_process(std::move(s));
}

inline passt_process passt_process::adopt(adopted_passt what) {
  std::error_code ec;
  passt_process p = adopt(std::move(what), ec);
  if (ec) throw std::system_error(ec, "netpasst: adopting passt");
  return p;
}

inline asio::any_io_executor passt_process::get_executor() const noexcept {
  return state_ ? state_->executor : asio::any_io_executor{};
}

inline std::string passt_process::exit_description() const {
  if (!state_ || !state_->check_exited()) return {};
  state_->drain_now();
  return state_->describe_exit(true);
}

inline pid_t passt_process::pid() const noexcept { return state_ ? state_->pid : 0; }
inline int passt_process::pidfd() const noexcept { return state_ ? state_->pidfd.get() : -1; }
inline bool passt_process::running() const noexcept {
  return state_ && !state_->gone && state_->pid > 1 && state_->pidfd && !detail::pidfd_exited(state_->pidfd.get(), 0);
}
inline unique_fd passt_process::take_socket() noexcept { return state_ ? std::move(state_->socket) : unique_fd{}; }
inline const std::string& passt_process::error_output() const noexcept {
  static const std::string none;
  return state_ ? state_->output : none;
}
inline std::optional<int> passt_process::exit_status() const noexcept {
  return state_ ? state_->status : std::nullopt;
}
inline std::string passt_process::failure_message() const { return state_ ? state_->failure : std::string{}; }
inline std::filesystem::path passt_process::private_directory() const {
  return state_ ? state_->directory : std::filesystem::path{};
}

inline void passt_process::signal(int sig, std::error_code& ec) noexcept {
  ec.clear();
  if (!state_ || state_->pid <= 1 || !state_->pidfd || state_->gone || detail::pidfd_exited(state_->pidfd.get(), 0))
    return void(ec = errc::not_running);  // an unreaped zombie would still take the signal
  if (detail::pidfd_send_signal(state_->pidfd.get(), sig) < 0)
    ec = errno == ESRCH ? std::error_code(errc::not_running) : detail::last_os_error();
}

inline void passt_process::terminate(std::chrono::milliseconds grace, std::error_code& ec) noexcept {
  ec.clear();
  if (!state_) return;
  auto& s = *state_;
  if (!s.check_exited()) {
    if (detail::pidfd_send_signal(s.pidfd.get(), SIGTERM) < 0 && errno != ESRCH)
      return void(ec = detail::last_os_error());
    if (!detail::pidfd_exited(s.pidfd.get(), detail::clamp_ms(grace))) {
      if (detail::pidfd_send_signal(s.pidfd.get(), SIGKILL) < 0 && errno != ESRCH)
        return void(ec = detail::last_os_error());
      if (!detail::pidfd_exited(s.pidfd.get(), 10000)) return void(ec = std::make_error_code(std::errc::timed_out));
    }
    s.check_exited();
  }
  s.drain_now();
  s.cleanup();
}

inline void passt_process::terminate(std::chrono::milliseconds grace) {
  std::error_code ec;
  terminate(grace, ec);
  if (ec) throw std::system_error(ec, "terminating passt");
}

inline void passt_process::cancel() noexcept {
  if (state_) state_->cancel();
}

template <asio::completion_token_for<void(std::error_code, int)> Token>
auto passt_process::async_wait_exit(Token&& token) {
  if (!state_) throw std::system_error(errc::not_running, "netpasst: async_wait_exit on an empty passt_process");
  return async_wait_exit(state_->executor, std::forward<Token>(token));
}

template <asio::completion_token_for<void(std::error_code)> Token>
auto passt_process::async_terminate(std::chrono::milliseconds grace, Token&& token) {
  if (!state_) throw std::system_error(errc::not_running, "netpasst: async_terminate on an empty passt_process");
  return async_terminate(state_->executor, grace, std::forward<Token>(token));
}

template <class Executor, asio::completion_token_for<void(std::error_code, int)> Token>
auto passt_process::async_wait_exit(const Executor& executor, Token&& token) {
  return asio::async_compose<Token, void(std::error_code, int)>(
      detail::wait_exit_op<Executor>{state_, executor}, token, executor);
}

template <class Executor, asio::completion_token_for<void(std::error_code)> Token>
auto passt_process::async_terminate(const Executor& executor, std::chrono::milliseconds grace, Token&& token) {
  return asio::async_compose<Token, void(std::error_code)>(
      detail::terminate_op<Executor>{state_, executor, grace}, token, executor);
}

} // namespace netpasst
