// End-to-end: the passt_argv tool as users script it, and the argv the
// builder makes being accepted by the real passt.
#include <netpasst/argv.hpp>
#include <netpasst/detail/spawn.hpp>
#include <netpasst/json.hpp>
#include <netpasst/probe.hpp>

#include <catch2/catch.hpp>

#include "e2e_env.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#ifndef NETPASST_PASST_ARGV
#error "examples/passt_argv/CMakeLists.txt defines NETPASST_PASST_ARGV for this test"
#endif

using namespace std::chrono_literals;
using lines = std::vector<std::string>;

namespace {

const std::string tool = NETPASST_PASST_ARGV;
const std::string sample = NETPASST_PASST_ARGV_SAMPLE;

lines split(const std::string& text) {
  lines out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

netpasst::detail::captured_run run(std::vector<std::string> argv) {
  std::error_code ec;
  auto r = netpasst::detail::run_and_capture(argv, 30s, ec);
  REQUIRE_FALSE(ec);
  return r;
}

// A config file that lives as long as the object.
struct temp_config {
  std::string path;
  explicit temp_config(const std::string& text) {
    char name[] = "/tmp/netpasst_cfg_XXXXXX";
    int fd = ::mkstemp(name);
    REQUIRE(fd >= 0);
    ::close(fd);
    path = name;
    std::ofstream(path) << text;
  }
  ~temp_config() { ::unlink(path.c_str()); }
};

bool have_real_passt() { return ::access("/usr/bin/passt", X_OK) == 0; }

} // namespace

TEST_CASE("passt_argv prints the builder's argv and the launcher arguments") {
  auto r = run({tool, sample});
  CHECK(r.exit_status == 0);
  CHECK(r.err.empty());
  std::ifstream in(sample);
  auto expected = netpasst::argv_builder{}.build(netpasst::options_from_json(in));
  netpasst::append_launcher_arguments(expected, "/run/netpasst/passt.pid", 3);
  CHECK(split(r.out) == expected);

  r = run({tool, "--pidfile", "/tmp/x.pid", "--fd", "5", sample});
  CHECK(r.exit_status == 0);
  auto out = split(r.out);
  REQUIRE(out.size() >= 4);
  CHECK(lines(out.end() - 4, out.end()) == lines{"--pid", "/tmp/x.pid", "--fd", "5"});

  // stdin, as "-" and as no argument.
  r = run({"/bin/sh", "-c", "\"$0\" - < \"$1\" && \"$0\" < \"$1\"", tool, sample});
  CHECK(r.exit_status == 0);
  CHECK(split(r.out).size() == 2 * expected.size());
}

TEST_CASE("passt_argv: invalid configs exit 2, nothing on stdout, one line per problem") {
  struct row { const char* json; lines err; };
  const std::vector<row> rows = {
      {R"({"mtu": 70000, "tcp-ports": ["22", "80-70"], "param": ["-Px"]})",
       {"/mtu: MTU 70000 out of range: expected 0 (do not announce) or 68..65520",
        "/tcp-ports/1: bad port spec '80-70': range '80-70' ends before it starts",
        "/param/0: '-Px' is reserved (-P, --pid): the launcher owns it, it cannot come through param"}},
      {R"({"bogus": 1})", {"/bogus: unknown key \"bogus\""}},
      {R"({"mtu": )", {}},
  };
  for (const auto& r : rows) {
    INFO(r.json);
    temp_config config(r.json);
    auto result = run({tool, config.path});
    CHECK(result.exit_status == 2);
    CHECK(result.out.empty());
    auto err = split(result.err);
    if (!r.err.empty()) {
      CHECK(err == r.err);
    } else {
      REQUIRE(err.size() == 1);
      CHECK(err[0].rfind(": invalid JSON: ", 0) == 0);
    }
  }
}

TEST_CASE("passt_argv: usage errors exit 2 with nothing on stdout") {
  for (lines args : {lines{"--fd", "x", sample}, lines{"--fd"}, lines{"--bogus", sample}, lines{sample, sample},
                     lines{"--pidfile"}, lines{"/nonexistent/config.json"}, lines{"--probe", "/nonexistent/passt", sample}}) {
    args.insert(args.begin(), tool);
    INFO(args[1]);
    auto r = run(args);
    CHECK(r.exit_status == 2);
    CHECK(r.out.empty());
    CHECK_FALSE(r.err.empty());
  }
}

TEST_CASE("passt_argv --probe refuses what the real passt lacks") {
  if (!have_real_passt()) {
    WARN("skipped: no /usr/bin/passt");
    return;
  }
  auto r = run({tool, "--probe", "/usr/bin/passt", sample});
  CHECK(r.exit_status == 0);
  CHECK(r.err.empty());
  std::error_code ec;
  auto caps = netpasst::probe_passt("/usr/bin/passt", ec);
  REQUIRE_FALSE(ec);
  if (caps.supports("--fqdn")) {
    WARN("this passt supports --fqdn: the refusal is not checked");
    return;
  }
  temp_config config(R"({"fqdn": "vm.example", "mtu": 1500})");
  r = run({tool, "--probe", "/usr/bin/passt", config.path});
  CHECK(r.exit_status == 2);
  CHECK(r.out.empty());
  CHECK(split(r.err) == lines{"/fqdn: this passt does not support --fqdn"});
  // Without --probe the same config is fine.
  CHECK(run({tool, config.path}).exit_status == 0);
}

TEST_CASE("the real passt accepts the argv built from sample.json") {
  if (!have_real_passt() || !netpasst::e2e::in_private_netns) {
    WARN("skipped: needs /usr/bin/passt and the private namespace (run as root)");
    return;
  }
  std::ifstream in(sample);
  auto argv = netpasst::argv_builder{}.build(netpasst::options_from_json(in));
  char pidfile[] = "/tmp/netpasst_pid_XXXXXX";
  int pfd = ::mkstemp(pidfile);
  REQUIRE(pfd >= 0);
  ::close(pfd);
  netpasst::append_launcher_arguments(argv, pidfile, 3, true);

  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  netpasst::unique_fd ours(sv[0]), theirs(sv[1]);
  std::error_code ec;
  netpasst::detail::spawn_options so;
  so.fd3 = theirs.get();
  so.separate_stdout = false;
  auto child = netpasst::detail::spawn(argv, so, ec);
  REQUIRE_FALSE(ec);
  theirs.reset();

  // Accepted: passt gets through option parsing and setup and writes its pid.
  std::string pid_text;
  bool exited_early = false;
  for (auto until = std::chrono::steady_clock::now() + 20s; std::chrono::steady_clock::now() < until;) {
    std::ifstream(pidfile) >> pid_text;
    if (!pid_text.empty()) break;
    if ((exited_early = netpasst::detail::pidfd_exited(child.pidfd.get(), 20))) break;
  }
  CHECK_FALSE(exited_early);
  CHECK(pid_text == std::to_string(child.pid));

  // Closing our end of the socket makes it exit.
  ours.reset();
  bool exited = netpasst::detail::pidfd_exited(child.pidfd.get(), 10000);
  if (!exited) ::kill(child.pid, SIGKILL);
  auto status = netpasst::detail::reap_child(child.pid, true);
  std::string err;
  char buffer[4096];
  for (ssize_t n; (n = ::read(child.err.get(), buffer, sizeof buffer)) > 0;) err.append(buffer, std::size_t(n));
  INFO("passt said:\n" << err);
  CHECK(exited);
  CHECK(status == 0);
  CHECK(err.find("nrecognized option") == std::string::npos);
  ::unlink(pidfile);
}

TEST_CASE("issue 8: passt_argv output cannot be forged") {
  // A newline in a value used to print a separate "--fd 7".
  for (const char* text : {R"({"pcap": "/tmp/p\n--fd\n7"})", R"({"log-file": "/tmp/l\n--fd\n7"})",
                           R"({"path": "/usr/bin/passt\n--fd\n7"})", R"({"param": ["--pcap", "/tmp/p\n--fd\n7"]})",
                           R"({"param": ["--foreground\u0000"]})"}) {
    INFO(text);
    temp_config config(text);
    auto r = run({tool, config.path});
    CHECK(r.exit_status == 2);
    CHECK(r.out.empty());
    auto err = split(r.err);
    REQUIRE(err.size() == 1);
    CHECK(err[0].find("control character \\n at offset") + err[0].find("NUL byte") != 2 * std::string::npos);
  }
  temp_config config(R"({"pcap": "/tmp/p\n--fd\n7"})");
  CHECK(split(run({tool, config.path}).err) ==
        lines{"/pcap: '/tmp/p\\n--fd\\n7' contains the control character \\n at offset 6"});
}

TEST_CASE("issue 8: passt_argv diagnostics stay short for huge values") {
  // An 8 MiB value: refused before parsing, one short line.
  temp_config config(R"({"pcap": ")" + std::string(8 << 20, 'a') + R"("})");
  auto r = run({tool, config.path});
  CHECK(r.exit_status == 2);
  CHECK(r.out.empty());
  CHECK(split(r.err) == lines{": JSON text of more than 1048576 bytes: at most 1048576"});
  // Below the text limit but above the string limit: the value is cut.
  temp_config long_value(R"({"pcap": "/)" + std::string(500'000, 'a') + R"(\u001b"})");
  r = run({tool, long_value.path});
  CHECK(r.exit_status == 2);
  CHECK(split(r.err) == lines{"/pcap: too long: 500002 bytes, at most 4095"});
  // Invalid JSON (a raw control character) in a long string: nlohmann's
  // message quotes what it read, cut.
  temp_config raw(R"({"pcap": "/)" + std::string(500'000, 'a') + "\x1b\n" + R"("})");
  r = run({tool, raw.path});
  CHECK(r.exit_status == 2);
  REQUIRE(split(r.err).size() == 1);
  CHECK(r.err.size() < 400);
  CHECK(r.err.find('\x1b') == std::string::npos);
}

TEST_CASE("issue 8: passt_argv --json and -0 give unambiguous output") {
  temp_config config(R"({"path": "/opt/my passt/passt", "quiet": false, "param": ["--ru", "daemon", "--pcap", "-x"]})");
  const lines expected{"/opt/my passt/passt", "--runas", "daemon", "--pcap=-x", "--pid", "/tmp/it's.pid", "--fd", "3"};

  auto r = run({tool, "--pidfile", "/tmp/it's.pid", "--json", config.path});
  CHECK(r.exit_status == 0);
  CHECK(nlohmann::json::parse(r.out) == nlohmann::json(expected));

  r = run({tool, "-0", "--pidfile", "/tmp/it's.pid", config.path});
  CHECK(r.exit_status == 0);
  lines nul_separated;
  for (std::size_t start = 0, end; (end = r.out.find('\0', start)) != std::string::npos; start = end + 1)
    nul_separated.push_back(r.out.substr(start, end - start));
  CHECK(nul_separated == expected);
  CHECK(r.out.back() == '\0');

  // The default form quotes what a shell would split, and reads back with sh.
  r = run({tool, "--pidfile", "/tmp/it's.pid", config.path});
  CHECK(r.exit_status == 0);
  CHECK(split(r.out) == lines{"'/opt/my passt/passt'", "--runas", "daemon", "--pcap=-x", "--pid", "'/tmp/it'\\''s.pid'",
                              "--fd", "3"});
  temp_config printed(r.out);
  auto back = run({"/bin/sh", "-c", "eval \"set -- $(tr '\\n' ' ' < \"$0\")\"; printf '%s\\n' \"$@\"", printed.path});
  CHECK(split(back.out) == expected);
}

TEST_CASE("issue 8: passt_argv --probe says why it failed") {
  auto r = run({tool, "--probe", "/nonexistent/passt", sample});
  CHECK(r.exit_status == 2);
  CHECK(r.out.empty());
  CHECK(split(r.err).front() == "passt_argv: cannot probe '/nonexistent/passt': '/nonexistent/passt': No such file or directory");
  r = run({tool, "--probe", "/tmp", sample});
  CHECK(split(r.err).front() == "passt_argv: cannot probe '/tmp': '/tmp' is a directory");
  r = run({tool, "--probe", "/bin/sh", sample});
  CHECK(split(r.err).front() == "passt_argv: cannot probe '/bin/sh': '/bin/sh' --help ended with status 2 and listed no "
                                "options; its stderr ends: '/bin/sh: 0: Illegal option --'");
}
