// Unit tests of netpasst/bridge.hpp with memory transport pairs:
//   outer_a <-> inner_a ==bridge== inner_b <-> outer_b
// The test writes on the outer ends and reads what comes out of the other.
// GCC 12 under ASan (-O1) reports -Wmaybe-uninitialized inside Asio's
// use_future handler that these tests instantiate: a false positive in
// library code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <netpasst/bridge.hpp>

#include <netpasst/lifecycle.hpp>
#include <netpasst/testing/memory_transport.hpp>
#include <netpasst/transport/stream.hpp>
#include <netpasst/transport/tap.hpp>

#include <asio/bind_allocator.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/bind_executor.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/deferred.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/strand.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>
#include <catch2/catch.hpp>

#include "../common/test_support.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <future>
#include <optional>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using netpasst::bridge_counters;
using netpasst::errc;
using netpasst::frame;
using netpasst::frame_batch;
using namespace netpasst::testing;
using bytes = std::vector<std::byte>;
using netpasst::test::allocation_log;
using netpasst::test::counting_allocator;
using netpasst::test::run_until;

// Both ways: every transport of the library can be bridged; a look-alike
// without cancel() cannot.
static_assert(netpasst::FrameTransport<memory_transport>);
static_assert(netpasst::FrameTransport<netpasst::stream_transport>);
static_assert(netpasst::FrameTransport<netpasst::tap_transport>);
static_assert(netpasst::FrameTransport<netpasst::lifecycle>);
static_assert(!netpasst::FrameTransport<int>);

namespace {

/// Everything of a FrameTransport but cancel(): not one.
struct uncancellable {
  using executor_type = asio::any_io_executor;
  executor_type get_executor() const;
  bool try_send(frame, std::error_code&);
  std::size_t try_send(std::span<const frame>, std::error_code&);
  template <class H> void async_wait_writable(H&&);
  template <class H> void async_receive(H&&);
  bool is_open() const;
  void close();
  netpasst::transport_counters counters() const;
};
static_assert(!netpasst::FrameTransport<uncancellable>);  // cancel() is part of the concept

/// A frame of `size` bytes carrying `tag` in its first 4 bytes (if it fits).
bytes tagged(std::size_t size, std::uint32_t tag) {
  bytes f(size, std::byte(tag & 0xff));
  if (size >= 4) std::memcpy(f.data(), &tag, 4);
  return f;
}
std::uint32_t tag_of(frame f) {
  std::uint32_t tag = 0;
  std::memcpy(&tag, f.data(), 4);
  return tag;
}

/// Keeps receiving on `end`, recording the tags, until told to stop.
struct drain {
  memory_transport& end;
  std::vector<std::uint32_t> tags;
  std::uint64_t bytes = 0;
  std::error_code error;
  bool stopped = false, pending = false;

  explicit drain(memory_transport& e) : end(e) {}
  void start() {
    pending = true;
    end.async_receive([this](std::error_code ec, frame_batch batch) {
      pending = false;
      if (ec) return void(error = ec);
      for (frame f : batch) tags.push_back(tag_of(f)), bytes += f.size();
      if (!stopped) start();
    });
  }
};

/// Writes frames tagged first..first+count-1 into `end` as room allows.
struct feeder {
  memory_transport& end;
  std::uint32_t next, last;
  std::size_t size;
  feeder(memory_transport& e, std::uint32_t first, std::uint32_t count, std::size_t frame_size)
      : end(e), next(first), last(first + count), size(frame_size) {}
  void start() {
    std::error_code ec;
    while (next < last) {
      const bytes f = tagged(size, next);
      if (!end.try_send(f, ec)) break;
      ++next;
    }
    if (next < last && ec == errc::would_block)
      end.async_wait_writable([this](std::error_code e) {
        if (!e) start();
      });
  }
  bool done() const { return next == last; }
};

std::vector<std::uint32_t> sequence(std::uint32_t first, std::uint32_t count) {
  std::vector<std::uint32_t> v(count);
  for (std::uint32_t i = 0; i < count; ++i) v[i] = first + i;
  return v;
}

/// Two memory pairs and the bridge's result.
struct rig {
  asio::io_context io;
  std::pair<memory_transport, memory_transport> a_side, b_side;
  memory_transport &outer_a, &inner_a, &inner_b, &outer_b;
  std::optional<std::error_code> result;
  bridge_counters counters;

