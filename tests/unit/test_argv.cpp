#include <netpasst/argv.hpp>

#include <netpasst/concepts.hpp>
#include <netpasst/json.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <vector>

using netpasst::argv_builder;
using netpasst::options;
using args = std::vector<std::string>;

static_assert(netpasst::OptionsToArgv<argv_builder>);
static_assert(!netpasst::OptionsToArgv<options>);

namespace {
// The argv for a JSON config, without argv[0].
args tail(const char* json_text) {
  auto argv = argv_builder{}.build(netpasst::options_from_json(json_text));
  REQUIRE_FALSE(argv.empty());
  return args(argv.begin() + 1, argv.end());
}
} // namespace

TEST_CASE("every key's argv") {
  struct row { const char* json; args expected; };
  const std::vector<row> rows = {
      {R"({})", {"--quiet"}},
      {R"({"quiet": true})", {"--quiet"}},
      {R"({"quiet": false})", {}},
      {R"({"vhost-user": true, "quiet": false})", {"--vhost-user"}},
      {R"({"vhost-user": false, "quiet": false})", {}},
      {R"({"mtu": 1500, "quiet": false})", {"--mtu", "1500"}},
      {R"({"address": "192.0.2.2", "quiet": false})", {"--address", "192.0.2.2"}},
      {R"({"address": ["192.0.2.2", "2001:db8::2"], "quiet": false})", {"--address", "192.0.2.2", "--address", "2001:db8::2"}},
      {R"({"netmask": "24", "quiet": false})", {"--netmask", "24"}},
      {R"({"mac": "9a:55:9a:55:9a:55", "quiet": false})", {"--mac-addr", "9a:55:9a:55:9a:55"}},
      {R"({"gateway": ["192.0.2.1", "fe80::1"], "quiet": false})", {"--gateway", "192.0.2.1", "--gateway", "fe80::1"}},
      {R"({"interface": "eth0", "quiet": false})", {"--interface", "eth0"}},
      {R"({"outbound": "192.0.2.3", "quiet": false})", {"--outbound", "192.0.2.3"}},
      {R"({"outbound-if4": "eth0", "quiet": false})", {"--outbound-if4", "eth0"}},
      {R"({"outbound-if6": "eth1", "quiet": false})", {"--outbound-if6", "eth1"}},
      {R"({"dns": ["192.0.2.53", "::53"], "quiet": false})", {"--dns", "192.0.2.53", "--dns", "::53"}},
      {R"({"dns": "none", "quiet": false})", {"--dns", "none"}},
      {R"({"fqdn": "vm.example", "quiet": false})", {"--fqdn", "vm.example"}},
      {R"({"dhcp-dns": false, "quiet": false})", {"--no-dhcp-dns"}},
      {R"({"dhcp-dns": true, "quiet": false})", {}},
      {R"({"dhcp-search": false, "quiet": false})", {"--no-dhcp-search"}},
      {R"({"map-host-loopback": "192.0.2.2", "quiet": false})", {"--map-host-loopback", "192.0.2.2"}},
      {R"({"map-guest-addr": "none", "quiet": false})", {"--map-guest-addr", "none"}},
      {R"({"dns-forward": "192.0.2.5", "quiet": false})", {"--dns-forward", "192.0.2.5"}},
      {R"({"dns-host": ["127.0.0.53", "::1"], "quiet": false})", {"--dns-host", "127.0.0.53", "--dns-host", "::1"}},
      {R"({"tcp": false, "quiet": false})", {"--no-tcp"}},
      {R"({"udp": false, "quiet": false})", {"--no-udp"}},
      {R"({"icmp": false, "quiet": false})", {"--no-icmp"}},
      {R"({"dhcp": false, "quiet": false})", {"--no-dhcp"}},
      {R"({"ndp": false, "quiet": false})", {"--no-ndp"}},
      {R"({"dhcpv6": false, "quiet": false})", {"--no-dhcpv6"}},
      {R"({"ra": false, "quiet": false})", {"--no-ra"}},
      {R"({"tcp": true, "ra": true, "quiet": false})", {}},
      {R"({"freebind": true, "quiet": false})", {"--freebind"}},
      {R"({"ipv4": false, "quiet": false})", {"--ipv6-only"}},
      {R"({"ipv6": false, "quiet": false})", {"--ipv4-only"}},
      {R"({"ipv4": true, "ipv6": true, "quiet": false})", {}},
      {R"({"param": ["--one-off", "--pcap", "-f"], "quiet": false})", {"--one-off", "--pcap=-f"}},
      {R"({"hostname": "vm1", "quiet": false})", {"--hostname", "vm1"}},
      {R"({"debug": true})", {"--debug"}},
      {R"({"trace": true})", {"--trace"}},
      {R"({"trace": true, "debug": true})", {"--trace"}},
      {R"({"debug": true, "quiet": false})", {"--debug"}},
      {R"({"log-file": "/tmp/p.log", "quiet": false})", {"--log-file", "/tmp/p.log"}},
      {R"({"log-size": 65536, "quiet": false})", {"--log-size", "65536"}},
      {R"({"pcap": "/tmp/p.pcap", "quiet": false})", {"--pcap", "/tmp/p.pcap"}},
      {R"({"runas": "0", "quiet": false})", {"--runas", "0"}},
      {R"({"no-map-gw": true, "quiet": false})", {"--no-map-gw"}},
      {R"({"no-map-gw": false, "quiet": false})", {}},
  };
  for (const auto& r : rows) {
    INFO(r.json);
    CHECK(tail(r.json) == r.expected);
  }
}

