// The lifecycle's state machine, in process and deterministic: the scripted
// launcher hands it one end of a socketpair per launch and a scripted passt
// answers on the other (or a memory session carries the frames), so every
// failure point is reachable: failed launches, failed handshakes, exits,
// lost connections, stops in every state, cancellation of every operation.
// The real passt is in tests/e2e/test_lifecycle.cpp.
// GCC 12 under ASan (-O1) reports -Wmaybe-uninitialized inside Asio's
// use_future handler that these tests instantiate: a false positive in
// library code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <netpasst/lifecycle.hpp>

#include <netpasst/guest/mini_guest.hpp>
#include <netpasst/testing/memory_session.hpp>
#include <netpasst/testing/scripted_launcher.hpp>
#include <netpasst/testing/scripted_passt.hpp>

#include <asio/bind_allocator.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/experimental/deferred.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>
#include <catch2/catch.hpp>

#include "../common/test_support.hpp"

#include <csignal>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using netpasst::errc;
using netpasst::lifecycle_event;
using netpasst::lifecycle_event_kind;
using netpasst::lifecycle_state;
using netpasst::stream_transport;
using netpasst::test::run_until;
namespace testing = netpasst::testing;

using scripted_lifecycle = netpasst::basic_lifecycle<netpasst::stream_session, testing::scripted_launcher>;
using memory_lifecycle = netpasst::basic_lifecycle<testing::memory_session, testing::scripted_launcher>;

namespace {

netpasst::lifecycle_config quick() {
  netpasst::lifecycle_config c;
  c.restart.initial_backoff = 10ms;
  c.restart.max_backoff = 40ms;
  c.restart.min_uptime = 0ms;
  c.stop_grace = 50ms;
  c.loss_settle = 20ms;
  return c;
}

netpasst::mini_guest_config quick_guest() {
  netpasst::mini_guest_config c;
  c.dhcp_timeout = c.arp_timeout = c.udp_timeout = c.ping_timeout = 2s;
  c.retransmit_interval = 20ms;
  return c;
}

/// One launch as the test sees it: passt's end of the socket as a stream
/// transport with a scripted passt answering on it, and the process handle.
struct passt_side {
  passt_side(asio::io_context& io, testing::scripted_launch launch)
      : transport(io, std::move(launch.passt_end)), passt(transport), process(std::move(launch.process)),
        argv(std::move(launch.argv)) {
    passt.run();
  }
  stream_transport transport;
  testing::scripted_passt<stream_transport> passt;
  std::shared_ptr<testing::scripted_exit> process;
  std::vector<std::string> argv;
};

/// An io_context, a scripted launcher whose launches get a scripted passt,
/// a lifecycle over the stream session, and the events it emitted.
struct rig {
  asio::io_context io;
  testing::scripted_launcher launcher{io};
  std::list<passt_side> passts;
  std::vector<lifecycle_event> events;
  std::optional<scripted_lifecycle> life;

  explicit rig(const netpasst::lifecycle_config& config = quick(), netpasst::options o = {}) {
    launcher.on_launch([this](testing::scripted_launch l) { passts.emplace_back(io, std::move(l)); });
    life.emplace(launcher, std::move(o), config);
    life->subscribe([this](const lifecycle_event& e) { events.push_back(e); });
  }

  std::size_t count(lifecycle_event_kind kind) const {
    return std::size_t(std::count_if(events.begin(), events.end(), [&](const auto& e) { return e.kind == kind; }));
  }
  const lifecycle_event* last(lifecycle_event_kind kind) const {
    for (auto it = events.rbegin(); it != events.rend(); ++it)
      if (it->kind == kind) return &*it;
    return nullptr;
  }
  bool until(const std::function<bool()>& done) { return run_until(io, done, std::chrono::seconds(10)); }

  std::error_code start() {
    std::optional<std::error_code> result;
    life->async_start([&](std::error_code ec) { result = ec; });
    CHECK_FALSE(result.has_value());  // never inside the initiating call
    REQUIRE(until([&] { return result.has_value(); }));
    return *result;
  }
  std::error_code stop() {
    std::optional<std::error_code> result;
    life->async_stop([&](std::error_code ec) { result = ec; });
    REQUIRE(until([&] { return result.has_value(); }));
    return *result;
  }
  /// Waits until the lifecycle's link is up with generation `g`.
  bool up(std::uint64_t g) {
    return until([&] { return life->link_up() && life->generation() == g; });
  }
};

/// A guest on the lifecycle, for traffic checks.
struct guest_on {
  explicit guest_on(rig& r) : r(r), guest(*r.life, quick_guest()) {}
  rig& r;
  netpasst::mini_guest<scripted_lifecycle> guest;

  std::error_code dhcp() {
    std::optional<std::error_code> result;
    guest.async_dhcp([&](std::error_code ec, netpasst::dhcp_lease) { result = ec; });
    REQUIRE(r.until([&] { return result.has_value(); }));
    return *result;
  }
  std::error_code echo() {
    std::optional<std::error_code> result;
    const std::string text = "ping";
    guest.async_udp_exchange(asio::ip::make_address_v4("192.0.2.1"), 7, std::as_bytes(std::span(text)),
                             [&](std::error_code ec, netpasst::udp_reply reply) {
                               if (!ec) CHECK(reply.payload.size() == text.size());
                               result = ec;
                             });
    REQUIRE(r.until([&] { return result.has_value(); }));
    return *result;
  }
};

/// An ARP-typed broadcast frame of 60 bytes.
std::vector<std::byte> test_frame(std::uint8_t tag = 1) {
  std::vector<std::byte> f(60, std::byte{tag});
  for (int i = 0; i < 6; ++i) f[std::size_t(i)] = std::byte{0xff};
  f[12] = std::byte{0x08};
  f[13] = std::byte{0x06};
  return f;
}

} // namespace