  explicit rig(const memory_transport_options& outer = {}, const memory_transport_options& inner = {})
      : a_side(make_memory_transport_pair(asio::any_io_executor(io.get_executor()), outer,
                                          asio::any_io_executor(io.get_executor()), inner)),
        b_side(make_memory_transport_pair(asio::any_io_executor(io.get_executor()), inner,
                                          asio::any_io_executor(io.get_executor()), outer)),
        outer_a(a_side.first), inner_a(a_side.second), inner_b(b_side.first), outer_b(b_side.second) {}

  auto handler() {
    return [this](std::error_code ec, bridge_counters c) {
      result = ec;
      counters = c;
    };
  }
};

/// A source that hands out one fixed batch and then waits until cancelled,
/// and a sink that records what it is given: to see exactly what the bridge
/// does with each frame.
struct scripted_transport {
  using executor_type = asio::any_io_executor;
  executor_type executor;
  std::vector<bytes> script;         // what async_receive hands out, once
  std::vector<frame> views;
  bool delivered = false;
  std::function<void(std::error_code, frame_batch)> parked;
  std::vector<const std::byte*> sent; // data() of every frame taken
  netpasst::transport_counters stats;

  explicit scripted_transport(executor_type ex) : executor(std::move(ex)) {}
  executor_type get_executor() const { return executor; }
  bool try_send(frame f, std::error_code& ec) {
    ec.clear();
    if (f.size() < 14 || f.size() > 65535) {
      ++stats.frames_refused;
      ec = f.size() < 14 ? errc::frame_too_short : errc::frame_too_long;
      return false;
    }
    sent.push_back(f.data());
    ++stats.frames_sent;
    return true;
  }
  std::size_t try_send(std::span<const frame> frames, std::error_code& ec) {
    std::size_t n = 0;
    ec.clear();
    while (n < frames.size() && try_send(frames[n], ec)) ++n;
    return n;
  }
  template <class Token> auto async_wait_writable(Token&& token) {
    return asio::async_initiate<Token, void(std::error_code)>(
        [this](auto handler) { asio::post(executor, [h = std::move(handler)]() mutable { h(std::error_code{}); }); }, token);
  }
  template <class Token> auto async_receive(Token&& token) {
    return asio::async_initiate<Token, void(std::error_code, frame_batch)>(
        [this](auto handler) {
          if (delivered) {
            parked = std::move(handler);
            return;
          }
          delivered = true;
          views.assign(script.begin(), script.end());
          asio::post(executor, [this, h = std::move(handler)]() mutable { h(std::error_code{}, frame_batch(views)); });
        },
        token);
  }
  void cancel() {
    if (parked)
      asio::post(executor, [h = std::exchange(parked, nullptr)] { h(make_error_code(asio::error::operation_aborted), frame_batch{}); });
  }
  bool is_open() const { return true; }
  void close() { cancel(); }
  netpasst::transport_counters counters() const { return stats; }
};

} // namespace

