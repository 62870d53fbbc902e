// netpasst_tap: a minimal VMM whose guest is a Linux network namespace.
//
//   netpasst_tap --netns NAME [--config FILE] [--passt PATH]
//                [--launcher daemon|foreground] [--tap IFNAME]
//                [--no-checksum-offload] [--no-trust-checksums]
//                [--socket-buffer BYTES] [--transport stream|vhost-user]
//                [--no-guest-checksum-offload]
//
// Creates the namespace NAME if it does not exist, creates a tap (default
// "tap0") inside it, starts passt through netpasst's lifecycle and bridges
// the tap to it. After every link up it asks passt for a lease with a DHCP
// exchange of its own (a mini_guest using the tap's MAC, before the bridge
// runs), and configures the namespace from it with `ip`: address, prefix,
// default route, MTU, and DNS into /etc/netns/NAME/resolv.conf (what
// `ip netns exec NAME` shows as /etc/resolv.conf). Port forwards come from
// the JSON config (`tcp-ports`, `udp-ports`): they reach the namespace's
// address. From inside the namespace, the gateway address reaches the
// host's loopback (passt's default mapping).
//
// The tap uses checksum offload (the namespace leaves TCP/UDP checksums to
// the tap's reader, which completes them before passt gets the frames) and
// trusts passt's checksums (the namespace does not verify them: passt
// computes them over data it holds). --no-trust-checksums makes the
// namespace verify them again; --no-checksum-offload opens a plain tap (and
// implies the former).
//
// --socket-buffer sets the stream socket's send buffer towards passt
// (`stream_transport_config::socket_buffer_bytes`, default 4 MiB, kept within
// 128 KiB..4 MiB). It bounds how much passt reads at once, and so the burst
// Debian 12's passt writes to a host socket in one sendmsg; see the README's
// bench_tap figures for what it changes under each TCP congestion control.
//
// --transport vhost-user starts passt with --vhost-user and moves frames
// through shared memory (`vhost_user_session`); it needs a passt built with
// vhost-user support (Debian 12's has none). --socket-buffer is then unused.
// While the tap trusts passt's checksums (the default), passt is also let
// off computing TCP and UDP checksums (VIRTIO_NET_F_GUEST_CSUM): the tap
// rewrites that field for the kernel anyway; --no-guest-checksum-offload
// keeps passt computing them.
//
// Output: one JSON object per line on stdout: `netns` (once set up), every
// lifecycle event (`starting`, `link_up`, `link_down`, `restarting`,
// `failed`, `stopped`), `lease` after each link up, `counters` on SIGUSR1,
// `shutdown` and a final `exit` with the counters of both sides of the
// bridge. SIGINT or SIGTERM stop everything and remove what was created
// (passt, the tap, the resolv.conf, the namespace if it was created here);
// so does a failure. After a SIGKILL of this program the tap still goes
// (with its descriptor) and passt exits (its socket closes), but a namespace
// created here stays. Exit status: 0 after a signal, 1 after a failure, 2
// for bad arguments or options.

#include "guest_port.hpp"
#include "system.hpp"

#include <netpasst/bridge.hpp>
#include <netpasst/guest/mini_guest.hpp>
#include <netpasst/json.hpp>
#include <netpasst/launcher/passt_launcher.hpp>
#include <netpasst/lifecycle.hpp>
#include <netpasst/session/vhost_user.hpp>
#include <netpasst/session/stream.hpp>
#include <netpasst/transport/stream.hpp>
#include <netpasst/transport/tap.hpp>

#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>
#include <nlohmann/json.hpp>

#include <signal.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>

