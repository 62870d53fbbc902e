#include <netpasst/options.hpp>

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using netpasst::diagnostic;
using netpasst::options;

namespace {
// The pointers validate() reports for `o`.
std::vector<std::string> pointers(const options& o) {
  std::vector<std::string> p;
  for (auto& d : netpasst::validate(o)) p.push_back(d.pointer);
  return p;
}
} // namespace

TEST_CASE("default options are valid") {
  CHECK(netpasst::validate(options{}).empty());
}

TEST_CASE("port specs: the grammar of passt's -t/-u") {
  // Valid: REFERENCE.md section 2 and passt's manual.
  for (const char* spec : {"22", "22:23", "22,25", "22-80", "22-80:32-90", "192.0.2.1/22", "192.0.2.1%eth0/22",
                           "%eth0/22", "2000-5000,~3000-3010", "~25", "::1/all", "all", "none", "5-25,~10-20",
                           "0", "65535", "22:192.0.2.2/23", "1000-1001:2000-2001", "2001:db8::1/80"}) {
    INFO(spec);
    CHECK(netpasst::detail::port_spec_error(spec).empty());
  }
  // Invalid, most of them confirmed against Debian's passt ("Invalid port specifier").
  for (const char* spec : {"", "x", "70000", "80-70", "22-80:32-40", "22-80:32", "22:", "22-", "all,~22", "22,all",
                           "all:1.2.3.4", "22,,25", ",22", "22,", "~", "-22", "22:x/23", "%/22",
                           "%averyveryverylongname/22", "192.0.2.1/", "~23-24:25", "22 ", "+22", "1e3"}) {
    INFO(spec);
    CHECK_FALSE(netpasst::detail::port_spec_error(spec).empty());
  }
}

TEST_CASE("value rules name the offending key") {
  struct row { const char* name; options o; std::vector<std::string> expected; };
  auto with = [](auto f) { options o; f(o); return o; };
  const std::vector<row> rows = {
      {"mtu 0", with([](options& o) { o.mtu = 0; }), {}},
      {"mtu 68", with([](options& o) { o.mtu = 68; }), {}},
      {"mtu 65520", with([](options& o) { o.mtu = 65520; }), {}},
      {"mtu 67", with([](options& o) { o.mtu = 67; }), {"/mtu"}},
      {"mtu 65521", with([](options& o) { o.mtu = 65521; }), {"/mtu"}},
      {"mtu -1", with([](options& o) { o.mtu = -1; }), {"/mtu"}},
      {"two addresses", with([](options& o) { o.address = {"192.0.2.2", "2001:db8::2"}; }), {}},
      {"address prefix", with([](options& o) { o.address = {"192.0.2.2/24", "2001:db8::2/64"}; }), {}},
      {"address bad prefix", with([](options& o) { o.address = {"192.0.2.2/33"}; }), {"/address/0"}},
      {"two IPv4 addresses", with([](options& o) { o.address = {"192.0.2.2", "192.0.2.3"}; }), {"/address/1"}},
      {"three addresses", with([](options& o) { o.address = {"192.0.2.2", "::2", "::3"}; }), {"/address", "/address/2"}},
      {"bad address", with([](options& o) { o.address = {"192.0.2"}; }), {"/address/0"}},
      {"netmask bits", with([](options& o) { o.netmask = "24"; }), {}},
      {"netmask dotted", with([](options& o) { o.netmask = "255.255.255.0"; }), {}},
      {"netmask holes", with([](options& o) { o.netmask = "255.255.0.255"; }), {"/netmask"}},
      {"netmask 33", with([](options& o) { o.netmask = "33"; }), {"/netmask"}},
      {"netmask and prefix", with([](options& o) { o.netmask = "24"; o.address = {"192.0.2.2/24"}; }), {"/netmask"}},
      {"mac", with([](options& o) { o.mac = "9a:55:9a:55:9a:55"; }), {}},
      {"mac short", with([](options& o) { o.mac = "2:0:0:0:0:1"; }), {"/mac"}},
      {"mac hex", with([](options& o) { o.mac = "02:00:00:00:00:zz"; }), {"/mac"}},
      {"gateway prefix", with([](options& o) { o.gateway = {"192.0.2.1/24"}; }), {"/gateway/0"}},
      {"interface 15", with([](options& o) { o.interface = "abcdefghijklmno"; }), {}},
      {"interface 16", with([](options& o) { o.interface = "abcdefghijklmnop"; }), {"/interface"}},
      {"interface slash", with([](options& o) { o.interface = "a/b"; }), {"/interface"}},
      {"outbound-if4 empty", with([](options& o) { o.outbound_if4 = ""; }), {"/outbound-if4"}},
      {"outbound-if6 colon", with([](options& o) { o.outbound_if6 = "eth0:1"; }), {"/outbound-if6"}},
      {"outbound", with([](options& o) { o.outbound = {"nope"}; }), {"/outbound/0"}},
      {"several dns", with([](options& o) { o.dns = {"192.0.2.53", "192.0.2.54", "2001:db8::53"}; }), {}},
      {"dns none", with([](options& o) { o.dns = {"none"}; }), {}},
      {"dns none and more", with([](options& o) { o.dns = {"none", "192.0.2.53"}; }), {"/dns/0"}},
      {"dns bad", with([](options& o) { o.dns = {"resolver"}; }), {"/dns/0"}},
      {"search", with([](options& o) { o.search = {"a.example", "b.example."}; }), {}},
      {"search joined", with([](options& o) { o.search = {"a.example b.example"}; }), {"/search/0"}},
      {"fqdn", with([](options& o) { o.fqdn = "vm.example"; }), {}},
      {"fqdn bad", with([](options& o) { o.fqdn = "vm..example"; }), {"/fqdn"}},
      {"map-host-loopback none", with([](options& o) { o.map_host_loopback = {"none"}; }), {}},
      {"map-guest-addr bad", with([](options& o) { o.map_guest_addr = {"x"}; }), {"/map-guest-addr/0"}},
      {"dns-forward", with([](options& o) { o.dns_forward = {"192.0.2.3", "2001:db8::3"}; }), {}},
      {"dns-host v6 twice", with([](options& o) { o.dns_host = {"::1", "::2"}; }), {"/dns-host/1"}},
      {"ipv4 off", with([](options& o) { o.ipv4 = false; }), {}},
      {"both off", with([](options& o) { o.ipv4 = false; o.ipv6 = false; }), {"/ipv6"}},
      {"tcp-ports", with([](options& o) { o.tcp_ports = {"22", "192.0.2.1/80", "~25"}; }), {}},
      {"tcp-ports bad", with([](options& o) { o.tcp_ports = {"22", "80-70"}; }), {"/tcp-ports/1"}},
      {"udp-ports none alone", with([](options& o) { o.udp_ports = {"53", "none"}; }), {"/udp-ports/1"}},
      {"quiet and debug", with([](options& o) { o.quiet = true; o.debug = true; }), {"/quiet"}},
      {"debug", with([](options& o) { o.debug = true; }), {}},
      {"log-size small", with([](options& o) { o.log_size = 40959; }), {"/log-size"}},
      {"log-size min", with([](options& o) { o.log_size = 40960; }), {}},
      {"hostname", with([](options& o) { o.hostname = "vm1"; }), {}},
      {"hostname blank", with([](options& o) { o.hostname = "vm 1"; }), {"/hostname"}},
      {"runas", with([](options& o) { o.runas = "0:0"; }), {}},
      {"runas blank", with([](options& o) { o.runas = ""; }), {"/runas"}},
      {"path empty", with([](options& o) { o.path = ""; }), {"/path"}},
      {"log-file empty", with([](options& o) { o.log_file = ""; }), {"/log-file"}},
      {"pcap empty", with([](options& o) { o.pcap = ""; }), {"/pcap"}},
  };
  for (auto& r : rows) {
    INFO(r.name);
    CHECK(pointers(r.o) == r.expected);
  }
}

