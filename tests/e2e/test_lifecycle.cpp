// The lifecycle against Debian's real passt, in the private namespace made by
// e2e_main: a guest's traffic, restarts after SIGKILL, a restart loop that
// gives up, stop in every state, 50-cycle leak checks, and the QEMU defects
// of QEMU's passt netdev shown not to happen.
#include <netpasst/lifecycle.hpp>

#include "e2e_env.hpp"
#include "../common/test_support.hpp"

#include <netpasst/guest/mini_guest.hpp>
#include <netpasst/launcher/passt_launcher.hpp>

#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/steady_timer.hpp>
#include <asio/ip/udp.hpp>
#include <catch2/catch.hpp>

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using netpasst::lifecycle_event_kind;
using netpasst::test::run_until;
using netpasst::test::write_script;

namespace {
std::size_t open_fds() { return netpasst::test::fd_count(); }
/// passt processes in this network namespace (each e2e program has its own).
std::vector<pid_t> passt_processes() { return netpasst::test::processes_in_this_netns("passt"); }
} // namespace

namespace {

// Gone: no such process, or a zombie (a daemonized passt is re-parented to a
// pid 1 that may never reap it; it has exited all the same).
bool process_gone(pid_t pid) {
  if (pid <= 1) return false;
  if (::kill(pid, 0) != 0) return errno == ESRCH;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const auto paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z';
}

// Makes the io_context create its reactor (epoll, eventfd, timerfd), so that
// fd counts taken afterwards see only what the code under test opens.
void warm_up(asio::io_context& io) {
  asio::steady_timer timer(io, 0ms);
  timer.wait();
  asio::posix::stream_descriptor probe(io, ::dup(0));
}

// Records every event of a lifecycle.
struct event_log {
  std::vector<netpasst::lifecycle_event> events;
  std::size_t count(lifecycle_event_kind kind) const {
    return std::size_t(std::count_if(events.begin(), events.end(), [&](const auto& e) { return e.kind == kind; }));
  }
  const netpasst::lifecycle_event* last(lifecycle_event_kind kind) const {
    for (auto it = events.rbegin(); it != events.rend(); ++it)
      if (it->kind == kind) return &*it;
    return nullptr;
  }
};

template <class Lifecycle> event_log& watch(Lifecycle& life, event_log& log) {
  life.subscribe([&log](const netpasst::lifecycle_event& e) { log.events.push_back(e); });
  return log;
}

netpasst::options test_options() {
  netpasst::options o;
  o.path = netpasst::e2e::passt_binary();
  return o;
}

// A UDP echo socket on the host's loopback, answered from the io_context.
struct udp_echo {
  asio::ip::udp::socket socket;
  std::array<char, 2048> buffer{};
  asio::ip::udp::endpoint from;
  explicit udp_echo(asio::io_context& io)
      : socket(io, asio::ip::udp::endpoint(asio::ip::make_address_v4("127.0.0.1"), 0)) {
    arm();
  }
  void arm() {
    socket.async_receive_from(asio::buffer(buffer), from, [this](std::error_code ec, std::size_t n) {
      if (ec) return;
      socket.send_to(asio::buffer(buffer.data(), n), from);
      arm();
    });
  }
  std::uint16_t port() const { return socket.local_endpoint().port(); }
};

template <class Lifecycle> struct guest_session {
  asio::io_context& io;
  netpasst::mini_guest<Lifecycle> guest;
  guest_session(asio::io_context& io, Lifecycle& life) : io(io), guest(life) {}

  netpasst::dhcp_lease dhcp() {
    std::optional<std::error_code> done;
    netpasst::dhcp_lease lease;
    guest.async_dhcp([&](std::error_code ec, netpasst::dhcp_lease l) {
      done = ec;
      lease = l;
    });
    REQUIRE(run_until(io, [&] { return done.has_value(); }));
    REQUIRE(done->message() == std::error_code{}.message());
    return lease;
  }

  std::string udp_echo_through_gateway(const netpasst::dhcp_lease& lease, std::uint16_t port, std::string text) {
    std::optional<std::error_code> done;
    std::string answer;
    guest.async_udp_exchange(lease.gateway, port, std::as_bytes(std::span(text.data(), text.size())),
                             [&](std::error_code ec, netpasst::udp_reply r) {
                               done = ec;
                               answer.assign(reinterpret_cast<const char*>(r.payload.data()), r.payload.size());
                             });
    REQUIRE(run_until(io, [&] { return done.has_value(); }));
    REQUIRE(done->message() == std::error_code{}.message());
    return answer;
  }
};

template <class Lifecycle> void start(asio::io_context& io, Lifecycle& life) {
  std::optional<std::error_code> started;
  life.async_start([&](std::error_code ec) { started = ec; });
  REQUIRE(run_until(io, [&] { return started.has_value(); }));
  INFO(life.last_error_message());
  REQUIRE(started->message() == std::error_code{}.message());
  REQUIRE(life.state() == netpasst::lifecycle_state::running);
}

template <class Lifecycle> void stop(asio::io_context& io, Lifecycle& life) {
  std::optional<std::error_code> stopped;
  life.async_stop([&](std::error_code ec) { stopped = ec; });
  REQUIRE(run_until(io, [&] { return stopped.has_value(); }));
  REQUIRE(life.state() == netpasst::lifecycle_state::stopped);
}

bool in_namespace() {
  if (!netpasst::e2e::in_private_netns) WARN("not root: skipped (needs the private network namespace)");
  return netpasst::e2e::in_private_netns;
}

} // namespace