namespace {

using namespace std::chrono_literals;
/// Keys in the order written, so that "event" comes first.
using json_line = nlohmann::ordered_json;

struct tap_args {
  std::string netns;
  std::string config;
  std::string passt;
  std::string launcher = "daemon";
  std::string tap = "tap0";
  std::string transport = "stream";
  bool checksum_offload = true;
  bool trust_checksums = true;
  bool guest_checksum_offload = true;
  std::size_t socket_buffer_bytes = netpasst::stream_transport_config{}.socket_buffer_bytes;
};

int usage(const std::string& message) {
  std::fprintf(stderr,
               "netpasst_tap: %s\nusage: netpasst_tap --netns NAME [--config FILE] [--passt PATH] "
               "[--launcher daemon|foreground] [--tap IFNAME] [--no-checksum-offload] [--no-trust-checksums] "
               "[--socket-buffer BYTES] [--transport stream|vhost-user] [--no-guest-checksum-offload]\n",
               message.c_str());
  return 2;
}

void print_line(const json_line& j) { std::cout << j.dump() << std::endl; }

json_line to_json(const netpasst::bridge_direction_counters& c) {
  return {{"frames", c.frames},   {"bytes", c.bytes},     {"batches", c.batches},
          {"refused", c.refused}, {"waits", c.waits},     {"yields", c.yields},
          {"dropped_invalid", c.dropped_invalid}, {"dropped_at_end", c.dropped_at_end}};
}

json_line to_json(const netpasst::tap_counters& c) {
  return {{"frames_sent", c.frames_sent},
          {"bytes_sent", c.bytes_sent},
          {"frames_received", c.frames_received},
          {"bytes_received", c.bytes_received},
          {"frames_refused", c.frames_refused},
          {"frames_dropped_link_down", c.frames_dropped_link_down},
          {"frames_dropped_no_memory", c.frames_dropped_no_memory},
          {"frames_dropped_received", c.frames_dropped_received},
          {"checksums_completed", c.checksums_completed},
          {"checksums_trusted", c.checksums_trusted},
          {"sends_would_block", c.sends_would_block},
          {"reads", c.reads},
          {"batches", c.batches}};
}

json_line to_json(const netpasst::lifecycle_counters& c) {
  return {{"frames_sent", c.frames_sent},       {"bytes_sent", c.bytes_sent},
          {"frames_received", c.frames_received}, {"bytes_received", c.bytes_received},
          {"frames_refused", c.frames_refused}, {"frames_dropped", c.frames_dropped},
          {"restarts", c.restarts},             {"failed_launches", c.failed_launches}};
}

/// The VMM: one namespace, one tap, one passt, one bridge.
template <class Lifecycle>
class tap_vmm {
public:
  tap_vmm(asio::io_context& io, const tap_args& args, netpasst::options opts)
      : io_(io), args_(args), netns_(args.netns), resolv_(args.netns),
        tap_(io, netpasst::tap_device_options{args.tap, args.netns, -1, std::nullopt, false}, tap_config(args)),
        life_(netpasst::passt_launcher(io, *netpasst::launch_mode_from_string(args.launcher)), std::move(opts),
              netpasst::lifecycle_config{},
              netpasst::argv_builder{}, io.get_executor(), session_config(args, tap_.config())),
        port_(life_), bridge_(tap_, life_), signals_(io, SIGINT, SIGTERM, SIGUSR1), retry_(io) {
    print_line({{"event", "netns"},
                {"netns", netns_.name()},
                {"created", netns_.created()},
                {"tap", tap_.name()},
                {"mac", netpasst::packet::to_string(tap_.mac())},
                {"checksum_offload", tap_.config().checksum_offload},
                {"trust_checksums", tap_.config().trust_checksums},
                {"transport", args.transport},
                {"guest_checksum_offload", guest_checksum_offload()},
                {"socket_buffer_bytes", args.socket_buffer_bytes}});
  }

  /// Runs until a signal or a failure; returns the exit status.
  int run() {
    life_.subscribe([this](const netpasst::lifecycle_event& e) { on_event(e); });
    wait_signal();
    life_.async_start([this](std::error_code ec) {
      if (ec && !shutting_down_) shutdown(1, "passt did not start: " + life_.last_error_message());
    });
    io_.run();
    return exit_code_;
  }

private:
  bool guest_checksum_offload() const {
    if constexpr (Lifecycle::session_type::mode == netpasst::passt_mode::stream) return false;
    else return life_.next_layer().config().guest_checksum_offload;
  }

