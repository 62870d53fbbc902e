// The daemon and foreground launchers against fake passt scripts: a fake
// that daemonizes for real (a background child holding fd 3, its pid in the
// pidfile) or stays in the foreground, and fakes that fail in each way the
// launchers must report (non-zero exit, no readiness, bad pidfile, a pid that
// is gone or not a passt, missing binary). Every case also checks that no
// descriptor, child process or private directory is left behind. The real
// passt is in tests/e2e/test_launcher.cpp.
#include <netpasst/launcher/passt_launcher.hpp>

#include <netpasst/concepts.hpp>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>
#include <catch2/catch.hpp>

#include "../common/test_support.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <future>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using netpasst::errc;
using netpasst::passt_process;
using netpasst::unique_fd;
using netpasst::test::alive;
using netpasst::test::children;
using netpasst::test::fd_count;
using netpasst::test::run_until;
using netpasst::test::write_script;

static_assert(netpasst::DaemonLauncher<netpasst::daemon_launcher>);
static_assert(netpasst::DaemonLauncher<netpasst::foreground_launcher>);
static_assert(netpasst::DaemonLauncher<netpasst::basic_passt_launcher<netpasst::launch_policy::daemonize, asio::io_context::executor_type>>);
static_assert(netpasst::DaemonLauncher<netpasst::basic_passt_launcher<netpasst::launch_policy::foreground, asio::io_context::executor_type>>);
static_assert(netpasst::DaemonLauncher<netpasst::passt_launcher>);
// The mode of a passt_launcher is never implied.
static_assert(!std::is_constructible_v<netpasst::passt_launcher, asio::any_io_executor>);
static_assert(!std::is_constructible_v<netpasst::daemon_launcher, asio::any_io_executor, netpasst::launch_mode>);
static_assert(netpasst::to_string(netpasst::launch_mode::daemonize) == "daemon");
static_assert(netpasst::to_string(netpasst::launch_mode::foreground) == "foreground");
static_assert(netpasst::launch_mode_from_string("daemon") == netpasst::launch_mode::daemonize);
static_assert(netpasst::launch_mode_from_string("foreground") == netpasst::launch_mode::foreground);
static_assert(!netpasst::launch_mode_from_string("daemonize") && !netpasst::launch_mode_from_string("")
              && !netpasst::launch_mode_from_string("Daemon"));

namespace {

/// The fake passt scripts, written once into the test's scratch directory.
struct fakes {
  std::string good, fails, never_ready, killed, no_pidfile, garbage_pidfile, pid_one, dead_pid, not_passt;
  std::string slow_wrapper, chatty, not_executable, pidfile_symlink;
  std::filesystem::path directory;

  fakes() {
    // Parses what the launchers append (--foreground, --pid FILE, --fd 3)
    // and checks that fd 3 is a socket.
    const std::string prologue = R"(pidfile=; fg=0; fd=
while [ $# -gt 0 ]; do
  case "$1" in
    --pid) pidfile=$2; shift ;;
    --fd) fd=$2; shift ;;
    --foreground) fg=1 ;;
  esac
  shift
done
[ -n "$pidfile" ] && [ "$fd" = 3 ] || { echo "fake: no --pid FILE --fd 3" >&2; exit 2; }
[ -S /proc/$$/fd/3 ] || { echo "fake: fd 3 is not a socket" >&2; exit 2; }
)";
    // A real daemonization: a background child (named passt-sleep, a link to
    // sleep, so its comm says passt) keeps fd 3; the parent writes its pid
    // and exits 0. In the foreground: write our own pid, become sleep.
    good = write_script("fake-passt", prologue + R"(echo "fake passt starting" >&2
if [ $fg = 1 ]; then echo $$ > "$pidfile"; exec sleep 1000; fi
"${0%/*}/passt-sleep" 1000 </dev/null >/dev/null 2>&1 &
echo $! > "$pidfile"
exit 0
)");
    directory = std::filesystem::path(good).parent_path();
    std::error_code ignored;
    std::filesystem::create_symlink("/bin/sleep", directory / "passt-sleep", ignored);
    fails = write_script("fake-passt-fails", prologue + R"(echo "Failed to send 60 bytes to syslog" >&2
echo "fake-passt-fails: unrecognized option '--x'" >&2
echo "Usage: fake-passt-fails [OPTION]..." >&2
echo "  -d, --debug  Be verbose" >&2
exit 1
)");
    never_ready = write_script("fake-passt-never-ready", prologue + "exec sleep 1000\n");
    killed = write_script("fake-passt-killed", prologue + "echo 'about to die' >&2\nkill -9 $$\n");
    no_pidfile = write_script("fake-passt-no-pidfile", prologue + "exit 0\n");
    garbage_pidfile = write_script("fake-passt-garbage", prologue + "echo 'garbage' > \"$pidfile\"\nexit 0\n");
    pid_one = write_script("fake-passt-pid-one", prologue + "echo 1 > \"$pidfile\"\nexit 0\n");
    dead_pid = write_script("fake-passt-dead-pid", prologue + R"(sh -c 'exit 0' &
dead=$!
wait $dead
echo $dead > "$pidfile"
exit 0
)");
    // A live process that does not hold our socket (another VM's passt, say);
    // its pid also goes to a side file so that the test can end it.
    // (Only a descendant of what the launcher started can hold the socket;
    // wait until this one has closed its inherited copy.)
    not_passt = write_script("fake-passt-not-passt", prologue + R"sh(sleep 1000 </dev/null >/dev/null 2>&1 3>&- &
while [ -e /proc/$!/fd/3 ]; do :; done
echo $! > "$pidfile"
echo $! > "$0.stray"
exit 0
)sh");
    // A wrapper that starts a child of its own (its pid in a side file), then
    // never becomes ready: a timeout or a cancellation must end both.
    slow_wrapper = write_script("fake-passt-slow-wrapper", prologue + R"sh(sleep 1000 </dev/null >/dev/null 2>&1 &
echo $! > "$0.child"
exec sleep 1000
)sh");
    // 200 KiB of chatter, then the line that says why it failed.
    chatty = write_script("fake-passt-chatty", prologue + R"sh(i=0
while [ $i -lt 2000 ]; do echo "chatter line $i: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" >&2; i=$((i+1)); done
echo "the decisive last line" >&2
exit 1
)sh");
    // Replaces its pidfile with a symlink: the launcher's O_NOFOLLOW open fails with ELOOP.
    pidfile_symlink = write_script("fake-passt-pidfile-symlink", prologue + R"sh(rm -f "$pidfile"
ln -s /nonexistent "$pidfile"
exec sleep 1000
)sh");
    not_executable = (std::filesystem::path(good).parent_path() / "fake-passt-not-executable").string();
    std::ofstream(not_executable) << "#!/bin/sh\nexit 0\n";
  }
};

