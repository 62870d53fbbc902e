// End-to-end: both launchers start the real passt (netpasst::e2e::passt_binary())
// in the private network namespace e2e_main.cpp made. passt answers ARP for
// the gateway over the socket it got as fd 3; terminate() ends it and removes
// the private directory (ours, with only the pidfile handed to nobody, as we
// are root); a pidfile naming another VM's passt is refused; 50 launch/
// terminate cycles per launcher leave no descriptor, passt process or
// directory; an option Debian's passt lacks fails with passt's own message.
#include <netpasst/launcher/passt_launcher.hpp>

#include <netpasst/transport/stream.hpp>

#include "e2e_env.hpp"
#include "../common/test_support.hpp"

#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/steady_timer.hpp>
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using netpasst::errc;
using netpasst::frame_batch;
using netpasst::passt_process;
using bytes = std::vector<std::byte>;
using netpasst::test::fd_count;

namespace {
/// Exited: no such process, or a zombie (a daemonized passt is re-parented to
/// a pid 1 that may never reap it).
bool gone(pid_t pid) { return !netpasst::test::alive(pid); }
std::size_t passt_count() { return netpasst::test::processes_in_this_netns("passt").size(); }
std::size_t child_count() { return netpasst::test::children().size(); }
} // namespace

namespace {

/// Sends an ARP request for the gateway and waits (10 s at most) for passt's reply.
bool gateway_answers(asio::io_context& io, netpasst::stream_transport& t) {
  std::error_code ec;
  if (!t.try_send(netpasst::e2e::gateway_arp_request(), ec)) return false;
  bool answered = false, failed = false;
  std::function<void()> loop = [&] {
    t.async_receive([&](std::error_code e, frame_batch batch) {
      if (e) return void(failed = true);
      for (auto f : batch) {
        if (netpasst::e2e::is_gateway_arp_reply(f)) return void(answered = true);
      }
      loop();
    });
  };
  loop();
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!answered && !failed && std::chrono::steady_clock::now() < deadline) {
    io.restart();
    io.run_one_for(100ms);
  }
  return answered;
}

/// Per test: a warm reactor, a runtime directory nobody can traverse into,
/// and the leak checks at the end.
struct env {
  asio::io_context io;
  std::filesystem::path runtime;
  netpasst::launcher_config config;
  std::size_t fds = 0, passts = 0;

  env() {
    asio::steady_timer timer(io, 0ms);
    timer.wait();
    asio::posix::stream_descriptor probe(io, ::fcntl(0, F_DUPFD_CLOEXEC, 3));
    probe.close();
    runtime = std::filesystem::temp_directory_path() / ("netpasst-e2e-launcher-" + std::to_string(::getpid()));
    std::filesystem::create_directories(runtime);
    std::filesystem::permissions(runtime, std::filesystem::perms::owner_all | std::filesystem::perms::group_exec |
                                              std::filesystem::perms::others_exec);
    config.runtime_directory = runtime;
    fds = fd_count();
    passts = passt_count();
  }
  ~env() {
    io.restart();
    io.poll();
    CHECK(fd_count() == fds);
    CHECK(passt_count() == passts);
    CHECK(child_count() == 0);
    CHECK(std::filesystem::is_empty(runtime));
    std::error_code ignored;
    std::filesystem::remove_all(runtime, ignored);
  }
};

template <class Launcher> constexpr bool is_daemon = std::is_same_v<Launcher, netpasst::daemon_launcher>;

} // namespace