  static netpasst::tap_transport_config tap_config(const tap_args& args) {
    netpasst::tap_transport_config config;
    config.checksum_offload = args.checksum_offload;
    config.trust_checksums = args.trust_checksums; // passt computes every checksum it sends
    return config;
  }

  /// The session's configuration. For the stream, its socket send buffer is
  /// what passt can read in one go, so it bounds each burst passt writes to
  /// its host sockets. Over vhost-user, a tap that trusts passt's checksums
  /// rewrites them anyway, so passt may leave them out.
  using session_config_type =
      std::remove_cvref_t<decltype(std::declval<const typename Lifecycle::session_type&>().config())>;
  static session_config_type session_config(const tap_args& args, const netpasst::tap_transport_config& tap) {
    session_config_type config;
    if constexpr (Lifecycle::session_type::mode == netpasst::passt_mode::stream)
      config.socket_buffer_bytes = args.socket_buffer_bytes;
    else
      config.guest_checksum_offload = args.guest_checksum_offload && tap.trust_checksums;
    return config;
  }

  void wait_signal() {
    signals_.async_wait([this](std::error_code ec, int signal) {
      if (ec) return;
      if (signal == SIGUSR1) {
        print_line(counters_line("counters"));
        return wait_signal();
      }
      shutdown(0, std::string("signal ") + (signal == SIGINT ? "SIGINT" : "SIGTERM"));
      wait_signal(); // keep catching them until the end
    });
  }

  void on_event(const netpasst::lifecycle_event& e) {
    json_line line{{"event", std::string(netpasst::to_string(e.kind))}};
    if (e.pid) line["pid"] = e.pid;
    if (e.kind == netpasst::lifecycle_event_kind::restarting) {
      line["attempt"] = e.attempt;
      line["delay_ms"] = e.delay.count();
    }
    if (e.error) line["error"] = e.error.message();
    if (!e.reason.empty()) line["reason"] = e.reason;
    if (e.generation) line["generation"] = e.generation;
    if (e.kind == netpasst::lifecycle_event_kind::link_up) line["restart"] = e.is_restart();
    print_line(line);
    if (shutting_down_) return;
    if (e.kind == netpasst::lifecycle_event_kind::link_up) {
      ++lease_wanted_;
      if (bridge_.running()) bridge_.stop(); // its completion asks for the lease
      else asio::post(io_, [this] { begin_lease(); });
    } else if (e.kind == netpasst::lifecycle_event_kind::failed) {
      shutdown(1, "passt failed: " + e.reason);
    }
  }

  /// A DHCP exchange over the lifecycle, once the bridge and any earlier
  /// guest have let go of its receive side.
  void begin_lease() {
    if (shutting_down_ || guest_ || bridge_.running() || !port_.idle() || lease_asked_ == lease_wanted_) return;
    lease_asked_ = lease_wanted_;
    netpasst::mini_guest_config config;
    config.mac = tap_.mac();
    guest_.emplace(port_, config);
    guest_->async_dhcp([this](std::error_code ec, netpasst::dhcp_lease lease) {
      asio::post(io_, [this, ec, lease] {
        guest_.reset();
        port_.when_idle([this, ec, lease] { on_lease(ec, lease); });
      });
    });
  }

  void on_lease(std::error_code ec, const netpasst::dhcp_lease& lease) {
    if (shutting_down_) return finish_shutdown();
    if (ec) {
      print_line({{"event", "lease"}, {"error", "DHCP: " + ec.message()}});
      if (++dhcp_failures_ >= 5) return shutdown(1, "no lease from passt after 5 attempts");
      --lease_asked_; // ask again, after a pause
      retry_.expires_after(1s);
      retry_.async_wait([this](std::error_code e) {
        if (!e) begin_lease();
      });
      return;
    }
    dhcp_failures_ = 0;
    bool configured = false;
    try {
      configured = configure(lease);
    } catch (const std::exception& e) {
      return shutdown(1, std::string("configuring the namespace: ") + e.what());
    }
    json_line dns = json_line::array();
    for (const auto& server : lease.dns_servers) dns.push_back(server.to_string());
    print_line({{"event", "lease"},
                {"address", lease.address.to_string()},
                {"prefix_length", lease.prefix_length},
                {"gateway", lease.gateway.to_string()},
                {"mtu", lease.mtu},
                {"dns", dns},
                {"search", lease.search_domains},
                {"passt_pid", life_.pid()},
                {"configured", configured}});
    if (lease_asked_ != lease_wanted_) return begin_lease(); // passt restarted meanwhile
    start_bridge();
  }

