#include <netpasst/options.hpp>

#include <netpasst/argv.hpp>

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
  // Valid: passt's manual, each one accepted by Debian 12's passt.
  for (const char* spec : {"22", "22:23", "22,25", "22-80", "22-80:32-90", "192.0.2.1/22", "192.0.2.1%eth0/22",
                           "0.0.0.0%eth0/22", "::%eth0/22", "2000-5000,~3000-3010", "~25", "all", "none",
                           "5-25,~10-20", "0", "65535", "1000-1001:2000-2001", "2001:db8::1/80", "2001:db8::1%eth0/80",
                           "192.0.2.1/20-30,~25"}) {
    INFO(spec);
    CHECK(netpasst::detail::port_spec_error(spec).empty());
  }
  // Invalid, most of them confirmed against Debian's passt ("Invalid port specifier").
  for (const char* spec : {"", "x", "70000", "80-70", "22-80:32-40", "22-80:32", "22:", "22-", "all,~22", "22,all",
                           "all:1.2.3.4", "22,,25", ",22", "22,", "~", "-22", "22:x/23", "%/22",
                           "%averyveryverylongname/22", "192.0.2.1/", "~23-24:25", "22 ", "+22", "1e3",
                           // Refused by Debian 12's passt ("Invalid port specifier"), though newer builds take
                           // the first: an interface without an address, "all" after an address, a target
                           // address.
                           "%eth0/22", "::1/all", "192.0.2.1/all", "192.0.2.1%eth0/all", "22:192.0.2.2/23",
                           "2222-2223:3333", "~2222:3333", "/22", "[::1]/22"}) {
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
           {"--mtu", "1500"}, {"--no-map-gw"}, {"--tcp-p", "-s"}}) {
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

namespace {
using namespace std::string_literals;

// Sets the string member or list item a pointer names to `v`: one slot per
// string key, for the rules every string shares.
struct string_slot { const char* pointer; void (*set)(options&, std::string); };
const std::vector<string_slot> every_string = {
    {"/path", [](options& o, std::string v) { o.path = v; }},
    {"/address/0", [](options& o, std::string v) { o.address = {v}; }},
    {"/netmask", [](options& o, std::string v) { o.netmask = v; }},
    {"/mac", [](options& o, std::string v) { o.mac = v; }},
    {"/gateway/0", [](options& o, std::string v) { o.gateway = {v}; }},
    {"/interface", [](options& o, std::string v) { o.interface = v; }},
    {"/outbound/0", [](options& o, std::string v) { o.outbound = {v}; }},
    {"/outbound-if4", [](options& o, std::string v) { o.outbound_if4 = v; }},
    {"/outbound-if6", [](options& o, std::string v) { o.outbound_if6 = v; }},
    {"/dns/0", [](options& o, std::string v) { o.dns = {v}; }},
    {"/fqdn", [](options& o, std::string v) { o.fqdn = v; }},
    {"/map-host-loopback/0", [](options& o, std::string v) { o.map_host_loopback = {v}; }},
    {"/map-guest-addr/0", [](options& o, std::string v) { o.map_guest_addr = {v}; }},
    {"/dns-forward/0", [](options& o, std::string v) { o.dns_forward = {v}; }},
    {"/dns-host/0", [](options& o, std::string v) { o.dns_host = {v}; }},
    {"/search/0", [](options& o, std::string v) { o.search = {v}; }},
    {"/tcp-ports/0", [](options& o, std::string v) { o.tcp_ports = {v}; }},
    {"/udp-ports/0", [](options& o, std::string v) { o.udp_ports = {v}; }},
    {"/param/0", [](options& o, std::string v) { o.param = {v}; }},
    {"/hostname", [](options& o, std::string v) { o.hostname = v; }},
    {"/log-file", [](options& o, std::string v) { o.log_file = v; }},
    {"/pcap", [](options& o, std::string v) { o.pcap = v; }},
    {"/runas", [](options& o, std::string v) { o.runas = v; }},
};

// A valid value for each slot, so a suffix or prefix is all that is wrong.
std::string good_value(const std::string& pointer) {
  if (pointer == "/netmask") return "24";
  if (pointer == "/mac") return "9a:55:9a:55:9a:55";
  if (pointer.find("interface") != std::string::npos || pointer.find("-if") != std::string::npos) return "eth0";
  if (pointer == "/fqdn" || pointer == "/search/0" || pointer == "/hostname") return "vm.example";
  if (pointer.find("ports") != std::string::npos) return "22";
  if (pointer == "/param/0") return "--one-off";
  if (pointer == "/runas") return "nobody";
  if (pointer == "/path" || pointer == "/log-file" || pointer == "/pcap") return "/tmp/x";
  return "192.0.2.3";
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (std::size_t nl; (nl = s.find('\n', start)) != std::string::npos; start = nl + 1) out.push_back(s.substr(start, nl - start));
  out.push_back(s.substr(start));
  return out;
}
} // namespace

TEST_CASE("issue 8: a NUL byte in any string is refused, naming the pointer") {
  for (const auto& slot : every_string) {
    INFO(slot.pointer);
    options good;
    slot.set(good, good_value(slot.pointer));
    REQUIRE(netpasst::validate(good).empty());
    for (const std::string& bad : {good_value(slot.pointer) + "\0"s, good_value(slot.pointer) + "\0 --fd 7"s}) {
      options o;
      slot.set(o, bad);
      auto d = netpasst::validate(o);
      REQUIRE(d.size() == 1);
      CHECK(d[0].pointer == slot.pointer);
      CHECK(d[0].message.find("NUL byte") != std::string::npos);
    }
  }
  // The two smuggling attempts of the issue.
  options o;
  o.param = {"--foreground\0"s};
  CHECK(pointers(o) == std::vector<std::string>{"/param/0"});
  o.param = {"--fd\0"s, "5"};
  CHECK(pointers(o) == std::vector<std::string>{"/param/0"});
  o.param = {};
  o.dns = {"192.0.2.3\0 --fd 7"s};
  CHECK(pointers(o) == std::vector<std::string>{"/dns/0"});
  CHECK(netpasst::detail::ip_family("192.0.2.3\0"s) == 0);
  CHECK_FALSE(netpasst::detail::valid_netmask("24\0"s));
  CHECK_FALSE(netpasst::detail::port_spec_error("22\0"s).empty());
}

TEST_CASE("issue 8: control characters, newlines above all, are refused in every string") {
  for (const auto& slot : every_string) {
    for (char c : {'\n', '\r', '\t', '\x1b', '\x7f', '\x01'}) {
      INFO(slot.pointer << " with byte " << int(c));
      options o;
      slot.set(o, good_value(slot.pointer) + c + "--fd");
      auto d = netpasst::validate(o);
      REQUIRE(d.size() == 1);
      CHECK(d[0].pointer == slot.pointer);
      CHECK(d[0].message.find("control character") != std::string::npos);
      CHECK(d[0].message.find(c) == std::string::npos); // quoted escaped
    }
  }
  options o;
  o.pcap = "/tmp/p\n--fd\n7";
  auto d = netpasst::validate(o);
  REQUIRE(d.size() == 1);
  CHECK(d[0] == diagnostic{"/pcap", "'/tmp/p\\n--fd\\n7' contains the control character \\n at offset 6"});
}

TEST_CASE("issue 8: values of keys never start with '-'") {
  for (const auto& slot : every_string) {
    if (std::string(slot.pointer) == "/param/0") continue; // param holds options
    INFO(slot.pointer);
    options o;
    slot.set(o, "-f");
    auto d = netpasst::validate(o);
    REQUIRE_FALSE(d.empty());
    CHECK(d[0].pointer == slot.pointer);
  }
  options o;
  o.pcap = "-f";
  CHECK(netpasst::validate(o) ==
        std::vector<diagnostic>{{"/pcap", "'-f' starts with '-', which would read as an option (for a file, prefix ./)"}});
  o.pcap = "./-f";
  CHECK(netpasst::validate(o).empty());
}

TEST_CASE("issue 8: strings and lists are capped") {
  using limits = netpasst::option_limits;
  options o;
  o.pcap = "/" + std::string(limits::string_bytes - 1, 'p');
  CHECK(netpasst::validate(o).empty());
  o.pcap->push_back('p');
  auto d = netpasst::validate(o);
  REQUIRE(d.size() == 1);
  CHECK(d[0] == diagnostic{"/pcap", "too long: 4096 bytes, at most 4095"});

  options lists;
  for (std::size_t i = 0; i < limits::list_items; ++i) lists.tcp_ports.push_back(std::to_string(1000 + i));
  lists.param.assign(limits::list_items, "--no-icmp");
  CHECK(netpasst::validate(lists).empty());
  lists.tcp_ports.push_back("22");
  CHECK(netpasst::validate(lists) == std::vector<diagnostic>{{"/tcp-ports", "1025 items: at most 1024"}});

  // A list far beyond the cap is refused as a whole, without looking at
  // each item: one diagnostic.
  options huge;
  huge.param.assign(2'000'000, "--fd");
  CHECK(netpasst::validate(huge) == std::vector<diagnostic>{{"/param", "2000000 items: at most 1024"}});
}

TEST_CASE("issue 8: diagnostics quote values safely and cut long ones") {
  options o;
  o.mac = "\x1b[2J" + std::string(10'000'000, 'a');
  auto d = netpasst::validate(o);
  REQUIRE(d.size() == 1);
  CHECK(d[0].message.size() < 200);
  CHECK(d[0].message.find("too long: 10000004 bytes") != std::string::npos);
  o.mac = "\x1b[2J\n/x: forged";
  d = netpasst::validate(o);
  REQUIRE(d.size() == 1);
  CHECK(d[0].message == "'\\x1b[2J\\n/x: forged' contains the control character \\x1b at offset 0");

  CHECK(netpasst::detail::quote("it's \\ \xff") == "'it\\'s \\\\ \\xff'");
  CHECK(netpasst::detail::quote(std::string(100, 'x')) == "'" + std::string(64, 'x') + "'... (100 bytes)");
  // to_string: one printable line whatever the pointer and message hold.
  auto line = netpasst::to_string({"/a\nb" + std::string(1000, 'k'), "bad\r\nvalue"});
  CHECK(lines_of(line).size() == 1);
  CHECK(line.rfind("/a\\nb" + std::string(196, 'k') + "... (1004 bytes): bad\\r\\nvalue", 0) == 0);
  for (unsigned char c : line) CHECK((c >= 0x20 && c < 0x7f));
  netpasst::invalid_options_error e(std::vector<diagnostic>{{"/x\ny", "z"}});
  CHECK(lines_of(e.what()).size() == 2);
}

TEST_CASE("issue 8: param is parsed as passt's getopt_long parses it") {
  struct row { std::vector<std::string> param; std::vector<std::string> args; };
  // Accepted, and the argv each gives: full long names, values after them.
  const std::vector<row> accepted = {
      {{"--ru", "daemon"}, {"--runas", "daemon"}},
      {{"--runas=daemon"}, {"--runas", "daemon"}},
      {{"-dl", "/tmp/log"}, {"--debug", "--log-file", "/tmp/log"}},
      {{"-l/tmp/log"}, {"--log-file", "/tmp/log"}},
      {{"-1"}, {"--one-off"}},
      {{"-t22", "-u", "53"}, {"--tcp-ports", "22", "--udp-ports", "53"}},
      {{"--dns", "192.0.2.1"}, {"--dns", "192.0.2.1"}},           // exact name beats --dns-forward/--dns-host
      {{"--no-dhcp"}, {"--no-dhcp"}},                             // exact name beats --no-dhcpv6...
      {{"--tcp-p", "-s"}, {"--tcp-ports=-s"}},                    // a value starting with '-' is attached
      {{"--pcap", "-f"}, {"--pcap=-f"}},
      {{"-p", "--fd"}, {"--pcap=--fd"}},
      {{"--log-file=-F"}, {"--log-file=-F"}},
      {{"-l-P"}, {"--log-file=-P"}},
      {{"--mtu", "1500", "--no-map-gw"}, {"--mtu", "1500", "--no-map-gw"}},
      {{"--vhost-user"}, {"--vhost-user"}},
  };
  for (const auto& r : accepted) {
    INFO(r.param.front());
    options o;
    o.quiet = false;
    o.param = r.param;
    CHECK(netpasst::validate(o).empty());
    auto argv = netpasst::argv_builder{}.build(o);
    CHECK(std::vector<std::string>(argv.begin() + 1, argv.end()) == r.args);
  }
  // Refused, with the item each problem is reported at and a word of the message.
  struct bad { std::vector<std::string> param; const char* pointer; const char* says; };
  const std::vector<bad> refused = {
      {{"--search"}, "/param/0", "needs a value"},     // would swallow the launcher's --foreground
      {{"--debug", "-S"}, "/param/1", "needs a value"},
      {{"-dl"}, "/param/0", "needs a value"},
      {{"--"}, "/param/0", "ends passt's options"},
      {{"--debug", "--"}, "/param/1", "ends passt's options"},
      {{"daemon"}, "/param/0", "is not an option"},
      {{"-"}, "/param/0", "is not an option"},
      {{"--mtu", "1500", "1400"}, "/param/2", "is not an option"},
      {{"--no-d"}, "/param/0", "ambiguous"},
      {{"--dns-"}, "/param/0", "ambiguous"},
      {{"--frobnicate"}, "/param/0", "not a passt option"},
      {{"--=x"}, "/param/0", "not a passt option"},
      {{"-x"}, "/param/0", "not a passt option"},
      {{"-dx"}, "/param/0", "not a passt option"},
      {{"--debug=1"}, "/param/0", "takes no value"},
      {{"--pcap="}, "/param/0", "empty value"},
      {{"--pcap", ""}, "/param/1", "empty value"},
      {{"--netns", "/run/netns/x"}, "/param/0", "pasta mode only"},
      {{"-T", "22"}, "/param/0", "pasta mode only"},
      {{"--socket-path", "/tmp/s"}, "/param/0", "reserved (--socket-path)"},
      {{"--socket-p=/tmp/s"}, "/param/0", "reserved (--socket-path)"},
      {{"--sock", "/tmp/s"}, "/param/0", "reserved (-s, --socket)"},
      {{"--p"}, "/param/0", "ambiguous (--pcap, --pid, --print-capabilities)"},
      {{"--pid", "/tmp/p"}, "/param/0", "reserved (-P, --pid)"},
      {{"-s/tmp/s"}, "/param/0", "reserved (-s, --socket)"},
      {{"-1dP5"}, "/param/0", "reserved (-P, --pid)"},
      {{"--print-c"}, "/param/0", "reserved (--print-capabilities)"},
      {{"--vers"}, "/param/0", "reserved (--version)"},
  };
  for (const auto& r : refused) {
    INFO(r.param.front());
    options o;
    o.param = r.param;
    auto d = netpasst::validate(o);
    REQUIRE(d.size() == 1);
    CHECK(d[0].pointer == r.pointer);
    CHECK(d[0].message.find(r.says) != std::string::npos);
  }
}

TEST_CASE("fuzz finding: strings that are not UTF-8 are refused (to_json could not be written as text)") {
  // tests/fuzz/corpus/options/regression_invalid_utf8_param: param accepted,
  // then nlohmann::json::dump threw on the round trip.
  options o;
  o.param = {"--tcp-p=22\xff\xff"};
  CHECK(netpasst::validate(o) ==
        std::vector<diagnostic>{{"/param/0", "'--tcp-p=22\\xff\\xff' is not valid UTF-8 at offset 10"}});
  using netpasst::detail::invalid_utf8_offset;
  CHECK(invalid_utf8_offset("caf\xc3\xa9 \xf0\x9f\x98\x80") == 10);     // well-formed: é, U+1F600
  CHECK(invalid_utf8_offset("\xc0\xaf") == 0);                             // overlong '/'
  CHECK(invalid_utf8_offset("a\xed\xa0\x80") == 1);                        // surrogate U+D800
  CHECK(invalid_utf8_offset("ab\xf4\x90\x80\x80") == 2);                   // past U+10FFFF
  CHECK(invalid_utf8_offset("abc\xe2\x82") == 3);                          // cut short
  o.param = {};
  o.pcap = "/tmp/caf\xc3\xa9.pcap";
  CHECK(netpasst::validate(o).empty());
}

TEST_CASE("search: at most six domains, as passt keeps (MAXDNSRCH)") {
  // passt: "Cannot use DNS search domain g" for a seventh --search.
  options o;
  o.search = {"a", "b", "c", "d", "e", "f"};
  CHECK(pointers(o).empty());
  o.search.push_back("g");
  CHECK(pointers(o) == std::vector<std::string>{"/search"});
}

TEST_CASE("port specs: 'all' is the only spec of its list, as 'none' is") {
  // passt: "Port forwarding mode 'all' conflicts with previous mode".
  options o;
  o.tcp_ports = {"40000", "all"};
  o.udp_ports = {"all", "all"};
  CHECK(pointers(o) == std::vector<std::string>{"/tcp-ports/1", "/udp-ports/0", "/udp-ports/1"});
  o.tcp_ports = {"all"};
  o.udp_ports = {"all"};
  CHECK(pointers(o).empty());
}

TEST_CASE("port specs: a port forwarded twice or excluded twice is refused, as passt does") {
  // Each refused by Debian 12's passt: "Overlapping port specifier ...".
  auto tcp = [](std::vector<std::string> specs) { options o; o.tcp_ports = std::move(specs); return pointers(o); };
  using v = std::vector<std::string>;
  CHECK(tcp({"22,22"}) == v{"/tcp-ports/0"});
  CHECK(tcp({"40000-40010,40005"}) == v{"/tcp-ports/0"});
  CHECK(tcp({"40000,~40000-40001,~40001"}) == v{"/tcp-ports/0"});
  CHECK(tcp({"40000", "40000"}) == v{"/tcp-ports/1"});
  CHECK(tcp({"40000", "40000-40001,~40000"}) == v{"/tcp-ports/1"});
  // Each accepted by it: one target for two ports, an excluded port given
  // again, the same port for TCP and UDP.
  CHECK(tcp({"40000:40001,40002:40001"}).empty());
  CHECK(tcp({"40000-40002,~40001,40001"}).empty());
  CHECK(tcp({"40000-40002,~40001", "40001"}).empty());
  options o;
  o.tcp_ports = {"40000"};
  o.udp_ports = {"40000"};
  CHECK(pointers(o).empty());
}

TEST_CASE("param: an option passt takes once, given again, is refused") {
  // Each refused by passt: "Multiple --mtu options given", "Redundant
  // interface: eth0", "Redundant --one-off option"...
  auto with = [](auto f) { options o; f(o); return pointers(o); };
  using v = std::vector<std::string>;
  CHECK(with([](options& o) { o.mtu = 1500; o.param = {"-m", "1400"}; }) == v{"/param/0"});
  CHECK(with([](options& o) { o.runas = "nobody"; o.param = {"--ru=daemon"}; }) == v{"/param/0"});
  CHECK(with([](options& o) { o.interface = "eth0"; o.param = {"-ieth1"}; }) == v{"/param/0"});
  CHECK(with([](options& o) { o.debug = true; o.param = {"-d"}; }) == v{"/param/0"});
  CHECK(with([](options& o) { o.param = {"-1", "--one-off"}; }) == v{"/param/1"});
  CHECK(with([](options& o) { o.param = {"-q", "--quiet"}; }) == v{"/param/1"});
  CHECK(with([](options& o) { o.param = {"--log-file", "/a", "-el/b"}; }) == v{"/param/2"});
  for (const char* key_and_param : {"log-file", "log-size", "pcap", "outbound-if4", "outbound-if6"}) {
    INFO(key_and_param);
    options o;
    o.log_file = "/l";
    o.log_size = 65536;
    o.pcap = "/p";
    o.outbound_if4 = "e4";
    o.outbound_if6 = "e6";
    o.param = {"--" + std::string(key_and_param) + "=65536"};
    CHECK(pointers(o) == v{"/param/0"});
  }
  // What passt takes several times stays accepted.
  CHECK(with([](options& o) { o.tcp_ports = {"22"}; o.param = {"-t", "23", "--no-tcp", "--no-tcp", "-D", "192.0.2.1"}; }).empty());
  // --trace counts as a first --debug ("Multiple --debug options given"
  // for --trace -d), not the reverse.
  CHECK(with([](options& o) { o.trace = true; o.param = {"--debug"}; }) == v{"/param/0"});
  CHECK(with([](options& o) { o.param = {"--trace", "-d"}; }) == v{"/param/1"});
  CHECK(with([](options& o) { o.param = {"-d", "--trace"}; }).empty());
  CHECK(with([](options& o) { o.debug = true; o.param = {"--trace"}; }).empty());
}

TEST_CASE("dns: at most four servers per family, as Debian 12's passt keeps") {
  // passt: "Cannot use DNS address 192.0.2.5" for a fifth IPv4 --dns.
  options o;
  o.dns = {"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "2001:db8::1", "2001:db8::2", "2001:db8::3",
           "2001:db8::4"};
  CHECK(pointers(o).empty());
  o.dns.push_back("192.0.2.5");
  o.dns.push_back("2001:db8::5");
  CHECK(pointers(o) == std::vector<std::string>{"/dns/8", "/dns/9"});
}

TEST_CASE("log-size: at most 2^63 - 1, as passt reads it (strtol)") {
  // passt: "Invalid --log-size: 9223372036854775808".
  options o;
  o.log_size = 9223372036854775807u;
  CHECK(pointers(o).empty());
  o.log_size = 9223372036854775808u;
  CHECK(pointers(o) == std::vector<std::string>{"/log-size"});
  o.log_size = 18446744073709551615u;
  CHECK(pointers(o) == std::vector<std::string>{"/log-size"});
}

TEST_CASE("param: a second address of one family, also after a key's, is refused") {
  // Debian 12's passt: "Invalid address: 192.0.2.3", "Invalid gateway
  // address", "Invalid or redundant outbound address", "Invalid DNS
  // forwarding address".
  auto with = [](auto f) { options o; f(o); return pointers(o); };
  using v = std::vector<std::string>;
  CHECK(with([](options& o) { o.address = {"192.0.2.2"}; o.param = {"-a", "192.0.2.3"}; }) == v{"/param/0"});
  CHECK(with([](options& o) { o.gateway = {"192.0.2.1"}; o.param = {"--gateway=192.0.2.9"}; }) == v{"/param/0"});
  CHECK(with([](options& o) { o.param = {"-o", "2001:db8::1", "--outbound", "2001:db8::2"}; }) == v{"/param/2"});
  CHECK(with([](options& o) { o.dns_forward = {"192.0.2.5"}; o.param = {"--dns-forward", "192.0.2.6"}; }) ==
        v{"/param/0"});
  // One per family stays accepted.
  CHECK(with([](options& o) { o.address = {"192.0.2.2"}; o.param = {"-a", "2001:db8::2", "-g", "192.0.2.1"}; }).empty());
}

TEST_CASE("param: -t/-u overlapping the tcp-ports/udp-ports keys is refused") {
  // Debian 12's passt: "Overlapping port specifier 22", "Port forwarding
  // mode 'all' conflicts with previous mode".
  auto with = [](auto f) { options o; f(o); return pointers(o); };
  using v = std::vector<std::string>;
  CHECK(with([](options& o) { o.tcp_ports = {"22"}; o.param = {"-t", "20-30"}; }) == v{"/param/0"});
  CHECK(with([](options& o) { o.udp_ports = {"53"}; o.param = {"-u53"}; }) == v{"/param/0"});
  CHECK(with([](options& o) { o.param = {"--tcp-ports=40000", "-t", "40000"}; }) == v{"/param/1"});
  CHECK(with([](options& o) { o.tcp_ports = {"40000"}; o.param = {"-t", "all"}; }) == v{"/param/0"});
  CHECK(with([](options& o) { o.tcp_ports = {"none"}; o.param = {"-t", "22"}; }) == v{"/param/0"});
  // Other ports, or the other protocol, stay accepted.
  CHECK(with([](options& o) { o.tcp_ports = {"22"}; o.param = {"-t", "23", "-u", "22"}; }).empty());
}

TEST_CASE("param: -4 with -6, also against the ipv4/ipv6 keys, is refused") {
  // passt: "Options ipv4-only and ipv6-only are mutually exclusive".
  auto with = [](auto f) { options o; f(o); return pointers(o); };
  using v = std::vector<std::string>;
  CHECK(with([](options& o) { o.param = {"-4", "--ipv6-only"}; }) == v{"/param/1"});
  CHECK(with([](options& o) { o.ipv6 = false; o.param = {"-6"}; }) == v{"/param/0"});
  CHECK(with([](options& o) { o.ipv4 = false; o.param = {"--ipv4-only"}; }) == v{"/param/0"});
  CHECK(with([](options& o) { o.ipv6 = false; o.param = {"-4", "-4"}; }).empty());
}

TEST_CASE("param: --dns and --search count with the dns and search keys") {
  // Debian 12's passt: "Cannot use DNS address ...", "Conflicting DNS
  // options", "Redundant DNS options", "Cannot use DNS search domain ...",
  // "Conflicting DNS search options".
  auto with = [](auto f) { options o; f(o); return pointers(o); };
  using v = std::vector<std::string>;
  CHECK(with([](options& o) { o.dns = {"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"}; o.param = {"-D192.0.2.5"}; }) ==
        v{"/param/0"});
  CHECK(with([](options& o) { o.dns = {"none"}; o.param = {"--dns", "192.0.2.1"}; }) == v{"/param/0"});
  CHECK(with([](options& o) { o.dns = {"192.0.2.1"}; o.param = {"--dns", "none"}; }) == v{"/param/0"});
  CHECK(with([](options& o) { o.param = {"-D", "none", "-D", "none"}; }) == v{"/param/2"});
  CHECK(with([](options& o) { o.search = {"a", "b", "c", "d", "e", "f"}; o.param = {"-S", "g"}; }) == v{"/param/0"});
  CHECK(with([](options& o) { o.search = {"none"}; o.param = {"--search", "a.example"}; }) == v{"/param/0"});
  CHECK(with([](options& o) { o.dns = {"192.0.2.1", "2001:db8::1"}; o.param = {"-D", "192.0.2.2", "-S", "a"}; }).empty());
}