TEMPLATE_TEST_CASE("real passt: launched, answers ARP on its socket, terminated with its directory", "",
                   netpasst::daemon_launcher, netpasst::foreground_launcher) {
  if (!netpasst::e2e::in_private_netns) {
    WARN("not in the private network namespace (needs root): skipped");
    return;
  }
  env e;
  TestType launcher(e.io, e.config);
  std::error_code ec;
  passt_process p = launcher.launch({netpasst::e2e::passt_binary(), "--quiet"}, ec);
  REQUIRE_FALSE(ec);
  INFO(p.failure_message() << p.error_output());
  const pid_t pid = p.pid();
  REQUIRE(pid > 1);
  CHECK(p.running());
  CHECK(passt_count() == e.passts + 1);
  if constexpr (is_daemon<TestType>) CHECK(p.exit_status() == std::nullopt);

  // As root, the private directory stays ours (no one else can add a file
  // to it); only the pidfile belongs to the user passt drops to.
  const auto dir = p.private_directory();
  REQUIRE(dir.parent_path() == e.runtime);
  struct stat st {};
  REQUIRE(::stat(dir.c_str(), &st) == 0);
  CHECK(st.st_uid == 0);
  CHECK((st.st_mode & 07777) == 0711);
  const passwd* nobody = ::getpwnam("nobody");
  REQUIRE(nobody);
  REQUIRE(::stat((dir / "passt.pid").c_str(), &st) == 0);
  CHECK(st.st_uid == nobody->pw_uid);
  CHECK(st.st_gid == ::getegid());
  CHECK((st.st_mode & 07777) == 0660);

  {
    netpasst::stream_transport t(e.io, p.take_socket());
    CHECK(gateway_answers(e.io, t));
  }

  p.terminate(2s);
  CHECK_FALSE(p.running());
  CHECK(gone(pid));
  CHECK_FALSE(std::filesystem::exists(dir));
}

TEST_CASE("real passt: a VMM in another PID namespace sharing the runtime directory keeps its directory") {
  // Its pid means nothing in ours (or names another process), so only its
  // lock on the directory tells our launch's sweep that it is live.
  if (!netpasst::e2e::in_private_netns) {
    WARN("not in the private network namespace (needs root): skipped");
    return;
  }
  env e;
  int ready[2], finish[2];
  REQUIRE(::pipe2(ready, O_CLOEXEC) == 0);
  REQUIRE(::pipe2(finish, O_CLOEXEC) == 0);
  const pid_t outer = ::fork();
  REQUIRE(outer >= 0);
  if (outer == 0) {
    ::close(ready[0]), ::close(finish[1]);
    if (::unshare(CLONE_NEWPID | CLONE_NEWNS) != 0) ::_exit(10);
    const pid_t init = ::fork();  // pid 1 of the new namespace
    if (init < 0) ::_exit(11);
    if (init > 0) {
      int status = 0;
      ::waitpid(init, &status, 0);
      ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 12);
    }
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount("proc", "/proc", "proc", 0, nullptr) != 0)
      ::_exit(13);
    int code = 0;
    {
      asio::io_context io;
      netpasst::foreground_launcher launcher(io, e.config);
      std::error_code ec;
      passt_process p = launcher.launch({netpasst::e2e::passt_binary(), "--quiet"}, ec);
      if (ec) ::_exit(14);
      const std::string name = p.private_directory().filename().string();
      if (::write(ready[1], name.data(), name.size()) != ssize_t(name.size())) ::_exit(15);
      ::close(ready[1]);
      char c;
      (void)!::read(finish[0], &c, 1);  // until the test closes its end
      p.terminate(2s, ec);
      code = ec ? 16 : 0;
    }
    ::_exit(code);
  }
  ::close(ready[1]), ::close(finish[0]);
  std::string name(256, '\0');
  const ssize_t n = ::read(ready[0], name.data(), name.size());
  ::close(ready[0]);
  name.resize(n > 0 ? std::size_t(n) : 0);
  const auto theirs = e.runtime / name;
  const bool started = n > 0 && std::filesystem::is_directory(theirs);
  if (started) {
    netpasst::foreground_launcher launcher(e.io, e.config);  // sweeps the runtime directory
    passt_process ours = launcher.launch({netpasst::e2e::passt_binary(), "--quiet"});
    CHECK(std::filesystem::exists(theirs / "passt.pid"));
    ours.terminate(2s);
  }
  ::close(finish[1]);
  int status = -1;
  REQUIRE(::waitpid(outer, &status, 0) == outer);
  REQUIRE(started);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK_FALSE(std::filesystem::exists(theirs));  // removed by its owner
}

