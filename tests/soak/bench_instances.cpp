// bench_instances: many lifecycles in one io_context on one thread, each with
// its own passt and a guest that gets a lease and passes traffic. Prints the
// time to bring them all up and what each instance costs (descriptors and RSS
// of this process, passt's RSS), then adds instances up to --max, stopping at
// the first one that cannot start (and saying why), then stops them all and
// checks that nothing is left. Exits 1 when a check fails, 2 on bad arguments,
// 77 when not root.
//
//   bench_instances [--count N] [--max M] [--launcher daemon|foreground]
//                   [--udp-ports distinct|random] [--passt PATH]
//
// --udp-ports random lets every guest pick its UDP source ports at random, as
// mini_guest does by default, instead of one port per guest: Debian 12's passt
// binds the guest's source port on the host side, so two passts in one
// network namespace that see the same port collide.
//
// It runs as root, in a private network namespace of its own (see
// soak_support.hpp). RLIMIT_NOFILE's soft limit is raised to the hard one.

// GCC 12 misreads Asio's coroutine frame allocator here (-Wmismatched-new-delete).
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

#include "soak_support.hpp"

#include <netpasst/guest/mini_guest.hpp>
#include <netpasst/launcher/passt_launcher.hpp>
#include <netpasst/lifecycle.hpp>

#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/use_awaitable.hpp>

#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace std::chrono_literals;
using namespace netpasst::soak;
inline constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

constexpr auto batch_limit = 60s;  // bringing up or stopping one batch

struct settings {
  std::size_t count = 32, max = 200;
  std::string launcher = "daemon";
  bool distinct_udp_ports = true;
  std::string passt = default_passt();
};

/// One lifecycle, its passt and its guest.
struct instance {
  using lifecycle_type = netpasst::basic_lifecycle<netpasst::stream_session, netpasst::passt_launcher>;

  instance(asio::io_context& io, netpasst::launch_mode mode, const netpasst::options& o,
           const netpasst::mini_guest_config& g, std::size_t index)
      : index(index), life(netpasst::passt_launcher(io, mode), o), guest(life, g) {}

  std::size_t index;
  lifecycle_type life;
  netpasst::mini_guest<lifecycle_type> guest;
  std::optional<clock_type::time_point> link_up_at, traffic_done_at;
  std::optional<std::error_code> started;
  std::string traffic_error;
};

/// A lease, a UDP echo through the gateway to our echo on the host's
/// loopback, and an ICMP echo to the gateway.
asio::awaitable<void> exchange_traffic(instance& in, std::uint16_t echo_port, bool icmp) {
  auto [dhcp_error, lease] = co_await in.guest.async_dhcp(use_tuple);
  if (dhcp_error) {
    in.traffic_error = "DHCP: " + dhcp_error.message();
    co_return;
  }
  const std::string text = "instance " + std::to_string(in.index);
  auto [udp_error, reply] = co_await in.guest.async_udp_exchange(
      lease.gateway, echo_port, std::as_bytes(std::span(text.data(), text.size())), use_tuple);
  if (udp_error || std::string_view(reinterpret_cast<const char*>(reply.payload.data()), reply.payload.size()) != text) {
    in.traffic_error = "UDP echo: " + (udp_error ? udp_error.message() : "wrong reply");
    co_return;
  }
  if (!icmp) co_return;
  auto [ping_error, rtt] = co_await in.guest.async_ping(lease.gateway, use_tuple);
  if (ping_error) in.traffic_error = "ICMP echo: " + ping_error.message();
}

/// What one batch of new instances did.
struct batch_result {
  std::size_t started = 0, traffic_ok = 0;
  double first_link_up_ms = 0, all_link_up_ms = 0, all_traffic_ms = 0;
  std::string start_failure;                // the first start that failed, and why
  std::vector<std::string> traffic_failures;
};

class bench {
public:
  bench(asio::io_context& io, const settings& s, std::uint16_t echo_port, bool icmp)
      : io_(io), settings_(s),
        mode_(*netpasst::launch_mode_from_string(s.launcher)),
        echo_port_(echo_port), icmp_(icmp) {
    options_.path = s.passt;
  }

  std::size_t size() const { return instances_.size(); }

