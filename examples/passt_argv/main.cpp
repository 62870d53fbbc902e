// passt_argv: print the passt command line for a JSON config.
//
//   passt_argv [--pidfile PATH] [--fd N] [--probe PASST] [--json | -0] [FILE|-]
//
// Reads one config (the options object, or QMP netdev_add arguments with
// "type": "passt") from FILE or stdin and prints passt's argv, ending with
// the launcher's `--pid PATH --fd N`. Output forms:
//   default  one argument per line; an argument that is empty or holds
//            anything but letters, digits and _@%+=:,./- is single-quoted as
//            a POSIX shell would read it ('it'\''s'). Options never hold a
//            control character, so one line is one argument.
//   --json   one JSON array of strings.
//   -0       every argument followed by a NUL byte (for xargs -0).
// Exit 0 on success. Invalid config, unsupported options (with --probe) or
// a usage error: exit 2, nothing on stdout, one "<JSON pointer>: <message>"
// line per problem on stderr, values quoted with control characters escaped
// and long values cut.

#include <netpasst/argv.hpp>
#include <netpasst/json.hpp>
#include <netpasst/probe.hpp>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr const char* usage = "usage: passt_argv [--pidfile PATH] [--fd N] [--probe PASST] [--json | -0] [FILE|-]";

// `message` is built from quoted values only (netpasst::detail::quote).
int fail(const std::string& message) {
  std::cerr << "passt_argv: " << message << '\n' << usage << '\n';
  return 2;
}

int fail(const std::vector<netpasst::diagnostic>& diagnostics) {
  for (const auto& d : diagnostics) std::cerr << netpasst::to_string(d) << '\n';
  return 2;
}

// An argument as a POSIX shell would read it back: as it is when it holds
// only characters no shell treats specially, else in single quotes.
std::string shell_word(const std::string& arg) {
  static constexpr std::string_view safe =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-";
  if (!arg.empty() && arg.find_first_not_of(safe) == std::string::npos) return arg;
  std::string out = "'";
  for (char c : arg) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

enum class output_form { lines, json, nul };

} // namespace

int main(int argc, char** argv) {
  using netpasst::detail::quote;
  std::string pidfile = "/run/netpasst/passt.pid", probe, input = "-";
  int fd = 3;
  bool have_input = false;
  output_form form = output_form::lines;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (arg == "--pidfile" || arg == "--probe") {
      const char* v = value();
      if (!v || !*v) return fail(std::string(arg) + " needs a value");
      if (auto problem = netpasst::detail::string_problem(v); !problem.empty())
        return fail(std::string(arg) + ": " + problem);
      if (arg == "--pidfile" && *v == '-') return fail("--pidfile " + quote(v) + ": starts with '-', which would read as an option");
      (arg == "--pidfile" ? pidfile : probe) = v;
    } else if (arg == "--fd") {
      const char* v = value();
      std::string_view text = v ? v : "";
      auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), fd);
      if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || fd < 0)
        return fail("--fd needs a non-negative descriptor number");
    } else if (arg == "--json") {
      form = output_form::json;
    } else if (arg == "-0" || arg == "--null") {
      form = output_form::nul;
    } else if (arg == "-h" || arg == "--help") {
      std::cout << usage << '\n';
      return 0;
    } else if (arg.size() > 1 && arg[0] == '-') {
      return fail("unknown option " + quote(arg));
    } else if (std::exchange(have_input, true)) {
      return fail("only one config file");
    } else {
      input = arg;
    }
  }

  std::vector<netpasst::diagnostic> diagnostics;
  std::optional<netpasst::options> options;
  if (input == "-") {
    options = netpasst::options_from_json(std::cin, diagnostics);
  } else {
    std::ifstream file(input);
    if (!file) return fail("cannot open " + quote(input) + ": " + std::strerror(errno));
    options = netpasst::options_from_json(file, diagnostics);
  }
  if (!options) return fail(diagnostics);

  auto args = netpasst::argv_builder{}.build(*options, diagnostics);
  if (args.empty()) return fail(diagnostics);
  if (!probe.empty()) {
    std::error_code ec;
    std::string why;
    auto caps = netpasst::probe_passt(probe, ec, why);
    if (ec) return fail("cannot probe " + quote(probe) + ": " + why);
    if (auto missing = netpasst::unsupported_options(*options, caps); !missing.empty()) return fail(missing);
  }
  netpasst::append_launcher_arguments(args, pidfile, fd);
  switch (form) {
    case output_form::lines:
      for (const auto& a : args) std::cout << shell_word(a) << '\n';
      break;
    case output_form::json:
      try {
        std::cout << nlohmann::json(args).dump() << '\n';
      } catch (const nlohmann::json::exception&) {
        return fail("an argument is not valid UTF-8: use -0");
      }
      break;
    case output_form::nul:
      for (const auto& a : args) std::cout << a << '\0';
      break;
  }
  return std::cout.flush() ? 0 : 1;
}
