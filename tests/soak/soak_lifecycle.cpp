// soak_lifecycle: a lifecycle (stream session, real passt) whose guest keeps
// leasing and exchanging traffic while passt is SIGKILLed every interval, for
// each launcher. Checks that nothing crashes, that after every kill the link
// comes back and traffic passes again, and that descriptors, threads,
// children, passt processes and RSS at the end equal those after the first
// start (RSS within a tolerance). Prints the figures; exits 1 when a check
// fails, 2 on bad arguments, 77 when not root.
//
//   soak_lifecycle [--kills N] [--interval-ms M] [--launcher daemon|foreground|both]
//                  [--rss-tolerance-kib K] [--passt PATH] [--verbose (a line per kill)]
//
// It runs as root, in a private network namespace of its own (see
// soak_support.hpp). Run time is bounded: about N x M ms per launcher, and
// every wait gives up after 10 s.

// GCC 12 misreads Asio's coroutine frame allocator here (-Wmismatched-new-delete).
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

#include "soak_support.hpp"

#include <netpasst/guest/mini_guest.hpp>
#include <netpasst/launcher/passt_launcher.hpp>
#include <netpasst/lifecycle.hpp>

#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include <malloc.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace std::chrono_literals;
using namespace netpasst::soak;
using netpasst::lifecycle_event_kind;
inline constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

constexpr auto wait_limit = 10s;       // any single wait: start, link back, traffic back, stop
constexpr auto traffic_pace = 20ms;    // between rounds of UDP echo and ping
constexpr long heap_tolerance_bytes = 32 * 1024;  // strings kept (passt's last messages) differ in length

struct settings {
  unsigned kills = 100;
  std::chrono::milliseconds interval{1000};
  std::string launcher = "both";
  long rss_tolerance_kib = 64;  // 16 pages
  std::string passt = default_passt();
  bool verbose = false;  // a line per kill
};

struct tally {
  std::uint64_t ok = 0, failed = 0, interrupted = 0;  // interrupted: a kill came while it ran
};

struct launcher_report {
  std::string name;
  std::vector<std::string> problems;
  unsigned kills = 0, late_kills = 0;
  std::uint64_t restarts_seen = 0, restarts_counted = 0, failed_launches = 0, guard_counted = 0;
  std::vector<double> link_up_ms, lease_ms, link_up_to_lease_ms, traffic_back_ms;
  tally leases, udp, icmp;
  std::vector<std::string> failure_samples;
  census before, after, stopped;
  std::size_t fds_before_start = 0, fds_after_destroy = 0;
};

netpasst::lifecycle_config soak_lifecycle_config(std::chrono::milliseconds interval) {
  netpasst::lifecycle_config config;
  config.restart.initial_backoff = 10ms;
  config.restart.max_backoff = 200ms;
  // Each passt lives about one interval minus the restart time (passt itself
  // takes about 100 ms to start); the guard counts a passt as a crash only
  // when it dies within a fifth of an interval.
  config.restart.min_uptime = std::min<std::chrono::milliseconds>(1000ms, interval / 5);
  return config;
}

netpasst::mini_guest_config soak_guest_config() {
  netpasst::mini_guest_config config;
  config.retransmit_interval = 100ms;
  config.dhcp_timeout = 5s;
  config.udp_timeout = 2s;
  config.ping_timeout = 2s;
  return config;
}

/// One launcher's soak: the lifecycle, its guest, the traffic and the kills.
class soak_run {
public:
  using lifecycle_type = netpasst::basic_lifecycle<netpasst::stream_session, netpasst::passt_launcher>;

  soak_run(asio::io_context& io, const settings& s, netpasst::launch_mode mode, std::uint16_t echo_port, bool icmp,
           launcher_report& report)
      : io_(io), settings_(s), echo_port_(echo_port), icmp_(icmp), report_(report),
        life_(netpasst::passt_launcher(io, mode), passt_options(s), soak_lifecycle_config(s.interval)),
        guest_(life_, soak_guest_config()),
        link_changed_(io), pace_(io) {
    report_.link_up_ms.reserve(s.kills);
    report_.lease_ms.reserve(s.kills);
    report_.link_up_to_lease_ms.reserve(s.kills);
    report_.traffic_back_ms.reserve(s.kills);
    life_.subscribe([this](const netpasst::lifecycle_event& e) { on_event(e); });
  }

