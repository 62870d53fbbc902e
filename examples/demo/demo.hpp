#pragma once
// GCC 12 misreads Asio's coroutine frame allocator here (-Wmismatched-new-delete).
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

// The generic part of netpasst_demo: a tiny guest run over any lifecycle
// whose session moves frames. main.cpp picks the launcher; the unit tests
// instantiate the same code with archetypes (tests/unit/test_concepts.cpp).

#include <netpasst/guest/mini_guest.hpp>
#include <netpasst/json.hpp>
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


namespace netpasst_demo {

using namespace std::chrono_literals;
using netpasst::packet::ipv4_address;
inline constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

struct demo_args {
  bool json = false;
  bool watch = false;
  std::string config;
  std::string passt;
  std::string launcher = "daemon";
};

inline int usage(const char* message) {
  std::fprintf(stderr,
               "netpasst_demo: %s\nusage: netpasst_demo [--json] [--watch] [--config FILE] [--passt PATH] "
               "[--launcher daemon|foreground]\n",
               message);
  return 2;
}

inline double to_ms(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

// The group passt's ping sockets run as: nobody's when we are root and the
// options do not say --runas, else ours.
inline gid_t passt_group(const netpasst::options& opts) {
  if (geteuid() != 0 || opts.runas) return getegid();
  const passwd* nobody = getpwnam("nobody");
  return nobody ? nobody->pw_gid : 65534;
}

// Empty when passt may open ping sockets; otherwise why not, and the fix.
inline std::string icmp_obstacle(gid_t group) {
  std::ifstream range_file("/proc/sys/net/ipv4/ping_group_range");
  long first = 1, last = 0;
  if (!(range_file >> first >> last)) return "cannot read /proc/sys/net/ipv4/ping_group_range";
  if (long(group) >= first && long(group) <= last) return {};
  return "ICMP not permitted: net.ipv4.ping_group_range is \"" + std::to_string(first) + " " + std::to_string(last) +
         "\", which does not include passt's group " + std::to_string(group) +
         "; allow it with: sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"";
}

inline nlohmann::json lease_json(const netpasst::dhcp_lease& lease) {
  nlohmann::json dns = nlohmann::json::array();
  for (const auto& server : lease.dns_servers) dns.push_back(server.to_string());
  return {{"address", lease.address.to_string()}, {"prefix_length", lease.prefix_length},
          {"gateway", lease.gateway.to_string()}, {"dns", dns},
          {"search", lease.search_domains},       {"mtu", lease.mtu}};
}

inline nlohmann::json event_json(const netpasst::lifecycle_event& e) {
  nlohmann::json j{{"event", std::string(netpasst::to_string(e.kind))}};
  if (e.pid) j["pid"] = e.pid;
  if (e.generation) j["generation"] = e.generation;
  if (e.kind == netpasst::lifecycle_event_kind::restarting) {
    j["attempt"] = e.attempt;
    j["delay_ms"] = e.delay.count();
  }
  if (e.error) j["error"] = e.error.message();
  if (!e.reason.empty()) j["reason"] = e.reason;
  return j;
}

inline void print_line(const nlohmann::json& j) {
  std::cout << j.dump() << std::endl;
}

// Answers every datagram on 127.0.0.1 with the same bytes.
inline asio::awaitable<void> echo(asio::ip::udp::socket& socket) {
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
  nlohmann::json report{{"transport", std::string(netpasst::to_string(Lifecycle::session_type::mode))},
                        {"launcher", args.launcher}, {"passt_pid", life.pid()},
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

} // namespace netpasst_demo
