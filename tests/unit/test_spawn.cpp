// detail/spawn.hpp: run_and_capture (output, status, deadline, missing
// binary) and spawn's descriptor hygiene (the child gets exactly fds 0-3, even
// when the parent holds a descriptor without O_CLOEXEC; the parent keeps no
// pipe; no child is left behind).
#include <netpasst/detail/spawn.hpp>

#include <catch2/catch.hpp>

#include "../common/test_support.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using netpasst::errc;
using netpasst::unique_fd;
namespace detail = netpasst::detail;
using netpasst::test::children;
using netpasst::test::fd_count;

namespace {

/// Checks, at the end of a section, that nothing leaked.
struct hygiene {
  std::size_t fds = fd_count();
  ~hygiene() {
    CHECK(fd_count() == fds);
    CHECK(children().empty());
  }
};

/// Reads `fd` to EOF (the child's pipes are blocking; the child exits soon).
std::string read_all(unique_fd& fd) {
  std::string text;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(fd.get(), buffer, sizeof buffer)) > 0 || (n < 0 && errno == EINTR))
    if (n > 0) text.append(buffer, std::size_t(n));
  return text;
}

std::set<int> numbers(const std::string& listing) {
  std::set<int> result;
  std::istringstream in(listing);
  for (std::string word; in >> word;) result.insert(std::stoi(word));
  return result;
}

/// The shell lists its own descriptors via `ls` (a separate process, so ls's
/// own directory descriptor is not in the listing).
const std::vector<std::string> list_fds = {"/bin/sh", "-c", "ls /proc/$$/fd; readlink /proc/$$/fd/0 /proc/$$/fd/3 >&2"};

} // namespace

TEST_CASE("run_and_capture collects stdout, stderr and the exit status") {
  hygiene h;
  std::error_code ec;
  auto run = detail::run_and_capture({"/bin/sh", "-c", "echo out; echo err >&2; printf more; exit 3"}, 10s, ec);
  REQUIRE_FALSE(ec);
  CHECK(run.out == "out\nmore");
  CHECK(run.err == "err\n");
  CHECK(run.exit_status == 3);

  run = detail::run_and_capture({"sh", "-c", "exit 0"}, 10s, ec);  // found on PATH
  REQUIRE_FALSE(ec);
  CHECK(run.exit_status == 0);
  CHECK(run.out.empty());
}

TEST_CASE("run_and_capture reports a signal as 128 + its number") {
  hygiene h;
  std::error_code ec;
  auto run = detail::run_and_capture({"/bin/sh", "-c", "echo before; kill -9 $$"}, 10s, ec);
  REQUIRE_FALSE(ec);
  CHECK(run.exit_status == 128 + SIGKILL);
  CHECK(run.out == "before\n");
}

TEST_CASE("run_and_capture collects output larger than a pipe buffer from both pipes") {
  hygiene h;
  std::error_code ec;
  auto run = detail::run_and_capture(
      {"/bin/sh", "-c", "head -c 300000 /dev/zero; head -c 200000 /dev/zero >&2; head -c 100000 /dev/zero"}, 20s, ec);
  REQUIRE_FALSE(ec);
  CHECK(run.out.size() == 400000);
  CHECK(run.err.size() == 200000);
  CHECK(run.exit_status == 0);
}

TEST_CASE("run_and_capture kills and reaps a command still running at the deadline") {
  hygiene h;
  std::error_code ec;
  SECTION("output pipes still open") {
    auto run = detail::run_and_capture({"/bin/sh", "-c", "echo started; exec sleep 30"}, 300ms, ec);
    CHECK(ec == errc::start_timeout);
    CHECK(run.exit_status == -1);
    CHECK(run.out == "started\n");  // the output so far is returned
  }
  SECTION("output pipes closed, process still running") {
    auto run = detail::run_and_capture({"/bin/sh", "-c", "exec sleep 30 >&- 2>&-"}, 300ms, ec);
    CHECK(ec == errc::start_timeout);
    CHECK(run.exit_status == -1);
  }
  SECTION("throwing form") {
    try {
      detail::run_and_capture({"/bin/sleep", "30"}, 300ms);
      FAIL("no exception");
    } catch (const std::system_error& e) {
      CHECK(e.code() == errc::start_timeout);
      CHECK(std::string(e.what()).find("/bin/sleep") != std::string::npos);
    }
  }
}

