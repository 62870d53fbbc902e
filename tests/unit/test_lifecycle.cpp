// The lifecycle's state machine against fake passt scripts run by the real
// foreground launcher: frames across a restart, crash-loop backoff and
// failure, administrative link state, backpressure while restarting, tokens,
// stop and destruction with operations pending. The real passt is in
// tests/e2e/test_lifecycle.cpp.
#include <netpasst/lifecycle.hpp>

#include <netpasst/launcher/foreground.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>
#include <catch2/catch.hpp>

#include "../common/test_support.hpp"

#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <thread>

using namespace std::chrono_literals;
using netpasst::lifecycle_event_kind;
using netpasst::lifecycle_state;
using netpasst::test::run_until;
using netpasst::test::write_script;
using fake_lifecycle =
    netpasst::basic_lifecycle<netpasst::argv_builder, netpasst::foreground_launcher, netpasst::stream_transport>;

static_assert(netpasst::Lifecycle<netpasst::lifecycle>);
static_assert(netpasst::Lifecycle<fake_lifecycle>);
static_assert(netpasst::FrameTransport<netpasst::lifecycle>);

namespace {

// A fake passt: writes its pid where --pid says (as passt does once ready),
// then runs `body` with the socket on fd 3.
std::string fake_passt(const std::string& name, const std::string& body) {
  return write_script(name, "pidfile=\n"
                            "while [ $# -gt 0 ]; do [ \"$1\" = --pid ] && pidfile=$2; shift; done\n"
                            "echo $$ > \"$pidfile\"\n" +
                                body + "\n");
}

// One 14-byte broadcast ARP-typed frame, length-prefixed, then idle.
const char* const sends_one_frame =
    "printf '\\000\\000\\000\\016\\377\\377\\377\\377\\377\\377\\002\\000\\000\\000\\000\\001\\010\\006' >&3\n"
    "exec sleep 1000";
const char* const idles = "exec sleep 1000";
const char* const dies_at_once = "sleep 0.05; exit 1";

netpasst::options options_for(const std::string& binary) {
  netpasst::options o;
  o.path = binary;
  return o;
}

struct recorder {
  std::vector<netpasst::lifecycle_event> events;
  std::size_t count(lifecycle_event_kind kind) const {
    return std::size_t(std::count_if(events.begin(), events.end(), [&](const auto& e) { return e.kind == kind; }));
  }
};

template <class L> void record(L& life, recorder& r) {
  life.subscribe([&r](const netpasst::lifecycle_event& e) { r.events.push_back(e); });
}

void start(asio::io_context& io, fake_lifecycle& life) {
  std::optional<std::error_code> started;
  life.async_start([&](std::error_code ec) { started = ec; });
  REQUIRE(run_until(io, [&] { return started.has_value(); }));
  INFO(life.last_error_message());
  REQUIRE(!*started);
}

} // namespace

TEST_CASE("invalid options fail the start before anything is spawned, naming the key") {
  asio::io_context io;
  auto o = options_for(fake_passt("idle", idles));
  o.mtu = 70000;
  fake_lifecycle life(io, o);
  recorder r;
  record(life, r);
  std::optional<std::error_code> started;
  life.async_start([&](std::error_code ec) { started = ec; });
  CHECK_FALSE(started.has_value());  // never completes inside the call
  REQUIRE(run_until(io, [&] { return started.has_value(); }));
  CHECK(*started == netpasst::errc::invalid_options);
  CHECK(*started == netpasst::condition::configuration_error);
  CHECK_THAT(life.last_error_message(), Catch::Contains("/mtu"));
  CHECK(life.state() == lifecycle_state::failed);
  CHECK(r.count(lifecycle_event_kind::failed) == 1);
  CHECK(life.pid() == 0);
}

TEST_CASE("a missing passt binary is a clear start failure") {
  asio::io_context io;
  fake_lifecycle life(io, options_for("/nonexistent/passt"));
  std::optional<std::error_code> started;
  life.async_start([&](std::error_code ec) { started = ec; });
  REQUIRE(run_until(io, [&] { return started.has_value(); }));
  CHECK(*started == netpasst::errc::passt_not_found);
  CHECK_THAT(life.last_error_message(), Catch::Contains("/nonexistent/passt"));
}

