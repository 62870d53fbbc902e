// GCC 12 under ASan (-O1) reports -Wmaybe-uninitialized inside Asio's
// use_future handler that these tests instantiate: a false positive in
// library code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <netpasst/testing/memory_transport.hpp>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/strand.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>
#include <catch2/catch.hpp>

#include <chrono>
#include <future>
#include <optional>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using netpasst::errc;
using netpasst::frame;
using netpasst::frame_batch;
using namespace netpasst::testing;
using bytes = std::vector<std::byte>;

static_assert(netpasst::FrameTransport<memory_transport>);
static_assert(netpasst::FrameTransport<basic_memory_transport<asio::io_context::executor_type>>);
static_assert(!netpasst::FrameTransport<int>);
static_assert(!std::is_copy_constructible_v<memory_transport>);

namespace {

bytes frame_of(std::size_t size, int fill) { return bytes(size, std::byte(fill)); }

// What one async_receive delivered, copied out of the views.
struct received {
  std::error_code ec;
  std::vector<bytes> frames;
  bool done = false;
};

template <class Transport> void receive_into(Transport& t, received& r) {
  t.async_receive([&r](std::error_code ec, frame_batch batch) {
    r.ec = ec;
    for (frame f : batch) r.frames.emplace_back(f.begin(), f.end());
    r.done = true;
  });
}

// Runs `io` until `done` holds or 5 s passed (a deadline, not a timing check).
template <class Predicate> bool run_until(asio::io_context& io, Predicate done) {
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  io.restart();
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    if (io.run_one_for(50ms) == 0) io.restart();
  }
  return done();
}

} // namespace

TEST_CASE("memory_transport: frames go through in order, in batches") {
  asio::io_context io;
  memory_transport_options options;
  options.max_batch_frames = 3;
  auto [a, b] = make_memory_transport_pair(io.get_executor(), options);
  std::error_code ec;
  for (int i = 0; i < 5; ++i) REQUIRE(a.try_send(frame_of(14 + std::size_t(i), i), ec));
  CHECK(a.queued_frames() == 5);
  CHECK(a.counters().frames_sent == 5);
  CHECK(a.counters().bytes_sent == 14 + 15 + 16 + 17 + 18);

  received first, second;
  receive_into(b, first);
  CHECK_FALSE(first.done); // never inside the call
  REQUIRE(run_until(io, [&] { return first.done; }));
  CHECK_FALSE(first.ec);
  REQUIRE(first.frames.size() == 3);
  for (int i = 0; i < 3; ++i) CHECK(first.frames[std::size_t(i)] == frame_of(14 + std::size_t(i), i));
  receive_into(b, second);
  REQUIRE(run_until(io, [&] { return second.done; }));
  REQUIRE(second.frames.size() == 2);
  CHECK(second.frames[1] == frame_of(18, 4));
  CHECK(b.counters().frames_received == 5);
  CHECK(a.queued_frames() == 0);

  // And back the other way, with a receive already pending.
  received back;
  receive_into(a, back);
  io.poll();
  CHECK_FALSE(back.done);
  REQUIRE(b.try_send(frame_of(60, 0xab), ec));
  REQUIRE(run_until(io, [&] { return back.done; }));
  CHECK(back.frames == std::vector<bytes>{frame_of(60, 0xab)});
}

TEST_CASE("memory_transport: frames outside 14..65535 are refused and counted") {
  asio::io_context io;
  auto [a, b] = make_memory_transport_pair(io);
  std::error_code ec;
  CHECK_FALSE(a.try_send(frame_of(13, 1), ec));
  CHECK(ec == errc::frame_too_short);
  CHECK(ec == netpasst::condition::frame_refused);
  CHECK_FALSE(a.try_send(frame_of(65536, 1), ec));
  CHECK(ec == errc::frame_too_long);
  CHECK(a.counters().frames_refused == 2);
  CHECK(a.is_open());
  REQUIRE(a.try_send(frame_of(65535, 2), ec));
  REQUIRE(a.try_send(frame_of(14, 3), ec));

  // A span stops at the refused frame.
  const bytes small = frame_of(10, 0), ok = frame_of(20, 4);
  const frame frames[] = {ok, small, ok};
  CHECK(a.try_send(frames, ec) == 1);
  CHECK(ec == errc::frame_too_short);

  received r;
  receive_into(b, r);
  REQUIRE(run_until(io, [&] { return r.done; }));
  REQUIRE(r.frames.size() == 3);
  CHECK(r.frames[0].size() == 65535);
  CHECK(r.frames[1].size() == 14);
  CHECK(r.frames[2] == ok);
}