TEST_CASE("bridge: frames go both ways, whole and in order, and are counted") {
  memory_transport_options outer;
  outer.queue_frames = 100000; // everything fits at once: the bridge sets the pace
  rig r(outer);
  netpasst::async_bridge(r.inner_a, r.inner_b, r.handler());
  feeder to_b(r.outer_a, 0, 3000, 100), to_a(r.outer_b, 1000000, 2000, 60);
  drain at_b(r.outer_b), at_a(r.outer_a);
  to_b.start(), to_a.start(), at_b.start(), at_a.start();
  REQUIRE(run_until(r.io, [&] { return at_b.tags.size() == 3000 && at_a.tags.size() == 2000; }));
  CHECK(at_b.tags == sequence(0, 3000));
  CHECK(at_a.tags == sequence(1000000, 2000));
  CHECK_FALSE(r.result); // still running
  r.inner_a.close();     // ends the bridge: its receive on inner_a fails
  REQUIRE(run_until(r.io, [&] { return r.result.has_value(); }));
  CHECK(*r.result == errc::transport_closed);
  CHECK(r.counters.a_to_b.frames == 3000);
  CHECK(r.counters.a_to_b.bytes == 3000 * 100);
  CHECK(r.counters.b_to_a.frames == 2000);
  CHECK(r.counters.b_to_a.bytes == 2000 * 60);
  CHECK(r.counters.a_to_b.batches >= 3000 / 16); // memory batches hold at most 16
  CHECK(r.counters.a_to_b.dropped_invalid + r.counters.a_to_b.dropped_at_end == 0);
  CHECK(r.counters.b_to_a.dropped_invalid + r.counters.b_to_a.dropped_at_end == 0);
}

TEST_CASE("bridge: backpressure both ways keeps every frame (refused frames are waited for and retried)") {
  memory_transport_options outer, inner;
  outer.queue_frames = 100000;
  outer.max_batch_frames = 1; // the outer ends read slowly
  inner.queue_frames = 2;     // the bridge's destinations take two frames at a time
  inner.max_batch_frames = 64;
  rig r(outer, inner);
  netpasst::async_bridge(r.inner_a, r.inner_b, r.handler());
  feeder to_b(r.outer_a, 0, 1500, 1514), to_a(r.outer_b, 500000, 1500, 64);
  drain at_b(r.outer_b), at_a(r.outer_a);
  to_b.start(), to_a.start(), at_b.start(), at_a.start();
  REQUIRE(run_until(r.io, [&] { return at_b.tags.size() == 1500 && at_a.tags.size() == 1500; }));
  CHECK(at_b.tags == sequence(0, 1500));
  CHECK(at_a.tags == sequence(500000, 1500));
  r.inner_b.close();
  REQUIRE(run_until(r.io, [&] { return r.result.has_value(); }));
  for (const auto* c : {&r.counters.a_to_b, &r.counters.b_to_a}) {
    CHECK(c->frames == 1500);
    CHECK(c->refused > 0);
    CHECK(c->waits == c->refused);
    CHECK(c->dropped_invalid == 0);
    CHECK(c->dropped_at_end == 0);
  }
}

TEST_CASE("bridge: a turn hands over at most frames_per_turn frames and bytes_per_turn bytes") {
  memory_transport_options outer, inner;
  outer.queue_frames = 100000;
  inner.queue_frames = 100000;
  inner.max_batch_frames = 1000; // one receive brings the whole lot
  rig r(outer, inner);
  netpasst::bridge_config config;
  config.frames_per_turn = 10;
  config.bytes_per_turn = 3500; // three 1000-byte frames
  const std::size_t frame_size = GENERATE(100, 1000, 5000);
  const std::size_t per_turn = frame_size == 100 ? 10 : frame_size == 1000 ? 3 : 1;
  feeder to_b(r.outer_a, 0, 1000, frame_size);
  to_b.start();
  REQUIRE(to_b.done());
  netpasst::basic_bridge bridge(r.inner_a, r.inner_b, config);
  bridge.async_run(r.handler());
  std::uint64_t before = 0, most = 0;
  r.io.restart();
  while (bridge.counters().a_to_b.frames < 1000 && r.io.run_one_for(1s) != 0) {
    const std::uint64_t now = bridge.counters().a_to_b.frames;
    most = std::max(most, now - before);
    before = now;
  }
  CHECK(bridge.counters().a_to_b.frames == 1000);
  CHECK(most == per_turn);
  CHECK(bridge.counters().a_to_b.yields >= 1000 / per_turn - 1);
  bridge.stop();
  REQUIRE(run_until(r.io, [&] { return r.result.has_value(); }));
  CHECK_FALSE(*r.result);
}

