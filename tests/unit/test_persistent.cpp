// basic_persistent_transport over memory transports, and the stream session
// that builds on it: waiting for the first connection, replacement, loss
// detection, ended states, administrative link, batch views that outlive
// their connection, per-operation cancellation, tokens.
#include <netpasst/transport/persistent.hpp>

#include <netpasst/session/stream.hpp>
#include <netpasst/testing/memory_transport.hpp>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/experimental/deferred.hpp>
#include <asio/io_context.hpp>
#include <asio/use_future.hpp>
#include <catch2/catch.hpp>

#include "../common/test_support.hpp"

#include <sys/socket.h>

#include <optional>
#include <vector>

using netpasst::errc;
using netpasst::frame_batch;
using netpasst::testing::memory_transport;
using netpasst::test::run_until;
using persistent = netpasst::basic_persistent_transport<memory_transport>;

static_assert(netpasst::FrameTransport<persistent>);
static_assert(netpasst::BackendSession<netpasst::stream_session>);

namespace {
std::vector<std::byte> frame_of(std::uint8_t tag) { return std::vector<std::byte>(60, std::byte{tag}); }

struct fixture {
  asio::io_context io;
  persistent p{io};
  std::optional<memory_transport> peer;
  void connect() {
    auto [ours, theirs] = netpasst::testing::make_memory_transport_pair(io);
    p.attach(std::move(ours));
    peer.emplace(std::move(theirs));
  }
  void peer_sends(std::uint8_t tag) {
    std::error_code ec;
    const auto f = frame_of(tag);
    REQUIRE(peer->try_send(f, ec));
  }
};
} // namespace

TEST_CASE("persistent: operations wait for the first connection, then go through it") {
  fixture x;
  std::error_code ec;
  const auto f = frame_of(1);
  CHECK_FALSE(x.p.try_send(f, ec));
  CHECK(ec == errc::would_block);
  CHECK(x.p.is_open());
  std::optional<std::error_code> received, writable;
  std::vector<std::byte> got;
  x.p.async_receive([&](std::error_code e, frame_batch b) {
    received = e;
    if (!e) got.assign(b[0].begin(), b[0].end());
  });
  x.p.async_wait_writable([&](std::error_code e) { writable = e; });
  x.io.poll();
  CHECK_FALSE(received.has_value());
  CHECK_FALSE(writable.has_value());
  x.connect();
  x.peer_sends(5);
  REQUIRE(run_until(x.io, [&] { return received && writable; }));
  CHECK_FALSE(*received);
  CHECK_FALSE(*writable);
  CHECK(got == frame_of(5));
  CHECK(x.p.try_send(f, ec));
  CHECK(x.p.counters().connections == 1);
}

TEST_CASE("persistent: a lost connection is reported once, the operation that saw it waits for the next") {
  fixture x;
  x.connect();
  std::optional<std::error_code> lost, received;
  x.p.async_wait_lost([&](std::error_code e) { lost = e; });
  x.p.async_receive([&](std::error_code e, frame_batch) { received = e; });
  x.peer->close();
  REQUIRE(run_until(x.io, [&] { return lost.has_value(); }));
  CHECK(*lost == errc::connection_closed);
  CHECK_FALSE(x.p.attached());
  CHECK_FALSE(received.has_value());  // waits for the next connection
  CHECK(x.p.counters().losses == 1);
  x.connect();
  x.peer_sends(2);
  REQUIRE(run_until(x.io, [&] { return received.has_value(); }));
  CHECK_FALSE(*received);
  // A loss seen by try_send: the frame is not taken, would_block.
  x.peer->close();
  std::error_code ec;
  const auto f = frame_of(1);
  CHECK_FALSE(x.p.try_send(f, ec));
  CHECK(ec == errc::would_block);
  CHECK_FALSE(x.p.attached());
}

TEST_CASE("persistent: detach with a reason ends operations with it until the next attach") {
  fixture x;
  std::optional<std::error_code> received, lost;
  x.connect();
  x.p.async_wait_lost([&](std::error_code e) { lost = e; });
  x.p.async_receive([&](std::error_code e, frame_batch) { received = e; });
  x.p.detach(errc::stopped);
  REQUIRE(run_until(x.io, [&] { return received && lost; }));
  CHECK(*received == errc::stopped);
  CHECK(*lost == asio::error::operation_aborted);
  CHECK_FALSE(x.p.is_open());
  std::error_code ec;
  const auto f = frame_of(1);
  CHECK_FALSE(x.p.try_send(f, ec));
  CHECK(ec == errc::stopped);
  x.connect();
  CHECK(x.p.is_open());
  CHECK(x.p.try_send(f, ec));
}