TEST_CASE("memory_transport: backpressure and async_wait_writable") {
  asio::io_context io;
  memory_transport_options options;
  options.queue_frames = 2;
  options.max_batch_frames = 1;
  auto [a, b] = make_memory_transport_pair(io.get_executor(), options);
  const bytes f = frame_of(64, 7);
  const frame three[] = {f, f, f};
  std::error_code ec;
  CHECK(a.try_send(three, ec) == 2);
  CHECK(ec == errc::would_block);
  CHECK_FALSE(a.try_send(f, ec));
  CHECK(ec == errc::would_block);
  CHECK(a.counters().frames_sent == 2);

  std::optional<std::error_code> writable;
  a.async_wait_writable([&](std::error_code e) { writable = e; });
  io.restart();
  io.poll();
  CHECK_FALSE(writable); // the queue is still full

  received r;
  receive_into(b, r);
  REQUIRE(run_until(io, [&] { return writable.has_value(); }));
  CHECK_FALSE(*writable);
  CHECK(r.frames.size() == 1);
  CHECK(a.try_send(f, ec));
  CHECK_FALSE(a.try_send(f, ec));

  // Writable at once when there is room.
  received r2;
  receive_into(b, r2);
  REQUIRE(run_until(io, [&] { return r2.done; }));
  writable.reset();
  a.async_wait_writable([&](std::error_code e) { writable = e; });
  CHECK_FALSE(writable);
  REQUIRE(run_until(io, [&] { return writable.has_value(); }));
  CHECK_FALSE(*writable);
}

TEST_CASE("memory_transport: close on one end is connection_closed on the other") {
  asio::io_context io;
  auto [a, b] = make_memory_transport_pair(io);
  std::error_code ec;
  REQUIRE(a.try_send(frame_of(20, 1), ec));
  received pending_on_a;
  receive_into(a, pending_on_a);
  io.poll();
  a.close();
  a.close(); // idempotent
  CHECK_FALSE(a.is_open());
  CHECK_FALSE(b.is_open());
  REQUIRE(run_until(io, [&] { return pending_on_a.done; }));
  CHECK(pending_on_a.ec == errc::transport_closed);
  CHECK_FALSE(a.try_send(frame_of(20, 1), ec));
  CHECK(ec == errc::transport_closed);
  CHECK_FALSE(b.try_send(frame_of(20, 1), ec));
  CHECK(ec == errc::connection_closed);
  CHECK(ec == netpasst::condition::connection_lost);

  received first, second; // the queued frame first, then EOF
  receive_into(b, first);
  REQUIRE(run_until(io, [&] { return first.done; }));
  CHECK_FALSE(first.ec);
  CHECK(first.frames.size() == 1);
  receive_into(b, second);
  REQUIRE(run_until(io, [&] { return second.done; }));
  CHECK(second.ec == errc::connection_closed);
  CHECK(second.frames.empty());

  std::optional<std::error_code> writable;
  b.async_wait_writable([&](std::error_code e) { writable = e; });
  REQUIRE(run_until(io, [&] { return writable.has_value(); }));
  CHECK(*writable == errc::connection_closed);
}

TEST_CASE("memory_transport: destroying the peer wakes a pending receive") {
  asio::io_context io;
  auto pair = make_memory_transport_pair(io);
  memory_transport a = std::move(pair.first);
  received r;
  receive_into(a, r);
  io.poll();
  {
    memory_transport b = std::move(pair.second);
  }
  REQUIRE(run_until(io, [&] { return r.done; }));
  CHECK(r.ec == errc::connection_closed);
}

TEST_CASE("memory_transport: cancel aborts pending operations, the transport stays usable") {
  asio::io_context io;
  memory_transport_options options;
  options.queue_frames = 1;
  auto [a, b] = make_memory_transport_pair(io.get_executor(), options);
  std::error_code ec;
  REQUIRE(a.try_send(frame_of(20, 1), ec));
  std::optional<std::error_code> writable;
  a.async_wait_writable([&](std::error_code e) { writable = e; });
  received r;
  receive_into(a, r);
  io.poll();
  a.cancel();
  REQUIRE(run_until(io, [&] { return r.done && writable; }));
  CHECK(r.ec == asio::error::operation_aborted);
  CHECK(*writable == asio::error::operation_aborted);
  CHECK(a.is_open());

  // A later receive is not affected by the earlier cancel.
  received after;
  receive_into(a, after);
  REQUIRE(b.try_send(frame_of(30, 2), ec));
  REQUIRE(run_until(io, [&] { return after.done; }));
  CHECK_FALSE(after.ec);
  CHECK(after.frames.size() == 1);
}