static_assert(netpasst::Lifecycle<scripted_lifecycle>);
static_assert(netpasst::FrameTransport<scripted_lifecycle>);
static_assert(netpasst::Lifecycle<memory_lifecycle>);
static_assert(netpasst::Lifecycle<netpasst::lifecycle>);

TEST_CASE("start: link up as generation 1, argv without launcher arguments, a guest's DHCP and UDP through it") {
  rig r;
  CHECK(r.life->state() == lifecycle_state::idle);
  CHECK(r.life->status() == "stream,not started");
  REQUIRE_FALSE(r.start());
  CHECK(r.life->state() == lifecycle_state::running);
  CHECK(r.life->generation() == 1);
  REQUIRE(r.passts.size() == 1);
  const pid_t pid = r.passts.back().process->pid();
  CHECK(r.life->pid() == pid);
  CHECK(r.life->status() == "stream,connected to pid " + std::to_string(pid));
  REQUIRE(r.last(lifecycle_event_kind::link_up));
  CHECK(r.last(lifecycle_event_kind::link_up)->generation == 1);
  CHECK_FALSE(r.last(lifecycle_event_kind::link_up)->is_restart());
  CHECK(r.events.front().kind == lifecycle_event_kind::starting);
  const auto& argv = r.launcher.last_argv();
  CHECK(std::find(argv.begin(), argv.end(), "--vhost-user") == argv.end());
  CHECK(std::find(argv.begin(), argv.end(), "--fd") == argv.end());

  guest_on g(r);
  CHECK_FALSE(g.dhcp());
  CHECK_FALSE(g.echo());
  CHECK(r.passts.back().passt.counters().udp_datagrams == 1);
  CHECK(r.life->counters().frames_sent >= 3);
  CHECK(r.life->counters().frames_received >= 3);
  CHECK(r.life->counters().link_ups == 1);
  CHECK_FALSE(r.stop());
  CHECK(r.life->state() == lifecycle_state::stopped);
  CHECK(r.passts.back().process->signals() == std::vector<int>{SIGTERM});
}

TEST_CASE("passt exits: link down says how, the old passt is gone before the next starts, a new lease after") {
  rig r;
  REQUIRE_FALSE(r.start());
  guest_on g(r);
  REQUIRE_FALSE(g.dhcp());
  const pid_t first = r.life->pid();

  // What a link_down callback sees must agree with the event.
  std::optional<lifecycle_state> state_in_callback;
  std::string status_in_callback;
  pid_t pid_in_callback = -1;
  bool link_in_callback = true;
  r.life->subscribe([&](const lifecycle_event& e) {
    if (e.kind != lifecycle_event_kind::link_down) return;
    state_in_callback = r.life->state();
    status_in_callback = r.life->status();
    pid_in_callback = r.life->pid();
    link_in_callback = r.life->link_up();
  });
  r.passts.back().process->exit(1);
  REQUIRE(r.up(2));
  const auto* down = r.last(lifecycle_event_kind::link_down);
  REQUIRE(down);
  CHECK(down->pid == first);
  CHECK(down->generation == 1);
  CHECK(down->error == errc::passt_terminated);
  CHECK(down->error == netpasst::condition::connection_lost);
  CHECK(down->reason == "passt (pid " + std::to_string(first) + ") exited with status 1");
  CHECK(state_in_callback == lifecycle_state::restarting);
  CHECK(status_in_callback == "stream,link down, restarting: " + down->reason);
  CHECK(pid_in_callback == 0);
  CHECK_FALSE(link_in_callback);

  const auto* restarting = r.last(lifecycle_event_kind::restarting);
  REQUIRE(restarting);
  CHECK(restarting->attempt == 1);
  CHECK(restarting->delay == 0ms);  // the first restart after a healthy run is immediate
  CHECK(restarting->reason == down->reason);
  const auto* up = r.last(lifecycle_event_kind::link_up);
  CHECK(up->generation == 2);
  CHECK(up->is_restart());
  CHECK(r.life->pid() != first);
  CHECK(r.life->counters().restarts == 1);
  CHECK_FALSE(g.dhcp());
  CHECK_FALSE(g.echo());
  CHECK(r.passts.back().passt.counters().requests == 1);
}

TEST_CASE("a lost connection: link down says so after the settle time, or how passt ended if it exits meanwhile") {
  rig r;
  REQUIRE_FALSE(r.start());
  guest_on g(r);
  g.guest.start();  // a receive is pending: the session sees the end of the stream
  SECTION("passt keeps running with its socket closed") {
    r.passts.back().transport.close();
    REQUIRE(r.up(2));
    const auto* down = r.last(lifecycle_event_kind::link_down);
    REQUIRE(down);
    CHECK(down->error == errc::connection_closed);
    CHECK_THAT(down->reason, Catch::Contains("lost: connection closed by passt"));
    // The old passt was terminated before the next one started.
    CHECK(r.passts.front().process->signals() == std::vector<int>{SIGTERM});
  }
  SECTION("SIGKILL: the socket closes, then the exit is seen") {
    r.passts.back().transport.close();
    r.passts.back().process->exit(128 + SIGKILL);
    REQUIRE(r.up(2));
    const auto* down = r.last(lifecycle_event_kind::link_down);
    REQUIRE(down);
    CHECK(down->error == errc::passt_terminated);
    CHECK_THAT(down->reason, Catch::EndsWith("was killed by signal 9"));
  }
}