TEST_CASE("a receive made before start gets passt's frame, and another one after a restart") {
  asio::io_context io;
  fake_lifecycle life(io, options_for(fake_passt("frame", sends_one_frame)));
  recorder r;
  record(life, r);
  std::optional<std::error_code> received;
  std::size_t frames = 0;
  auto receive = [&] {
    received.reset();
    life.async_receive([&](std::error_code ec, netpasst::frame_batch batch) {
      received = ec;
      frames = batch.size();
      if (!ec) CHECK(batch[0].size() == 14);
    });
  };
  receive();
  start(io, life);
  CHECK(life.status() == "stream,connected to pid " + std::to_string(life.pid()));
  REQUIRE(run_until(io, [&] { return received.has_value(); }));
  CHECK(!*received);
  CHECK(frames == 1);

  receive();  // pending while passt is killed and restarted
  const pid_t first = life.pid();
  REQUIRE(::kill(first, SIGKILL) == 0);
  REQUIRE(run_until(io, [&] { return received.has_value(); }));
  CHECK(!*received);
  CHECK(frames == 1);
  CHECK(life.pid() != first);
  CHECK(r.count(lifecycle_event_kind::link_down) == 1);
  CHECK(r.count(lifecycle_event_kind::link_up) == 2);
  const auto c = life.counters();
  CHECK(c.frames_received == 2);
  CHECK(c.restarts == 1);
  life.stop();
  CHECK(life.state() == lifecycle_state::stopped);
}

TEST_CASE("a passt that keeps dying is restarted with growing delays, then given up") {
  asio::io_context io;
  netpasst::lifecycle_config config;
  config.restart.max_attempts = 3;
  config.restart.initial_backoff = 5ms;
  config.restart.min_uptime = 1h;
  fake_lifecycle life(io, options_for(fake_passt("dies", dies_at_once)), config);
  recorder r;
  record(life, r);
  start(io, life);
  REQUIRE(run_until(io, [&] { return life.state() == lifecycle_state::failed; }));
  std::vector<long> delays;
  for (const auto& e : r.events)
    if (e.kind == lifecycle_event_kind::restarting) delays.push_back(long(e.delay.count()));
  CHECK(delays == std::vector<long>{0, 5, 10});
  CHECK(life.last_error() == netpasst::errc::restart_limit_reached);
  CHECK_THAT(life.last_error_message(), Catch::Contains("gave up after 3 attempts"));
  CHECK(r.count(lifecycle_event_kind::link_up) == 4);
  CHECK(r.count(lifecycle_event_kind::link_down) == 4);
  CHECK(r.events.back().kind == lifecycle_event_kind::failed);
  CHECK(life.counters().restarts == 3);
  CHECK_FALSE(life.is_open());
  std::error_code ec;
  std::byte frame[60]{};
  CHECK_FALSE(life.try_send(netpasst::frame(frame, sizeof frame), ec));
  CHECK(ec == netpasst::errc::restart_limit_reached);
}

TEST_CASE("restarts disabled: the first loss ends the lifecycle with its cause") {
  asio::io_context io;
  netpasst::lifecycle_config config;
  config.restart.enabled = false;
  fake_lifecycle life(io, options_for(fake_passt("idle", idles)), config);
  start(io, life);
  ::kill(life.pid(), SIGKILL);
  REQUIRE(run_until(io, [&] { return life.state() == lifecycle_state::failed; }));
  CHECK(life.last_error() == netpasst::condition::connection_lost);
  CHECK(life.counters().restarts == 0);
}