TEMPLATE_TEST_CASE("a guest gets a lease, resolves the gateway, and reaches the host by UDP and ICMP", "[lifecycle]",
                   netpasst::daemon_launcher, netpasst::foreground_launcher) {
  if (!in_namespace()) return;
  using lifecycle_type = netpasst::basic_lifecycle<netpasst::stream_session, TestType>;
  asio::io_context io;
  udp_echo echo(io);
  lifecycle_type life(io, test_options());
  event_log log;
  watch(life, log);
  start(io, life);
  REQUIRE(life.pid() > 1);
  CHECK(life.status() == "stream,connected to pid " + std::to_string(life.pid()));
  REQUIRE(log.last(lifecycle_event_kind::link_up));
  CHECK(log.last(lifecycle_event_kind::link_up)->pid == life.pid());

  guest_session<lifecycle_type> session(io, life);
  auto lease = session.dhcp();
  CHECK(lease.address.to_string() == netpasst::e2e::template_address);
  CHECK(lease.prefix_length == netpasst::e2e::template_prefix_length);
  CHECK(lease.gateway.to_string() == netpasst::e2e::template_gateway);
  CHECK(lease.mtu == 65520);

  std::optional<std::error_code> arp_done;
  session.guest.async_arp(lease.gateway, [&](std::error_code ec, netpasst::packet::mac_address) { arp_done = ec; });
  REQUIRE(run_until(io, [&] { return arp_done.has_value(); }));
  CHECK(!*arp_done);

  CHECK(session.udp_echo_through_gateway(lease, echo.port(), "hello host") == "hello host");

  std::optional<std::error_code> ping_done;
  session.guest.async_ping(lease.gateway, [&](std::error_code ec, auto) { ping_done = ec; });
  REQUIRE(run_until(io, [&] { return ping_done.has_value(); }));
  CHECK(ping_done->message() == std::error_code{}.message());

  const auto counters = life.counters();
  CHECK(counters.frames_sent >= 4);
  CHECK(counters.frames_received >= 4);
  const pid_t pid = life.pid();
  stop(io, life);
  CHECK(process_gone(pid));
  CHECK(log.count(lifecycle_event_kind::stopped) == 1);
  CHECK(passt_processes().empty());
}