TEST_CASE("bridge: neither direction starves the other") {
  memory_transport_options outer, inner;
  outer.queue_frames = 100000;
  inner.queue_frames = 100000;
  inner.max_batch_frames = 4096;
  rig r(outer, inner);
  netpasst::bridge_config config;
  config.frames_per_turn = 32;
  feeder to_b(r.outer_a, 0, 20000, 64), to_a(r.outer_b, 1000000, 20000, 64);
  to_b.start(), to_a.start();
  REQUIRE((to_b.done() && to_a.done()));
  drain at_b(r.outer_b), at_a(r.outer_a);
  at_b.start(), at_a.start();
  netpasst::basic_bridge bridge(r.inner_a, r.inner_b, config);
  bridge.async_run(r.handler());
  // While both directions have work, after every handler the two have moved
  // nearly as much: a few turns apart at most. (Without the turn bound the
  // first batch of 4096 would go through before the other direction moved.)
  std::uint64_t widest = 0;
  r.io.restart();
  for (;;) {
    const auto c = bridge.counters();
    if (c.a_to_b.frames == 20000 || c.b_to_a.frames == 20000) break;
    widest = std::max<std::uint64_t>(widest, c.a_to_b.frames > c.b_to_a.frames ? c.a_to_b.frames - c.b_to_a.frames
                                                                                : c.b_to_a.frames - c.a_to_b.frames);
    REQUIRE(r.io.run_one_for(1s) != 0);
  }
  CHECK(widest <= 2 * config.frames_per_turn);
  REQUIRE(run_until(r.io, [&] { return at_b.tags.size() == 20000 && at_a.tags.size() == 20000; }));
  CHECK(at_b.tags == sequence(0, 20000));
  CHECK(at_a.tags == sequence(1000000, 20000));
  bridge.stop();
  REQUIRE(run_until(r.io, [&] { return r.result.has_value(); }));
}

TEST_CASE("bridge: the bridge hands the source's views to the destination (no copy) and skips invalid sizes") {
  asio::io_context io;
  scripted_transport source(io.get_executor()), sink(io.get_executor());
  source.script = {tagged(60, 1), tagged(10, 2), tagged(70000, 3), tagged(1514, 4), tagged(65535, 5)};
  std::optional<std::error_code> result;
  bridge_counters counters;
  netpasst::basic_bridge bridge(source, sink);
  bridge.async_run([&](std::error_code ec, bridge_counters c) { result = ec, counters = c; });
  REQUIRE(run_until(io, [&] { return sink.sent.size() == 3; }));
  CHECK(sink.sent == std::vector<const std::byte*>{source.views[0].data(), source.views[3].data(),
                                                   source.views[4].data()});
  CHECK(sink.stats.frames_refused == 2);
  bridge.stop();
  REQUIRE(run_until(io, [&] { return result.has_value(); }));
  CHECK_FALSE(*result);
  CHECK(counters.a_to_b.frames == 3);
  CHECK(counters.a_to_b.bytes == 60 + 1514 + 65535);
  CHECK(counters.a_to_b.dropped_invalid == 2);
  CHECK(counters.a_to_b.dropped_at_end == 0);
}