TEST_CASE("a receive made before start gets passt's frame, views stay valid, another after a restart") {
  rig r;
  std::optional<std::error_code> received;
  std::vector<std::byte> copy;
  auto receive = [&] {
    received.reset();
    r.life->async_receive([&](std::error_code ec, netpasst::frame_batch batch) {
      received = ec;
      if (!ec) copy.assign(batch[0].begin(), batch[0].end());
    });
  };
  receive();
  REQUIRE_FALSE(r.start());
  const auto frame = test_frame(7);
  std::error_code ec;
  REQUIRE(r.passts.back().transport.try_send(frame, ec));
  REQUIRE(r.until([&] { return received.has_value(); }));
  CHECK_FALSE(*received);
  CHECK(copy == frame);

  receive();  // parks across the restart
  r.passts.back().process->exit(1);
  REQUIRE(r.up(2));
  CHECK_FALSE(received.has_value());
  const auto second = test_frame(9);
  REQUIRE(r.passts.back().transport.try_send(second, ec));
  REQUIRE(r.until([&] { return received.has_value(); }));
  CHECK_FALSE(*received);
  CHECK(copy == second);
}

TEST_CASE("a passt that keeps failing is retried with growing delays naming why, then given up") {
  auto config = quick();
  config.restart.max_attempts = 4;
  rig r(config);
  REQUIRE_FALSE(r.start());
  for (int i = 0; i < 4; ++i)
    r.launcher.script({testing::launch_script::outcome::fail, errc::passt_exited,
                       "passt exited with status 1: attempt " + std::to_string(i)});
  r.passts.back().process->exit(1);
  REQUIRE(r.until([&] { return r.life->state() == lifecycle_state::failed; }));
  std::vector<std::chrono::milliseconds> delays;
  std::vector<std::string> reasons;
  for (const auto& e : r.events)
    if (e.kind == lifecycle_event_kind::restarting) delays.push_back(e.delay), reasons.push_back(e.reason);
  CHECK(delays == std::vector<std::chrono::milliseconds>{0ms, 10ms, 20ms, 40ms});
  REQUIRE(reasons.size() == 4);
  CHECK_THAT(reasons[0], Catch::Contains("exited with status 1"));
  CHECK(reasons[1] == "passt exited with status 1: attempt 0");
  CHECK(reasons[3] == "passt exited with status 1: attempt 2");
  CHECK(r.life->last_error() == errc::restart_limit_reached);
  CHECK_THAT(r.life->last_error_message(), Catch::Contains("gave up after 4 attempts") &&
                                              Catch::Contains("attempt 3"));
  CHECK_THAT(r.life->status(), Catch::StartsWith("stream,failed: gave up"));
  CHECK(r.life->counters().failed_launches == 4);
  // Frames end with the failure, and start works again.
  std::error_code ec;
  const auto f = test_frame();
  CHECK_FALSE(r.life->try_send(f, ec));
  CHECK(ec == errc::restart_limit_reached);
  REQUIRE_FALSE(r.start());
  CHECK(r.life->state() == lifecycle_state::running);
}

TEST_CASE("crash-loop guard: passts that die young count as failures, one that lived long resets the count") {
  auto config = quick();
  config.restart.max_attempts = 3;
  config.restart.min_uptime = 200ms;
  rig r(config);
  REQUIRE_FALSE(r.start());
  for (std::uint64_t g = 1; g <= 4; ++g) {  // the fourth death is the fourth consecutive failure
    REQUIRE(r.up(g));
    r.passts.back().process->exit(1);
  }
  REQUIRE(r.until([&] { return r.life->state() == lifecycle_state::failed; }));
  CHECK(r.life->last_error() == errc::restart_limit_reached);

  rig healthy(config);
  REQUIRE_FALSE(healthy.start());
  for (std::uint64_t g = 1; g <= 5; ++g) {
    REQUIRE(healthy.up(g));
    asio::steady_timer wait(healthy.io, 250ms);
    bool waited = false;
    wait.async_wait([&](std::error_code) { waited = true; });
    REQUIRE(healthy.until([&] { return waited; }));
    healthy.passts.back().process->exit(1);
  }
  REQUIRE(healthy.up(6));
  for (const auto& e : healthy.events)
    if (e.kind == lifecycle_event_kind::restarting) CHECK(e.attempt == 1);
}

TEST_CASE("restarts disabled: the first loss ends the lifecycle with its cause") {
  auto config = quick();
  config.restart.enabled = false;
  rig r(config);
  REQUIRE_FALSE(r.start());
  r.passts.back().process->exit(3);
  REQUIRE(r.until([&] { return r.life->state() == lifecycle_state::failed; }));
  CHECK(r.life->last_error() == errc::passt_terminated);
  CHECK_THAT(r.life->last_error_message(), Catch::Contains("exited with status 3"));
  CHECK(r.count(lifecycle_event_kind::restarting) == 0);
  CHECK(r.launcher.launches() == 1);
}

TEST_CASE("a first start that fails reports the launcher's words, retry_first_start retries") {
  SECTION("no retry") {
    rig r;
    r.launcher.script({testing::launch_script::outcome::fail, errc::passt_exited,
                       "passt exited with status 1: unrecognized option '--fqdn'"});
    CHECK(r.start() == errc::passt_exited);
    CHECK(r.life->last_error_message() == "passt exited with status 1: unrecognized option '--fqdn'");
    CHECK(r.life->state() == lifecycle_state::failed);
    CHECK(r.launcher.launches() == 1);
  }
  SECTION("retry") {
    auto config = quick();
    config.restart.retry_first_start = true;
    rig r(config);
    r.launcher.script({testing::launch_script::outcome::fail, errc::start_timeout, "passt did not daemonize"});
    CHECK_FALSE(r.start());
    CHECK(r.launcher.launches() == 2);
    CHECK(r.life->counters().failed_launches == 1);
  }
}