TEMPLATE_TEST_CASE("real passt: asynchronous launch, async_wait_exit after SIGKILL, async_terminate", "",
                   netpasst::daemon_launcher, netpasst::foreground_launcher) {
  if (!netpasst::e2e::in_private_netns) {
    WARN("not in the private network namespace (needs root): skipped");
    return;
  }
  env e;
  TestType launcher(e.io, e.config);
  std::optional<std::error_code> launched;
  passt_process p;
  launcher.async_launch({netpasst::e2e::passt_binary(), "--quiet"}, [&](std::error_code ec, passt_process r) {
    launched = ec;
    p = std::move(r);
  });
  const auto until = [&](const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (!done() && std::chrono::steady_clock::now() < deadline) e.io.restart(), e.io.run_one_for(100ms);
    return done();
  };
  REQUIRE(until([&] { return launched.has_value(); }));
  REQUIRE_FALSE(*launched);
  const pid_t pid = p.pid();
  const auto dir = p.private_directory();
  std::optional<int> status;
  p.async_wait_exit(e.io.get_executor(), [&](std::error_code ec, int s) {
    CHECK_FALSE(ec);
    status = s;
  });
  std::error_code ec;
  p.signal(SIGKILL, ec);
  REQUIRE_FALSE(ec);
  REQUIRE(until([&] { return status.has_value(); }));
  CHECK(*status == (is_daemon<TestType> ? -1 : 128 + SIGKILL));
  CHECK(gone(pid));
  std::optional<std::error_code> terminated;
  p.async_terminate(e.io.get_executor(), 500ms, [&](std::error_code ec) { terminated = ec; });
  REQUIRE(until([&] { return terminated.has_value(); }));
  CHECK_FALSE(*terminated);
  CHECK_FALSE(std::filesystem::exists(dir));
}

TEMPLATE_TEST_CASE("real passt: 50 launch/terminate cycles leave no descriptor, process or directory", "",
                   netpasst::daemon_launcher, netpasst::foreground_launcher) {
  if (!netpasst::e2e::in_private_netns) {
    WARN("not in the private network namespace (needs root): skipped");
    return;
  }
  env e;
  TestType launcher(e.io, e.config);
  for (int i = 0; i < 50; ++i) {
    std::error_code ec;
    passt_process p = launcher.launch({netpasst::e2e::passt_binary(), "--quiet"}, ec);
    INFO("cycle " << i << ": " << p.failure_message());
    REQUIRE_FALSE(ec);
    REQUIRE(p.running());
    const pid_t pid = p.pid();
    p.terminate(2s);
    REQUIRE(gone(pid));
  }
}

TEMPLATE_TEST_CASE("real passt: an unsupported option is passt_exited with passt's message", "",
                   netpasst::daemon_launcher, netpasst::foreground_launcher) {
  if (!netpasst::e2e::in_private_netns) {
    WARN("not in the private network namespace (needs root): skipped");
    return;
  }
  env e;
  TestType launcher(e.io, e.config);
  std::error_code ec;
  passt_process p = launcher.launch({netpasst::e2e::passt_binary(), "--quiet", "--fqdn", "x"}, ec);
  CHECK(ec == errc::passt_exited);
  CHECK(p.exit_status() == 1);
  CHECK(p.failure_message().find("unrecognized option") != std::string::npos);
  CHECK(p.failure_message().find("--fqdn") != std::string::npos);
  CHECK_FALSE(p.running());
  CHECK(p.private_directory().empty());
}

TEST_CASE("real passt: a pidfile naming another VM's passt is refused, and that passt is left alone") {
  if (!netpasst::e2e::in_private_netns) {
    WARN("not in the private network namespace (needs root): skipped");
    return;
  }
  env e;
  // Another VM's passt, started the usual way.
  netpasst::foreground_launcher other_launcher(e.io, e.config);
  passt_process other = other_launcher.launch({netpasst::e2e::passt_binary(), "--quiet"});
  REQUIRE(other.running());
  // A "passt" that daemonizes by writing the other passt's pid: what any
  // process of passt's user could make a pidfile say.
  const auto wrapper = std::filesystem::path(e.config.runtime_directory) / "lying-passt";
  std::ofstream(wrapper) << "#!/bin/sh\n"
                            "while [ $# -gt 0 ]; do [ \"$1\" = --pid ] && pidfile=$2; shift; done\n"
                            "echo " << other.pid() << " > \"$pidfile\"\nexit 0\n";
  std::filesystem::permissions(wrapper, std::filesystem::perms::owner_all);
  netpasst::daemon_launcher launcher(e.io, e.config);
  std::error_code ec;
  passt_process p = launcher.launch({wrapper.string()}, ec);
  CHECK(ec == errc::process_gone);
  CHECK(p.failure_message().find("not the passt we started") != std::string::npos);
  CHECK(p.pid() == 0);
  p.terminate(1s);
  CHECK(other.running());  // never signalled
  other.terminate(2s);
  std::filesystem::remove(wrapper);
}