  /// Applies `lease` to the namespace unless it is already in place.
  /// Returns true when something was changed.
  bool configure(const netpasst::dhcp_lease& lease) {
    const bool same = configured_ && configured_->address == lease.address &&
                      configured_->prefix_length == lease.prefix_length && configured_->gateway == lease.gateway &&
                      configured_->mtu == lease.mtu && configured_->dns_servers == lease.dns_servers &&
                      configured_->search_domains == lease.search_domains;
    if (same) return false;
    const std::string& dev = tap_.name();
    netns_.ip({"link", "set", "dev", "lo", "up"});
    if (lease.mtu >= 68) netns_.ip({"link", "set", "dev", dev, "mtu", std::to_string(lease.mtu)});
    netns_.ip({"link", "set", "dev", dev, "up"});
    if (configured_) netns_.ip({"-4", "address", "flush", "dev", dev});
    netns_.ip({"address", "replace", lease.address.to_string() + "/" + std::to_string(lease.prefix_length), "dev",
               dev});
    if (!lease.gateway.is_unspecified())
      netns_.ip({"-4", "route", "replace", "default", "via", lease.gateway.to_string(), "dev", dev});
    std::string resolv = "# written by netpasst_tap from passt's DHCP lease\n";
    for (const auto& server : lease.dns_servers) resolv += "nameserver " + server.to_string() + "\n";
    if (!lease.search_domains.empty()) {
      resolv += "search";
      for (const auto& domain : lease.search_domains) resolv += " " + domain;
      resolv += "\n";
    }
    resolv_.write(resolv);
    configured_ = lease;
    return true;
  }

  void start_bridge() {
    bridge_.async_run([this](std::error_code ec, netpasst::bridge_counters) {
      if (shutting_down_) return finish_shutdown();
      if (ec) return shutdown(1, "bridge: " + ec.message());
      begin_lease(); // stopped for a new lease
    });
  }

  json_line counters_line(const char* event) const {
    const auto b = bridge_.counters();
    return {{"event", event},
            {"guest_to_passt", to_json(b.a_to_b)},
            {"passt_to_guest", to_json(b.b_to_a)},
            {"tap", to_json(tap_.counters())},
            {"passt", to_json(life_.counters())},
            {"status", life_.status()}};
  }

  void shutdown(int code, const std::string& reason) {
    if (shutting_down_) return;
    shutting_down_ = true;
    exit_code_ = code;
    print_line({{"event", "shutdown"}, {"reason", reason}});
    if (code != 0) std::fprintf(stderr, "netpasst_tap: %s\n", reason.c_str());
    retry_.cancel();
    if (guest_) guest_->cancel();
    bridge_.stop();
    life_.async_stop([this](std::error_code) {
      passt_stopped_ = true;
      finish_shutdown();
    });
  }

  /// Called by every completion once shutting down: the last one cleans up.
  void finish_shutdown() {
    if (finished_ || !passt_stopped_ || bridge_.running() || guest_ || !port_.idle()) return;
    finished_ = true;
    print_line(counters_line("exit"));
    tap_.close(); // the tap goes away with its descriptor
    resolv_.restore();
    netns_.remove();
    signals_.cancel();
    io_.stop();
  }