TEST_CASE("link set down drops frames both ways and says so; set up again restores it") {
  asio::io_context io;
  fake_lifecycle life(io, options_for(fake_passt("idle", idles)));
  recorder r;
  record(life, r);
  start(io, life);
  CHECK(life.link_up());
  life.set_link(false);
  CHECK_FALSE(life.link_up());
  REQUIRE(r.events.back().kind == lifecycle_event_kind::link_down);
  CHECK(r.events.back().reason == "link set down");
  CHECK_THAT(life.status(), Catch::StartsWith("stream,link down"));
  std::error_code ec;
  std::byte frame[60]{};
  CHECK(life.try_send(netpasst::frame(frame, sizeof frame), ec));
  CHECK(!ec);
  CHECK(life.counters().frames_dropped == 1);
  CHECK(life.counters().frames_sent == 0);
  life.set_link(false);  // no change, no event
  CHECK(r.count(lifecycle_event_kind::link_down) == 1);
  life.set_link(true);
  CHECK(r.events.back().kind == lifecycle_event_kind::link_up);
  CHECK(life.try_send(netpasst::frame(frame, sizeof frame), ec));
  CHECK(life.counters().frames_sent == 1);
}

TEST_CASE("while passt restarts, sends are refused as would_block and a writable wait completes at link up") {
  asio::io_context io;
  fake_lifecycle life(io, options_for(fake_passt("idle", idles)));
  recorder r;
  std::optional<std::error_code> writable;
  std::error_code send_error;
  bool refused_while_down = false;
  life.subscribe([&](const netpasst::lifecycle_event& e) {
    r.events.push_back(e);
    if (e.kind != lifecycle_event_kind::link_down) return;
    std::byte frame[60]{};
    refused_while_down = !life.try_send(netpasst::frame(frame, sizeof frame), send_error);
    life.async_wait_writable([&](std::error_code ec) { writable = ec; });
  });
  start(io, life);
  ::kill(life.pid(), SIGKILL);
  REQUIRE(run_until(io, [&] { return writable.has_value(); }));
  CHECK(refused_while_down);
  CHECK(send_error == netpasst::errc::would_block);
  CHECK(!*writable);
  CHECK(life.link_up());
  CHECK(r.count(lifecycle_event_kind::link_up) == 2);
}

TEST_CASE("cancel ends a waiting receive; stop and destruction end pending ones with stopped") {
  asio::io_context io;
  std::optional<std::error_code> a, b;
  {
    fake_lifecycle life(io, options_for(fake_passt("idle", idles)));
    life.async_receive([&](std::error_code ec, netpasst::frame_batch) { a = ec; });
    life.cancel();
    REQUIRE(run_until(io, [&] { return a.has_value(); }));
    CHECK(*a == asio::error::operation_aborted);

    start(io, life);
    a.reset();
    life.async_receive([&](std::error_code ec, netpasst::frame_batch) { a = ec; });
    life.async_receive([&](std::error_code ec, netpasst::frame_batch) { b = ec; });
    REQUIRE(run_until(io, [&] { return b.has_value(); }));
    CHECK(*b == netpasst::errc::operation_in_progress);
    life.cancel();
    REQUIRE(run_until(io, [&] { return a.has_value(); }));
    CHECK(*a == asio::error::operation_aborted);

    a.reset();
    life.async_receive([&](std::error_code ec, netpasst::frame_batch) { a = ec; });
  }  // destroyed with a receive pending
  REQUIRE(run_until(io, [&] { return a.has_value(); }));
  CHECK(*a == netpasst::errc::stopped);
}

TEST_CASE("async operations take use_future and use_awaitable") {
  asio::io_context io;
  fake_lifecycle life(io, options_for(fake_passt("frame", sends_one_frame)));
  auto work = asio::make_work_guard(io);
  std::thread runner([&] { io.run(); });
  std::future<void> started = asio::post(io, asio::use_future([&] { return life.async_start(asio::use_future); })).get();
  CHECK_NOTHROW(started.get());

  std::promise<std::size_t> got;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto batch = co_await life.async_receive(asio::use_awaitable);
        got.set_value(batch.size());
        co_await life.async_stop(asio::use_awaitable);
      },
      asio::detached);
  auto size = got.get_future();
  REQUIRE(size.wait_for(20s) == std::future_status::ready);
  CHECK(size.get() == 1);
  work.reset();
  runner.join();
  CHECK(life.state() == lifecycle_state::stopped);
}
