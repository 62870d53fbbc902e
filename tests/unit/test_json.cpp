#include <netpasst/json.hpp>

#include <catch2/catch.hpp>

#include <sstream>
#include <string>
#include <vector>

using netpasst::diagnostic;
using netpasst::options;
using nlohmann::json;

namespace {
std::vector<diagnostic> errors_of(const json& j) {
  std::vector<diagnostic> d;
  auto o = netpasst::options_from_json(j, d);
  CHECK(o.has_value() == d.empty());
  return d;
}
std::vector<std::string> pointers_of(const json& j) {
  std::vector<std::string> p;
  for (auto& d : errors_of(j)) p.push_back(d.pointer);
  return p;
}

// One valid value per key, with a wrong-typed value for the same key.
struct key_row { const char* key; json good; json wrong; };
const std::vector<key_row> every_key = {
    {"path", "/usr/bin/passt", 1},
    {"quiet", false, "yes"},
    {"vhost-user", true, 1},
    {"mtu", 1500, "1500"},
    {"address", "192.0.2.2", 3},
    {"netmask", "255.255.255.0", 24},
    {"mac", "9a:55:9a:55:9a:55", json::array()},
    {"gateway", json::array({"192.0.2.1", "2001:db8::1"}), true},
    {"interface", "eth0", json::object()},
    {"outbound", "192.0.2.3", 1.5},
    {"outbound-if4", "eth0", false},
    {"outbound-if6", "eth1", nullptr},
    {"dns", json::array({"192.0.2.53", "192.0.2.54", "2001:db8::53"}), 53},
    {"search", json::array({"a.example", "b.example"}), "a.example"},
    {"fqdn", "vm.example", 1},
    {"dhcp-dns", false, 0},
    {"dhcp-search", false, "false"},
    {"map-host-loopback", "192.0.2.2", 2},
    {"map-guest-addr", json::array({"192.0.2.4"}), 2},
    {"dns-forward", json::array({"192.0.2.5", "2001:db8::5"}), 2},
    {"dns-host", "127.0.0.53", 2},
    {"tcp", false, 0},
    {"udp", false, 0},
    {"icmp", false, 0},
    {"dhcp", false, 0},
    {"ndp", false, 0},
    {"dhcpv6", false, 0},
    {"ra", false, 0},
    {"freebind", true, 1},
    {"ipv4", true, "true"},
    {"ipv6", false, nullptr},
    {"tcp-ports", json::array({"2222:22", "192.0.2.1/8080"}), "22"},
    {"udp-ports", json::array({json{{"str", "5353"}}}), 5353},
    {"param", json::array({"--one-off"}), "--one-off"},
    {"hostname", "vm1", 1},
    {"debug", true, 1},
    {"trace", true, 1},
    {"log-file", "/tmp/passt.log", 1},
    {"log-size", 1048576, -1},
    {"pcap", "/tmp/passt.pcap", true},
    {"runas", "0", 0},
    {"no-map-gw", true, "on"},
};
} // namespace

TEST_CASE("every key: its good value reads, its wrong type names the key") {
  for (const auto& row : every_key) {
    INFO(row.key);
    CHECK(errors_of(json{{row.key, row.good}}).empty());
    auto d = errors_of(json{{row.key, row.wrong}});
    REQUIRE(d.size() == 1);
    CHECK(d[0].pointer == std::string("/") + row.key);
    CHECK(d[0].message.rfind("expected ", 0) == 0);
  }
}

TEST_CASE("all keys at once round-trip through to_json") {
  json all = json::object();
  for (const auto& row : every_key) all[row.key] = row.good;
  all.erase("quiet"); // quiet would conflict with debug
  std::vector<diagnostic> d;
  auto o = netpasst::options_from_json(all, d);
  INFO((d.empty() ? "" : d[0].pointer + ": " + d[0].message));
  REQUIRE(o);
  CHECK(o->mtu == 1500);
  CHECK(o->gateway == std::vector<std::string>{"192.0.2.1", "2001:db8::1"});
  CHECK(o->udp_ports == std::vector<std::string>{"5353"});
  CHECK(o->dns.size() == 3);
  CHECK(o->log_size == 1048576u);
  CHECK(o->no_map_gw == true);
  json out = netpasst::to_json(*o);
  CHECK(out["udp-ports"] == json::array({"5353"})); // {"str"} items come out plain
  CHECK(out["address"] == "192.0.2.2");              // one per-family value stays a string
  auto again = netpasst::options_from_json(out);
  CHECK(again == *o);
  // ADL customisation points.
  json via_adl = *o;
  CHECK(via_adl == out);
  CHECK(via_adl.get<options>() == *o);
  // Every member is covered: to_json of the full value names every key.
  for (const auto& row : every_key)
    if (std::string(row.key) != "quiet") CHECK(out.contains(row.key));
}