const fakes& fake() {
  static const fakes f;
  return f;
}

/// Per test: an io_context whose reactor is already warm, a private runtime
/// directory, and at the end the checks that nothing leaked.
struct env {
  asio::io_context io;
  std::filesystem::path runtime;
  netpasst::launcher_config config;
  std::size_t fds = 0;

  env() {
    fake();
    // Warm-up: the reactor's descriptors (epoll, eventfd, timerfd) are made
    // on first use and live as long as `io`.
    unique_fd probe(::fcntl(0, F_DUPFD_CLOEXEC, 3));
    asio::posix::stream_descriptor d(io, probe.release());
    asio::steady_timer t(io, 1ms);
    bool fired = false;
    t.async_wait([&](std::error_code) { fired = true; });
    run_until(io, [&] { return fired; });
    d.close();
    static int counter = 0;
    runtime = fake().directory / ("runtime-" + std::to_string(++counter));
    std::filesystem::create_directories(runtime);
    config.runtime_directory = runtime;
    config.start_timeout = 10s;
    fds = fd_count();
  }
  ~env() {
    io.restart();
    io.poll();  // let aborted handlers run
    CHECK(fd_count() == fds);
    CHECK(children().empty());
    CHECK(std::filesystem::is_empty(runtime));
    std::error_code ignored;
    std::filesystem::remove_all(runtime, ignored);
  }
};

template <class Launcher> constexpr bool is_daemon = std::is_same_v<Launcher, netpasst::daemon_launcher>;

/// What a successful launch must give, and what terminate must leave.
void check_running_then_terminate(passt_process& p) {
  REQUIRE(p.pid() > 1);
  CHECK(p.pidfd() >= 0);
  CHECK(p.running());
  CHECK(alive(p.pid()));
  CHECK(p.failure_message().empty());
  const auto dir = p.private_directory();
  CHECK(std::filesystem::is_directory(dir));
  CHECK(std::filesystem::exists(dir / "passt.pid"));
  unique_fd socket = p.take_socket();
  REQUIRE(socket);
  CHECK_FALSE(p.take_socket());  // handed over once
  char byte;
  CHECK(::recv(socket.get(), &byte, 1, MSG_DONTWAIT) == -1);  // peer (the fake's fd 3) still open
  CHECK(errno == EAGAIN);
  const pid_t pid = p.pid();
  p.terminate(1s);
  CHECK_FALSE(p.running());
  CHECK_FALSE(alive(pid));
  CHECK_FALSE(std::filesystem::exists(dir));
  CHECK(p.private_directory().empty());
  CHECK(::recv(socket.get(), &byte, 1, MSG_DONTWAIT) == 0);  // fd 3's only holder is gone
  p.terminate(1s);  // idempotent
}

} // namespace

TEMPLATE_TEST_CASE("a launch that succeeds gives a running process, socket and private directory", "",
                   netpasst::daemon_launcher, netpasst::foreground_launcher) {
  env e;
  TestType launcher(e.io, e.config);
  std::error_code ec;
  passt_process p = launcher.launch({fake().good}, ec);
  REQUIRE_FALSE(ec);
  if constexpr (is_daemon<TestType>) {
    CHECK(p.exit_status() == std::nullopt);  // the daemon is not our child
  }
  check_running_then_terminate(p);
  if constexpr (!is_daemon<TestType>) CHECK(p.exit_status() == 128 + SIGTERM);
  CHECK(p.error_output().find("fake passt starting") != std::string::npos);
}