TEST_CASE("passt killed with SIGKILL: link down, restart, a new lease, and traffic flows again", "[lifecycle]") {
  if (!in_namespace()) return;
  asio::io_context io;
  udp_echo echo(io);
  netpasst::lifecycle life(io, test_options());
  event_log log;
  watch(life, log);
  start(io, life);
  guest_session<netpasst::lifecycle> session(io, life);
  auto lease = session.dhcp();
  REQUIRE(session.udp_echo_through_gateway(lease, echo.port(), "before") == "before");

  const pid_t first = life.pid();
  bool old_gone_at_restart = false;
  life.subscribe([&](const netpasst::lifecycle_event& e) {
    if (e.kind == lifecycle_event_kind::restarting) old_gone_at_restart = process_gone(first);
  });
  REQUIRE(::kill(first, SIGKILL) == 0);
  REQUIRE(run_until(io, [&] { return log.count(lifecycle_event_kind::link_up) == 2; }));
  CHECK(log.count(lifecycle_event_kind::link_down) == 1);
  CHECK(log.last(lifecycle_event_kind::link_down)->pid == first);
  CHECK(log.last(lifecycle_event_kind::restarting)->attempt == 1);
  CHECK(old_gone_at_restart);
  CHECK(life.pid() != first);
  CHECK(life.counters().restarts == 1);

  lease = session.dhcp();
  CHECK(lease.address.to_string() == netpasst::e2e::template_address);
  CHECK(session.udp_echo_through_gateway(lease, echo.port(), "after") == "after");
  stop(io, life);
  CHECK(passt_processes().empty());
}

TEMPLATE_TEST_CASE("after a SIGKILL, link_down and restarting say how passt ended, not that the socket closed",
                   "[lifecycle]", netpasst::daemon_launcher, netpasst::foreground_launcher) {
  if (!in_namespace()) return;
  asio::io_context io;
  netpasst::basic_lifecycle<netpasst::stream_session, TestType> life(io, test_options());
  event_log log;
  watch(life, log);
  start(io, life);
  guest_session<decltype(life)> session(io, life);
  session.dhcp();  // a receive is pending: the session sees the socket close too
  const pid_t first = life.pid();
  REQUIRE(::kill(first, SIGKILL) == 0);
  REQUIRE(run_until(io, [&] { return log.count(lifecycle_event_kind::link_up) == 2; }));
  const auto* down = log.last(lifecycle_event_kind::link_down);
  REQUIRE(down);
  CHECK(down->error == netpasst::errc::passt_terminated);
  const std::string who = "passt (pid " + std::to_string(first) + ")";
  if constexpr (std::is_same_v<TestType, netpasst::foreground_launcher>)
    CHECK(down->reason == who + " was killed by signal 9 (Killed)");
  else  // a daemon is not our child: its status cannot be known
    CHECK(down->reason == who + " exited");
  CHECK(log.last(lifecycle_event_kind::restarting)->reason == down->reason);
  CHECK(log.last(lifecycle_event_kind::link_up)->generation == 2);
  stop(io, life);
}

TEST_CASE("a restart loop that cannot start passt ends in a clear failure", "[lifecycle]") {
  if (!in_namespace()) return;
  // Starts the real passt once, then refuses like a broken install would.
  auto marker = std::filesystem::temp_directory_path() / ("netpasst-e2e-marker-" + std::to_string(::getpid()));
  std::filesystem::remove(marker);
  auto script = write_script("passt-once", "if [ -e '" + marker.string() +
                                               "' ]; then echo 'passt-once: refusing to start again' >&2; exit 3; fi\n"
                                               "touch '" + marker.string() + "'\nexec " +
                                               netpasst::e2e::passt_binary() + " \"$@\"\n");
  asio::io_context io;
  netpasst::options o;
  o.path = script;
  netpasst::lifecycle_config config;
  config.restart.max_attempts = 3;
  config.restart.initial_backoff = 10ms;
  netpasst::lifecycle life(io, o, config);
  event_log log;
  watch(life, log);
  start(io, life);
  REQUIRE(::kill(life.pid(), SIGKILL) == 0);
  REQUIRE(run_until(io, [&] { return life.state() == netpasst::lifecycle_state::failed; }));
  CHECK(life.last_error() == netpasst::errc::restart_limit_reached);
  CHECK_THAT(life.last_error_message(), Catch::Contains("refusing to start again"));
  CHECK(log.count(lifecycle_event_kind::restarting) == 3);
  CHECK(log.count(lifecycle_event_kind::failed) == 1);
  CHECK(life.counters().failed_launches == 3);
  CHECK_THAT(life.status(), Catch::StartsWith("stream,failed: "));
  // The backoff grows: 0, then 10 ms, then 20 ms.
  std::vector<long> delays;
  for (const auto& e : log.events)
    if (e.kind == lifecycle_event_kind::restarting) delays.push_back(long(e.delay.count()));
  CHECK(delays == std::vector<long>{0, 10, 20});
  // Receivers are told, not left hanging.
  std::optional<std::error_code> received;
  life.async_receive([&](std::error_code ec, netpasst::frame_batch) { received = ec; });
  REQUIRE(run_until(io, [&] { return received.has_value(); }));
  CHECK(*received == netpasst::errc::restart_limit_reached);
  stop(io, life);
  CHECK(passt_processes().empty());
  std::filesystem::remove(marker);
}