  void run() {
    std::optional<std::error_code> started;
    life_.async_start([&](std::error_code ec) { started = ec; });
    if (!run_until(io_, [&] { return started.has_value(); }, wait_limit) || *started)
      return problem("first start failed: " + life_.last_error_message());
    asio::co_spawn(io_, drive(), [this](std::exception_ptr e) {
      if (e) problem("the guest's traffic ended with an exception");
      driver_done_ = true;
    });
    if (!run_until(io_, [&] { return failed_ || (ready_to_kill() && report_.udp.ok >= 10); }, wait_limit))
      return finish("no lease and traffic after the first start");
    report_.before = settled_census(io_);

    auto last_kill = clock_type::now();
    for (unsigned k = 1; k <= settings_.kills && !failed_; ++k) {
      const auto due = last_kill + settings_.interval;
      if (!run_until(io_, [&] { return failed_ || (clock_type::now() >= due && ready_to_kill()); },
                     settings_.interval + wait_limit) || failed_)
        return finish("before kill " + std::to_string(k) + ": " + not_ready_reason());
      if (clock_type::now() - due > 100ms) ++report_.late_kills;
      if (settings_.verbose && k > 1) print_previous_kill(k - 1);
      if (!kill_passt()) return finish("kill " + std::to_string(k) + ": no passt to kill");
      last_kill = killed_at_;
    }
    if (!run_until(io_, [&] { return failed_ || ready_to_kill(); }, wait_limit) || failed_)
      return finish("after the last kill: " + not_ready_reason());
    if (settings_.verbose) print_previous_kill(settings_.kills);
    report_.after = settled_census(io_);
    finish({});
  }

private:
  static netpasst::options passt_options(const settings& s) {
    netpasst::options o;
    o.path = s.passt;
    return o;
  }

  void problem(std::string what) { report_.problems.push_back(std::move(what)); }

  void print_previous_kill(unsigned k) const {
    const census c = take_census();
    std::printf("  kill %u: link_up %.2f ms, lease and UDP echo %.2f ms; fds %zu, children %zu, RSS %ld KiB, heap in "
                "use %zu of %zu bytes\n",
                k, report_.link_up_ms.back(), report_.traffic_back_ms.back(), c.fds, c.children, c.rss_kib,
                c.heap_in_use, c.heap_kept);
    std::fflush(stdout);
  }

  /// Stops the traffic and the lifecycle, and takes the census after the stop.
  void finish(std::string problem_text) {
    if (!problem_text.empty()) problem(std::move(problem_text));
    stopping_ = true;
    guest_.cancel();
    link_changed_.cancel();
    pace_.cancel();
    if (!run_until(io_, [&] { return driver_done_; }, wait_limit)) problem("the traffic did not stop");
    const auto c = life_.counters();
    report_.restarts_counted = c.restarts;
    report_.failed_launches = c.failed_launches;
    std::optional<std::error_code> stopped;
    life_.async_stop([&](std::error_code ec) { stopped = ec; });
    if (!run_until(io_, [&] { return stopped.has_value(); }, wait_limit)) problem("stop did not complete");
    else if (*stopped) problem("stop: " + stopped->message());
    report_.stopped = settled_census(io_);
  }

  /// The link is up with a passt started after the last kill, and traffic passed through it.
  bool ready_to_kill() const {
    return !awaiting_link_up_ && !awaiting_traffic_ && life_.link_up() && traffic_generation_ == life_.generation();
  }

  std::string not_ready_reason() const {
    if (failed_) return "the lifecycle failed: " + life_.last_error_message();
    if (!life_.link_up()) return "the link did not come back within 10 s (" + life_.status() + ")";
    return "no lease and UDP echo within 10 s of link up (generation " + std::to_string(life_.generation()) + ")";
  }