TEMPLATE_TEST_CASE("destroying a running process ends it and removes its directory", "", netpasst::daemon_launcher,
                   netpasst::foreground_launcher) {
  env e;
  TestType launcher(e.io, e.config);
  pid_t pid = 0;
  std::filesystem::path dir;
  {
    passt_process p = launcher.launch({fake().good});
    pid = p.pid();
    dir = p.private_directory();
    REQUIRE(alive(pid));
    passt_process moved = std::move(p);
    CHECK(p.pid() == 0);
    CHECK_FALSE(p.running());
    CHECK(moved.pid() == pid);
  }
  CHECK_FALSE(alive(pid));
  CHECK_FALSE(std::filesystem::exists(dir));
}

TEST_CASE("passt_launcher starts passt the way the mode given at construction says") {
  env e;
  const auto mode = GENERATE(netpasst::launch_mode::daemonize, netpasst::launch_mode::foreground);
  const bool foreground = mode == netpasst::launch_mode::foreground;
  CAPTURE(foreground);
  netpasst::passt_launcher launcher(e.io, mode, e.config);
  CHECK(launcher.mode() == mode);
  CHECK(netpasst::passt_launcher(e.io.get_executor(), mode).mode() == mode);
  std::error_code ec;
  passt_process p = launcher.launch({fake().good}, ec);
  REQUIRE_FALSE(ec);
  const auto ours = children();
  // The fake stays our child only when given --foreground; daemonized, its background child is passt.
  CHECK((std::find(ours.begin(), ours.end(), p.pid()) != ours.end()) == foreground);
  check_running_then_terminate(p);
  if (foreground)
    CHECK(p.exit_status() == 128 + SIGTERM);
  else
    CHECK(p.exit_status() == std::nullopt);
}

TEMPLATE_TEST_CASE("passt exiting with status 1 is passt_exited with its message", "", netpasst::daemon_launcher,
                   netpasst::foreground_launcher) {
  env e;
  TestType launcher(e.io, e.config);
  std::error_code ec;
  passt_process p = launcher.launch({fake().fails, "--x"}, ec);
  CHECK(ec == errc::passt_exited);
  CHECK(p.exit_status() == 1);
  CHECK(p.failure_message().find("unrecognized option '--x'") != std::string::npos);
  CHECK(p.failure_message().find("status 1") != std::string::npos);
  CHECK(p.error_output().find("Usage:") != std::string::npos);
  CHECK(p.error_output().find("to syslog") == std::string::npos);  // noise dropped
  CHECK(p.pid() == 0);
  CHECK_FALSE(p.running());
  CHECK_FALSE(p.take_socket());
  CHECK(p.private_directory().empty());
  std::error_code sig;
  p.signal(SIGTERM, sig);
  CHECK(sig == errc::not_running);

  try {
    launcher.launch({fake().fails, "--x"});
    FAIL("no exception");
  } catch (const netpasst::launch_error& error) {
    CHECK(error.code() == errc::passt_exited);
    CHECK(error.exit_status() == 1);
    CHECK(std::string(error.what()).find("unrecognized option '--x'") != std::string::npos);
    CHECK(error.error_output().find("Usage:") != std::string::npos);
  }
}

TEMPLATE_TEST_CASE("passt killed by a signal before ready is passt_killed", "", netpasst::daemon_launcher,
                   netpasst::foreground_launcher) {
  env e;
  TestType launcher(e.io, e.config);
  std::error_code ec;
  passt_process p = launcher.launch({fake().killed}, ec);
  CHECK(ec == errc::passt_killed);
  CHECK(p.exit_status() == 128 + SIGKILL);
  CHECK(p.failure_message().find("signal 9") != std::string::npos);
  CHECK(p.error_output().find("about to die") != std::string::npos);
}

TEMPLATE_TEST_CASE("passt never ready is start_timeout and is killed", "", netpasst::daemon_launcher,
                   netpasst::foreground_launcher) {
  env e;
  e.config.start_timeout = 300ms;
  TestType launcher(e.io, e.config);
  std::error_code ec;
  passt_process p = launcher.launch({fake().never_ready}, ec);
  CHECK(ec == errc::start_timeout);
  CHECK(p.pid() == 0);
  CHECK_FALSE(p.running());
  CHECK(p.failure_message().find("300 ms") != std::string::npos);
}

TEMPLATE_TEST_CASE("a missing binary is passt_not_found", "", netpasst::daemon_launcher,
                   netpasst::foreground_launcher) {
  env e;
  TestType launcher(e.io, e.config);
  std::error_code ec;
  passt_process p = launcher.launch({"/nonexistent/passt"}, ec);
  CHECK(ec == errc::passt_not_found);
  CHECK(p.failure_message().find("/nonexistent/passt") != std::string::npos);
  CHECK(p.failure_message().find("no such file") != std::string::npos);
  p = launcher.launch({"netpasst-no-such-passt"}, ec);
  CHECK(ec == errc::passt_not_found);
  CHECK(p.failure_message().find("not found in PATH") != std::string::npos);
  p = launcher.launch({fake().directory.string()}, ec);
  CHECK(ec == errc::passt_not_found);
  CHECK(p.failure_message().find("is a directory") != std::string::npos);
  p = launcher.launch({fake().not_executable}, ec);
  CHECK(ec == errc::passt_not_found);
  CHECK(p.failure_message().find("not executable") != std::string::npos);
  p = launcher.launch({}, ec);
  CHECK(ec == errc::passt_not_found);
}