TEST_CASE("a start that fails carries passt's own message and signals nobody else", "[lifecycle]") {
  if (!in_namespace()) return;
  static std::atomic<int> sigterms{0};
  struct sigaction counting {}, previous{};
  counting.sa_handler = [](int) { ++sigterms; };
  ::sigaction(SIGTERM, &counting, &previous);
  {
    asio::io_context io;
    netpasst::options o = test_options();
    o.param = {"--mtu", "70000"}; // param values are passt's to check: every build refuses this one
    netpasst::lifecycle life(io, o);
    std::optional<std::error_code> started;
    life.async_start([&](std::error_code ec) { started = ec; });
    REQUIRE(run_until(io, [&] { return started.has_value(); }));
    CHECK(*started == netpasst::condition::start_failure);
    CHECK_THAT(life.last_error_message(), Catch::Contains("MTU"));
    CHECK(life.state() == netpasst::lifecycle_state::failed);
    CHECK(life.pid() == 0);
    stop(io, life);
  }
  ::sigaction(SIGTERM, &previous, nullptr);
  CHECK(sigterms == 0);  // QEMU's kill(0) after a failed start hit its own process group
  CHECK(passt_processes().empty());
}

TEST_CASE("stop works from every state, twice, and in the destructor", "[lifecycle]") {
  if (!in_namespace()) return;
  asio::io_context io;
  warm_up(io);
  const auto fds = open_fds();

  SECTION("never started") {
    netpasst::lifecycle life(io, test_options());
    stop(io, life);
    stop(io, life);
  }
  SECTION("while starting") {
    netpasst::lifecycle life(io, test_options());
    std::optional<std::error_code> started;
    life.async_start([&](std::error_code ec) { started = ec; });
    stop(io, life);
    REQUIRE(run_until(io, [&] { return started.has_value(); }));
    CHECK(*started == netpasst::errc::stopped);
  }
  SECTION("while running, with a receive pending") {
    netpasst::lifecycle life(io, test_options());
    start(io, life);
    std::optional<std::error_code> received;
    life.async_receive([&](std::error_code ec, netpasst::frame_batch) { received = ec; });
    const pid_t pid = life.pid();
    stop(io, life);
    REQUIRE(run_until(io, [&] { return received.has_value(); }));
    CHECK(*received == netpasst::errc::stopped);
    CHECK(process_gone(pid));
    stop(io, life);
  }
  SECTION("while a restart is pending, and while the relaunch runs") {
    netpasst::lifecycle life(io, test_options());
    event_log log;
    watch(life, log);
    start(io, life);
    const bool during_launch = GENERATE(false, true);
    bool stop_completed = false;
    life.subscribe([&](const netpasst::lifecycle_event& e) {
      if (e.kind != lifecycle_event_kind::restarting) return;
      if (!during_launch) life.async_stop([&](std::error_code) { stop_completed = true; });
      else asio::post(io, [&] { life.async_stop([&](std::error_code) { stop_completed = true; }); });
    });
    ::kill(life.pid(), SIGKILL);
    REQUIRE(run_until(io, [&] { return stop_completed; }));
    CHECK(life.state() == netpasst::lifecycle_state::stopped);
    CHECK(log.count(lifecycle_event_kind::stopped) == 1);
  }
  SECTION("from the link_down event itself") {
    netpasst::lifecycle life(io, test_options());
    start(io, life);
    bool stop_completed = false;
    life.subscribe([&](const netpasst::lifecycle_event& e) {
      if (e.kind == lifecycle_event_kind::link_down) life.async_stop([&](std::error_code) { stop_completed = true; });
    });
    ::kill(life.pid(), SIGKILL);
    REQUIRE(run_until(io, [&] { return stop_completed; }));
    CHECK(life.state() == netpasst::lifecycle_state::stopped);
  }
  SECTION("destructor while running, synchronous stop while starting") {
    pid_t pid = 0;
    {
      netpasst::lifecycle life(io, test_options());
      start(io, life);
      pid = life.pid();
    }
    CHECK(process_gone(pid));
    netpasst::lifecycle life(io, test_options());
    life.async_start([](std::error_code) {});
    life.stop();
    CHECK(life.state() == netpasst::lifecycle_state::stopped);
  }
  io.restart();
  io.run_for(200ms);  // let launches that were cut short finish their cleanup
  CHECK(passt_processes().empty());
  CHECK(open_fds() == fds);
}

