// netpasst_demo: starts passt through netpasst and acts as a tiny guest.
//
//   netpasst_demo [--json] [--watch] [--config FILE] [--passt PATH]
//                 [--launcher daemon|foreground]
//
// Gets a DHCP lease, resolves the gateway by ARP, does a UDP round trip to an
// echo socket this program opens on the host's loopback (passt maps the
// gateway address to the host), pings the gateway, and stops. With --watch it
// stays up, prints one JSON line per lifecycle event (and a new lease after
// each restart) until SIGINT/SIGTERM, then stops cleanly.

#include "demo.hpp"

#include <netpasst/launcher/passt_launcher.hpp>

namespace {
using namespace netpasst_demo;

int run_demo(asio::io_context& io, netpasst::options opts, const demo_args& args) {
  // The launcher takes the mode as a value: one lifecycle type for both.
  netpasst::basic_lifecycle<netpasst::stream_session, netpasst::passt_launcher> life(
      netpasst::passt_launcher(io, *netpasst::launch_mode_from_string(args.launcher)), std::move(opts));
  asio::ip::udp::socket echo_socket(io, asio::ip::udp::endpoint(asio::ip::make_address_v4("127.0.0.1"), 0));
  asio::co_spawn(io, echo(echo_socket), asio::detached);
  int exit_code = 1;
  asio::co_spawn(io, run(life, args, echo_socket), [&](std::exception_ptr e, int code) {
    exit_code = code;
    echo_socket.close();
    if (e) std::rethrow_exception(e);
  });
  io.run();
  return exit_code;
}

} // namespace

int main(int argc, char** argv) {
  demo_args args;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (a == "--json") args.json = true;
    else if (a == "--watch") args.watch = true;
    else if (a == "--config" || a == "--passt" || a == "--launcher") {
      const char* v = value();
      if (!v) return usage(("missing value after " + std::string(a)).c_str());
      (a == "--config" ? args.config : a == "--passt" ? args.passt : args.launcher) = v;
    } else if (a == "-h" || a == "--help") {
      usage("starts passt and runs a tiny guest over it");
      return 0;
    } else {
      return usage(("unknown argument " + std::string(a)).c_str());
    }
  }
  if (!netpasst::launch_mode_from_string(args.launcher)) return usage("--launcher takes daemon or foreground");

  netpasst::options opts;
  if (!args.config.empty()) {
    std::ifstream in(args.config);
    if (!in) return usage(("cannot read " + args.config).c_str());
    std::vector<netpasst::diagnostic> problems;
    auto parsed = netpasst::options_from_json(in, problems);
    if (!parsed) {
      for (const auto& p : problems) std::fprintf(stderr, "%s: %s\n", args.config.c_str(), netpasst::to_string(p).c_str());
      return 2;
    }
    opts = std::move(*parsed);
  }
  if (!args.passt.empty()) opts.path = args.passt;

  try {
    asio::io_context io;
    return run_demo(io, std::move(opts), args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "netpasst_demo: %s\n", e.what());
    return 1;
  }
}