TEMPLATE_TEST_CASE("a timed-out or cancelled launch ends the wrapper's own children too", "",
                   netpasst::daemon_launcher, netpasst::foreground_launcher) {
  env e;
  const std::string child_file = fake().slow_wrapper + ".child";
  auto wrapper_child = [&] {
    pid_t child = 0;
    std::ifstream(child_file) >> child;
    return child;
  };
  SECTION("timeout") {
    e.config.start_timeout = 300ms;
    TestType launcher(e.io, e.config);
    std::error_code ec;
    passt_process p = launcher.launch({fake().slow_wrapper}, ec);
    CHECK(ec == errc::start_timeout);
  }
  SECTION("cancellation, well before the timeout") {
    TestType launcher(e.io, e.config);  // start_timeout 10 s
    asio::cancellation_signal cancel;
    std::optional<std::error_code> result;
    const auto began = std::chrono::steady_clock::now();
    launcher.async_launch({fake().slow_wrapper}, asio::bind_cancellation_slot(cancel.slot(), [&](std::error_code ec,
                                                                                                  passt_process p) {
      result = ec;
      CHECK(p.pid() == 0);
    }));
    REQUIRE(run_until(e.io, [&] { return std::filesystem::exists(child_file) && wrapper_child() > 1; }));
    cancel.emit(asio::cancellation_type::terminal);
    REQUIRE(run_until(e.io, [&] { return result.has_value(); }));
    CHECK(*result == asio::error::operation_aborted);
    CHECK(std::chrono::steady_clock::now() - began < 5s);  // a hang guard: the 10 s deadline did not end it
  }
  const pid_t child = wrapper_child();
  REQUIRE(child > 1);
  // SIGKILL went to the whole group; the grandchild's death is asynchronous.
  CHECK(run_until(e.io, [&] { return !alive(child); }, 5s));
  std::filesystem::remove(child_file);
}

TEMPLATE_TEST_CASE("passt's error output keeps its last lines", "", netpasst::daemon_launcher,
                   netpasst::foreground_launcher) {
  env e;
  e.config.error_output_limit = 4096;
  TestType launcher(e.io, e.config);
  std::error_code ec;
  passt_process p = launcher.launch({fake().chatty}, ec);
  CHECK(ec == errc::passt_exited);
  CHECK(p.error_output().size() <= 4096);
  CHECK(p.error_output().find("chatter line 1999") != std::string::npos);
  CHECK(p.error_output().find("chatter line 0:") == std::string::npos);
  CHECK(p.failure_message() == "passt exited with status 1: the decisive last line");
}

