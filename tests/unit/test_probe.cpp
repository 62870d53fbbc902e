#include <netpasst/probe.hpp>

#include <netpasst/json.hpp>

#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include <string>
#include <vector>

using netpasst::diagnostic;
using netpasst::passt_capabilities;

namespace {
// An excerpt of Debian 12 passt's --help (stderr), noise lines included.
constexpr const char* debian_help =
    "Failed to send 40 bytes to syslog\n"
    "Usage: /usr/bin/passt [OPTION]...\n"
    "Failed to send 7 bytes to syslog\n"
    "\n"
    "  -d, --debug\t\tBe verbose\n"
    "      --trace\t\tBe extra verbose, implies --debug\n"
    "Failed to send 56 bytes to syslog\n"
    "  -q, --quiet\t\tDon't print informational messages\n"
    "  -f, --foreground\tDon't run in background\n"
    "  -l, --log-file PATH\tLog (only) to given file\n"
    "  --log-size BYTES\tMaximum size of log file\n"
    "  --runas UID|UID:GID \tRun as given UID, GID, which can be\n"
    "    numeric, or login and group names\n"
    "  -m, --mtu MTU\tAssign MTU via DHCP/NDP\n"
    "  -S, --search LIST\tSpace-separated list, search domains\n"
    "  --no-map-gw\t\tDon't map gateway address to host\n"
    "  -t, --tcp-ports SPEC\tTCP port forwarding to guest\n"
    "        -t 22\t\tForward local port 22 to 22 on guest\n"
    "  -u, --udp-ports SPEC\tUDP port forwarding to guest\n"
    "  -1, --one-off\tQuit after handling one single client\n";

std::vector<std::string> pointers(const std::vector<diagnostic>& d) {
  std::vector<std::string> p;
  for (auto& x : d) p.push_back(x.pointer);
  return p;
}

std::string real_passt() { return "/usr/bin/passt"; }
} // namespace

TEST_CASE("parse_passt_help keeps the option names, not the noise") {
  auto caps = netpasst::parse_passt_help(debian_help);
  CHECK(caps.long_options == std::set<std::string>{"--debug", "--trace", "--quiet", "--foreground", "--log-file",
                                                   "--log-size", "--runas", "--mtu", "--search", "--no-map-gw",
                                                   "--tcp-ports", "--udp-ports", "--one-off"});
  CHECK(caps.supports("--mtu"));
  CHECK(caps.supports("mtu"));
  CHECK_FALSE(caps.supports("--fqdn"));
  CHECK_FALSE(caps.supports("--syslog"));
  CHECK(netpasst::parse_passt_help("").long_options.empty());
  CHECK(netpasst::parse_passt_help("Failed to send 63 bytes to syslog\nno options here\n").long_options.empty());
}

TEST_CASE("unsupported_options names option and JSON key") {
  auto caps = netpasst::parse_passt_help(debian_help);
  auto o = netpasst::options_from_json(R"({"fqdn": "vm.example", "mtu": 1500, "search": ["a.example", "b.example"],
      "map-host-loopback": ["192.0.2.2", "::2"], "tcp-ports": ["22"]})");
  // Not validated here: an option unknown to every passt is named as spelled.
  o.param = {"--one", "--frobnicate=1", "--log-file", "--x"};
  auto d = netpasst::unsupported_options(o, caps);
  CHECK(pointers(d) == std::vector<std::string>{"/fqdn", "/map-host-loopback", "/param/1"});
  REQUIRE(d.size() == 3);
  CHECK(d[0].message == "this passt does not support --fqdn");
  CHECK(d[1].message == "this passt does not support --map-host-loopback");
  CHECK(d[2].message == "this passt does not support --frobnicate");
  // Default quiet needs --quiet.
  CHECK(pointers(netpasst::unsupported_options({}, passt_capabilities{})) == std::vector<std::string>{"/quiet"});
  CHECK(netpasst::unsupported_options({}, caps).empty());
}

TEST_CASE("probe the real passt") {
  if (::access(real_passt().c_str(), X_OK) != 0) {
    WARN("skipped: no " << real_passt());
    return;
  }
  std::error_code ec;
  auto caps = netpasst::probe_passt(real_passt(), ec);
  REQUIRE_FALSE(ec);
  for (const char* present : {"--fd", "--pid", "--runas", "--quiet", "--foreground", "--one-off", "--pcap", "--log-file",
                              "--log-size", "--debug", "--trace", "--no-map-gw", "--tcp-ports", "--search", "--dns",
                              "--mac-addr", "--outbound-if6", "--no-dhcpv6", "--ipv4-only"})
    CHECK(caps.supports(present));
  // Debian 12's 2023 build; a newer passt may have them.
  bool debian = !caps.supports("--vhost-user");
  if (debian) {
    for (const char* absent : {"--fqdn", "--map-host-loopback", "--map-guest-addr", "--dns-host", "--freebind", "--hostname"})
      CHECK_FALSE(caps.supports(absent));
    auto o = netpasst::options_from_json(R"({"fqdn": "vm.example", "freebind": true, "tcp-ports": ["2222:22"]})");
    CHECK(pointers(netpasst::unsupported_options(o, caps)) == std::vector<std::string>{"/fqdn", "/freebind"});
  }
  CHECK(netpasst::probe_passt(real_passt()).long_options == caps.long_options);
}