  bool kill_passt() {
    const pid_t pid = life_.pid();
    const int pidfd = pid > 1 ? int(::syscall(SYS_pidfd_open, pid, 0)) : -1;
    if (pidfd < 0) return false;
    killed_at_ = clock_type::now();
    killed_generation_ = life_.generation();
    const bool sent = ::syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0) == 0;
    ::close(pidfd);
    if (!sent) return false;
    ++report_.kills;
    awaiting_link_up_ = awaiting_traffic_ = true;
    return true;
  }

  void on_event(const netpasst::lifecycle_event& e) {
    switch (e.kind) {
      case lifecycle_event_kind::link_up:
        if (e.is_restart()) ++report_.restarts_seen;
        link_up_at_ = clock_type::now();
        if (awaiting_link_up_ && e.generation > killed_generation_) {
          awaiting_link_up_ = false;
          report_.link_up_ms.push_back(to_ms(clock_type::now() - killed_at_));
        }
        link_changed_.cancel();
        break;
      case lifecycle_event_kind::link_down:
        ++downs_;
        guest_.cancel();
        break;
      case lifecycle_event_kind::restarting:
        if (e.attempt > 1) ++report_.guard_counted;
        break;
      case lifecycle_event_kind::failed:
        failed_ = true;
        problem("lifecycle failed: " + e.reason);
        link_changed_.cancel();
        break;
      default: break;
    }
  }

  void count(tally& t, bool ok, std::uint64_t downs_at_start, const char* what, std::error_code ec) {
    if (ok) return void(++t.ok);
    if (downs_ != downs_at_start || !life_.link_up() || stopping_) return void(++t.interrupted);
    ++t.failed;
    if (report_.failure_samples.size() < 5)
      report_.failure_samples.push_back(std::string(what) + " in generation " + std::to_string(life_.generation()) +
                                        ": " + (ec ? ec.message() : "wrong reply"));
  }

  /// The guest: after each link up a lease, then rounds of UDP echo through
  /// the gateway (to our echo on the host's loopback) and ICMP echo to it.
  asio::awaitable<void> drive() {
    std::uint64_t sequence = 0;
    while (!stopping_ && !failed_) {
      if (!life_.link_up()) {
        link_changed_.expires_at(clock_type::time_point::max());
        co_await link_changed_.async_wait(use_tuple);
        continue;
      }
      const auto generation = life_.generation();
      const auto downs = downs_;
      if (leased_generation_ != generation) {
        auto [ec, lease] = co_await guest_.async_dhcp(use_tuple);
        const bool same = !ec && (!first_lease_ || lease.address == first_lease_->address);
        count(report_.leases, same, downs, "DHCP", ec);
        if (same) {
          leased_generation_ = generation;
          first_lease_ = lease;
          if (awaiting_traffic_ && generation > killed_generation_) {
            report_.lease_ms.push_back(to_ms(clock_type::now() - killed_at_));
            report_.link_up_to_lease_ms.push_back(to_ms(clock_type::now() - link_up_at_));
          }
        }
        continue;
      }
      const std::string text = "soak " + std::to_string(generation) + "." + std::to_string(++sequence);
      auto [ec, reply] = co_await guest_.async_udp_exchange(
          first_lease_->gateway, echo_port_, std::as_bytes(std::span(text.data(), text.size())), use_tuple);
      const bool echoed = !ec && std::string_view(reinterpret_cast<const char*>(reply.payload.data()),
                                                  reply.payload.size()) == text;
      count(report_.udp, echoed, downs, "UDP echo", ec);
      if (echoed && generation > traffic_generation_) {
        traffic_generation_ = generation;
        if (awaiting_traffic_ && generation > killed_generation_) {
          awaiting_traffic_ = false;
          report_.traffic_back_ms.push_back(to_ms(clock_type::now() - killed_at_));
        }
      }
      if (icmp_ && !stopping_) {
        auto [ping_error, rtt] = co_await guest_.async_ping(first_lease_->gateway, use_tuple);
        count(report_.icmp, !ping_error, downs, "ICMP echo", ping_error);
      }
      pace_.expires_after(traffic_pace);
      co_await pace_.async_wait(use_tuple);
    }
  }

  asio::io_context& io_;
  const settings& settings_;
  std::uint16_t echo_port_;
  bool icmp_;
  launcher_report& report_;
  lifecycle_type life_;
  netpasst::mini_guest<lifecycle_type> guest_;
  asio::steady_timer link_changed_, pace_;
  std::optional<netpasst::dhcp_lease> first_lease_;
  std::uint64_t leased_generation_ = 0, traffic_generation_ = 0, killed_generation_ = 0, downs_ = 0;
  clock_type::time_point killed_at_{}, link_up_at_{};
  bool awaiting_link_up_ = false, awaiting_traffic_ = false, stopping_ = false, failed_ = false,
       driver_done_ = false;
};

launcher_report soak(asio::io_context& io, const settings& s, netpasst::launch_mode mode, const udp_echo& echo,
                     bool icmp) {
  launcher_report report;
  report.name = netpasst::to_string(mode);
  report.fds_before_start = settled_census(io).fds;
  {
    soak_run run(io, s, mode, echo.port(), icmp, report);
    run.run();
  }
  report.fds_after_destroy = settled_census(io).fds;
  return report;
}