TEST_CASE("a failed handshake counts as a failed launch, its passt is terminated, the next attempt succeeds") {
  asio::io_context io;
  testing::scripted_launcher launcher(io);
  auto config = quick();
  config.restart.retry_first_start = true;
  memory_lifecycle life(launcher, {}, config);
  std::list<testing::memory_transport> peers;
  std::list<testing::scripted_passt<testing::memory_transport>> passts;
  life.next_layer().on_attach([&](testing::memory_transport peer) {
    passts.emplace_back(peers.emplace_back(std::move(peer))).run();
  });
  life.next_layer().script_handshake(std::make_error_code(std::errc::protocol_error));
  std::optional<std::error_code> started;
  life.async_start([&](std::error_code ec) { started = ec; });
  REQUIRE(run_until(io, [&] { return started.has_value(); }));
  CHECK_FALSE(*started);
  CHECK(launcher.launches() == 2);
  CHECK(life.next_layer().attaches() == 2);
  CHECK(launcher.processes().front()->signals() == std::vector<int>{SIGTERM});
  CHECK(life.counters().failed_launches == 1);
  netpasst::mini_guest<memory_lifecycle> guest(life, quick_guest());
  std::optional<std::error_code> leased;
  guest.async_dhcp([&](std::error_code ec, netpasst::dhcp_lease) { leased = ec; });
  REQUIRE(run_until(io, [&] { return leased.has_value(); }));
  CHECK_FALSE(*leased);
  life.stop();
  CHECK(life.next_layer().held_socket() == -1);
}

TEST_CASE("link set down drops frames both ways and says so, set up again restores it") {
  rig r;
  REQUIRE_FALSE(r.start());
  r.life->set_link(false);
  CHECK_FALSE(r.life->link_up());
  CHECK_THAT(r.life->status(), Catch::StartsWith("stream,link down, pid"));
  REQUIRE(r.last(lifecycle_event_kind::link_down));
  CHECK(r.last(lifecycle_event_kind::link_down)->reason == "link set down");
  std::error_code ec;
  const auto f = test_frame();
  CHECK(r.life->try_send(f, ec));  // taken and dropped
  std::optional<std::error_code> received;
  r.life->async_receive([&](std::error_code e, netpasst::frame_batch) { received = e; });
  REQUIRE(r.passts.back().transport.try_send(f, ec));
  REQUIRE(r.until([&] { return r.life->counters().frames_dropped == 2; }));
  CHECK_FALSE(received.has_value());
  r.life->set_link(true);
  CHECK(r.last(lifecycle_event_kind::link_up)->generation == 1);
  REQUIRE(r.passts.back().transport.try_send(f, ec));
  REQUIRE(r.until([&] { return received.has_value(); }));
  CHECK_FALSE(*received);
}

TEST_CASE("while passt restarts, sends are refused as would_block and a writable wait completes at link up") {
  auto config = quick();
  config.restart.min_uptime = 1h;  // every death counts: the second attempt waits for the backoff
  config.restart.initial_backoff = config.restart.max_backoff = 300ms;
  rig r(config);
  std::error_code ec;
  const auto f = test_frame();
  CHECK_FALSE(r.life->try_send(f, ec));
  CHECK(ec == errc::would_block);  // before start
  REQUIRE_FALSE(r.start());
  r.launcher.script({testing::launch_script::outcome::fail});
  r.passts.back().process->exit(1);
  REQUIRE(r.until([&] { return r.count(lifecycle_event_kind::restarting) == 2; }));
  CHECK_FALSE(r.life->try_send(f, ec));
  CHECK(ec == errc::would_block);
  CHECK_THAT(r.life->status(), Catch::StartsWith("stream,restarting (attempt 2 of 5): "));
  std::optional<std::error_code> writable;
  r.life->async_wait_writable([&](std::error_code e) { writable = e; });
  REQUIRE(r.until([&] { return writable.has_value(); }));
  CHECK_FALSE(*writable);
  CHECK(r.life->link_up());
  CHECK(r.life->try_send(f, ec));
}