TEST_CASE("bridge: stop() ends a run without error, the transports stay usable for the next run") {
  rig r;
  netpasst::basic_bridge bridge(r.inner_a, r.inner_b);
  CHECK_FALSE(bridge.running());
  bridge.async_run(r.handler());
  CHECK(bridge.running());

  // A second run while one is going is refused.
  std::optional<std::error_code> second;
  bridge.async_run([&](std::error_code ec, bridge_counters) { second = ec; });
  CHECK_FALSE(second); // never inside the call
  REQUIRE(run_until(r.io, [&] { return second.has_value(); }));
  CHECK(*second == errc::operation_in_progress);
  CHECK(bridge.running());

  feeder to_b(r.outer_a, 0, 10, 100);
  drain at_b(r.outer_b);
  to_b.start(), at_b.start();
  REQUIRE(run_until(r.io, [&] { return at_b.tags.size() == 10; }));
  bridge.stop();
  bridge.stop(); // idempotent
  REQUIRE(run_until(r.io, [&] { return r.result.has_value(); }));
  CHECK_FALSE(*r.result);
  CHECK_FALSE(bridge.running());
  CHECK(r.counters.a_to_b.frames == 10);
  CHECK(bridge.counters().a_to_b.frames == 10); // the last run's, kept
  CHECK(r.inner_a.is_open());
  CHECK(r.inner_b.is_open());

  r.result.reset();
  bridge.async_run(r.handler());
  feeder more(r.outer_a, 10, 5, 100);
  more.start();
  REQUIRE(run_until(r.io, [&] { return at_b.tags.size() == 15; }));
  CHECK(at_b.tags == sequence(0, 15));
  CHECK(bridge.counters().a_to_b.frames == 5); // this run's
  bridge.stop();
  REQUIRE(run_until(r.io, [&] { return r.result.has_value(); }));
}

TEST_CASE("bridge: frames held when the bridge ends get one last offer, the rest are counted as dropped") {
  memory_transport_options outer, inner;
  outer.queue_frames = 1000;
  inner.queue_frames = 3;
  inner.max_batch_frames = 10;
  rig r(outer, inner);
  feeder to_b(r.outer_a, 0, 10, 100);
  to_b.start();
  netpasst::basic_bridge bridge(r.inner_a, r.inner_b);
  bridge.async_run(r.handler());
  // Nobody reads outer_b: 3 frames fit, 7 of the batch of 10 are held.
  REQUIRE(run_until(r.io, [&] { return bridge.counters().a_to_b.refused > 0; }));
  bridge.stop();
  REQUIRE(run_until(r.io, [&] { return r.result.has_value(); }));
  CHECK_FALSE(*r.result);
  CHECK(r.counters.a_to_b.frames == 3);
  CHECK(r.counters.a_to_b.dropped_at_end == 7);
}

TEST_CASE("bridge: an error on either side ends the bridge with that error") {
  rig r;
  const bool first_side = GENERATE(true, false);
  netpasst::async_bridge(r.inner_a, r.inner_b, r.handler());
  feeder to_b(r.outer_a, 0, 5, 100), to_a(r.outer_b, 100, 5, 100);
  drain at_b(r.outer_b), at_a(r.outer_a);
  to_b.start(), to_a.start(), at_b.start(), at_a.start();
  REQUIRE(run_until(r.io, [&] { return at_b.tags.size() == 5 && at_a.tags.size() == 5; }));
  (first_side ? r.outer_a : r.outer_b).close(); // the peer of one bridged end goes away
  REQUIRE(run_until(r.io, [&] { return r.result.has_value(); }));
  CHECK(*r.result == errc::connection_closed);
  CHECK(*r.result == netpasst::condition::connection_lost);
  CHECK(r.counters.a_to_b.frames == 5);
  CHECK(r.counters.b_to_a.frames == 5);
}