  /// Starts instances until there are `total`, then runs each one's traffic.
  batch_result add_until(std::size_t total) {
    batch_result r;
    const std::size_t first = instances_.size();
    const auto began = clock_type::now();
    for (std::size_t i = first; i < total; ++i) {
      auto& in = *instances_.emplace_back(std::make_unique<instance>(io_, mode_, options_, guest_config(i), i));
      in.life.subscribe([&in](const netpasst::lifecycle_event& e) {
        if (e.kind == netpasst::lifecycle_event_kind::link_up && !in.link_up_at) in.link_up_at = clock_type::now();
      });
      in.life.async_start([&in](std::error_code ec) { in.started = ec; });
    }
    auto batch = [&] { return std::span(instances_).subspan(first); };
    run_until(io_, [&] { return std::ranges::all_of(batch(), [](auto& in) { return in->started.has_value(); }); },
              batch_limit);
    std::optional<clock_type::time_point> first_up, last_up;
    for (auto& in : batch()) {
      if (!in->started || *in->started) {
        if (r.start_failure.empty())
          r.start_failure = "instance " + std::to_string(in->index + 1) + ": " +
                            (in->started ? in->life.last_error_message() : "no link up within 60 s");
        continue;
      }
      ++r.started;
      first_up = std::min(first_up.value_or(*in->link_up_at), *in->link_up_at);
      last_up = std::max(last_up.value_or(*in->link_up_at), *in->link_up_at);
      asio::co_spawn(io_, exchange_traffic(*in, echo_port_, icmp_), [&in = *in](std::exception_ptr e) {
        if (e) in.traffic_error = "exception";
        in.traffic_done_at = clock_type::now();
      });
    }
    run_until(io_, [&] {
      return std::ranges::all_of(batch(), [](auto& in) { return in->traffic_done_at || !in->started || *in->started; });
    }, batch_limit);
    std::optional<clock_type::time_point> last_traffic;
    for (auto& in : batch()) {
      if (!in->started || *in->started) continue;
      if (!in->traffic_done_at) in->traffic_error = "no lease and echoes within 60 s";
      if (!in->traffic_error.empty()) {
        r.traffic_failures.push_back("instance " + std::to_string(in->index + 1) + ": " + in->traffic_error);
        continue;
      }
      ++r.traffic_ok;
      last_traffic = std::max(last_traffic.value_or(*in->traffic_done_at), *in->traffic_done_at);
    }
    if (first_up) r.first_link_up_ms = to_ms(*first_up - began), r.all_link_up_ms = to_ms(*last_up - began);
    if (last_traffic) r.all_traffic_ms = to_ms(*last_traffic - began);
    return r;
  }

  /// Stops every instance at once and destroys them; the time it took, or
  /// nothing when some did not stop within the limit.
  std::optional<double> stop_all() {
    const auto began = clock_type::now();
    std::size_t stopped = 0;
    for (auto& in : instances_) in->life.async_stop([&stopped](std::error_code) { ++stopped; });
    const bool all = run_until(io_, [&] { return stopped == instances_.size(); }, batch_limit);
    const double took = to_ms(clock_type::now() - began);
    instances_.clear();
    if (!all) return std::nullopt;
    return took;
  }

private:
  netpasst::mini_guest_config guest_config(std::size_t index) const {
    netpasst::mini_guest_config g;
    if (settings_.distinct_udp_ports) g.udp_source_port = std::uint16_t(20000 + index % 12000);
    g.icmp_identifier = std::uint16_t(0x1000 + index);
    return g;
  }

  asio::io_context& io_;
  const settings& settings_;
  netpasst::launch_mode mode_;
  std::uint16_t echo_port_;
  bool icmp_;
  netpasst::options options_;
  std::vector<std::unique_ptr<instance>> instances_;
};

/// Raises RLIMIT_NOFILE's soft limit to the hard one; "soft A -> B (hard B)".
std::string raise_fd_limit() {
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  const auto before = limit.rlim_cur;
  limit.rlim_cur = limit.rlim_max;
  const bool raised = ::setrlimit(RLIMIT_NOFILE, &limit) == 0;
  ::getrlimit(RLIMIT_NOFILE, &limit);
  return "RLIMIT_NOFILE soft " + std::to_string(before) + " -> " + std::to_string(limit.rlim_cur) + " (hard " +
         std::to_string(limit.rlim_max) + ")" + (raised ? "" : ", not raised");
}