TEST_CASE("memory_transport: fail_count fails the Nth operation and every later one") {
  // Scenario: send two frames, receive them, wait writable. Walk every failure point.
  const std::error_code injected = make_error_code(std::errc::io_error);
  std::size_t n = 0;
  for (; n < 20; ++n) {
    asio::io_context io;
    fail_count faults(n, injected);
    memory_transport_options options;
    options.faults = &faults;
    auto [a, b] = make_memory_transport_pair(io.get_executor(), options);
    std::error_code ec;
    bool failed = false;
    for (int i = 0; i < 2 && !failed; ++i) {
      failed = !a.try_send(frame_of(20, i), ec);
      if (failed) CHECK(ec == injected);
    }
    if (!failed) {
      received r;
      receive_into(b, r);
      REQUIRE(run_until(io, [&] { return r.done; }));
      failed = bool(r.ec);
      CHECK(r.frames.size() == (failed ? 0u : 2u));
      if (failed) CHECK(r.ec == injected);
    }
    if (!failed) {
      std::optional<std::error_code> writable;
      a.async_wait_writable([&](std::error_code e) { writable = e; });
      REQUIRE(run_until(io, [&] { return writable.has_value(); }));
      failed = bool(*writable);
      if (failed) CHECK(*writable == injected);
    }
    CHECK(failed == faults.tripped());
    if (failed) { // every later operation fails too
      CHECK_FALSE(a.try_send(frame_of(20, 9), ec));
      CHECK(ec == injected);
    }
    if (!faults.tripped()) break;
  }
  CHECK(n == 4); // 4 counted operations: 2 sends, 1 receive, 1 wait
}

TEST_CASE("memory_transport: use_future completions come from the transport's executor, not a system thread") {
  asio::io_context io;
  auto [a, b] = make_memory_transport_pair(io);
  std::error_code ec;
  REQUIRE(a.try_send(frame_of(40, 5), ec));
  std::future<frame_batch> batch = b.async_receive(asio::use_future);
  std::future<void> writable = a.async_wait_writable(asio::use_future);
  CHECK(batch.wait_for(200ms) == std::future_status::timeout);
  CHECK(writable.wait_for(0s) == std::future_status::timeout);
  io.run_for(1s);
  REQUIRE(batch.wait_for(0s) == std::future_status::ready);
  CHECK(batch.get().size() == 1);
  REQUIRE(writable.wait_for(0s) == std::future_status::ready);
  CHECK_NOTHROW(writable.get());
}

TEST_CASE("memory_transport: use_future with the io_context on another thread") {
  asio::io_context io;
  auto work = asio::make_work_guard(io);
  auto [a, b] = make_memory_transport_pair(io);
  std::thread runner([&] { io.run(); });
  std::error_code ec;
  REQUIRE(a.try_send(frame_of(40, 5), ec));
  std::future<frame_batch> batch = b.async_receive(asio::use_future);
  REQUIRE(batch.wait_for(5s) == std::future_status::ready);
  const frame_batch got = batch.get(); // b is idle now: its views are ours to read
  REQUIRE(got.size() == 1);
  CHECK(bytes(got[0].begin(), got[0].end()) == frame_of(40, 5));
  std::future<void> writable = a.async_wait_writable(asio::use_future);
  REQUIRE(writable.wait_for(5s) == std::future_status::ready);
  writable.get();
  a.close();
  std::future<frame_batch> closed = b.async_receive(asio::use_future);
  REQUIRE(closed.wait_for(5s) == std::future_status::ready);
  // Joined first: the runner releases the promise's exception through
  // libstdc++'s uninstrumented reference count, which TSan cannot see.
  work.reset();
  runner.join();
  try {
    closed.get();
    FAIL("no error");
  } catch (const std::system_error& e) {
    CHECK(e.code() == errc::connection_closed);
  }
}

