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

#include <netpasst/guest/mini_guest.hpp>
#include <netpasst/json.hpp>
#include <netpasst/launcher/passt_launcher.hpp>
#include <netpasst/lifecycle.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/udp.hpp>
#include <asio/signal_set.hpp>
#include <asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>

namespace {

using namespace std::chrono_literals;
using netpasst::packet::ipv4_address;
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

struct demo_args {
  bool json = false;
  bool watch = false;
  std::string config;
  std::string passt;
  std::string launcher = "daemon";
};

int usage(const char* message) {
  std::fprintf(stderr,
               "netpasst_demo: %s\nusage: netpasst_demo [--json] [--watch] [--config FILE] [--passt PATH] "
               "[--launcher daemon|foreground]\n",
               message);
  return 2;
}

double to_ms(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

// The group passt's ping sockets run as: nobody's when we are root and the
// options do not say --runas, else ours.
gid_t passt_group(const netpasst::options& opts) {
  if (geteuid() != 0 || opts.runas) return getegid();
  const passwd* nobody = getpwnam("nobody");
  return nobody ? nobody->pw_gid : 65534;
}

// Empty when passt may open ping sockets; otherwise why not, and the fix.
std::string icmp_obstacle(gid_t group) {
  std::ifstream range_file("/proc/sys/net/ipv4/ping_group_range");
  long first = 1, last = 0;
  if (!(range_file >> first >> last)) return "cannot read /proc/sys/net/ipv4/ping_group_range";
  if (long(group) >= first && long(group) <= last) return {};
  return "ICMP not permitted: net.ipv4.ping_group_range is \"" + std::to_string(first) + " " + std::to_string(last) +
         "\", which does not include passt's group " + std::to_string(group) +
         "; allow it with: sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"";
}

nlohmann::json lease_json(const netpasst::dhcp_lease& lease) {
  nlohmann::json dns = nlohmann::json::array();
  for (const auto& server : lease.dns_servers) dns.push_back(server.to_string());
  return {{"address", lease.address.to_string()}, {"prefix_length", lease.prefix_length},
          {"gateway", lease.gateway.to_string()}, {"dns", dns},
          {"search", lease.search_domains},       {"mtu", lease.mtu}};
}

nlohmann::json event_json(const netpasst::lifecycle_event& e) {
  nlohmann::json j{{"event", std::string(netpasst::to_string(e.kind))}};
  if (e.pid) j["pid"] = e.pid;
  if (e.kind == netpasst::lifecycle_event_kind::restarting) {
    j["attempt"] = e.attempt;
    j["delay_ms"] = e.delay.count();
  }
  if (e.error) j["error"] = e.error.message();
  if (!e.reason.empty()) j["reason"] = e.reason;
  return j;
}

void print_line(const nlohmann::json& j) {
  std::cout << j.dump() << std::endl;
}

// Answers every datagram on 127.0.0.1 with the same bytes.
asio::awaitable<void> echo(asio::ip::udp::socket& socket) {
  std::array<char, 2048> buffer;
  for (;;) {
    asio::ip::udp::endpoint from;
    auto [ec, n] = co_await socket.async_receive_from(asio::buffer(buffer), from, use_tuple);
    if (ec) co_return;
    co_await socket.async_send_to(asio::buffer(buffer.data(), n), from, use_tuple);
  }
}

template <class Lifecycle>
asio::awaitable<int> run(Lifecycle& life, const demo_args& args, asio::ip::udp::socket& echo_socket) {
  const auto began = std::chrono::steady_clock::now();
  auto [start_error] = co_await life.async_start(use_tuple);
  if (start_error) {
    std::fprintf(stderr, "netpasst_demo: passt did not start: %s\n", life.last_error_message().c_str());
    co_return 1;
  }
  const double startup_ms = to_ms(std::chrono::steady_clock::now() - began);

  netpasst::mini_guest<Lifecycle> guest(life);
  nlohmann::json report{{"transport", "stream"}, {"launcher", args.launcher}, {"passt_pid", life.pid()},
                        {"startup_ms", startup_ms}, {"status", life.status()}};
  int exit_code = 0;
  auto fail = [&](const char* step, std::error_code ec) {
    report["error"] = std::string(step) + ": " + ec.message();
    exit_code = 1;
  };

  auto [dhcp_error, lease] = co_await guest.async_dhcp(use_tuple);
  if (dhcp_error) {
    fail("DHCP", dhcp_error);
  } else {
    report.update(lease_json(lease));
    auto [arp_error, gateway_mac] = co_await guest.async_arp(lease.gateway, use_tuple);
    if (arp_error) fail("ARP", arp_error);
    else report["gateway_mac"] = netpasst::packet::to_string(gateway_mac);

    static constexpr char probe[] = "netpasst demo";
    auto [udp_error, reply] = co_await guest.async_udp_exchange(
        lease.gateway, echo_socket.local_endpoint().port(), std::as_bytes(std::span(probe, sizeof probe - 1)),
        use_tuple);
    if (udp_error) fail("UDP", udp_error);
    else if (reply.payload.size() != sizeof probe - 1) fail("UDP", make_error_code(std::errc::bad_message));
    else report["udp_rtt_ms"] = to_ms(reply.rtt);

    report["ping_ms"] = nullptr;
    if (auto obstacle = icmp_obstacle(passt_group(life.passt_options())); !obstacle.empty()) {
      report["ping_note"] = obstacle;
    } else {
      auto [ping_error, rtt] = co_await guest.async_ping(lease.gateway, use_tuple);
      if (ping_error) report["ping_note"] = "no ICMP echo reply from the gateway: " + ping_error.message();
      else report["ping_ms"] = to_ms(rtt);
    }
  }

  if (args.json && !args.watch) {
    print_line(report);
  } else if (args.json) {
    report["event"] = "lease";
    print_line(report);
  } else {
    std::printf("passt pid %d up in %.1f ms (%s, %s launcher)\n", life.pid(), startup_ms, life.status().c_str(),
                args.launcher.c_str());
    if (report.contains("address")) {
      std::printf("lease: %s/%d gateway %s mtu %d\n", report["address"].get<std::string>().c_str(),
                  report["prefix_length"].get<int>(), report["gateway"].get<std::string>().c_str(),
                  report["mtu"].get<int>());
      std::printf("dns: %s  search: %s\n", report["dns"].dump().c_str(), report["search"].dump().c_str());
    }
    if (report.contains("gateway_mac"))
      std::printf("arp: gateway is at %s\n", report["gateway_mac"].get<std::string>().c_str());
    if (report.contains("udp_rtt_ms"))
      std::printf("udp: echo via the gateway to 127.0.0.1 in %.3f ms\n", report["udp_rtt_ms"].get<double>());
    if (!report["ping_ms"].is_null()) std::printf("icmp: gateway answered in %.3f ms\n", report["ping_ms"].get<double>());
    else if (report.contains("ping_note")) std::printf("icmp: %s\n", report["ping_note"].get<std::string>().c_str());
    if (report.contains("error")) std::printf("error: %s\n", report["error"].get<std::string>().c_str());
    std::fflush(stdout);
  }

  if (args.watch) {
    // A new lease after every restart; events are printed by the subscriber.
    auto executor = co_await asio::this_coro::executor;
    asio::signal_set signals(executor, SIGINT, SIGTERM);
    bool stopping = false;
    auto relearn = [&]() -> asio::awaitable<void> {
      auto [ec, again] = co_await guest.async_dhcp(use_tuple);
      nlohmann::json line = ec ? nlohmann::json{{"event", "lease"}, {"error", ec.message()}} : lease_json(again);
      line["event"] = "lease";
      line["passt_pid"] = life.pid();
      if (!stopping) print_line(line);
    };
    // Subscribed after the first link up: every link_up from now on is a restart.
    auto id = life.subscribe([&](const netpasst::lifecycle_event& e) {
      print_line(event_json(e));
      if (e.kind == netpasst::lifecycle_event_kind::link_up) asio::co_spawn(executor, relearn(), asio::detached);
    });
    co_await signals.async_wait(use_tuple);
    stopping = true;
    guest.cancel();
    co_await life.async_stop(use_tuple);
    life.unsubscribe(id);
  } else {
    co_await life.async_stop(use_tuple);
  }
  co_return exit_code;
}

template <class Launcher>
int run_with(asio::io_context& io, netpasst::options opts, const demo_args& args) {
  netpasst::lifecycle_config config;
  using lifecycle_type = netpasst::basic_lifecycle<netpasst::stream_session, Launcher>;
  lifecycle_type life(io, std::move(opts), config);
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
  if (args.launcher != "daemon" && args.launcher != "foreground") return usage("--launcher takes daemon or foreground");

  netpasst::options opts;
  if (!args.config.empty()) {
    std::ifstream in(args.config);
    if (!in) return usage(("cannot read " + args.config).c_str());
    std::vector<netpasst::diagnostic> problems;
    auto parsed = netpasst::options_from_json(in, problems);
    if (!parsed) {
      for (const auto& p : problems) std::fprintf(stderr, "%s: %s: %s\n", args.config.c_str(), p.pointer.c_str(), p.message.c_str());
      return 2;
    }
    opts = std::move(*parsed);
  }
  if (!args.passt.empty()) opts.path = args.passt;

  try {
    asio::io_context io;
    return args.launcher == "daemon" ? run_with<netpasst::daemon_launcher>(io, std::move(opts), args)
                                     : run_with<netpasst::foreground_launcher>(io, std::move(opts), args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "netpasst_demo: %s\n", e.what());
    return 1;
  }
}