int run(const settings& s) {
  const std::string limit = raise_fd_limit();
  asio::io_context io;
  udp_echo echo(io);
  const bool icmp = passt_may_ping();
  run_for(io, 10ms);
  const census base = settled_census(io);
  std::printf("bench_instances: %s, %s launcher, one io_context on one thread, a private network namespace; %s\n",
              s.passt.c_str(), s.launcher.c_str(), limit.c_str());
  std::printf("each guest: DHCP, UDP echo via the gateway to 127.0.0.1:%u (%s)%s\n", echo.port(),
              s.distinct_udp_ports ? "a source port of its own" : "random source ports",
              icmp ? ", ICMP echo to the gateway (an identifier of its own)" : "; ICMP not tried (ping sockets refused)");
  std::printf("baseline: fds %zu, threads %zu, children %zu, passt processes %zu, RSS %ld KiB, heap in use %zu "
              "bytes\n\n",
              base.fds, base.threads, base.children, base.passts, base.rss_kib, base.heap_in_use);
  std::printf("instances  added  first link_up ms  all link_up ms  all traffic ms  fds/inst  RSS KiB/inst  "
              "passt VmRSS KiB/inst (RssAnon)\n");
  std::fflush(stdout);

  std::vector<std::string> problems;
  std::string stopped_because;
  bench b(io, s, echo.port(), icmp);
  std::size_t up = 0;
  for (std::size_t target = s.count; up < s.max; target = std::min(s.max, target + s.count)) {
    const batch_result r = b.add_until(target);
    const std::size_t added = target - up;
    up += r.started;
    for (const auto& f : r.traffic_failures) problems.push_back(f);
    const census now = take_census();
    const auto passts = passt_processes();
    const double n = double(std::max<std::size_t>(1, up));
    std::printf("%9zu  %5zu  %16.1f  %14.1f  %14.1f  %8.2f  %12.1f  %10.1f (%.1f)\n", up, r.started,
                r.first_link_up_ms, r.all_link_up_ms, r.all_traffic_ms, double(now.fds - base.fds) / n,
                double(now.rss_kib - base.rss_kib) / n,
                double(sum_status_kib(passts, "VmRSS")) / double(std::max<std::size_t>(1, passts.size())),
                double(sum_status_kib(passts, "RssAnon")) / double(std::max<std::size_t>(1, passts.size())));
    std::fflush(stdout);
    if (now.passts != up) problems.push_back(std::to_string(now.passts) + " passt processes for " +
                                             std::to_string(up) + " instances up");
    if (now.threads != base.threads) problems.push_back("threads grew to " + std::to_string(now.threads));
    if (!r.start_failure.empty()) {
      stopped_because = r.start_failure + " (" + std::to_string(added - r.started) + " of the " +
                        std::to_string(added) + " started in that batch failed)";
      if (up < s.count) problems.push_back("the first " + std::to_string(s.count) + " did not all start: " +
                                           r.start_failure);
      break;
    }
  }
  const bool udp_failed =
      std::ranges::any_of(problems, [](const std::string& p) { return p.find("UDP echo") != std::string::npos; });
  if (udp_failed && !s.distinct_udp_ports)
    std::printf("\nUDP echoes failed with random source ports: Debian 12's passt binds the guest's source port on the "
                "host side, so passts in one namespace that see the same port collide\n");
  if (stopped_because.empty()) std::printf("\nscaled to %zu of %zu instances\n", up, s.max);
  else std::printf("\nscaled to %zu of %zu instances, then stopped: %s\n", up, s.max, stopped_because.c_str());

  const auto stop_ms = b.stop_all();
  const census end = settled_census(io);
  if (stop_ms) std::printf("stopped all %zu in %.1f ms\n", up, *stop_ms);
  else problems.push_back("not every instance stopped within 60 s");
  std::printf("after stop: passt processes %zu, fds %zu (baseline %zu), children %zu, threads %zu, heap in use %zu "
              "bytes (baseline %zu), RSS %ld KiB (baseline %ld)\n",
              end.passts, end.fds, base.fds, end.children, end.threads, end.heap_in_use, base.heap_in_use, end.rss_kib,
              base.rss_kib);
  if (!memory_figures_meaningful)
    std::printf("heap and RSS figures mean little here: a sanitizer's allocator keeps freed memory\n");
  if (end.passts != 0) problems.push_back("passt processes left after stop");
  if (end.fds != base.fds) problems.push_back("descriptors not back to the baseline");
  if (end.children != 0) problems.push_back("children left after stop");
  for (const auto& p : problems) std::printf("FAILED: %s\n", p.c_str());
  std::printf("result: %s\n", problems.empty() ? "pass" : "FAIL");
  return problems.empty() ? 0 : 1;
}

int usage(const char* message) {
  std::fprintf(stderr,
               "bench_instances: %s\nusage: bench_instances [--count N (32)] [--max M (200)] "
               "[--launcher daemon|foreground (daemon)] [--udp-ports distinct|random (distinct)] [--passt PATH]\n",
               message);
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  settings s;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    const char* value = i + 1 < argc ? argv[i + 1] : nullptr;
    if (a == "-h" || a == "--help") return usage("many passt instances in one io_context"), 0;
    if (!value) return usage(("unknown argument or missing value: " + std::string(a)).c_str());
    ++i;
    if (a == "--count") s.count = std::strtoul(value, nullptr, 10);
    else if (a == "--max") s.max = std::strtoul(value, nullptr, 10);
    else if (a == "--launcher") s.launcher = value;
    else if (a == "--udp-ports") s.distinct_udp_ports = std::string_view(value) == "distinct";
    else if (a == "--passt") s.passt = value;
    else return usage(("unknown argument " + std::string(a)).c_str());
    if (a == "--udp-ports" && !s.distinct_udp_ports && std::string_view(value) != "random")
      return usage("--udp-ports takes distinct or random");
  }
  if (!netpasst::launch_mode_from_string(s.launcher)) return usage("--launcher takes daemon or foreground");
  if (s.count == 0 || s.max < s.count) return usage("--count must be at least 1 and --max at least --count");

  enter_private_netns("bench_instances");
  return run(s);
}