/// Appends to `r.problems` every check the figures fail; true when none.
bool check(launcher_report& r, const settings& s) {
  auto require = [&](bool ok, const std::string& what) {
    if (!ok) r.problems.push_back(what);
  };
  const bool completed = r.kills == s.kills && r.after.threads != 0;
  if (completed) {
    require(r.link_up_ms.size() == r.kills, "a link_up after every kill");
    require(r.traffic_back_ms.size() == r.kills, "a lease and UDP echo after every kill");
    require(r.after.same_handles(r.before), "descriptors, threads, children and passts at the end as after warm-up");
    if (memory_figures_meaningful) {
      require(r.after.rss_kib - r.before.rss_kib <= s.rss_tolerance_kib,
              "RSS at the end within " + std::to_string(s.rss_tolerance_kib) + " KiB of RSS after warm-up");
      require(std::labs(long(r.after.heap_in_use) - long(r.before.heap_in_use)) <= heap_tolerance_bytes,
              "heap in use at the end within " + std::to_string(heap_tolerance_bytes) + " bytes of that after warm-up");
    }
  }
  require(r.leases.failed == 0 && r.udp.failed == 0 && r.icmp.failed == 0,
          "no lease, UDP or ICMP exchange failed without a kill during it");
  require(r.stopped.passts == 0 && r.stopped.children == 0, "no passt and no child left after stop");
  require(r.fds_after_destroy == r.fds_before_start, "descriptors after the lifecycle as before it");
  return r.problems.empty();
}

void print(const launcher_report& r, const settings& s, bool icmp) {
  std::printf("\n== %s launcher: %u SIGKILLs, one every %lld ms ==\n", r.name.c_str(), r.kills,
              static_cast<long long>(s.interval.count()));
  std::printf("kills %u (%u late: the link or its traffic was not back when due)\n", r.kills, r.late_kills);
  std::printf("restarts seen %llu (lifecycle counted %llu; failed launches %llu; attempts the crash-loop guard "
              "counted %llu)\n",
              static_cast<unsigned long long>(r.restarts_seen), static_cast<unsigned long long>(r.restarts_counted),
              static_cast<unsigned long long>(r.failed_launches), static_cast<unsigned long long>(r.guard_counted));
  std::printf("SIGKILL -> link_up ms                  %s\n", latency_line(r.link_up_ms).c_str());
  std::printf("SIGKILL -> new lease ms                %s\n", latency_line(r.lease_ms).c_str());
  const auto slow_leases = std::ranges::count_if(r.link_up_to_lease_ms, [](double ms) { return ms > 50; });
  std::printf("  of which link_up -> new lease ms     %s; over 50 ms (a DHCP retransmission): %td\n",
              latency_line(r.link_up_to_lease_ms).c_str(), slow_leases);
  std::printf("SIGKILL -> new lease and UDP echo ms   %s\n", latency_line(r.traffic_back_ms).c_str());
  auto line = [](const char* what, const tally& t) {
    std::printf("%-16s ok %llu  failed %llu  interrupted by a kill %llu\n", what,
                static_cast<unsigned long long>(t.ok), static_cast<unsigned long long>(t.failed),
                static_cast<unsigned long long>(t.interrupted));
  };
  line("DHCP leases", r.leases);
  line("UDP echoes", r.udp);
  if (icmp) line("ICMP echoes", r.icmp);
  else std::printf("ICMP echoes      not tried: passt's group may not open ping sockets\n");
  for (const auto& sample : r.failure_samples) std::printf("  failed: %s\n", sample.c_str());
  std::printf("                 after warm-up   at the end\n");
  std::printf("fds              %13zu   %10zu\n", r.before.fds, r.after.fds);
  std::printf("threads          %13zu   %10zu\n", r.before.threads, r.after.threads);
  std::printf("children         %13zu   %10zu\n", r.before.children, r.after.children);
  std::printf("passt processes  %13zu   %10zu\n", r.before.passts, r.after.passts);
  const long rss = r.after.rss_kib - r.before.rss_kib;
  std::printf("RSS KiB          %13ld   %10ld   (%+ld KiB = %+ld pages; tolerance %ld KiB)\n", r.before.rss_kib,
              r.after.rss_kib, rss, rss / 4, s.rss_tolerance_kib);
  std::printf("heap in use B    %13zu   %10zu   (%+ld bytes; tolerance %ld) malloc holds %zu -> %zu bytes\n",
              r.before.heap_in_use, r.after.heap_in_use, long(r.after.heap_in_use) - long(r.before.heap_in_use),
              heap_tolerance_bytes, r.before.heap_kept, r.after.heap_kept);
  if (!memory_figures_meaningful)
    std::printf("RSS and heap not checked: a sanitizer's allocator keeps freed memory (LeakSanitizer looks at exit)\n");
  std::printf("after stop: passt processes %zu, children %zu; fds %zu once the lifecycle is destroyed (%zu before "
              "it was made)\n",
              r.stopped.passts, r.stopped.children, r.fds_after_destroy, r.fds_before_start);
  for (const auto& p : r.problems) std::printf("FAILED: %s\n", p.c_str());
  std::printf("result: %s\n", r.problems.empty() ? "pass" : "FAIL");
}