TEST_CASE("stop from every state ends everything, pending operations end with stopped") {
  SECTION("idle") {
    rig r;
    CHECK_FALSE(r.stop());
    CHECK(r.life->state() == lifecycle_state::stopped);
    CHECK(r.launcher.launches() == 0);
  }
  SECTION("starting: the pending launch is cancelled at once") {
    rig r;
    r.launcher.script({testing::launch_script::outcome::never_ready});
    std::optional<std::error_code> started;
    r.life->async_start([&](std::error_code ec) { started = ec; });
    REQUIRE(r.until([&] { return r.launcher.launches() == 1; }));
    CHECK_FALSE(r.stop());
    REQUIRE(r.until([&] { return started.has_value(); }));
    CHECK(*started == errc::stopped);
    CHECK(r.life->last_error() == errc::stopped);
    CHECK(r.life->last_error_message() == "stopped before passt was up");
    CHECK(r.count(lifecycle_event_kind::stopped) == 1);
  }
  SECTION("running, with a receive pending") {
    rig r;
    REQUIRE_FALSE(r.start());
    std::optional<std::error_code> received;
    r.life->async_receive([&](std::error_code ec, netpasst::frame_batch) { received = ec; });
    CHECK_FALSE(r.stop());
    REQUIRE(r.until([&] { return received.has_value(); }));
    CHECK(*received == errc::stopped);
    CHECK(r.last(lifecycle_event_kind::link_down)->error == errc::stopped);
    CHECK(r.passts.back().process->status() == 128 + SIGTERM);
  }
  SECTION("restarting, during a backoff") {
    auto config = quick();
    config.restart.initial_backoff = config.restart.max_backoff = 1h;
    rig r(config);
    REQUIRE_FALSE(r.start());
    r.launcher.script({testing::launch_script::outcome::fail});
    r.passts.back().process->exit(1);
    REQUIRE(r.until([&] { return r.count(lifecycle_event_kind::restarting) == 2; }));
    CHECK_FALSE(r.stop());
    CHECK(r.launcher.launches() == 2);
  }
  SECTION("from inside a link_down callback") {
    rig r;
    REQUIRE_FALSE(r.start());
    r.life->subscribe([&](const lifecycle_event& e) {
      if (e.kind == lifecycle_event_kind::link_down && e.error != errc::stopped) r.life->async_stop(asio::detached);
    });
    r.passts.back().process->exit(1);
    REQUIRE(r.until([&] { return r.life->state() == lifecycle_state::stopped; }));
    CHECK(r.launcher.launches() == 1);
  }
  SECTION("a passt that ignores SIGTERM gets SIGKILL after the grace") {
    rig r;
    r.launcher.script({testing::launch_script::outcome::ready, {}, {}, false});
    REQUIRE_FALSE(r.start());
    CHECK_FALSE(r.stop());
    CHECK(r.passts.back().process->signals() == std::vector<int>{SIGTERM, SIGKILL});
  }
  SECTION("synchronous stop and destruction") {
    rig r;
    REQUIRE_FALSE(r.start());
    std::optional<std::error_code> received;
    r.life->async_receive([&](std::error_code ec, netpasst::frame_batch) { received = ec; });
    r.life->stop();
    CHECK(r.life->state() == lifecycle_state::stopped);
    CHECK(r.passts.back().process->status().has_value());
    r.life->stop();  // idempotent
    CHECK(r.count(lifecycle_event_kind::stopped) == 1);
    REQUIRE_FALSE(r.start());
    r.life.reset();
    REQUIRE(r.until([&] { return received.has_value(); }));
    CHECK(*received == errc::stopped);
    CHECK(r.passts.back().process->status().has_value());
  }
}

TEST_CASE("options asking for the other passt mode are refused before anything is spawned, naming /vhost-user") {
  SECTION("stream session, vhost-user requested") {
    netpasst::options o;
    o.vhost_user = true;
    rig r(quick(), o);
    CHECK(r.start() == errc::invalid_options);
    CHECK(r.life->last_error() == netpasst::condition::configuration_error);
    CHECK_THAT(r.life->last_error_message(), Catch::Contains("/vhost-user"));
    CHECK(r.launcher.launches() == 0);
  }
  SECTION("a vhost-user session adds --vhost-user, and refuses vhost-user false") {
    using vhost_session = testing::basic_memory_session<netpasst::passt_mode::vhost_user>;
    using vhost_lifecycle = netpasst::basic_lifecycle<vhost_session, testing::scripted_launcher>;
    asio::io_context io;
    testing::scripted_launcher launcher(io);
    {
      vhost_lifecycle life(launcher, {}, quick());
      std::optional<std::error_code> started;
      life.async_start([&](std::error_code ec) { started = ec; });
      REQUIRE(run_until(io, [&] { return started.has_value(); }));
      CHECK_FALSE(*started);
      const auto& argv = launcher.last_argv();
      CHECK(std::count(argv.begin(), argv.end(), "--vhost-user") == 1);
      CHECK_THAT(life.status(), Catch::StartsWith("vhost-user,connected to pid"));
    }
    netpasst::options o;
    o.vhost_user = false;
    vhost_lifecycle life(launcher, o, quick());
    std::optional<std::error_code> started;
    life.async_start([&](std::error_code ec) { started = ec; });
    REQUIRE(run_until(io, [&] { return started.has_value(); }));
    CHECK(*started == errc::invalid_options);
    CHECK_THAT(life.last_error_message(), Catch::Contains("/vhost-user"));
    CHECK(launcher.launches() == 1);
  }
  SECTION("invalid options name their key") {
    netpasst::options o;
    o.mtu = 70000;
    rig r(quick(), o);
    CHECK(r.start() == errc::invalid_options);
    CHECK_THAT(r.life->last_error_message(), Catch::Contains("/mtu"));
    CHECK(r.count(lifecycle_event_kind::failed) == 1);
    CHECK(r.launcher.launches() == 0);
  }
}

TEST_CASE("every failure point of start, DHCP and an echo ends cleanly: success, a restart or a named error") {
  for (std::size_t n = 0;; ++n) {
    INFO("failing operation " << n);
    asio::io_context io;
    testing::fail_count faults(n);
    testing::memory_transport_options ours;
    ours.faults = &faults;
    testing::scripted_launcher launcher(io);
    auto config = quick();
    config.restart.max_attempts = 3;
    memory_lifecycle life(launcher, {}, config, netpasst::argv_builder{}, io.get_executor(), ours,
                          testing::memory_transport_options{});
    std::list<testing::memory_transport> peers;
    std::list<testing::scripted_passt<testing::memory_transport>> passts;
    life.next_layer().on_attach([&](testing::memory_transport peer) {
      passts.emplace_back(peers.emplace_back(std::move(peer))).run();
    });
    std::optional<std::error_code> started, leased;
    life.async_start([&](std::error_code ec) { started = ec; });
    REQUIRE(run_until(io, [&] { return started.has_value(); }));
    REQUIRE_FALSE(*started);  // nothing has failed yet: no frame moved
    auto guest_config = quick_guest();
    guest_config.dhcp_timeout = 300ms;
    netpasst::mini_guest<memory_lifecycle> guest(life, guest_config);
    guest.async_dhcp([&](std::error_code ec, netpasst::dhcp_lease) { leased = ec; });
    REQUIRE(run_until(io, [&] { return leased.has_value(); }));
    if (*leased) {
      // A named error: the injected one ended the guest's operation, or the
      // lifecycle gave up; never a hang.
      CHECK((*leased == errc::connection_closed || *leased == netpasst::guest_errc::guest_timeout ||
             *leased == errc::restart_limit_reached));
    }
    life.stop();
    CHECK(life.state() == lifecycle_state::stopped);
    for (const auto& p : launcher.processes()) CHECK(p->status().has_value());
    if (!faults.tripped()) break;
    REQUIRE(n < 200);
  }
}

