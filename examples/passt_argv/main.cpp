// passt_argv: print the passt command line for a JSON config.
//
//   passt_argv [--pidfile PATH] [--fd N] [--probe PASST] [FILE|-]
//
// Reads one config (the options object, or QMP netdev_add arguments with
// "type": "passt") from FILE or stdin and prints passt's argv, one argument
// per line, ending with the launcher's `--pid PATH --fd N`. Exit 0 on success.
// Invalid config, unsupported options (with --probe) or a usage error: exit 2,
// nothing on stdout, one "<JSON pointer>: <message>" line per problem on stderr.

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

constexpr const char* usage = "usage: passt_argv [--pidfile PATH] [--fd N] [--probe PASST] [FILE|-]";

int fail(const std::string& message) {
  std::cerr << "passt_argv: " << message << '\n' << usage << '\n';
  return 2;
}

int fail(const std::vector<netpasst::diagnostic>& diagnostics) {
  for (const auto& d : diagnostics) std::cerr << d.pointer << ": " << d.message << '\n';
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  std::string pidfile = "/run/netpasst/passt.pid", probe, input = "-";
  int fd = 3;
  bool have_input = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (arg == "--pidfile" || arg == "--probe") {
      const char* v = value();
      if (!v || !*v) return fail(std::string(arg) + " needs a value");
      (arg == "--pidfile" ? pidfile : probe) = v;
    } else if (arg == "--fd") {
      const char* v = value();
      std::string_view text = v ? v : "";
      auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), fd);
      if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || fd < 0)
        return fail("--fd needs a non-negative descriptor number");
    } else if (arg == "-h" || arg == "--help") {
      std::cout << usage << '\n';
      return 0;
    } else if (arg.size() > 1 && arg[0] == '-') {
      return fail("unknown option " + std::string(arg));
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
    if (!file) return fail("cannot open " + input + ": " + std::strerror(errno));
    options = netpasst::options_from_json(file, diagnostics);
  }
  if (!options) return fail(diagnostics);

  auto args = netpasst::argv_builder{}.build(*options, diagnostics);
  if (args.empty()) return fail(diagnostics);
  if (!probe.empty()) {
    std::error_code ec;
    auto caps = netpasst::probe_passt(probe, ec);
    if (ec) return fail("cannot probe " + probe + ": " + ec.message());
    if (auto missing = netpasst::unsupported_options(*options, caps); !missing.empty()) return fail(missing);
  }
  netpasst::append_launcher_arguments(args, pidfile, fd);
  for (const auto& a : args) std::cout << a << '\n';
  return std::cout.flush() ? 0 : 1;
}