TEST_CASE("bridge: a failure at every operation of one end ends the bridge with it, and no frame vanishes") {
  const bool fail_b = GENERATE(false, true);
  for (std::size_t n = 0;; ++n) {
    INFO("failing operation " << n << " of inner_" << (fail_b ? 'b' : 'a'));
    fail_count faults(n, std::make_error_code(std::errc::io_error));
    memory_transport_options outer, inner, faulty;
    outer.queue_frames = 1000;
    inner.queue_frames = 4;
    inner.max_batch_frames = 3;
    faulty = inner;
    faulty.faults = &faults;
    asio::io_context io;
    const asio::any_io_executor ex = io.get_executor();
    auto [outer_a, inner_a] = make_memory_transport_pair(ex, outer, ex, fail_b ? inner : faulty);
    auto [inner_b, outer_b] = make_memory_transport_pair(ex, fail_b ? faulty : inner, ex, outer);
    std::optional<std::error_code> result;
    bridge_counters counters;
    netpasst::async_bridge(inner_a, inner_b, [&](std::error_code ec, bridge_counters c) { result = ec, counters = c; });
    feeder to_b(outer_a, 0, 20, 100), to_a(outer_b, 100, 20, 100);
    drain at_b(outer_b), at_a(outer_a);
    to_b.start(), to_a.start(), at_b.start(), at_a.start();
    REQUIRE(run_until(io, [&] { return result.has_value() || (at_b.tags.size() == 20 && at_a.tags.size() == 20); }));
    if (!faults.tripped()) {
      CHECK_FALSE(result);
      break; // the scenario ran to its end: every failure point was visited
    }
    REQUIRE(run_until(io, [&] { return result.has_value(); }));
    CHECK(*result == std::errc::io_error);
    // Whatever the destinations took arrives; the rest was never taken, and
    // what the bridge held is accounted for.
    REQUIRE(run_until(io, [&] { return at_b.tags.size() == counters.a_to_b.frames &&
                                       at_a.tags.size() == counters.b_to_a.frames; }));
    CHECK(at_b.tags == sequence(0, std::uint32_t(counters.a_to_b.frames)));
    CHECK(at_a.tags == sequence(100, std::uint32_t(counters.b_to_a.frames)));
    CHECK(counters.a_to_b.frames + counters.a_to_b.dropped_at_end + outer_a.queued_frames() == to_b.next);
    CHECK(counters.b_to_a.frames + counters.b_to_a.dropped_at_end + outer_b.queued_frames() == to_a.next - 100);
    REQUIRE(n < 500);
  }
}

TEST_CASE("bridge: cancellation through the handler's slot, terminal or partial, ends it with operation_aborted") {
  rig r;
  const auto type = GENERATE(asio::cancellation_type::terminal, asio::cancellation_type::partial,
                             asio::cancellation_type::total);
  asio::cancellation_signal signal;
  netpasst::async_bridge(r.inner_a, r.inner_b, asio::bind_cancellation_slot(signal.slot(), r.handler()));
  feeder to_b(r.outer_a, 0, 7, 100);
  drain at_b(r.outer_b);
  to_b.start(), at_b.start();
  REQUIRE(run_until(r.io, [&] { return at_b.tags.size() == 7; }));
  signal.emit(type);
  REQUIRE(run_until(r.io, [&] { return r.result.has_value(); }));
  CHECK(*r.result == asio::error::operation_aborted);
  CHECK(r.counters.a_to_b.frames == 7);
  // Both ends are open and idle: a new bridge forwards again.
  CHECK(r.inner_a.is_open());
  r.result.reset();
  netpasst::async_bridge(r.inner_a, r.inner_b, r.handler());
  feeder more(r.outer_a, 7, 3, 100);
  more.start();
  REQUIRE(run_until(r.io, [&] { return at_b.tags.size() == 10; }));
  CHECK(at_b.tags == sequence(0, 10));
}

TEST_CASE("bridge: destroying a basic_bridge ends its run with operation_aborted") {
  rig r;
  {
    netpasst::basic_bridge bridge(r.inner_a, r.inner_b);
    bridge.async_run(r.handler());
    r.io.poll();
  }
  REQUIRE(run_until(r.io, [&] { return r.result.has_value(); }));
  CHECK(*r.result == asio::error::operation_aborted);
}