#ifdef ASIO_HAS_CO_AWAIT
TEST_CASE("memory_transport: use_awaitable, echo between two coroutines") {
  asio::io_context io;
  auto [a, b] = make_memory_transport_pair(io);
  int echoed = 0;
  asio::co_spawn(
      io,
      [&b = b]() -> asio::awaitable<void> { // echo server
        for (;;) {
          frame_batch batch = co_await b.async_receive(asio::use_awaitable);
          for (frame f : batch) {
            std::error_code ec;
            while (!b.try_send(f, ec)) co_await b.async_wait_writable(asio::use_awaitable);
          }
        }
      },
      asio::detached);
  asio::co_spawn(
      io,
      [&a = a, &echoed]() -> asio::awaitable<void> {
        for (int i = 0; i < 100; ++i) {
          std::error_code ec;
          const bytes f = frame_of(14 + std::size_t(i), i);
          while (!a.try_send(f, ec)) co_await a.async_wait_writable(asio::use_awaitable);
          frame_batch batch = co_await a.async_receive(asio::use_awaitable);
          if (batch.size() == 1 && bytes(batch[0].begin(), batch[0].end()) == f) ++echoed;
        }
        a.close();
      },
      asio::detached);
  REQUIRE(run_until(io, [&] { return !a.is_open(); }));
  io.run_for(1s); // let the server see connection_closed and end
  CHECK(echoed == 100);
}
#endif

TEST_CASE("memory_transport: one thread per end, with backpressure (TSan)") {
  asio::io_context io_a, io_b;
  memory_transport_options options;
  options.queue_frames = 8;
  auto [a, b] = make_memory_transport_pair(asio::any_io_executor(io_a.get_executor()), options,
                                           asio::any_io_executor(io_b.get_executor()), options);
  constexpr int total = 5000;
  std::size_t received_frames = 0, received_bytes = 0;
  std::error_code receiver_error;
  std::function<void()> receive = [&] {
    b.async_receive([&](std::error_code ec, frame_batch batch) {
      if (ec) return void(receiver_error = ec);
      received_frames += batch.size();
      for (frame f : batch) received_bytes += f.size();
      receive();
    });
  };
  int sent = 0;
  std::function<void()> send = [&] {
    std::error_code ec;
    while (sent < total && a.try_send(frame_of(14 + std::size_t(sent % 100), sent), ec)) ++sent;
    if (sent == total) return a.close();
    a.async_wait_writable([&](std::error_code e) {
      if (!e) send();
    });
  };
  asio::post(io_b, receive);
  asio::post(io_a, send);
  std::thread receiver([&] { io_b.run_for(20s); });
  std::thread sender([&] { io_a.run_for(20s); });
  sender.join();
  receiver.join();
  CHECK(sent == total);
  CHECK(receiver_error == errc::connection_closed);
  CHECK(received_frames == std::size_t(total));
  std::size_t expected_bytes = 0;
  for (int i = 0; i < total; ++i) expected_bytes += 14 + std::size_t(i % 100);
  CHECK(received_bytes == expected_bytes);
}

TEST_CASE("memory_transport: per-operation cancellation through the token's slot") {
  asio::io_context io;
  auto [a, b] = make_memory_transport_pair(io, memory_transport_options{1, 16, nullptr});
  asio::cancellation_signal cancel_receive, cancel_writable;
  std::optional<std::error_code> received, writable;
  a.async_receive(asio::bind_cancellation_slot(cancel_receive.slot(), [&](std::error_code ec, frame_batch) {
    received = ec;
  }));
  const auto f = frame_of(60, 1);
  std::error_code ec;
  REQUIRE(a.try_send(f, ec));
  a.async_wait_writable(asio::bind_cancellation_slot(cancel_writable.slot(), [&](std::error_code e) { writable = e; }));
  io.poll();
  CHECK_FALSE(received.has_value());
  CHECK_FALSE(writable.has_value());
  cancel_receive.emit(asio::cancellation_type::terminal);
  cancel_writable.emit(asio::cancellation_type::partial);
  io.poll();
  REQUIRE(received.has_value());
  REQUIRE(writable.has_value());
  CHECK(*received == asio::error::operation_aborted);
  CHECK(*writable == asio::error::operation_aborted);
  // Only those two ended: the transport works on.
  std::optional<std::error_code> got;
  b.async_receive([&](std::error_code e, frame_batch batch) {
    got = e;
    CHECK(batch.size() == 1);
  });
  io.restart();
  io.poll();
  REQUIRE(got.has_value());
  CHECK_FALSE(*got);
  CHECK(a.is_open());
}