TEST_CASE("persistent: a batch's views stay valid after its connection is replaced") {
  fixture x;
  x.connect();
  x.peer_sends(7);
  std::optional<frame_batch> batch;
  x.p.async_receive([&](std::error_code e, frame_batch b) {
    REQUIRE_FALSE(e);
    batch = b;
  });
  REQUIRE(run_until(x.io, [&] { return batch.has_value(); }));
  x.p.detach();
  x.connect();
  x.p.detach();
  x.connect();
  REQUIRE(batch->size() == 1);
  CHECK(std::vector<std::byte>((*batch)[0].begin(), (*batch)[0].end()) == frame_of(7));
}

TEST_CASE("persistent: link down drops frames both ways and counts them") {
  fixture x;
  x.connect();
  x.p.set_link(false);
  std::error_code ec;
  const auto f = frame_of(1);
  CHECK(x.p.try_send(f, ec));
  std::optional<std::error_code> received;
  x.p.async_receive([&](std::error_code e, frame_batch) { received = e; });
  x.peer_sends(3);
  REQUIRE(run_until(x.io, [&] { return x.p.counters().frames_dropped == 2; }));
  CHECK_FALSE(received.has_value());
  CHECK(x.peer->queued_frames() == 0);
  x.p.set_link(true);
  x.peer_sends(4);
  REQUIRE(run_until(x.io, [&] { return received.has_value(); }));
}

TEST_CASE("persistent: cancellation through the slot, and cancel(), end only pending operations") {
  fixture x;
  asio::cancellation_signal cancel;
  std::optional<std::error_code> parked, lost;
  x.p.async_receive(asio::bind_cancellation_slot(cancel.slot(), [&](std::error_code e, frame_batch) { parked = e; }));
  x.io.poll();
  cancel.emit(asio::cancellation_type::terminal);
  REQUIRE(run_until(x.io, [&] { return parked.has_value(); }));
  CHECK(*parked == asio::error::operation_aborted);

  x.connect();
  asio::cancellation_signal cancel_lost;
  x.p.async_wait_lost(asio::bind_cancellation_slot(cancel_lost.slot(), [&](std::error_code e) { lost = e; }));
  std::optional<std::error_code> forwarded;
  x.p.async_receive([&](std::error_code e, frame_batch) { forwarded = e; });
  x.io.restart();
  x.io.poll();
  x.p.cancel();  // ends the receive, not the loss watch
  REQUIRE(run_until(x.io, [&] { return forwarded.has_value(); }));
  CHECK(*forwarded == asio::error::operation_aborted);
  CHECK_FALSE(lost.has_value());
  cancel_lost.emit(asio::cancellation_type::total);
  REQUIRE(run_until(x.io, [&] { return lost.has_value(); }));
  CHECK(*lost == asio::error::operation_aborted);
  CHECK(x.p.attached());
}

TEST_CASE("persistent: a second receive is refused, tokens use_future and deferred") {
  fixture x;
  x.connect();
  std::optional<std::error_code> first, second;
  x.p.async_receive([&](std::error_code e, frame_batch) { first = e; });
  x.p.async_receive([&](std::error_code e, frame_batch) { second = e; });
  REQUIRE(run_until(x.io, [&] { return second.has_value(); }));
  CHECK(*second == errc::operation_in_progress);
  x.peer_sends(1);
  REQUIRE(run_until(x.io, [&] { return first.has_value(); }));
  CHECK_FALSE(*first);

  auto deferred = x.p.async_wait_writable(asio::experimental::deferred);
  std::optional<std::error_code> writable;
  std::move(deferred)([&](std::error_code e) { writable = e; });
  REQUIRE(run_until(x.io, [&] { return writable.has_value(); }));
  CHECK_FALSE(*writable);
}

TEST_CASE("stream_session: attach makes a stream transport, a bad socket fails the attach") {
  asio::io_context io;
  netpasst::stream_session session(io);
  int pair[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
  netpasst::unique_fd passt_end(pair[1]);
  std::optional<std::error_code> attached;
  session.async_attach(netpasst::unique_fd(pair[0]), [&](std::error_code e) { attached = e; });
  CHECK_FALSE(attached.has_value());
  REQUIRE(run_until(io, [&] { return attached.has_value(); }));
  CHECK_FALSE(*attached);
  CHECK(session.attached());
  CHECK(session.connection()->native_handle() >= 0);

  attached.reset();
  int dgram[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, dgram) == 0);
  netpasst::unique_fd other(dgram[1]);
  session.async_attach(netpasst::unique_fd(dgram[0]), [&](std::error_code e) { attached = e; });
  REQUIRE(run_until(io, [&] { return attached.has_value(); }));
  CHECK(*attached == std::errc::wrong_protocol_type);
  attached.reset();
  session.async_attach(netpasst::unique_fd(), [&](std::error_code e) { attached = e; });
  REQUIRE(run_until(io, [&] { return attached.has_value(); }));
  CHECK(*attached == std::errc::bad_file_descriptor);
}