TEST_CASE("netdev_add arguments are accepted") {
  auto o = netpasst::options_from_json(
      R"({"type": "passt", "id": "net0", "search": [{"str": "a.example"}, "b.example"], "quiet": false})");
  CHECK(o.search == std::vector<std::string>{"a.example", "b.example"});
  CHECK(o.quiet == false);
  CHECK(pointers_of(json{{"type", "user"}, {"id", "net0"}}) == std::vector<std::string>{"/type"});
  CHECK(pointers_of(json{{"type", "passt"}, {"id", 7}}) == std::vector<std::string>{"/id"});
}

TEST_CASE("strictness: every problem is reported with its pointer") {
  struct row { const char* name; const char* text; std::vector<std::string> pointers; };
  const std::vector<row> rows = {
      {"unknown key", R"({"mtu": 1500, "tcp_ports": ["22"]})", {"/tcp_ports"}},
      {"unknown key escaped", R"({"a/b~c": 1})", {"/a~1b~0c"}},
      {"mtu out of range", R"({"mtu": 65521})", {"/mtu"}},
      {"mtu beyond int", R"({"mtu": 99999999999})", {"/mtu"}},
      {"mtu negative", R"({"mtu": -5})", {"/mtu"}},
      {"mtu fraction", R"({"mtu": 1500.5})", {"/mtu"}},
      {"bad port spec item", R"({"tcp-ports": ["22", "80-70", "x"]})", {"/tcp-ports/1", "/tcp-ports/2"}},
      {"bad list item type", R"({"udp-ports": ["53", 54, {"str": 5}, {"str": "1", "x": 2}]})",
       {"/udp-ports/1", "/udp-ports/2", "/udp-ports/3"}},
      {"reserved param", R"({"param": ["--debug", "--pid=x", "-Px", "-F3"]})", {"/param/1", "/param/2", "/param/3"}},
      {"both families off", R"({"ipv4": false, "ipv6": false})", {"/ipv6"}},
      {"three addresses", R"({"address": ["192.0.2.2", "::2", "::3"]})", {"/address"}},
      {"second address bad", R"({"address": ["192.0.2.2", "nope"]})", {"/address/1"}},
      {"single address bad", R"({"address": "nope"})", {"/address"}},
      {"single dns bad", R"({"dns": "nope"})", {"/dns"}},
      {"bad mac and netmask", R"({"mac": "00:11", "netmask": "255.0.255.0"})", {"/netmask", "/mac"}},
      {"interface too long", R"({"interface": "abcdefghijklmnop"})", {"/interface"}},
      {"search joined", R"({"search": ["a.example b.example"]})", {"/search/0"}},
      {"not an object", R"(["mtu"])", {""}},
      {"several at once", R"({"mtu": "x", "dhcp": 1, "bogus": 0})", {"/mtu", "/dhcp", "/bogus"}},
  };
  for (const auto& r : rows) {
    INFO(r.name);
    CHECK(pointers_of(json::parse(r.text)) == r.pointers);
  }
}