TEST_CASE("a missing or unusable binary is passt_not_found, named in the message") {
  hygiene h;
  std::error_code ec;
  SECTION("absolute path that does not exist") {
    auto run = detail::run_and_capture({"/nonexistent/passt-missing"}, 10s, ec);
    CHECK(ec == errc::passt_not_found);
    CHECK(run.exit_status == -1);
    std::string message;
    auto child = detail::spawn({"/nonexistent/passt-missing"}, {}, ec, &message);
    CHECK(ec == errc::passt_not_found);
    CHECK(child.pid == 0);
    CHECK_FALSE(child.pidfd);
    CHECK(message.find("/nonexistent/passt-missing") != std::string::npos);
    try {
      detail::run_and_capture({"/nonexistent/passt-missing"}, 10s);
      FAIL("no exception");
    } catch (const std::system_error& e) {
      CHECK(e.code() == errc::passt_not_found);
      CHECK(std::string(e.what()).find("/nonexistent/passt-missing") != std::string::npos);
    }
  }
  SECTION("bare name not on PATH") {
    std::string message;
    detail::spawn({"netpasst-no-such-binary"}, {}, ec, &message);
    CHECK(ec == errc::passt_not_found);
    CHECK(message.find("netpasst-no-such-binary") != std::string::npos);
  }
  SECTION("file that exists but is not an executable image") {
    // Executable bit set, but execve refuses it (ENOEXEC): found by the
    // lookup, reported by the child over the report pipe.
    const auto path = netpasst::test::write_script("not-an-image", "");
    {
      std::ofstream(path, std::ios::trunc) << std::string("\x7f" "ELF garbage", 12);
    }
    std::string message;
    auto child = detail::spawn({path}, {}, ec, &message);
    CHECK(ec == errc::passt_not_found);
    CHECK(child.pid == 0);
    CHECK(message.find(path) != std::string::npos);
  }
  SECTION("empty argv") {
    detail::run_and_capture({}, 10s, ec);
    CHECK(ec == errc::passt_not_found);
  }
}

TEST_CASE("spawn hands the child exactly fds 0-3, never a descriptor without O_CLOEXEC") {
  hygiene h;
  // Deliberately inheritable: a plain open(2) without O_CLOEXEC.
  // Moved above 3 so that its number cannot be the child's fd 3.
  const int opened = ::open("/dev/null", O_RDONLY);
  REQUIRE(opened >= 0);
  const int leaky = ::fcntl(opened, F_DUPFD, 40);  // F_DUPFD: no FD_CLOEXEC on the copy
  ::close(opened);
  REQUIRE(leaky >= 40);
  REQUIRE((::fcntl(leaky, F_GETFD) & FD_CLOEXEC) == 0);
  int pair[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
  unique_fd ours(pair[0]), theirs(pair[1]);
  struct stat st {};
  REQUIRE(::fstat(theirs.get(), &st) == 0);

  std::error_code ec;
  SECTION("with fd 3") {
    auto child = detail::spawn(list_fds, {.fd3 = theirs.get()}, ec);
    REQUIRE_FALSE(ec);
    REQUIRE(child.pid > 1);
    REQUIRE(child.pidfd);
    const std::string out = read_all(child.out), err = read_all(child.err);
    CHECK(detail::reap_child(child.pid, true) == 0);
    CHECK(numbers(out) == std::set<int>{0, 1, 2, 3});
    CHECK_FALSE(numbers(out).count(leaky));
    // stdin is /dev/null; fd 3 is our socketpair's other end.
    CHECK(err == "/dev/null\nsocket:[" + std::to_string(st.st_ino) + "]\n");
  }
  SECTION("without fd 3, stdout merged into stderr") {
    auto child = detail::spawn(list_fds, {.separate_stdout = false}, ec);
    REQUIRE_FALSE(ec);
    CHECK_FALSE(child.out);
    const std::string err = read_all(child.err);
    CHECK(detail::reap_child(child.pid, true) == 1);  // readlink of the missing fd 3 fails
    CHECK(err.find("0\n1\n2\n") == 0);
    CHECK(err.find("\n3\n") == std::string::npos);
    CHECK(err.find("/dev/null") != std::string::npos);
  }
  SECTION("fd 3 taken from a low descriptor number") {
    // The source of fd 3 is fd 1 here (dup'ed there): the child must lift it
    // before the dup2 calls clobber it.
    const int saved = ::fcntl(1, F_DUPFD_CLOEXEC, 10);
    REQUIRE(saved >= 0);
    REQUIRE(::dup3(theirs.get(), 1, O_CLOEXEC) == 1);
    auto child = detail::spawn(list_fds, {.fd3 = 1}, ec);
    ::dup2(saved, 1);
    ::close(saved);
    REQUIRE_FALSE(ec);
    const std::string out = read_all(child.out), err = read_all(child.err);
    CHECK(detail::reap_child(child.pid, true) == 0);
    CHECK(numbers(out) == std::set<int>{0, 1, 2, 3});
    CHECK(err == "/dev/null\nsocket:[" + std::to_string(st.st_ino) + "]\n");
  }
  ::close(leaky);
}

TEST_CASE("the child's signal mask and ignored signals are reset to defaults") {
  hygiene h;
  // SIGTERM ignored and SIGUSR1 blocked here must not reach the child.
  struct sigaction ignore {}, old_term {};
  ignore.sa_handler = SIG_IGN;
  REQUIRE(::sigaction(SIGTERM, &ignore, &old_term) == 0);
  sigset_t block, old_mask;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR1);
  REQUIRE(::pthread_sigmask(SIG_BLOCK, &block, &old_mask) == 0);
  std::error_code ec;
  auto run = detail::run_and_capture({"/bin/sh", "-c", "exec grep -E '^Sig(Blk|Ign)' /proc/self/status"}, 10s, ec);
  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ::sigaction(SIGTERM, &old_term, nullptr);
  REQUIRE_FALSE(ec);
  CHECK(run.out.find("SigBlk:\t0000000000000000") != std::string::npos);
  CHECK(run.out.find("SigIgn:\t0000000000000000") != std::string::npos);
}

