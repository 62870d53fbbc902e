#pragma once
// Helpers shared by the unit and end-to-end tests: running an io_context
// until a condition holds, scratch scripts, and the process and descriptor
// census that leak checks compare before and after.
#include <asio/io_context.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace netpasst::test {

/// Runs `io` until `done()` or until `limit` passed (a guard against hangs,
/// not a timing assertion). Returns done().
inline bool run_until(asio::io_context& io, const std::function<bool()>& done,
                      std::chrono::seconds limit = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    io.restart();
    io.run_for(std::chrono::milliseconds(10));
  }
  return done();
}

/// Writes an executable shell script `name` with `body` into a directory of
/// this test program's that is removed when the program exits.
inline std::string write_script(const std::string& name, const std::string& body) {
  static const struct scratch_directory {
    std::filesystem::path path =
        std::filesystem::temp_directory_path() / ("netpasst-test-" + std::to_string(::getpid()));
    scratch_directory() { std::filesystem::create_directories(path); }
    ~scratch_directory() {
      std::error_code ignored;
      std::filesystem::remove_all(path, ignored);
    }
  } scratch;
  const auto path = scratch.path / name;
  std::ofstream(path) << "#!/bin/sh\n" << body;
  using std::filesystem::perms;
  std::filesystem::permissions(path, perms::owner_all | perms::group_read | perms::group_exec | perms::others_read |
                                         perms::others_exec);
  return path.string();
}

/// Descriptors this process has open.
inline std::size_t fd_count() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

/// The state letter of /proc/PID/stat ('R', 'S', 'Z'...), 0 when there is
/// no such process; the parent's pid in `ppid` when given.
inline char process_state_of(pid_t pid, pid_t* ppid = nullptr) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return 0;
  const auto close = line.rfind(')');
  if (close == std::string::npos || close + 2 >= line.size()) return 0;
  std::istringstream rest(line.substr(close + 2));
  char state = 0;
  pid_t parent = 0;
  rest >> state >> parent;
  if (ppid) *ppid = parent;
  return state;
}

/// True while `pid` names a process that has not exited (a zombie has).
inline bool alive(pid_t pid) {
  const char s = process_state_of(pid);
  return s != 0 && s != 'Z' && s != 'X';
}

/// Pids of every process whose parent is this one (zombies included).
inline std::vector<pid_t> children() {
  std::vector<pid_t> result;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    pid_t ppid = 0;
    if (process_state_of(pid_t(std::stoi(name)), &ppid) && ppid == ::getpid()) result.push_back(pid_t(std::stoi(name)));
  }
  return result;
}

/// Live processes in this network namespace whose name starts with `prefix`.
inline std::vector<pid_t> processes_in_this_netns(const std::string& prefix) {
  struct stat mine {};
  ::stat("/proc/self/ns/net", &mine);
  std::vector<pid_t> found;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    const auto name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string comm;
    std::getline(std::ifstream(e.path() / "comm"), comm);
    struct stat ns {};
    if (comm.rfind(prefix, 0) == 0 && ::stat((e.path() / "ns/net").c_str(), &ns) == 0 && ns.st_ino == mine.st_ino &&
        alive(pid_t(std::stoi(name))))
      found.push_back(pid_t(std::stoi(name)));
  }
  return found;
}

/// What a `counting_allocator` saw.
struct allocation_log {
  std::size_t allocations = 0, deallocations = 0;
};

/// Counts what it allocates and frees into a shared log (its rebound copies
/// too). Bound to a handler with asio::bind_allocator, it shows whether an
/// operation uses the handler's associated allocator.
template <class T> struct counting_allocator {
  using value_type = T;
  allocation_log* log;
  explicit counting_allocator(allocation_log* l) : log(l) {}
  template <class U> counting_allocator(const counting_allocator<U>& other) : log(other.log) {}
  T* allocate(std::size_t n) {
    ++log->allocations;
    return std::allocator<T>().allocate(n);
  }
  void deallocate(T* p, std::size_t n) {
    ++log->deallocations;
    std::allocator<T>().deallocate(p, n);
  }
  template <class U> bool operator==(const counting_allocator<U>& other) const { return log == other.log; }
  template <class U> bool operator!=(const counting_allocator<U>& other) const { return log != other.log; }
};

} // namespace netpasst::test