TEST_CASE("tokens: use_future, use_awaitable, deferred") {
  rig r;
  auto work = asio::make_work_guard(r.io);
  std::thread runner([&] { r.io.run(); });
  auto started = asio::post(r.io, asio::use_future([&] { return r.life->async_start(asio::use_future); })).get();
  CHECK_NOTHROW(started.get());
  std::promise<std::size_t> got;
  asio::co_spawn(
      r.io,
      [&]() -> asio::awaitable<void> {
        const auto f = test_frame(3);
        std::error_code ec;
        r.passts.back().transport.try_send(f, ec);
        auto batch = co_await r.life->async_receive(asio::use_awaitable);
        got.set_value(batch.size());
        co_await r.life->async_stop(asio::use_awaitable);
      },
      asio::detached);
  auto size = got.get_future();
  REQUIRE(size.wait_for(20s) == std::future_status::ready);
  CHECK(size.get() == 1);
  work.reset();
  runner.join();
  CHECK(r.life->state() == lifecycle_state::stopped);

  // deferred: nothing happens until the deferred operation is invoked.
  r.io.restart();
  auto deferred_start = r.life->async_start(asio::experimental::deferred);
  r.io.poll();
  CHECK(r.launcher.launches() == 1);
  std::optional<std::error_code> result;
  std::move(deferred_start)([&](std::error_code ec) { result = ec; });
  REQUIRE(r.until([&] { return result.has_value(); }));
  CHECK_FALSE(*result);
  CHECK(r.launcher.launches() == 2);
}

TEST_CASE("cancellation: per operation, through the token's slot") {
  rig r;
  SECTION("a receive parked before start") {
    asio::cancellation_signal cancel;
    std::optional<std::error_code> received;
    r.life->async_receive(asio::bind_cancellation_slot(
        cancel.slot(), [&](std::error_code ec, netpasst::frame_batch) { received = ec; }));
    r.io.poll();
    cancel.emit(asio::cancellation_type::partial);
    REQUIRE(r.until([&] { return received.has_value(); }));
    CHECK(*received == asio::error::operation_aborted);
  }
  SECTION("a receive forwarded to a running passt; the lifecycle keeps working") {
    REQUIRE_FALSE(r.start());
    asio::cancellation_signal cancel;
    std::optional<std::error_code> received;
    r.life->async_receive(asio::bind_cancellation_slot(
        cancel.slot(), [&](std::error_code ec, netpasst::frame_batch) { received = ec; }));
    r.io.poll();
    cancel.emit(asio::cancellation_type::terminal);
    REQUIRE(r.until([&] { return received.has_value(); }));
    CHECK(*received == asio::error::operation_aborted);
    CHECK(r.life->link_up());
    received.reset();
    r.life->async_receive([&](std::error_code ec, netpasst::frame_batch) { received = ec; });
    std::error_code ec;
    REQUIRE(r.passts.back().transport.try_send(test_frame(), ec));
    REQUIRE(r.until([&] { return received.has_value(); }));
    CHECK_FALSE(*received);
  }
  SECTION("a writable wait while restarting") {
    auto config = quick();
    config.restart.initial_backoff = config.restart.max_backoff = 1h;
    config.restart.min_uptime = 1h;
    rig slow(config);
    REQUIRE_FALSE(slow.start());
    slow.launcher.script({testing::launch_script::outcome::fail});
    slow.passts.back().process->exit(1);
    REQUIRE(slow.until([&] { return slow.count(lifecycle_event_kind::restarting) == 2; }));
    asio::cancellation_signal cancel;
    std::optional<std::error_code> writable;
    slow.life->async_wait_writable(asio::bind_cancellation_slot(cancel.slot(), [&](std::error_code ec) {
      writable = ec;
    }));
    slow.io.poll();
    cancel.emit(asio::cancellation_type::total);
    REQUIRE(slow.until([&] { return writable.has_value(); }));
    CHECK(*writable == asio::error::operation_aborted);
  }
  SECTION("async_start, terminal: the start is abandoned and the launch cancelled") {
    r.launcher.script({testing::launch_script::outcome::never_ready});
    asio::cancellation_signal cancel;
    std::optional<std::error_code> started;
    r.life->async_start(asio::bind_cancellation_slot(cancel.slot(), [&](std::error_code ec) { started = ec; }));
    REQUIRE(r.until([&] { return r.launcher.launches() == 1; }));
    cancel.emit(asio::cancellation_type::terminal);
    REQUIRE(r.until([&] { return started.has_value() && r.life->state() == lifecycle_state::stopped; }));
    CHECK(*started == asio::error::operation_aborted);
  }
  SECTION("async_stop: the wait ends, the stop goes on") {
    auto config = quick();
    config.stop_grace = 200ms;
    rig slow(config);
    slow.launcher.script({testing::launch_script::outcome::ready, {}, {}, false});  // ignores SIGTERM
    REQUIRE_FALSE(slow.start());
    asio::cancellation_signal cancel;
    std::optional<std::error_code> stopped;
    slow.life->async_stop(asio::bind_cancellation_slot(cancel.slot(), [&](std::error_code ec) { stopped = ec; }));
    cancel.emit(asio::cancellation_type::partial);
    REQUIRE(slow.until([&] { return stopped.has_value(); }));
    CHECK(*stopped == asio::error::operation_aborted);
    REQUIRE(slow.until([&] { return slow.life->state() == lifecycle_state::stopped; }));
  }
}