TEST_CASE("pidfd helpers: exit seen on the pidfd, signals never reach a reaped pid") {
  hygiene h;
  std::error_code ec;
  auto child = detail::spawn({"/bin/sleep", "30"}, {}, ec);
  REQUIRE_FALSE(ec);
  CHECK_FALSE(detail::pidfd_exited(child.pidfd.get(), 0));
  CHECK(detail::pidfd_send_signal(child.pidfd.get(), SIGKILL) == 0);
  CHECK(detail::pidfd_exited(child.pidfd.get(), 10000));
  CHECK(detail::reap_child(child.pid, true) == 128 + SIGKILL);
  CHECK_FALSE(detail::reap_child(child.pid, false).has_value());  // already reaped
  errno = 0;
  CHECK(detail::pidfd_send_signal(child.pidfd.get(), SIGKILL) == -1);
  CHECK(errno == ESRCH);
  CHECK_FALSE(detail::reap_child(1, false).has_value());
  CHECK_FALSE(detail::reap_child(0, false).has_value());
}

TEST_CASE("spawn works in a parent whose fds 0-4 are free (the report pipe lands on fd 4)") {
  hygiene h;
  // A daemonized VMM with stdin/stdout/stderr closed: the spawn's own
  // descriptors take 0-4, the report pipe's write end fd 4, right above the
  // child's fd 3. Run in a forked copy of this process, which can close its
  // standard descriptors; it exits 0 when the child saw exactly fds 0-3.
  int pair[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
  unique_fd ours(pair[0]), theirs(pair[1]);
  const pid_t tester = ::fork();
  REQUIRE(tester >= 0);
  if (tester == 0) {
    const int source = ::fcntl(theirs.get(), F_DUPFD_CLOEXEC, 50);
    for (int fd = 0; fd <= 4; ++fd) ::close(fd);
    std::error_code ec;
    auto child = detail::spawn(list_fds, {.fd3 = source}, ec);
    if (ec) ::_exit(10 + (ec.value() & 63));
    const std::string out = read_all(child.out);
    read_all(child.err);
    if (detail::reap_child(child.pid, true) != 0) ::_exit(2);
    ::_exit(numbers(out) == std::set<int>{0, 1, 2, 3} ? 0 : 3);
  }
  CHECK(detail::reap_child(tester, true).value_or(-1) == 0); // 10 + errno: spawn failed
}