TEST_CASE("probe failures") {
  std::error_code ec;
  netpasst::probe_passt("/nonexistent/passt", ec);
  CHECK(ec == netpasst::errc::passt_not_found);
  // A program that runs but prints no option list.
  char path[] = "/tmp/netpasst_probe_XXXXXX";
  int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  const std::string script = "#!/bin/sh\necho 'Failed to send 9 bytes to syslog' >&2\necho usage: none >&2\n";
  REQUIRE(::write(fd, script.data(), script.size()) == ssize_t(script.size()));
  ::fchmod(fd, 0700);
  ::close(fd);
  netpasst::probe_passt(path, ec);
  CHECK(ec == netpasst::errc::probe_failed);
  CHECK_THROWS_AS(netpasst::probe_passt(path), std::system_error);
  ::unlink(path);
}

TEST_CASE("issue 8: a failed probe says why") {
  std::error_code ec;
  std::string why;
  auto fails = [&](const std::string& binary) {
    netpasst::probe_passt(binary, ec, why);
    INFO(why);
    CHECK(ec);
    CHECK(why.find('\n') == std::string::npos);
    return why;
  };
  CHECK(fails("/nonexistent/passt") == "'/nonexistent/passt': No such file or directory");
  CHECK(ec == netpasst::errc::passt_not_found);
  CHECK(fails("netpasst-no-such-binary").rfind("'netpasst-no-such-binary' was not found in PATH (", 0) == 0);
  CHECK(fails("/tmp") == "'/tmp' is a directory");

  char dir[] = "/tmp/netpasst_probe_dir_XXXXXX";
  REQUIRE(::mkdtemp(dir));
  const std::string base = dir;
  auto script = [&](const std::string& name, const std::string& body, mode_t mode) {
    const std::string path = base + "/" + name;
    FILE* f = std::fopen(path.c_str(), "w");
    REQUIRE(f);
    std::fputs(body.c_str(), f);
    std::fclose(f);
    ::chmod(path.c_str(), mode);
    return path;
  };
  // Without any x bit, not even root may execute it.
  const auto plain = script("plain", "#!/bin/sh\nexit 0\n", 0644);
  CHECK(fails(plain) == "'" + plain + "' is not executable: Permission denied");
  const auto failing = script("failing", "#!/bin/sh\necho 'passt: cannot\n\tstart' >&2\nexit 3\n", 0755);
  CHECK(fails(failing) == "'" + failing + "' --help ended with status 3 and listed no options; its stderr ends: "
                                           "'passt: cannot\\n\\tstart'");
  CHECK(ec == netpasst::errc::probe_failed);
  const auto silent = script("silent", "#!/bin/sh\nexit 0\n", 0755);
  CHECK(fails(silent) == "'" + silent + "' --help ended with status 0 and listed no options; nothing on stderr");
  const auto chatty = script("chatty", "#!/bin/sh\nhead -c 100000 /dev/zero | tr '\\0' x >&2\nexit 1\n", 0755);
  CHECK(fails(chatty).size() < 400);
  try {
    (void)netpasst::probe_passt(failing);
    FAIL("no exception");
  } catch (const std::system_error& e) {
    CHECK(e.code() == netpasst::errc::probe_failed);
    CHECK(std::string(e.what()).find("ended with status 3") != std::string::npos);
  }
  // Never finishes: killed at the probe's 5 s deadline.
  const auto hanging = script("hanging", "#!/bin/sh\nexec sleep 60\n", 0755);
  CHECK(fails(hanging) == "'" + hanging + "' --help did not finish within 5 s (killed)");
  CHECK(ec == netpasst::errc::probe_failed);
  for (auto name : {"plain", "failing", "silent", "chatty", "hanging"}) ::unlink((base + "/" + name).c_str());
  ::rmdir(dir);
}

TEST_CASE("issue 8: unsupported_options checks param by full names") {
  auto caps = netpasst::parse_passt_help(debian_help);
  netpasst::options o;
  o.param = {"--ru", "daemon", "-1", "--map-host", "192.0.2.2"};
  REQUIRE(netpasst::validate(o).empty());
  // --ru is --runas (listed), -1 is --one-off (listed), --map-host is
  // --map-host-loopback (not in Debian's list).
  CHECK(netpasst::unsupported_options(o, caps) ==
        std::vector<diagnostic>{{"/param/3", "this passt does not support --map-host-loopback"}});
}