TEST_CASE("50 start/stop and 50 kill/restart cycles leave no fd and no process behind", "[lifecycle][cycles]") {
  if (!in_namespace()) return;
  asio::io_context io;
  warm_up(io);
  const auto fds = open_fds();
  netpasst::launcher_config launcher_config;
  launcher_config.runtime_directory = write_script("runtime-marker", "") + ".d";  // a fresh, private parent
  std::filesystem::create_directories(launcher_config.runtime_directory);
  ::chmod(launcher_config.runtime_directory.c_str(), 0755);  // passt (as nobody) must reach its directory
  for (int i = 0; i < 50; ++i) {
    netpasst::lifecycle life(netpasst::daemon_launcher(io, launcher_config), test_options());
    start(io, life);
    CHECK(std::distance(std::filesystem::directory_iterator(launcher_config.runtime_directory),
                        std::filesystem::directory_iterator{}) == 1);  // passt's private directory
    stop(io, life);
  }
  // Pidfiles and private directories are gone too.
  CHECK(std::filesystem::is_empty(launcher_config.runtime_directory));
  CHECK(open_fds() == fds);
  CHECK(passt_processes().empty());

  netpasst::lifecycle_config config;
  config.restart.min_uptime = 0ms;  // every kill is a fresh, immediate restart
  netpasst::lifecycle life(io, test_options(), config);
  event_log log;
  watch(life, log);
  start(io, life);
  for (int i = 0; i < 50; ++i) {
    const auto ups = log.count(lifecycle_event_kind::link_up);
    REQUIRE(::kill(life.pid(), SIGKILL) == 0);
    REQUIRE(run_until(io, [&] { return log.count(lifecycle_event_kind::link_up) == ups + 1; }));
  }
  CHECK(life.counters().restarts == 50);
  CHECK(passt_processes().size() == 1);
  stop(io, life);
  CHECK(passt_processes().empty());
  CHECK(open_fds() == fds);
}