TEST_CASE("text and stream input, syntax errors are one diagnostic") {
  std::vector<diagnostic> d;
  CHECK(netpasst::options_from_json(std::string(R"({"mtu": 1500})"), d)->mtu == 1500);
  std::istringstream in(R"({"tcp-ports": ["22"]})");
  CHECK(netpasst::options_from_json(in, d)->tcp_ports == std::vector<std::string>{"22"});
  CHECK(d.empty());
  CHECK_FALSE(netpasst::options_from_json("{\"mtu\": 1500,", d));
  REQUIRE(d.size() == 1);
  CHECK(d[0].pointer.empty());
  CHECK(d[0].message.find("line 1") != std::string::npos);
  try {
    (void)netpasst::options_from_json(R"({"mtu": 1, "pcap": ""})");
    FAIL("no exception");
  } catch (const netpasst::invalid_options_error& e) {
    CHECK(e.code() == netpasst::errc::invalid_options);
    REQUIRE(e.diagnostics().size() == 2);
    CHECK(std::string(e.what()).find("\n/pcap: ") != std::string::npos);
  }
}

TEST_CASE("round trip: parse, serialize, parse gives an equal value") {
  for (const char* text : {
           R"({})",
           R"({"quiet": false, "mtu": 0, "dns": "none", "search": ["none"]})",
           R"({"address": ["192.0.2.2", "2001:db8::2"], "gateway": "192.0.2.1", "map-guest-addr": "none"})",
           R"({"tcp-ports": ["22", "192.0.2.1%eth0/8080:80", "~25"], "udp-ports": ["none"], "param": ["--one-off"]})",
           R"({"type": "passt", "id": "n", "trace": true, "log-size": 65536, "runas": "nobody:nogroup"})",
       }) {
    INFO(text);
    auto first = netpasst::options_from_json(text);
    auto second = netpasst::options_from_json(netpasst::to_json(first));
    CHECK(first == second);
    CHECK(netpasst::to_json(second) == netpasst::to_json(first));
  }
}

TEST_CASE("issue 8: NUL and newlines in JSON strings are refused with their pointer") {
  struct row { const char* text; const char* pointer; };
  for (const row& r : std::vector<row>{
           {R"({"param": ["--foreground\u0000"]})", "/param/0"},
           {R"({"param": ["--fd\u0000", "5"]})", "/param/0"},
           {R"({"dns": "192.0.2.3\u0000 --fd 7"})", "/dns"},
           {R"({"address": ["192.0.2.2\u0000"]})", "/address/0"},
           {R"({"gateway": "192.0.2.1\u0000x"})", "/gateway"},
           {R"({"netmask": "24\u0000"})", "/netmask"},
           {R"({"tcp-ports": ["22\u0000"]})", "/tcp-ports/0"},
           {R"({"pcap": "/tmp/p\n--fd\n7"})", "/pcap"},
           {R"({"log-file": "/tmp/l\n--fd"})", "/log-file"},
           {R"({"path": "/usr/bin/passt\n--fd"})", "/path"},
           {R"({"param": ["--pcap", "/tmp/p\n--fd\n7"]})", "/param/1"},
           {R"({"udp-ports": [{"str": "53\r"}]})", "/udp-ports/0"},
       }) {
    INFO(r.text);
    auto d = errors_of(json::parse(r.text));
    REQUIRE(d.size() == 1);
    CHECK(d[0].pointer == r.pointer);
    CHECK(d[0].message.find('\n') == std::string::npos);
    CHECK(d[0].message.find('\0') == std::string::npos);
  }
}

TEST_CASE("issue 8: a key given twice is refused, naming the second") {
  struct row { const char* text; std::vector<std::string> pointers; };
  for (const row& r : std::vector<row>{
           {R"({"mtu": 1500, "mtu": 9000})", {"/mtu"}},
           {R"({"param": ["--debug"], "tcp-ports": ["22"], "param": ["--fd", "5"]})", {"/param"}},
           {R"({"udp-ports": [{"str": "53", "str": "54"}]})", {"/udp-ports/0/str"}},
           {R"({"type": "passt", "type": "user", "id": "a", "id": "b"})", {"/type", "/id"}},
           {R"({"a~/b": 1, "a~/b": 2})", {"/a~0~1b", "/a~0~1b"}}, // duplicate (and unknown)
           {R"({"dns": "192.0.2.1", "dns": {"x": [1, {"y": 2, "y": 3}]}})", {"/dns", "/dns/x/1/y"}},
       }) {
    INFO(r.text);
    std::vector<diagnostic> d;
    CHECK_FALSE(netpasst::options_from_json(std::string_view(r.text), d));
    std::vector<std::string> p;
    for (auto& x : d) p.push_back(x.pointer);
    CHECK(p == r.pointers);
    CHECK(d.front().message.rfind("duplicate key \"", 0) == 0);
  }
  // The same keys once each are fine.
  CHECK(netpasst::options_from_json(R"({"mtu": 1500, "udp-ports": [{"str": "53"}, {"str": "54"}]})").mtu == 1500);
}