TEST_CASE("argv[0] is path, or passt from PATH") {
  CHECK(argv_builder{}.build(options{}).front() == "passt");
  options o;
  o.path = "/usr/bin/passt";
  CHECK(argv_builder{}.build(o).front() == "/usr/bin/passt");
}

TEST_CASE("QEMU defect 1 fixed: one --search per domain") {
  CHECK(tail(R"({"quiet": false, "search": ["a.example", "b.example"]})") ==
        args{"--search", "a.example", "--search", "b.example"});
}

TEST_CASE("QEMU defect 2 fixed: one --tcp-ports/--udp-ports per item") {
  CHECK(tail(R"({"quiet": false, "tcp-ports": ["192.0.2.1/22", "8080:80"], "udp-ports": ["53", "~25"]})") ==
        args{"--tcp-ports", "192.0.2.1/22", "--tcp-ports", "8080:80", "--udp-ports", "53", "--udp-ports", "~25"});
}

TEST_CASE("QEMU's order, extras next to their neighbours, param last") {
  auto argv = argv_builder{}.build(netpasst::options_from_json(R"({
    "param": ["--one-off"], "udp-ports": ["53"], "tcp-ports": ["22"], "search": ["a.example"],
    "ipv6": false, "freebind": true, "ra": false, "ndp": false, "dhcpv6": false, "dhcp": false, "icmp": false,
    "udp": false, "tcp": false, "dns-host": "127.0.0.1", "dns-forward": "192.0.2.5", "no-map-gw": true,
    "map-guest-addr": "192.0.2.6", "map-host-loopback": "192.0.2.7", "dhcp-search": false, "dhcp-dns": false,
    "hostname": "h", "fqdn": "h.example", "dns": "192.0.2.53", "outbound-if6": "e6", "outbound-if4": "e4",
    "outbound": "192.0.2.8", "interface": "eth0", "gateway": "192.0.2.1", "mac": "9a:55:9a:55:9a:55",
    "netmask": "24", "address": "192.0.2.2", "mtu": 1500, "runas": "0", "pcap": "/p", "log-size": 65536,
    "log-file": "/l", "debug": true, "vhost-user": true, "path": "/usr/bin/passt"})"));
  args options_only;
  std::copy_if(argv.begin(), argv.end(), std::back_inserter(options_only), [](auto& a) { return a.rfind("--", 0) == 0; });
  CHECK(argv.front() == "/usr/bin/passt");
  CHECK(options_only == args{"--vhost-user", "--debug", "--log-file", "--log-size", "--pcap", "--runas", "--mtu",
                             "--address", "--netmask", "--mac-addr", "--gateway", "--interface", "--outbound",
                             "--outbound-if4", "--outbound-if6", "--dns", "--fqdn", "--hostname", "--no-dhcp-dns",
                             "--no-dhcp-search", "--map-host-loopback", "--map-guest-addr", "--no-map-gw",
                             "--dns-forward", "--dns-host", "--no-tcp", "--no-udp", "--no-icmp", "--no-dhcp",
                             "--no-ndp", "--no-dhcpv6", "--no-ra", "--freebind", "--ipv4-only", "--search",
                             "--tcp-ports", "--udp-ports", "--one-off"});
  for (const char* owned : {"--pid", "--fd", "--foreground"})
    CHECK(std::find(argv.begin(), argv.end(), owned) == argv.end());
}

TEST_CASE("invalid options: empty argv and diagnostics, or invalid_options_error") {
  options o;
  o.mtu = 70000;
  o.param = {"--fd=4"};
  std::vector<netpasst::diagnostic> d{{"/earlier", "kept"}};
  CHECK(argv_builder{}.build(o, d).empty());
  REQUIRE(d.size() == 3);
  CHECK(d[0].pointer == "/earlier");
  CHECK(d[1].pointer == "/mtu");
  CHECK(d[2].pointer == "/param/0");
  CHECK_THROWS_AS(argv_builder{}.build(o), netpasst::invalid_options_error);
  try {
    (void)argv_builder{}.build(o);
  } catch (const netpasst::invalid_options_error& e) {
    CHECK(e.diagnostics().size() == 2);
  }
}

TEST_CASE("append_launcher_arguments") {
  args argv{"passt", "--quiet"};
  netpasst::append_launcher_arguments(argv, "/run/p.pid");
  CHECK(argv == args{"passt", "--quiet", "--pid", "/run/p.pid", "--fd", "3"});
  args fg{"passt"};
  netpasst::append_launcher_arguments(fg, "/tmp/x", 5, true);
  CHECK(fg == args{"passt", "--foreground", "--pid", "/tmp/x", "--fd", "5"});
}

TEST_CASE("param setting the verbosity drops the default --quiet") {
  // passt refuses --quiet with --debug or --trace ("Either --debug or
  // --quiet") and --quiet twice ("Multiple --quiet options given").
  CHECK(tail(R"({"param": ["--debug"]})") == args{"--debug"});
  CHECK(tail(R"({"param": ["-d"]})") == args{"--debug"});
  CHECK(tail(R"({"param": ["--trace"]})") == args{"--trace"});
  CHECK(tail(R"({"param": ["-q"]})") == args{"--quiet"});
  CHECK(tail(R"({"param": ["--one-off"]})") == args{"--quiet", "--one-off"});
  // An explicit quiet next to a verbose param is refused, as with debug.
  options o;
  o.quiet = true;
  o.param = {"-d"};
  std::vector<netpasst::diagnostic> d;
  CHECK(argv_builder{}.build(o, d).empty());
  REQUIRE(d.size() == 1);
  CHECK(d[0].pointer == "/param/0");
}