TEST_CASE("QEMU defects do not happen here", "[lifecycle][qemu]") {
  if (!in_namespace()) return;
  asio::io_context io;

  SECTION("search domains arrive as separate names in DHCP option 119") {
    auto o = test_options();
    o.search = {"a.example", "b.example"};
    netpasst::lifecycle life(io, o);
    start(io, life);
    guest_session<netpasst::lifecycle> session(io, life);
    auto lease = session.dhcp();
    CHECK(lease.search_domains == std::vector<std::string>{"a.example", "b.example"});
    stop(io, life);
  }
  SECTION("port forwards with different addresses each keep their own address") {
    auto o = test_options();
    o.tcp_ports = {"127.0.0.1/10001", "10002"};
    netpasst::lifecycle life(io, o);
    start(io, life);
    // The kernel's table of listening sockets in this namespace tells which address each forward uses:
    // 127.0.0.1:10001 only, and 10002 on every address.
    auto listening = [](const char* table_file, const std::string& hex_addr_port) {
      std::ifstream table(table_file);
      std::string line;
      while (std::getline(table, line))
        if (line.find(hex_addr_port) != std::string::npos && line.find(" 0A ") != std::string::npos) return true;
      return false;
    };
    const std::string any6(32, '0');
    auto on_loopback_only = [&](const char* port) {
      return listening("/proc/net/tcp", std::string("0100007F:") + port) &&
             !listening("/proc/net/tcp", std::string("00000000:") + port) &&
             !listening("/proc/net/tcp6", any6 + ":" + port);
    };
    auto on_every_address = [&](const char* port) {  // IPv4 wildcard, or IPv6 wildcard (dual stack)
      return listening("/proc/net/tcp", std::string("00000000:") + port) ||
             listening("/proc/net/tcp6", any6 + ":" + port);
    };
    // passt binds around the time it daemonizes: wait (bounded) for both.
    CHECK(run_until(io, [&] { return on_loopback_only("2711") && on_every_address("2712"); }, 5s));
    stop(io, life);
  }
  SECTION("a restart waits until the old passt is gone, so its ports are free for the new one") {
    auto o = test_options();
    o.tcp_ports = {"10003"};
    netpasst::lifecycle life(io, o);
    event_log log;
    watch(life, log);
    start(io, life);
    const pid_t first = life.pid();
    bool gone_before_relaunch = false;
    life.subscribe([&](const netpasst::lifecycle_event& e) {
      if (e.kind == lifecycle_event_kind::restarting) gone_before_relaunch = process_gone(first);
    });
    // Break the connection without killing passt: the lifecycle must end the old one itself.
    life.next_layer().connection()->close();
    std::optional<std::error_code> received;
    life.async_receive([&](std::error_code ec, netpasst::frame_batch) { received = ec; });
    REQUIRE(run_until(io, [&] { return log.count(lifecycle_event_kind::link_up) == 2; }));
    CHECK(gone_before_relaunch);
    CHECK(life.pid() != first);
    CHECK_FALSE(received.has_value());  // the receive waits across the restart
    stop(io, life);
  }
}

TEST_CASE("several lifecycles share one io_context on one thread; a restart of one leaves the others alone",
          "[lifecycle]") {
  if (!in_namespace()) return;
  asio::io_context io;
  udp_echo echo(io);
  constexpr int count = 4;
  std::vector<std::unique_ptr<netpasst::lifecycle>> links;
  std::vector<event_log> logs(count);
  int started = 0;
  for (int i = 0; i < count; ++i) {
    links.push_back(std::make_unique<netpasst::lifecycle>(io, test_options()));
    watch(*links.back(), logs[std::size_t(i)]);
    links.back()->async_start([&](std::error_code ec) { started += !ec; });
  }
  REQUIRE(run_until(io, [&] { return started == count; }));
  std::vector<pid_t> pids;
  for (auto& l : links) pids.push_back(l->pid());
  CHECK(std::set<pid_t>(pids.begin(), pids.end()).size() == count);

  std::vector<std::unique_ptr<guest_session<netpasst::lifecycle>>> guests;
  for (auto& l : links) guests.push_back(std::make_unique<guest_session<netpasst::lifecycle>>(io, *l));
  for (auto& g : guests) {
    auto lease = g->dhcp();
    CHECK(g->udp_echo_through_gateway(lease, echo.port(), "many") == "many");
  }

  REQUIRE(::kill(pids[1], SIGKILL) == 0);
  REQUIRE(run_until(io, [&] { return logs[1].count(lifecycle_event_kind::link_up) == 2; }));
  for (std::size_t i : {0u, 2u, 3u}) {
    CHECK(links[i]->pid() == pids[i]);
    CHECK(logs[i].count(lifecycle_event_kind::link_down) == 0);
  }
  auto lease = guests[1]->dhcp();
  CHECK(guests[1]->udp_echo_through_gateway(lease, echo.port(), "again") == "again");
  guests.clear();
  for (auto& l : links) stop(io, *l);
  CHECK(passt_processes().empty());
}