TEST_CASE("issue 8: oversized input is refused early with a clear message") {
  using limits = netpasst::json_limits;
  std::vector<diagnostic> d;
  // More text than the limit: refused before parsing, from a string or a stream.
  std::string big = R"({"pcap": ")" + std::string(limits::text_bytes, 'a') + R"("})";
  CHECK_FALSE(netpasst::options_from_json(std::string_view(big), d));
  REQUIRE(d.size() == 1);
  CHECK(d[0] == diagnostic{"", "JSON text of " + std::to_string(big.size()) + " bytes: at most 1048576"});
  d.clear();
  std::istringstream in(big);
  CHECK_FALSE(netpasst::options_from_json(in, d));
  REQUIRE(d.size() == 1);
  CHECK(d[0] == diagnostic{"", "JSON text of more than 1048576 bytes: at most 1048576"});
  CHECK(in.tellg() <= std::streampos(limits::text_bytes + 65536)); // read no further

  // Long lists stop the parse at the first item past the limit.
  std::string list = R"({"param": [)";
  for (int i = 0; i < 100'000; ++i) list += R"("-d",)";
  list += R"("-d"]})";
  d.clear();
  CHECK_FALSE(netpasst::options_from_json(std::string_view(list), d));
  CHECK(d == std::vector<diagnostic>{{"/param", "more than 1024 items"}});
  // ... and a parsed document's lists are refused without reading each item.
  d.clear();
  CHECK_FALSE(netpasst::options_from_json(json{{"tcp-ports", json(std::vector<std::string>(5000, "22"))}}, d));
  CHECK(d == std::vector<diagnostic>{{"/tcp-ports", "5000 items: at most 1024"}});

  // Deep nesting stops the parse.
  d.clear();
  CHECK_FALSE(netpasst::options_from_json(std::string(R"({"param": )") + std::string(100'000, '['), d));
  CHECK(d == std::vector<diagnostic>{{"/param/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0", "nested deeper than 16 levels"}});

  // Many unknown keys: 16 named, the rest counted.
  json many = json::object();
  for (int i = 0; i < 1000; ++i) many["k" + std::to_string(i)] = i;
  CHECK(errors_of(many).size() == 17);
}

TEST_CASE("issue 8: diagnostics of hostile text stay one bounded line") {
  std::vector<diagnostic> d;
  // A syntax error in a long string: nlohmann quotes what it read.
  std::string text = R"({"pcap": ")" + std::string(500'000, 'x') + "\n";
  CHECK_FALSE(netpasst::options_from_json(std::string_view(text), d));
  REQUIRE(d.size() == 1);
  CHECK(d[0].message.size() < 500);
  CHECK(d[0].message.find('\n') == std::string::npos);
  // An unknown key with a newline: the pointer holds it, to_string escapes it.
  d.clear();
  CHECK_FALSE(netpasst::options_from_json(R"({"x\n/mtu: forged": 1})", d));
  REQUIRE(d.size() == 1);
  CHECK(d[0].pointer == "/x\n~1mtu: forged");
  CHECK(netpasst::to_string(d[0]) == "/x\\n~1mtu: forged: unknown key \"x\\n/mtu: forged\"");
}

TEST_CASE("a signed integer beyond int is refused, not cut to int") {
  // A document built in C++ holds positive numbers as signed integers:
  // 2^32 + 1500 must not read as MTU 1500.
  json j = {{"mtu", std::int64_t(4294968796)}};
  CHECK(j["mtu"].is_number_unsigned() == false);
  CHECK(pointers_of(j) == std::vector<std::string>{"/mtu"});
  CHECK(pointers_of(json{{"mtu", std::int64_t(INT32_MAX) + 1}}) == std::vector<std::string>{"/mtu"});
  CHECK(pointers_of(json{{"mtu", std::int64_t(1500)}}).empty());
}