#if defined(ASIO_HAS_CO_AWAIT)
TEST_CASE("a timeout written as op || timer with use_awaitable ends a parked receive on time") {
  using namespace asio::experimental::awaitable_operators;
  rig r;
  REQUIRE_FALSE(r.start());
  std::optional<std::size_t> winner;
  asio::co_spawn(
      r.io,
      [&]() -> asio::awaitable<void> {
        asio::steady_timer timer(r.io, 50ms);
        auto result = co_await (r.life->async_receive(asio::use_awaitable) ||
                                timer.async_wait(asio::use_awaitable));
        winner = result.index();
      },
      asio::detached);
  REQUIRE(r.until([&] { return winner.has_value(); }));
  CHECK(*winner == 1);  // the timer won and the receive was cancelled
  CHECK(r.life->link_up());
  // The lifecycle is still usable: a new receive gets the next frame.
  std::optional<std::error_code> received;
  r.life->async_receive([&](std::error_code ec, netpasst::frame_batch) { received = ec; });
  std::error_code ec;
  REQUIRE(r.passts.back().transport.try_send(test_frame(), ec));
  REQUIRE(r.until([&] { return received.has_value(); }));
  CHECK_FALSE(*received);
}
#endif

using netpasst::test::counting_allocator;

TEST_CASE("the handler's associated allocator is used by the operations under the lifecycle") {
  rig r;
  REQUIRE_FALSE(r.start());
  netpasst::test::allocation_log allocations;
  std::optional<std::error_code> received;
  r.life->async_receive(asio::bind_allocator(counting_allocator<void>(&allocations),
                                             [&](std::error_code ec, netpasst::frame_batch) { received = ec; }));
  std::error_code ec;
  REQUIRE(r.passts.back().transport.try_send(test_frame(), ec));
  REQUIRE(r.until([&] { return received.has_value(); }));
  CHECK_FALSE(*received);
  CHECK(allocations.allocations > 0);
}

TEST_CASE("subscribers: one unsubscribed or destroyed during an event is not called, a stateful one keeps its state") {
  SECTION("unsubscribed by an earlier subscriber") {
    rig r;
    int calls = 0;
    scripted_lifecycle::subscription later = 0;
    r.life->subscribe([&](const lifecycle_event& e) {
      if (e.kind == lifecycle_event_kind::starting) r.life->unsubscribe(later);
    });
    later = r.life->subscribe([&](const lifecycle_event&) { ++calls; });
    REQUIRE_FALSE(r.start());
    CHECK(calls == 0);
  }
  SECTION("an observer that unsubscribes in its destructor, destroyed by an earlier subscriber") {
    struct observer {
      explicit observer(scripted_lifecycle& l) : life(l) {
        id = life.subscribe([this](const lifecycle_event& e) { seen.push_back(e.kind); });
      }
      ~observer() { life.unsubscribe(id); }
      scripted_lifecycle& life;
      scripted_lifecycle::subscription id = 0;
      std::vector<lifecycle_event_kind> seen;
    };
    rig r;
    std::unique_ptr<observer> watcher;
    r.life->subscribe([&](const lifecycle_event& e) {
      if (e.kind == lifecycle_event_kind::link_up) watcher.reset();
    });
    watcher = std::make_unique<observer>(*r.life);
    REQUIRE_FALSE(r.start());
    CHECK_FALSE(watcher);
  }
  SECTION("the lifecycle destroyed by an earlier subscriber") {
    rig r;
    int calls = 0;
    r.life->subscribe([&](const lifecycle_event& e) {
      if (e.kind == lifecycle_event_kind::link_up) r.life.reset();
    });
    r.life->subscribe([&](const lifecycle_event& e) { calls += e.kind == lifecycle_event_kind::link_up; });
    r.life->async_start(asio::detached);
    REQUIRE(r.until([&] { return !r.life; }));
    CHECK(calls == 0);
    CHECK(r.passts.back().process->status().has_value());
  }
  SECTION("a mutable handler is called, not a copy of it") {
    rig r;
    std::vector<int> seen;
    r.life->subscribe([&seen, n = 0](const lifecycle_event&) mutable { seen.push_back(++n); });
    REQUIRE_FALSE(r.start());  // starting, link_up
    CHECK(seen == std::vector<int>{1, 2});
  }
}

TEST_CASE("events raised inside a callback are delivered after it, in order, to every subscriber") {
  rig r;
  std::vector<lifecycle_event_kind> seen;
  std::vector<lifecycle_state> states;
  r.life->subscribe([&](const lifecycle_event& e) {
    if (e.kind == lifecycle_event_kind::link_up) r.life->stop();
  });
  r.life->subscribe([&](const lifecycle_event& e) { seen.push_back(e.kind), states.push_back(r.life->state()); });
  REQUIRE_FALSE(r.start());
  using k = lifecycle_event_kind;
  CHECK(seen == std::vector<k>{k::starting, k::link_up, k::link_down, k::stopped});
  CHECK(r.count(k::link_down) == 1);
  CHECK(states.back() == lifecycle_state::stopped);
  CHECK(r.passts.back().process->status().has_value());
}