TEST_CASE("param: launcher-owned options are refused in every spelling") {
  for (const char* reserved : {"--fd", "--fd=3", "-F", "-F3", "--pid", "--pid=x", "-P", "-Px", "--socket", "-s",
                               "--foreground", "-f", "--help", "-h", "--version", "--print-capabilities",
                               "-df", "-qF3", "--foreg", "--pi=x", "--print"}) {
    INFO(reserved);
    options o;
    o.param = {"--debug", reserved};
    CHECK(pointers(o) == std::vector<std::string>{"/param/1"});
  }
  // Allowed: ordinary options, and reserved-looking values of options that take one.
  for (std::vector<std::string> ok : std::vector<std::vector<std::string>>{
           {"--debug"}, {"--one-off"}, {"-1"}, {"--pcap", "-f"}, {"-p", "-f"}, {"--log-file=-F"}, {"-l-P"},
           {"--mtu", "1500"}, {"--no-map-gw"}, {"--", "-f"}, {"--tcp-p", "-s"}}) {
    options o;
    o.param = ok;
    INFO(ok.back());
    CHECK(netpasst::validate(o).empty());
  }
  options o;
  o.param = {""};
  CHECK(pointers(o) == std::vector<std::string>{"/param/0"});
}

TEST_CASE("invalid_options_error carries its diagnostics") {
  netpasst::invalid_options_error e({{"/mtu", "too big"}, {"", "not an object"}});
  CHECK(e.code() == netpasst::errc::invalid_options);
  CHECK(e.code() == netpasst::condition::configuration_error);
  CHECK(e.diagnostics().size() == 2);
  CHECK(e.diagnostics()[0] == diagnostic{"/mtu", "too big"});
  CHECK(std::string(e.what()) == "invalid passt options:\n/mtu: too big\n: not an object");
}

TEST_CASE("options compare by value") {
  options a, b;
  CHECK(a == b);
  b.search = {"a.example"};
  CHECK_FALSE(a == b);
  a.search = {"a.example"};
  CHECK(a == b);
}