int usage(const char* message) {
  std::fprintf(stderr,
               "soak_lifecycle: %s\nusage: soak_lifecycle [--kills N (100)] [--interval-ms M (1000)] "
               "[--launcher daemon|foreground|both (both)] [--rss-tolerance-kib K (64)] [--passt PATH] [--verbose]\n",
               message);
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  settings s;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    const char* value = i + 1 < argc ? argv[i + 1] : nullptr;
    if (a == "-h" || a == "--help") return usage("SIGKILLs passt every interval under a running guest"), 0;
    if (a == "--verbose") {
      s.verbose = true;
      continue;
    }
    if (!value) return usage(("unknown argument or missing value: " + std::string(a)).c_str());
    ++i;
    if (a == "--kills") s.kills = unsigned(std::strtoul(value, nullptr, 10));
    else if (a == "--interval-ms") s.interval = std::chrono::milliseconds(std::strtol(value, nullptr, 10));
    else if (a == "--launcher") s.launcher = value;
    else if (a == "--rss-tolerance-kib") s.rss_tolerance_kib = std::strtol(value, nullptr, 10);
    else if (a == "--passt") s.passt = value;
    else return usage(("unknown argument " + std::string(a)).c_str());
  }
  if (s.launcher != "daemon" && s.launcher != "foreground" && s.launcher != "both")
    return usage("--launcher takes daemon, foreground or both");
  if (s.kills == 0 || s.interval < 50ms) return usage("--kills must be at least 1 and --interval-ms at least 50");

  // Each connection to passt allocates its buffers (1.5 MiB) anew. With
  // glibc's adaptive threshold they move into the heap after the first free,
  // where the pages they touched stay resident wherever they land: RSS would
  // wander by hundreds of KiB with nothing leaked. A fixed threshold keeps
  // them mapped and unmapped, so RSS at the end compares with RSS at the start.
  if (memory_figures_meaningful) ::mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  enter_private_netns("soak_lifecycle");
  asio::io_context io;
  udp_echo echo(io);
  const bool icmp = passt_may_ping();
  const auto config = soak_lifecycle_config(s.interval);
  std::printf("soak_lifecycle: %s, a private network namespace, guest traffic every %lld ms: DHCP after each link "
              "up, UDP echo via the gateway to 127.0.0.1:%u%s\n",
              s.passt.c_str(), static_cast<long long>(traffic_pace.count()), echo.port(), icmp ? ", ICMP echo to the gateway" : "");
  std::printf("restart policy: backoff %lld ms doubling to %lld ms; crash-loop guard: a passt dying within %lld ms "
              "of link up counts as a failed attempt, %u in a row end the lifecycle. A kill every %lld ms leaves "
              "each passt up for about that long minus the restart, so the guard does not trip.\n",
              static_cast<long long>(config.restart.initial_backoff.count()),
              static_cast<long long>(config.restart.max_backoff.count()),
              static_cast<long long>(config.restart.min_uptime.count()), config.restart.max_attempts,
              static_cast<long long>(s.interval.count()));
  if (memory_figures_meaningful)
    std::printf("malloc: M_MMAP_THRESHOLD fixed at 128 KiB (larger blocks are mapped and unmapped, not kept in the "
                "heap) and RSS read after malloc_trim(0), so that RSS at the end compares with RSS after warm-up\n");
  std::fflush(stdout);

  std::vector<launcher_report> reports;
  if (s.launcher != "foreground") reports.push_back(soak(io, s, netpasst::launch_mode::daemonize, echo, icmp));
  if (s.launcher != "daemon") reports.push_back(soak(io, s, netpasst::launch_mode::foreground, echo, icmp));

  bool passed = true;
  for (auto& r : reports) {
    passed = check(r, s) && passed;
    print(r, s, icmp);
  }
  std::printf("\nsummary:");
  for (const auto& r : reports)
    std::printf(" %s %s (%u kills, link_up p95 %.2f ms);", r.name.c_str(), r.problems.empty() ? "pass" : "FAIL",
                r.kills, percentile(r.link_up_ms, 0.95));
  std::printf(" %s\n", passed ? "all checks passed" : "CHECKS FAILED");
  return passed ? 0 : 1;
}
