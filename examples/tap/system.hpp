#pragma once
// netpasst_tap's dealings with the system outside netpasst: running `ip`,
// the named network namespace it may create, and the namespace's resolv.conf.
// Each resource is held by an object that undoes exactly what it did.

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

extern char** environ;

namespace tap_example {

/// What a command did: its exit status (128 + signal if killed) and output.
struct command_result {
  int status = -1;
  std::string output; ///< stdout and stderr, interleaved.
};

/// Runs `argv` (looked up in PATH) to completion, stdin from /dev/null,
/// stdout and stderr captured. Only descriptors without close-on-exec are
/// inherited, and netpasst opens none.
inline command_result run_command(const std::vector<std::string>& argv) {
  command_result r;
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) throw std::system_error(errno, std::system_category(), "pipe2");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int spawned = ::posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_fds[1]);
  if (spawned != 0) {
    ::close(pipe_fds[0]);
    r.output = argv[0] + ": " + std::strerror(spawned);
    return r;
  }
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::read(pipe_fds[0], buffer, sizeof buffer);
    if (n > 0) r.output.append(buffer, std::size_t(n));
    else if (n == 0 || errno != EINTR) break;
  }
  ::close(pipe_fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
  while (!r.output.empty() && (r.output.back() == '\n' || r.output.back() == ' ')) r.output.pop_back();
  return r;
}

/// The command line, for messages.
inline std::string join(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + a;
  return s;
}

/// Runs `argv`; throws a runtime_error quoting the command and its output
/// when it fails.
inline void run_or_throw(const std::vector<std::string>& argv) {
  const command_result r = run_command(argv);
  if (r.status != 0)
    throw std::runtime_error("'" + join(argv) + "' failed (status " + std::to_string(r.status) + ")" +
                             (r.output.empty() ? std::string() : ": " + r.output));
}

/// The named network namespace the guest lives in. Created with
/// `ip netns add` if it does not exist; removed at destruction only if it
/// was created here.
class named_netns {
public:
  explicit named_netns(std::string name) : name_(std::move(name)) {
    std::error_code ec;
    if (std::filesystem::exists("/run/netns/" + name_, ec)) return;
    run_or_throw({"ip", "netns", "add", name_});
    created_ = true;
  }
  named_netns(const named_netns&) = delete;
  named_netns& operator=(const named_netns&) = delete;
  ~named_netns() { remove(); }

  /// Deletes the namespace now if this object created it.
  void remove() noexcept {
    if (!created_) return;
    created_ = false;
    try {
      const command_result r = run_command({"ip", "netns", "delete", name_});
      if (r.status != 0) std::fprintf(stderr, "netpasst_tap: ip netns delete %s: %s\n", name_.c_str(), r.output.c_str());
    } catch (...) {
    }
  }

  const std::string& name() const noexcept { return name_; }
  bool created() const noexcept { return created_; }

  /// `ip -n NAME args...`, throwing on failure.
  void ip(std::vector<std::string> args) const {
    args.insert(args.begin(), {"ip", "-n", name_});
    run_or_throw(args);
  }

private:
  std::string name_;
  bool created_ = false;
};

/// /etc/netns/NAME/resolv.conf, which `ip netns exec NAME` shows as
/// /etc/resolv.conf. Restores what was there (or removes what it created,
/// directories included) at destruction.
class netns_resolv_conf {
public:
  explicit netns_resolv_conf(const std::string& netns)
      : top_("/etc/netns"), directory_(top_ / netns), file_(directory_ / "resolv.conf") {}
  netns_resolv_conf(const netns_resolv_conf&) = delete;
  netns_resolv_conf& operator=(const netns_resolv_conf&) = delete;
  ~netns_resolv_conf() { restore(); }

  /// Writes `content`, creating the directories if needed.
  void write(const std::string& content) {
    std::error_code ec;
    if (!touched_) {
      created_top_ = std::filesystem::create_directory(top_, ec);
      if (ec) throw std::system_error(ec, "creating " + top_.string());
      created_directory_ = std::filesystem::create_directory(directory_, ec);
      if (ec) throw std::system_error(ec, "creating " + directory_.string());
      if (std::ifstream old{file_}) {
        std::ostringstream s;
        s << old.rdbuf();
        previous_ = s.str();
      }
      touched_ = true;
    }
    std::ofstream out(file_, std::ios::trunc);
    out << content;
    if (!out.flush()) throw std::runtime_error("cannot write " + file_.string());
  }

  /// Puts back what was there before the first write.
  void restore() noexcept {
    if (!touched_) return;
    touched_ = false;
    std::error_code ec;
    if (previous_) std::ofstream(file_, std::ios::trunc) << *previous_;
    else std::filesystem::remove(file_, ec);
    if (created_directory_) std::filesystem::remove(directory_, ec);
    if (created_top_) std::filesystem::remove(top_, ec);
  }

  const std::filesystem::path& path() const noexcept { return file_; }

private:
  std::filesystem::path top_, directory_, file_;
  bool touched_ = false, created_top_ = false, created_directory_ = false;
  std::optional<std::string> previous_;
};

} // namespace tap_example
