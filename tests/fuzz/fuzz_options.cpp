// libFuzzer target: the JSON options reader, the port grammar and `param`
// parsing, then validation and argv building.
//
// Input: JSON text; or, when the first byte is 0x01 / 0x02, the rest as
// '\n'-separated `param` items / `tcp-ports` specs (reaching the parsers
// with shapes JSON-guided mutation finds slowly).
//
// Invariants checked for every input (a violation aborts):
// - reading never throws or crashes; every diagnostic prints as one line of
//   printable ASCII;
// - accepted options validate, build an argv, and round-trip through
//   to_json / options_from_json, as a JSON value and as text;
// - that argv has no control character in any argument, and every argument
//   after argv[0] that starts with '-' is "--name" or "--name=value" for a
//   passt option that is not the launcher's, each option taking a value
//   followed by one that does not start with '-'.
#include <netpasst/argv.hpp>
#include <netpasst/json.hpp>
#include <netpasst/probe.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace {

[[noreturn]] void violated(const char* what, const std::string& detail) {
  std::fprintf(stderr, "invariant violated: %s: %s\n", what, detail.c_str());
  std::abort();
}

bool printable_line(const std::string& s) {
  for (unsigned char c : s)
    if (c < 0x20 || c >= 0x7f) return false;
  return true;
}

// Written out here, not taken from the library: what must never reach passt
// through the options.
constexpr std::string_view launcher_owned[] = {"fd",   "pid",     "socket", "socket-path", "foreground",
                                               "help", "version", "print-capabilities"};

void check_argv(const std::vector<std::string>& argv) {
  if (argv.empty() || argv[0].empty()) violated("argv", "no argv[0]");
  bool value_due = false;
  for (std::size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    for (unsigned char c : a)
      if (c < 0x20 || c == 0x7f) violated("control character in argument", std::to_string(i));
    if (i == 0) continue;
    if (a.empty()) violated("empty argument", std::to_string(i));
    if (value_due) {
      if (a[0] == '-') violated("value looks like an option", a);
      value_due = false;
      continue;
    }
    if (a.rfind("--", 0) != 0 || a.size() == 2) violated("argument is neither a long option nor a value", a);
    const std::string name = a.substr(2, a.find('=') - 2);
    for (auto owned : launcher_owned)
      if (name == owned) violated("launcher-owned option in argv", a);
    const netpasst::detail::passt_option* o = nullptr;
    for (const auto& candidate : netpasst::detail::passt_options)
      if (candidate.name == name) o = &candidate;
    if (!o) violated("not a passt option spelled in full", a);
    if (o->use != netpasst::detail::param_use::allowed) violated("option passt refuses", a);
    if (a.find('=') != std::string::npos) {
      if (!o->takes_value) violated("value on an option without one", a);
    } else {
      value_due = o->takes_value;
    }
  }
  if (value_due) violated("option without its value at the end", argv.back());
}

void check_accepted(const netpasst::options& o) {
  if (auto d = netpasst::validate(o); !d.empty()) violated("accepted options do not validate", netpasst::to_string(d[0]));
  std::vector<netpasst::diagnostic> d;
  auto argv = netpasst::argv_builder{}.build(o, d);
  if (!d.empty()) violated("argv_builder refused accepted options", netpasst::to_string(d[0]));
  check_argv(argv);
  const nlohmann::json j = netpasst::to_json(o);
  auto again = netpasst::options_from_json(j, d);
  if (!again || !(*again == o)) violated("to_json/options_from_json round trip", j.dump());
  auto from_text = netpasst::options_from_json(std::string_view(j.dump()), d);
  if (!from_text || !(*from_text == o)) violated("round trip through text", j.dump());
  (void)netpasst::unsupported_options(o, netpasst::passt_capabilities{});
}

void check_diagnostics(const std::vector<netpasst::diagnostic>& diagnostics) {
  for (const auto& d : diagnostics) {
    const std::string line = netpasst::to_string(d);
    if (!printable_line(line)) violated("diagnostic is not one printable line", line);
  }
}

std::vector<std::string> split_lines(std::string_view s) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (std::size_t nl; (nl = s.find('\n', start)) != s.npos && out.size() < 2000; start = nl + 1)
    out.emplace_back(s.substr(start, nl - start));
  out.emplace_back(s.substr(start));
  return out;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  if (!input.empty() && (input[0] == '\x01' || input[0] == '\x02')) {
    netpasst::options o;
    (input[0] == '\x01' ? o.param : o.tcp_ports) = split_lines(input.substr(1));
    auto d = netpasst::validate(o);
    check_diagnostics(d);
    if (d.empty()) check_accepted(o);
    (void)netpasst::detail::argv_segments(o);
    (void)netpasst::unsupported_options(o, netpasst::passt_capabilities{});
    return 0;
  }
  std::vector<netpasst::diagnostic> d;
  auto o = netpasst::options_from_json(input, d);
  check_diagnostics(d);
  if (o.has_value() == !d.empty()) violated("result and diagnostics disagree", std::to_string(d.size()));
  if (o) check_accepted(*o);
  return 0;
}