TEST_CASE("private directories a dead owner left are removed, a live owner's are kept") {
  env e;
  const auto stale = e.runtime / "netpasst-999999999.12345-abcdef";  // no such pid
  const auto live = e.runtime / (netpasst::detail::private_directory_prefix(::getpid()) + "keepme");
  const auto foreign = e.runtime / "netpasst-not-ours";
  // An owner in another PID namespace: its pid means nothing here, but it
  // holds its directory locked.
  const auto other_namespace = e.runtime / "netpasst-999999998.12345-locked";
  for (const auto& d : {stale, live, foreign, other_namespace}) {
    std::filesystem::create_directories(d);
    std::ofstream(d / "passt.pid") << "4242\n";
  }
  unique_fd owner_lock(::open(other_namespace.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  REQUIRE(::flock(owner_lock.get(), LOCK_EX | LOCK_NB) == 0);
  netpasst::foreground_launcher launcher(e.io, e.config);
  passt_process p = launcher.launch({fake().good});
  CHECK_FALSE(std::filesystem::exists(stale));
  CHECK(std::filesystem::exists(live));
  CHECK(std::filesystem::exists(foreign));
  CHECK(std::filesystem::exists(other_namespace / "passt.pid"));

  // The directory of a running launch is locked the same way.
  const auto own = p.private_directory();
  REQUIRE_FALSE(own.empty());
  unique_fd probe(::open(own.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  CHECK(::flock(probe.get(), LOCK_EX | LOCK_NB) == -1);
  CHECK(errno == EWOULDBLOCK);

  owner_lock.reset();  // that owner is gone: the next launch sweeps its directory
  passt_process q = launcher.launch({fake().good});
  CHECK_FALSE(std::filesystem::exists(other_namespace));
  p.terminate(1s);
  q.terminate(1s);
  CHECK_FALSE(std::filesystem::exists(own));
  std::filesystem::remove_all(live);
  std::filesystem::remove_all(foreign);
}

TEST_CASE("passt_process::adopt takes over a passt started elsewhere") {
  env e;
  netpasst::foreground_launcher launcher(e.io, e.config);
  // Start one the usual way, then hand its pidfd and socket to adopt as an
  // embedder's own launcher would.
  passt_process original = launcher.launch({fake().good});
  const pid_t pid = original.pid();
  std::error_code ec;
  unique_fd pidfd(::fcntl(original.pidfd(), F_DUPFD_CLOEXEC, 3));
  passt_process adopted = passt_process::adopt({e.io.get_executor(), std::move(pidfd), original.take_socket(), {},
                                                false, {}},
                                               ec);
  REQUIRE_FALSE(ec);
  CHECK(adopted.pid() == pid);
  CHECK(adopted.running());
  CHECK(adopted.exit_description().empty());
  std::optional<int> status;
  adopted.async_wait_exit([&](std::error_code e2, int s) {
    CHECK_FALSE(e2);
    status = s;
  });
  std::error_code sig;
  adopted.signal(SIGKILL, sig);
  CHECK_FALSE(sig);
  REQUIRE(run_until(e.io, [&] { return status.has_value(); }));
  CHECK(adopted.exit_description() == "passt (pid " + std::to_string(pid) + ") exited");
  original.terminate(1s);  // reaps our child, removes the directory

  // Refused: no pidfd, no socket, not a pidfd.
  passt_process none = passt_process::adopt({e.io.get_executor(), {}, {}, {}, false, {}}, ec);
  CHECK(ec == std::errc::bad_file_descriptor);
  int pair[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
  unique_fd a(pair[0]), b(pair[1]);
  none = passt_process::adopt({e.io.get_executor(), std::move(a), std::move(b), {}, false, {}}, ec);
  CHECK(ec == std::errc::bad_file_descriptor);

  // Refused: no executor (its waits and stderr would have nowhere to run).
  // Every descriptor given is closed.
  passt_process another = launcher.launch({fake().good});
  unique_fd another_pidfd(::fcntl(another.pidfd(), F_DUPFD_CLOEXEC, 3));
  const int given = another_pidfd.get();
  none = passt_process::adopt({{}, std::move(another_pidfd), another.take_socket(), {}, false, {}}, ec);
  CHECK(ec == std::errc::invalid_argument);
  CHECK(none.pid() == 0);
  CHECK(::fcntl(given, F_GETFD) == -1);
  another.terminate(1s);
}

TEST_CASE("daemon launcher: a pidfile without a pid above 1 is bad_pidfile") {
  env e;
  netpasst::daemon_launcher launcher(e.io, e.config);
  std::error_code ec;
  SECTION("no pidfile") {
    passt_process p = launcher.launch({fake().no_pidfile}, ec);
    CHECK(ec == errc::bad_pidfile);
    CHECK(p.failure_message().find("no pidfile") != std::string::npos);
  }
  SECTION("garbage") {
    passt_process p = launcher.launch({fake().garbage_pidfile}, ec);
    CHECK(ec == errc::bad_pidfile);
    CHECK(p.failure_message().find("garbage") != std::string::npos);
  }
  SECTION("pid 1") {
    // Rejected before any pidfd is opened: the failed process holds nothing
    // that could be signalled, and neither terminate nor signal reaches pid 1.
    passt_process p = launcher.launch({fake().pid_one}, ec);
    CHECK(ec == errc::bad_pidfile);
    CHECK(p.pid() == 0);
    CHECK(p.pidfd() == -1);
    std::error_code sig;
    p.signal(SIGTERM, sig);
    CHECK(sig == errc::not_running);
    p.terminate(10ms);
    CHECK(alive(1));
  }
}

TEST_CASE("daemon launcher: a pidfile naming no passt is process_gone") {
  env e;
  netpasst::daemon_launcher launcher(e.io, e.config);
  std::error_code ec;
  SECTION("a dead pid") {
    passt_process p = launcher.launch({fake().dead_pid}, ec);
    CHECK(ec == errc::process_gone);
    CHECK(p.failure_message().find("names no running process") != std::string::npos);
  }
  SECTION("a live process that does not hold our socket, left alone") {
    const std::string stray_file = fake().not_passt + ".stray";
    passt_process p = launcher.launch({fake().not_passt}, ec);
    CHECK(ec == errc::process_gone);
    CHECK(p.failure_message().find("not the passt we started") != std::string::npos);
    pid_t stray = 0;
    std::ifstream(stray_file) >> stray;
    REQUIRE(stray > 1);
    CHECK(alive(stray));  // not ours to kill: the launcher only refused it
    unique_fd pidfd(netpasst::detail::pidfd_open(stray));
    REQUIRE(pidfd);
    netpasst::detail::pidfd_send_signal(pidfd.get(), SIGKILL);
    CHECK(netpasst::detail::pidfd_exited(pidfd.get(), 10000));
    std::filesystem::remove(stray_file);
  }
}

TEMPLATE_TEST_CASE("async_launch with a callback", "", netpasst::daemon_launcher, netpasst::foreground_launcher) {
  env e;
  TestType launcher(e.io, e.config);
  std::optional<std::error_code> result;
  passt_process p;
  launcher.async_launch({fake().good}, [&](std::error_code ec, passt_process launched) {
    result = ec;
    p = std::move(launched);
  });
  CHECK_FALSE(result);  // never completes inside the initiating call
  REQUIRE(run_until(e.io, [&] { return result.has_value(); }));
  REQUIRE_FALSE(*result);
  check_running_then_terminate(p);

  result.reset();
  launcher.async_launch({fake().fails, "--x"}, [&](std::error_code ec, passt_process launched) {
    result = ec;
    p = std::move(launched);
  });
  REQUIRE(run_until(e.io, [&] { return result.has_value(); }));
  CHECK(*result == errc::passt_exited);
  CHECK(p.failure_message().find("unrecognized option '--x'") != std::string::npos);

  result.reset();
  launcher.async_launch({"/nonexistent/passt"}, [&](std::error_code ec, passt_process) { result = ec; });
  CHECK_FALSE(result);
  REQUIRE(run_until(e.io, [&] { return result.has_value(); }));
  CHECK(*result == errc::passt_not_found);
}

TEMPLATE_TEST_CASE("async_launch with use_future, the io_context running in a thread", "", netpasst::daemon_launcher,
                   netpasst::foreground_launcher) {
  env e;
  TestType launcher(e.io, e.config);
  passt_process p, failed;
  std::optional<std::error_code> failure;
  {
    e.io.restart();  // run_until left it stopped (out of work)
    auto work = asio::make_work_guard(e.io);
    std::thread runner([&] { e.io.run(); });
    std::future<passt_process> ok = launcher.async_launch({fake().good}, asio::use_future);
    std::future<passt_process> bad = launcher.async_launch({fake().fails, "--x"}, asio::use_future);
    const bool ready = ok.wait_for(20s) == std::future_status::ready && bad.wait_for(20s) == std::future_status::ready;
    // Joined first: the runner releases the promise's exception through
    // libstdc++'s uninstrumented reference count, which TSan cannot see.
    work.reset();
    e.io.stop();
    runner.join();
    REQUIRE(ready);
    p = ok.get();
    try {
      failed = bad.get();
    } catch (const std::system_error& error) {
      failure = error.code();
    }
  }
  CHECK(failure == std::error_code(errc::passt_exited));
  check_running_then_terminate(p);
}

#ifdef ASIO_HAS_CO_AWAIT
TEMPLATE_TEST_CASE("async_launch with use_awaitable", "", netpasst::daemon_launcher, netpasst::foreground_launcher) {
  env e;
  TestType launcher(e.io, e.config);
  passt_process p;
  std::error_code launched, failed, waited;
  int status = 0;
  bool done = false;
  asio::co_spawn(
      e.io,
      [&]() -> asio::awaitable<void> {
        auto token = asio::experimental::as_tuple(asio::use_awaitable);
        const std::vector<std::string> good{fake().good}, fails{fake().fails, "--x"};
        std::tie(launched, p) = co_await launcher.async_launch(good, token);
        std::tie(failed, std::ignore) = co_await launcher.async_launch(fails, token);
        if (!launched) {
          std::error_code ignored;
          p.signal(SIGKILL, ignored);
          std::tie(waited, status) = co_await p.async_wait_exit(e.io.get_executor(), token);
        }
        done = true;
      },
      asio::detached);
  REQUIRE(run_until(e.io, [&] { return done; }));
  CHECK_FALSE(launched);
  CHECK(failed == errc::passt_exited);
  CHECK_FALSE(waited);
  CHECK(status == (is_daemon<TestType> ? -1 : 128 + SIGKILL));
  CHECK_FALSE(p.running());
  p.terminate(1s);
}
#endif

TEMPLATE_TEST_CASE("async_wait_exit completes when passt is SIGKILLed", "", netpasst::daemon_launcher,
                   netpasst::foreground_launcher) {
  env e;
  TestType launcher(e.io, e.config);
  passt_process p = launcher.launch({fake().good});
  const pid_t pid = p.pid();
  const auto dir = p.private_directory();
  std::optional<std::pair<std::error_code, int>> exit;
  p.async_wait_exit(e.io.get_executor(), [&](std::error_code ec, int status) { exit.emplace(ec, status); });
  e.io.restart();
  e.io.poll();
  CHECK_FALSE(exit);  // still running
  std::error_code ec;
  p.signal(SIGKILL, ec);
  REQUIRE_FALSE(ec);
  REQUIRE(run_until(e.io, [&] { return exit.has_value(); }));
  CHECK_FALSE(exit->first);
  CHECK(exit->second == (is_daemon<TestType> ? -1 : 128 + SIGKILL));
  CHECK_FALSE(p.running());
  CHECK_FALSE(alive(pid));
  if constexpr (!is_daemon<TestType>) CHECK(p.exit_status() == 128 + SIGKILL);

  // Waiting again on an exited process completes at once (through the executor).
  exit.reset();
  p.async_wait_exit(e.io.get_executor(), [&](std::error_code ec, int status) { exit.emplace(ec, status); });
  CHECK_FALSE(exit);
  REQUIRE(run_until(e.io, [&] { return exit.has_value(); }));
  CHECK_FALSE(exit->first);

  // async_terminate on the dead process: no error, everything removed.
  std::optional<std::error_code> terminated;
  p.async_terminate(e.io.get_executor(), 100ms, [&](std::error_code ec) { terminated = ec; });
  CHECK_FALSE(terminated);
  REQUIRE(run_until(e.io, [&] { return terminated.has_value(); }));
  CHECK_FALSE(*terminated);
  CHECK_FALSE(std::filesystem::exists(dir));
  p.signal(SIGTERM, ec);
  CHECK(ec == errc::not_running);
}

TEMPLATE_TEST_CASE("async_terminate stops a running passt, cancel aborts a wait", "", netpasst::daemon_launcher,
                   netpasst::foreground_launcher) {
  env e;
  TestType launcher(e.io, e.config);
  passt_process p = launcher.launch({fake().good});
  const pid_t pid = p.pid();
  const auto dir = p.private_directory();

  std::optional<std::error_code> aborted;
  p.async_wait_exit(e.io.get_executor(), [&](std::error_code ec, int) { aborted = ec; });
  p.cancel();
  REQUIRE(run_until(e.io, [&] { return aborted.has_value(); }));
  CHECK(*aborted == asio::error::operation_aborted);
  CHECK(p.running());

  std::optional<std::error_code> terminated;
  std::optional<std::error_code> exited;
  p.async_wait_exit(e.io.get_executor(), [&](std::error_code ec, int) { exited = ec; });
  p.async_terminate(e.io.get_executor(), 2s, [&](std::error_code ec) { terminated = ec; });
  REQUIRE(run_until(e.io, [&] { return terminated.has_value() && exited.has_value(); }));
  CHECK_FALSE(*terminated);
  CHECK_FALSE(*exited);
  CHECK_FALSE(alive(pid));
  CHECK_FALSE(std::filesystem::exists(dir));
}

TEMPLATE_TEST_CASE("repeated launch and terminate leaks nothing", "", netpasst::daemon_launcher,
                   netpasst::foreground_launcher) {
  env e;
  TestType launcher(e.io, e.config);
  for (int i = 0; i < 20; ++i) {
    passt_process p = launcher.launch({fake().good});
    REQUIRE(p.running());
    p.terminate(1s);
    REQUIRE_FALSE(alive(p.pid()));
  }
}

TEMPLATE_TEST_CASE("process waits honour their token's cancellation slot", "", netpasst::daemon_launcher,
                   netpasst::foreground_launcher) {
  env e;
  TestType launcher(e.io, e.config);
  passt_process p = launcher.launch({fake().good});
  asio::cancellation_signal cancel_wait, cancel_terminate;
  std::optional<std::error_code> waited, other;
  p.async_wait_exit(asio::bind_cancellation_slot(cancel_wait.slot(), [&](std::error_code ec, int) { waited = ec; }));
  p.async_wait_exit([&](std::error_code ec, int) { other = ec; });  // no slot: not cancelled
  e.io.poll();
  cancel_wait.emit(asio::cancellation_type::partial);
  REQUIRE(run_until(e.io, [&] { return waited.has_value(); }));
  CHECK(*waited == asio::error::operation_aborted);
  CHECK_FALSE(other.has_value());
  CHECK(p.running());
  std::optional<std::error_code> terminated;
  p.async_terminate(2s, [&](std::error_code ec) { terminated = ec; });
  REQUIRE(run_until(e.io, [&] { return terminated.has_value() && other.has_value(); }));
  CHECK_FALSE(*terminated);
  CHECK_FALSE(*other);
  CHECK_FALSE(p.running());
}

TEST_CASE("foreground launcher: a pidfile it cannot open fails at once with the reason, not at the deadline") {
  env e;  // start_timeout 10 s
  netpasst::foreground_launcher launcher(e.io, e.config);
  std::error_code ec;
  const auto began = std::chrono::steady_clock::now();
  passt_process p = launcher.launch({fake().pidfile_symlink}, ec);
  CHECK(ec == std::errc::too_many_symbolic_link_levels);
  CHECK_THAT(p.failure_message(), Catch::Contains("opening passt's pidfile") &&
                                      Catch::Contains("Too many levels of symbolic links"));
  CHECK(std::chrono::steady_clock::now() - began < 5s);  // a hang guard well under the 10 s deadline
  CHECK(p.pid() == 0);
}

TEMPLATE_TEST_CASE("a start_timeout of milliseconds::max() means no limit", "", netpasst::daemon_launcher,
                   netpasst::foreground_launcher) {
  env e;
  e.config.start_timeout = std::chrono::milliseconds::max();
  TestType launcher(e.io, e.config);
  std::error_code ec;
  passt_process p = launcher.launch({fake().good}, ec);
  CHECK_FALSE(ec);
  CHECK(p.failure_message().empty());
  CHECK(p.running());
}

TEST_CASE("signal on a passt that exited but is not yet reaped is not_running") {
  env e;
  netpasst::foreground_launcher launcher(e.io, e.config);
  passt_process p = launcher.launch({fake().good});
  REQUIRE(::kill(p.pid(), SIGKILL) == 0);
  REQUIRE(netpasst::detail::pidfd_exited(p.pidfd(), 10000));
  std::error_code ec;
  p.signal(SIGTERM, ec);
  CHECK(ec == errc::not_running);
  p.signal(0, ec);
  CHECK(ec == errc::not_running);
}

namespace {
/// Drops this process's real and effective uid to nobody's, keeping the saved
/// uid 0 so that the destructor can return to root.
struct unprivileged {
  unprivileged() { REQUIRE(::setresuid(65534, 65534, 0) == 0); }
  ~unprivileged() {
    ::setresuid(0, 0, 0);
    ::prctl(PR_SET_DUMPABLE, 1);
  }
};

/// A `sleep` of root's, adopted: as nobody, we may not signal it.
struct foreign_process {
  pid_t pid = ::fork();
  passt_process p;
  explicit foreign_process(asio::io_context& io) {
    if (pid == 0) {
      ::execl("/bin/sleep", "sleep", "1000", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    REQUIRE(pid > 0);
    int pair[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
    unique_fd ours(pair[0]), theirs(pair[1]);
    p = passt_process::adopt({io.get_executor(), unique_fd(netpasst::detail::pidfd_open(pid)), std::move(ours), {},
                              false, {}});
  }
  ~foreign_process() {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
};
} // namespace

TEST_CASE("terminating a passt we may not signal fails at once with the error") {
  if (::geteuid() != 0) {
    WARN("needs root to change uid");
    return;
  }
  env e;
  foreign_process foreign(e.io);
  passt_process& p = foreign.p;
  std::optional<std::error_code> terminated;
  {
    unprivileged nobody;
    std::error_code ec;
    p.signal(SIGTERM, ec);
    CHECK(ec == std::errc::operation_not_permitted);

    const auto began = std::chrono::steady_clock::now();
    p.terminate(200ms, ec);
    CHECK(ec == std::errc::operation_not_permitted);
    CHECK(std::chrono::steady_clock::now() - began < 2s);

    p.async_terminate(200ms, [&](std::error_code e2) { terminated = e2; });
    CHECK_FALSE(terminated);  // never inside the initiating call
    CHECK(run_until(e.io, [&] { return terminated.has_value(); }, 3s));
  }
  if (terminated) CHECK(*terminated == std::errc::operation_not_permitted);
  CHECK(p.running());
  ::kill(foreign.pid, SIGKILL);
  REQUIRE(run_until(e.io, [&] { return terminated.has_value(); }));
  p.terminate(1s);
}

TEST_CASE("an empty handle: the waits without an executor throw and those given one complete at once") {
  env e;
  passt_process empty;
  CHECK(empty.get_executor() == asio::any_io_executor{});
  CHECK_THROWS_AS(empty.async_wait_exit([](std::error_code, int) {}), std::system_error);
  CHECK_THROWS_AS(empty.async_terminate(10ms, [](std::error_code) {}), std::system_error);
  try {
    empty.async_wait_exit([](std::error_code, int) {});
  } catch (const std::system_error& error) {
    CHECK(error.code() == errc::not_running);
  }

  netpasst::foreground_launcher launcher(e.io, e.config);
  passt_process p = launcher.launch({fake().good});
  passt_process moved = std::move(p);
  CHECK_THROWS_AS(p.async_wait_exit([](std::error_code, int) {}), std::system_error);

  std::optional<std::pair<std::error_code, int>> waited;
  std::optional<std::error_code> terminated;
  p.async_wait_exit(e.io.get_executor(), [&](std::error_code ec, int status) { waited.emplace(ec, status); });
  p.async_terminate(e.io.get_executor(), 10ms, [&](std::error_code ec) { terminated = ec; });
  CHECK_FALSE(waited);
  REQUIRE(run_until(e.io, [&] { return waited && terminated; }));
  CHECK_FALSE(waited->first);
  CHECK(waited->second == -1);
  CHECK_FALSE(*terminated);
  moved.terminate(1s);
}

TEST_CASE("with SIGCHLD ignored launches still succeed and failures keep passt's message") {
  env e;
  struct sigchld_ignored {
    struct sigaction old {};
    sigchld_ignored() {
      struct sigaction ignore {};
      ignore.sa_handler = SIG_IGN;
      ::sigaction(SIGCHLD, &ignore, &old);
    }
    ~sigchld_ignored() { ::sigaction(SIGCHLD, &old, nullptr); }
  } ignored;
  const auto mode = GENERATE(netpasst::launch_mode::daemonize, netpasst::launch_mode::foreground);
  CAPTURE(netpasst::to_string(mode));
  netpasst::passt_launcher launcher(e.io, mode, e.config);
  std::error_code ec;
  passt_process p = launcher.launch({fake().good}, ec);
  CHECK_FALSE(ec);
  CHECK(p.failure_message().empty());
  CHECK(p.running());
  p.terminate(1s);

  passt_process failed = launcher.launch({fake().fails, "--x"}, ec);
  CHECK(ec == errc::passt_exited);
  CHECK_THAT(failed.failure_message(), Catch::Contains("unrecognized option '--x'"));
}
