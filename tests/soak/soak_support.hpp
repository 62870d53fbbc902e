#pragma once
// Shared by the soak programs: a private network namespace shaped like a
// small host, a UDP echo on the host's loopback, a census of what this
// process holds (descriptors, threads, children, RSS) and of passt's
// processes, percentiles, and running an io_context until a condition holds.
#include "../common/test_support.hpp"

#include <asio/io_context.hpp>
#include <asio/ip/udp.hpp>

#include <malloc.h>
#include <pwd.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

namespace netpasst::soak {

using clock_type = std::chrono::steady_clock;

inline double to_ms(clock_type::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

/// The passt binary to run unless --passt says otherwise.
inline std::string default_passt() {
#ifdef NETPASST_TEST_PASST
  return NETPASST_TEST_PASST;
#else
  return "passt";
#endif
}

/// Exit status of a program that could not run here (ctest's SKIP_RETURN_CODE).
inline constexpr int skipped = 77;

/// Moves this process into a new network namespace with lo up and a template
/// interface passt copies: np0 (one end of a veth pair) 192.0.2.10/24 and
/// 2001:db8::10/64, default routes via 192.0.2.1 and 2001:db8::1, 192.0.2.1
/// answering pings on the peer, ping sockets allowed for every group. Every
/// passt we start then sees the same addresses on any machine, nothing leaves
/// the namespace, and the passts in it are ours. Needs root, also for the
/// census: passt makes itself non-dumpable, so its /proc entries are root's.
/// Exits with `skipped` when not root or unshare fails, with 2 when the
/// namespace is only half built.
inline void enter_private_netns(const char* program) {
  if (::geteuid() != 0) {
    std::fprintf(stderr, "%s: skipped: needs root (a private network namespace, and passt's /proc entries)\n",
                 program);
    std::exit(skipped);
  }
  if (::unshare(CLONE_NEWNET) != 0) {
    std::fprintf(stderr, "%s: skipped: unshare(CLONE_NEWNET): %s\n", program, std::strerror(errno));
    std::exit(skipped);
  }
  for (const char* command :
       {"ip link set lo up", "ip link add np0 type veth peer name np0peer", "ip link set np0peer up",
        "ip addr add 192.0.2.10/24 dev np0", "ip -6 addr add 2001:db8::10/64 dev np0 nodad", "ip link set np0 up",
        "ip route add default via 192.0.2.1 dev np0", "ip -6 route add default via 2001:db8::1 dev np0",
        "ip addr add 192.0.2.1/32 dev np0peer"}) {
    if (std::system(command) != 0) {
      std::fprintf(stderr, "%s: private network namespace: '%s' failed\n", program, command);
      std::exit(2);
    }
  }
  std::ofstream("/proc/sys/net/ipv4/ping_group_range") << "0 2147483647\n";
}

/// True when passt, run with default options, may open ping sockets: its
/// group (nobody's when we are root, else ours) is in ping_group_range.
inline bool passt_may_ping() {
  gid_t group = ::getegid();
  if (::geteuid() == 0) {
    const passwd* nobody = ::getpwnam("nobody");
    group = nobody ? nobody->pw_gid : 65534;
  }
  std::ifstream range("/proc/sys/net/ipv4/ping_group_range");
  long first = 1, last = 0;
  return bool(range >> first >> last) && long(group) >= first && long(group) <= last;
}

/// Answers every datagram to 127.0.0.1:port() with the same bytes.
class udp_echo {
public:
  explicit udp_echo(asio::io_context& io)
      : socket_(io, asio::ip::udp::endpoint(asio::ip::make_address_v4("127.0.0.1"), 0)) {
    receive();
  }
  std::uint16_t port() const { return socket_.local_endpoint().port(); }
  std::uint64_t answered() const { return answered_; }

private:
  void receive() {
    socket_.async_receive_from(asio::buffer(buffer_), from_, [this](std::error_code ec, std::size_t n) {
      if (ec) return;
      std::error_code ignored;
      socket_.send_to(asio::buffer(buffer_.data(), n), from_, 0, ignored);
      ++answered_;
      receive();
    });
  }
  asio::ip::udp::socket socket_;
  std::array<char, 2048> buffer_{};
  asio::ip::udp::endpoint from_;
  std::uint64_t answered_ = 0;
};

/// Runs `io` until `done()` or until `limit` passed; returns done(). The
/// condition is checked after every handler.
inline bool run_until(asio::io_context& io, const std::function<bool()>& done, clock_type::duration limit) {
  const auto deadline = clock_type::now() + limit;
  while (!done() && clock_type::now() < deadline) {
    io.restart();
    io.run_one_for(std::chrono::milliseconds(5));
  }
  return done();
}

/// Runs `io` for `d`.
inline void run_for(asio::io_context& io, clock_type::duration d) {
  const auto until = clock_type::now() + d;
  run_until(io, [&] { return clock_type::now() >= until; }, d + std::chrono::seconds(1));
}

/// A field of /proc/PID/status in kB (VmRSS, RssAnon) or as a count
/// (Threads); -1 when absent.
inline long status_field(const std::string& pid, const std::string& field) {
  std::ifstream in("/proc/" + pid + "/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind(field + ":", 0) == 0) return std::atol(line.c_str() + field.size() + 1);
  return -1;
}

/// passt processes in this network namespace (live ones; a SIGKILLed daemon
/// left as a zombie of pid 1 has exited and is not counted).
inline std::vector<pid_t> passt_processes() { return test::processes_in_this_netns("passt"); }

/// Sum of a /proc/PID/status field over `pids`, in kB.
inline long sum_status_kib(const std::vector<pid_t>& pids, const std::string& field) {
  long total = 0;
  for (pid_t pid : pids) total += std::max(0L, status_field(std::to_string(pid), field));
  return total;
}

/// False under AddressSanitizer and ThreadSanitizer: their allocators keep
/// freed memory (a quarantine) and mallinfo2 does not see them, so RSS and
/// heap figures say nothing about leaks there (LeakSanitizer looks at exit).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool memory_figures_meaningful = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool memory_figures_meaningful = false;
#else
inline constexpr bool memory_figures_meaningful = true;
#endif
#else
inline constexpr bool memory_figures_meaningful = true;
#endif

/// What this process holds, and how many passts run in its namespace. RSS
/// is read after malloc_trim(0): pages malloc keeps free are not held by
/// anything, and where they happen to lie would make RSS wander.
struct census {
  std::size_t fds = 0, threads = 0, children = 0, passts = 0;
  long rss_kib = 0;             ///< VmRSS once malloc_trim(0) gave malloc's free pages back.
  std::size_t heap_in_use = 0;  ///< Bytes malloc has handed out and not got back (mallinfo2).
  std::size_t heap_kept = 0;    ///< Bytes malloc holds from the system, in use or free (arena + mmapped).

  bool same_handles(const census& o) const {
    return fds == o.fds && threads == o.threads && children == o.children && passts == o.passts;
  }
};

inline census take_census() {
  census c;
  c.fds = test::fd_count();
  c.threads = std::size_t(std::max(0L, status_field("self", "Threads")));
  c.children = test::children().size();
  c.passts = passt_processes().size();
  const struct mallinfo2 heap = ::mallinfo2();
  c.heap_in_use = heap.uordblks + heap.hblkhd;
  c.heap_kept = heap.arena + heap.hblkhd;
  ::malloc_trim(0);
  c.rss_kib = status_field("self", "VmRSS");
  return c;
}

/// A census once descriptors, threads, children and passts stopped moving
/// (two takes 20 ms apart agree, for at most a second), running `io` between
/// takes so that pending completions (a pipe's end of file) are handled.
inline census settled_census(asio::io_context& io) {
  census last = take_census();
  for (int i = 0; i < 50; ++i) {
    run_for(io, std::chrono::milliseconds(20));
    census now = take_census();
    if (now.same_handles(last)) return now;
    last = now;
  }
  return last;
}

/// The value at rank p (0..1, nearest rank) of `v`; 0 when empty.
inline double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto rank = std::size_t(std::ceil(p * double(v.size())));
  return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];
}

/// "median M  p95 P  max X  (n=N)" of `v` in ms.
inline std::string latency_line(const std::vector<double>& v) {
  if (v.empty()) return "none measured";
  char line[128];
  std::snprintf(line, sizeof line, "median %.2f  p95 %.2f  max %.2f  (n=%zu)", percentile(v, 0.5),
                percentile(v, 0.95), *std::max_element(v.begin(), v.end()), v.size());
  return line;
}

} // namespace netpasst::soak