  asio::io_context& io_;
  tap_args args_;
  tap_example::named_netns netns_;
  tap_example::netns_resolv_conf resolv_;
  netpasst::tap_transport tap_;
  Lifecycle life_;
  tap_example::guest_port<Lifecycle> port_;
  netpasst::basic_bridge<netpasst::tap_transport, Lifecycle> bridge_;
  std::optional<netpasst::mini_guest<tap_example::guest_port<Lifecycle>>> guest_;
  asio::signal_set signals_;
  asio::steady_timer retry_;
  std::optional<netpasst::dhcp_lease> configured_;
  unsigned lease_wanted_ = 0, lease_asked_ = 0, dhcp_failures_ = 0;
  bool shutting_down_ = false, passt_stopped_ = false, finished_ = false;
  int exit_code_ = 0;
};

template <class Session>
int run_with(const tap_args& args, netpasst::options opts) {
  asio::io_context io;
  // The launcher takes daemon or foreground as a value: one lifecycle type per transport.
  using lifecycle_type = netpasst::basic_lifecycle<Session, netpasst::passt_launcher>;
  tap_vmm<lifecycle_type> vmm(io, args, std::move(opts));
  return vmm.run();
}

} // namespace

int main(int argc, char** argv) {
  tap_args args;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "-h" || a == "--help") {
      usage("bridges a tap in a network namespace to passt");
      return 0;
    }
    if (a == "--no-checksum-offload" || a == "--no-trust-checksums") {
      (a == "--no-checksum-offload" ? args.checksum_offload : args.trust_checksums) = false;
      continue;
    }
    if (a == "--no-guest-checksum-offload") {
      args.guest_checksum_offload = false;
      continue;
    }
    if (a == "--socket-buffer") {
      if (i + 1 >= argc) return usage("missing value after --socket-buffer");
      const std::string_view value = argv[++i];
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), args.socket_buffer_bytes);
      if (ec != std::errc{} || end != value.data() + value.size() || args.socket_buffer_bytes == 0)
        return usage("--socket-buffer takes a size in bytes above 0, not " + std::string(value));
      continue;
    }
    std::string* target = a == "--netns"      ? &args.netns
                          : a == "--config"   ? &args.config
                          : a == "--passt"    ? &args.passt
                          : a == "--launcher" ? &args.launcher
                          : a == "--tap"      ? &args.tap
                          : a == "--transport" ? &args.transport
                                              : nullptr;
    if (!target) return usage("unknown argument " + std::string(a));
    if (i + 1 >= argc) return usage("missing value after " + std::string(a));
    *target = argv[++i];
  }
  if (args.netns.empty()) return usage("--netns NAME is required");
  if (args.netns.find('/') != std::string::npos || args.netns == "." || args.netns == "..")
    return usage("--netns takes a name (as for ip netns), not a path: " + args.netns);
  if (!netpasst::launch_mode_from_string(args.launcher)) return usage("--launcher takes daemon or foreground");
  if (args.transport != "stream" && args.transport != "vhost-user")
    return usage("--transport takes stream or vhost-user");
  if (args.tap.empty() || args.tap.size() > 15) return usage("--tap takes an interface name of 1 to 15 bytes");

  netpasst::options opts;
  if (!args.config.empty()) {
    std::ifstream in(args.config);
    if (!in) return usage("cannot read " + args.config);
    std::vector<netpasst::diagnostic> problems;
    auto parsed = netpasst::options_from_json(in, problems);
    if (!parsed) {
      for (const auto& p : problems)
        std::fprintf(stderr, "%s: %s\n", args.config.c_str(), netpasst::to_string(p).c_str());
      return 2;
    }
    opts = std::move(*parsed);
  }
  if (!args.passt.empty()) opts.path = args.passt;
  ::signal(SIGPIPE, SIG_IGN);

  try {
    if (args.transport == "vhost-user") return run_with<netpasst::vhost_user_session>(args, std::move(opts));
    return run_with<netpasst::stream_session>(args, std::move(opts));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "netpasst_tap: %s\n", e.what());
    std::cout << json_line{{"event", "exit"}, {"error", e.what()}}.dump() << std::endl;
    return 1;
  }
}