TEST_CASE("bridge: the handler's executor and allocator are used, the state is freed before the handler runs") {
  rig r;
  auto strand = asio::make_strand(r.io);
  allocation_log log;
  bool on_strand = false;
  std::size_t live_at_completion = 1;
  netpasst::basic_bridge bridge(r.inner_a, r.inner_b);
  bridge.async_run(asio::bind_executor(
      strand, asio::bind_allocator(counting_allocator<void>(&log), [&](std::error_code ec, bridge_counters) {
        on_strand = strand.running_in_this_thread();
        live_at_completion = log.allocations - log.deallocations;
        r.result = ec;
      })));
  CHECK(log.allocations == 1); // the run's state
  feeder to_b(r.outer_a, 0, 5, 100);
  drain at_b(r.outer_b);
  to_b.start(), at_b.start();
  REQUIRE(run_until(r.io, [&] { return at_b.tags.size() == 5; }));
  bridge.stop();
  REQUIRE(run_until(r.io, [&] { return r.result.has_value(); }));
  CHECK(on_strand);
  CHECK(live_at_completion == 0);
  CHECK(log.deallocations == log.allocations);
}

TEST_CASE("bridge: use_future, deferred and use_awaitable") {
  SECTION("use_future") {
    rig r;
    netpasst::basic_bridge bridge(r.inner_a, r.inner_b);
    std::future<bridge_counters> done = bridge.async_run(asio::use_future);
    feeder to_b(r.outer_a, 0, 4, 100);
    drain at_b(r.outer_b);
    to_b.start(), at_b.start();
    REQUIRE(run_until(r.io, [&] { return at_b.tags.size() == 4; }));
    bridge.stop();
    REQUIRE(run_until(r.io, [&] { return done.wait_for(0s) == std::future_status::ready; }));
    CHECK(done.get().a_to_b.frames == 4);

    // An error arrives as an exception.
    std::future<bridge_counters> failed = netpasst::async_bridge(r.inner_a, r.inner_b, asio::use_future);
    r.outer_b.close();
    REQUIRE(run_until(r.io, [&] { return failed.wait_for(0s) == std::future_status::ready; }));
    try {
      failed.get();
      FAIL("no exception");
    } catch (const std::system_error& e) {
      CHECK(e.code() == errc::connection_closed);
    }
  }
  SECTION("deferred: nothing runs until the operation is launched") {
    rig r;
    auto op = netpasst::async_bridge(r.inner_a, r.inner_b, asio::experimental::deferred);
    feeder to_b(r.outer_a, 0, 4, 100);
    drain at_b(r.outer_b);
    to_b.start(), at_b.start();
    r.io.poll();
    CHECK(at_b.tags.empty());
    asio::cancellation_signal signal;
    std::move(op)(asio::bind_cancellation_slot(signal.slot(), r.handler()));
    REQUIRE(run_until(r.io, [&] { return at_b.tags.size() == 4; }));
    signal.emit(asio::cancellation_type::terminal);
    REQUIRE(run_until(r.io, [&] { return r.result.has_value(); }));
    CHECK(*r.result == asio::error::operation_aborted);
  }
#ifdef ASIO_HAS_CO_AWAIT
  SECTION("use_awaitable") {
    rig r;
    feeder to_b(r.outer_a, 0, 6, 100);
    drain at_b(r.outer_b);
    to_b.start(), at_b.start();
    netpasst::basic_bridge bridge(r.inner_a, r.inner_b);
    asio::co_spawn(
        r.io,
        [&]() -> asio::awaitable<void> {
          auto [ec, counters] = co_await bridge.async_run(asio::experimental::as_tuple(asio::use_awaitable));
          r.result = ec;
          r.counters = counters;
        },
        asio::detached);
    REQUIRE(run_until(r.io, [&] { return at_b.tags.size() == 6; }));
    bridge.stop();
    REQUIRE(run_until(r.io, [&] { return r.result.has_value(); }));
    CHECK_FALSE(*r.result);
    CHECK(r.counters.a_to_b.frames == 6);
  }
#endif
}