TEST_CASE("a stop ends every passt still being shut down: the one a restart replaces, a failed attempt's") {
  auto config = quick();
  config.stop_grace = 500ms;
  const testing::launch_script stubborn{testing::launch_script::outcome::ready, {}, {}, false};  // only SIGKILL ends it
  SECTION("blocking stop and destruction while a restart waits for the old passt") {
    const bool destroy = GENERATE(false, true);
    rig r(config);
    r.launcher.script(stubborn);
    REQUIRE_FALSE(r.start());
    r.life->async_receive([](std::error_code, netpasst::frame_batch) {});  // notices the loss
    r.passts.back().transport.close();  // connection lost, passt keeps running
    REQUIRE(r.until([&] { return r.count(lifecycle_event_kind::link_down) == 1; }));
    const auto old = r.passts.front().process;
    REQUIRE(old->signals() == std::vector<int>{SIGTERM});
    const auto t0 = std::chrono::steady_clock::now();
    if (destroy) {
      r.life.reset();
    } else {
      r.life->stop();
      CHECK(r.life->state() == lifecycle_state::stopped);
      CHECK(r.count(lifecycle_event_kind::stopped) == 1);
    }
    CHECK(old->status().has_value());
    CHECK(std::chrono::steady_clock::now() - t0 < 2 * config.stop_grace);
  }
  SECTION("from failed, while the failed handshake's passt is in its grace") {
    const bool blocking = GENERATE(false, true);
    asio::io_context io;
    testing::scripted_launcher launcher(io);
    memory_lifecycle life(launcher, {}, config);
    launcher.script(stubborn);
    life.next_layer().script_handshake(std::make_error_code(std::errc::protocol_error));
    std::optional<std::error_code> started, stopped;
    life.async_start([&](std::error_code ec) { started = ec; });
    REQUIRE(run_until(io, [&] { return started.has_value(); }, 10s));
    REQUIRE(life.state() == lifecycle_state::failed);
    REQUIRE(launcher.processes().size() == 1);
    const auto proc = launcher.processes().front();
    REQUIRE_FALSE(proc->status().has_value());
    if (blocking) {
      life.stop();
    } else {
      life.async_stop([&](std::error_code ec) { stopped = ec; });
      CHECK(life.state() == lifecycle_state::stopping);
      REQUIRE(run_until(io, [&] { return stopped.has_value(); }, 10s));
      CHECK_FALSE(*stopped);
    }
    CHECK(life.state() == lifecycle_state::stopped);
    CHECK(proc->status().has_value());
    CHECK(life.last_error() == std::errc::protocol_error);
  }
}

TEST_CASE("retry_first_start: a stop while restarting before any link up leaves errc::stopped, saying so") {
  auto config = quick();
  config.restart.retry_first_start = true;
  const bool blocking = GENERATE(false, true);
  rig r(config);
  r.launcher.script({testing::launch_script::outcome::fail});
  r.launcher.script({testing::launch_script::outcome::never_ready});
  std::optional<std::error_code> started;
  r.life->async_start([&](std::error_code ec) { started = ec; });
  REQUIRE(r.until([&] { return r.launcher.launches() == 2; }));
  REQUIRE(r.life->state() == lifecycle_state::restarting);
  if (blocking) r.life->stop();
  else CHECK_FALSE(r.stop());
  REQUIRE(r.until([&] { return started.has_value(); }));
  CHECK(*started == errc::stopped);
  CHECK(r.life->last_error() == errc::stopped);
  CHECK(r.life->last_error_message() == "stopped before passt was up");
}

TEST_CASE("restarts disabled: inside the link_down callback the lifecycle is already failed, as the state table says") {
  auto config = quick();
  config.restart.enabled = false;
  rig r(config);
  REQUIRE_FALSE(r.start());
  std::optional<lifecycle_state> state;
  std::string status;
  r.life->subscribe([&](const lifecycle_event& e) {
    if (e.kind == lifecycle_event_kind::link_down) state = r.life->state(), status = r.life->status();
  });
  r.passts.back().process->exit(3);
  REQUIRE(r.until([&] { return r.count(lifecycle_event_kind::failed) == 1; }));
  CHECK(state == lifecycle_state::failed);
  CHECK_THAT(status, Catch::StartsWith("stream,failed: ") && Catch::Contains("exited with status 3"));
  using k = lifecycle_event_kind;
  CHECK(r.events.back().kind == k::failed);
  CHECK(r.events[r.events.size() - 2].kind == k::link_down);
}

TEST_CASE("a start from failed launches only once the passt the failure left behind is gone") {
  auto config = quick();
  config.restart.enabled = false;
  config.stop_grace = 300ms;
  rig r(config);
  r.launcher.script({testing::launch_script::outcome::ready, {}, {}, false});  // only SIGKILL ends it
  REQUIRE_FALSE(r.start());
  r.life->async_receive([](std::error_code, netpasst::frame_batch) {});  // notices the loss
  r.passts.back().transport.close();
  REQUIRE(r.until([&] { return r.life->state() == lifecycle_state::failed; }));
  const auto old = r.passts.front().process;
  REQUIRE_FALSE(old->status().has_value());
  std::optional<std::error_code> started;
  r.life->async_start([&](std::error_code ec) { started = ec; });
  REQUIRE(r.until([&] { return r.launcher.launches() == 2; }));
  CHECK(old->status().has_value());
  REQUIRE(r.until([&] { return started.has_value(); }));
  CHECK_FALSE(*started);
}
