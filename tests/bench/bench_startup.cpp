// Start-up and restart time of a lifecycle against passt spawned bare, both
// measured in the same run, interleaved so that noise hits both alike:
//   bare      posix_spawn of the same passt argv (with --pid and --fd 3 on a
//             socketpair) until the parent exits, i.e. passt has daemonized;
//             QEMU's start-up does exactly this
//   start     lifecycle::async_start until link up (argv, private directory,
//             spawn, wait, pidfile check, pidfd, transport)
//   restart   SIGKILL of passt until the lifecycle reports link up again
// Targets (issue 3): start/bare <= 1.1, restart/start <= 1.5.
// Usage: bench_startup [--quick] [--iterations N] [--passt PATH]
#include <netpasst/lifecycle.hpp>

#include <asio/io_context.hpp>

#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

extern char** environ;

namespace {

using clock_type = std::chrono::steady_clock;

double ms(clock_type::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// posix_spawn passt daemonizing; returns spawn-to-parent-exit, then ends the daemon.
std::optional<double> bare_start(const std::vector<std::string>& argv_in) {
  char dir_template[] = "/tmp/netpasst-bench-XXXXXX";
  if (!::mkdtemp(dir_template)) return std::nullopt;
  const std::string dir = dir_template, pidfile = dir + "/passt.pid";
  if (::geteuid() == 0)
    if (const passwd* nobody = ::getpwnam("nobody")) (void)!::chown(dir.c_str(), nobody->pw_uid, nobody->pw_gid);
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return std::nullopt;
  const int child_end = ::fcntl(sv[1], F_DUPFD_CLOEXEC, 10);  // never 3: dup2(3, 3) would keep CLOEXEC
  ::close(sv[1]);

  std::vector<std::string> args = argv_in;
  args.insert(args.end(), {"--pid", pidfile, "--fd", "3"});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, child_end, 3);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);  // the lifecycle captures it; here it is noise

  const auto began = clock_type::now();
  pid_t parent = 0;
  const int spawn_error = ::posix_spawnp(&parent, argv[0], &actions, nullptr, argv.data(), environ);
  int status = 0;
  if (spawn_error == 0) ::waitpid(parent, &status, 0);
  const auto elapsed = clock_type::now() - began;
  posix_spawn_file_actions_destroy(&actions);
  ::close(child_end);

  pid_t daemon = 0;
  std::ifstream(pidfile) >> daemon;
  if (daemon > 1) {
    const int pidfd = int(::syscall(SYS_pidfd_open, daemon, 0));
    ::close(sv[0]);  // passt exits when its socket closes; make sure with SIGTERM
    if (pidfd >= 0) {
      ::syscall(SYS_pidfd_send_signal, pidfd, SIGTERM, nullptr, 0);
      pollfd p{pidfd, POLLIN, 0};
      ::poll(&p, 1, 2000);
      ::close(pidfd);
    }
  } else {
    ::close(sv[0]);
  }
  std::filesystem::remove_all(dir);
  if (spawn_error != 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return std::nullopt;
  return ms(elapsed);
}

template <class Predicate> bool run_until(asio::io_context& io, Predicate done) {
  const auto deadline = clock_type::now() + std::chrono::seconds(20);
  while (!done() && clock_type::now() < deadline) {
    io.restart();
    io.run_one_for(std::chrono::milliseconds(50));
  }
  return done();
}

} // namespace

int main(int argc, char** argv) {
  int iterations = 20;
  std::string passt = "passt";
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--quick") iterations = 5;
    else if (a == "--iterations" && i + 1 < argc) iterations = std::max(1, std::atoi(argv[++i]));
    else if (a == "--passt" && i + 1 < argc) passt = argv[++i];
    else {
      std::fprintf(stderr, "usage: bench_startup [--quick] [--iterations N] [--passt PATH]\n");
      return 2;
    }
  }

  netpasst::options opts;
  opts.path = passt;
  const auto argv_used = netpasst::argv_builder{}.build(opts);
  std::vector<double> bare, start, restart;
  asio::io_context io;
  for (int i = 0; i < iterations; ++i) {
    if (auto t = bare_start(argv_used)) bare.push_back(*t);
    else {
      std::fprintf(stderr, "bench_startup: bare passt did not daemonize (is %s installed?)\n", passt.c_str());
      return 1;
    }

    netpasst::lifecycle life(io, opts);
    unsigned ups = 0;
    clock_type::time_point link_up_at;
    life.subscribe([&](const netpasst::lifecycle_event& e) {
      if (e.kind == netpasst::lifecycle_event_kind::link_up) {
        ++ups;
        link_up_at = clock_type::now();
      }
    });
    std::optional<std::error_code> started;
    const auto began = clock_type::now();
    life.async_start([&](std::error_code ec) { started = ec; });
    if (!run_until(io, [&] { return ups == 1; })) {
      std::fprintf(stderr, "bench_startup: lifecycle did not start: %s\n", life.last_error_message().c_str());
      return 1;
    }
    start.push_back(ms(link_up_at - began));

    const auto killed_at = clock_type::now();
    ::kill(life.pid(), SIGKILL);
    if (!run_until(io, [&] { return ups == 2; })) {
      std::fprintf(stderr, "bench_startup: no link up after SIGKILL: %s\n", life.last_error_message().c_str());
      return 1;
    }
    restart.push_back(ms(link_up_at - killed_at));
    bool stopped = false;
    life.async_stop([&](std::error_code) { stopped = true; });
    run_until(io, [&] { return stopped; });
  }

  const double b = median(bare), s = median(start), r = median(restart);
  std::printf("passt start-up and restart, %d iterations, medians in ms (%s)\n", iterations, passt.c_str());
  std::printf("  bare spawn to daemonized     %8.2f   (min %.2f)\n", b, *std::min_element(bare.begin(), bare.end()));
  std::printf("  lifecycle start to link up   %8.2f   (min %.2f)\n", s, *std::min_element(start.begin(), start.end()));
  std::printf("  SIGKILL to link up again     %8.2f   (min %.2f)\n", r,
              *std::min_element(restart.begin(), restart.end()));
  std::printf("  start / bare     %.3f   target <= 1.1  %s\n", s / b, s / b <= 1.1 ? "met" : "NOT met");
  std::printf("  restart / start  %.3f   target <= 1.5  %s\n", r / s, r / s <= 1.5 ? "met" : "NOT met");
  return 0;
}
