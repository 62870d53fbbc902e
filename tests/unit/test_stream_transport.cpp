// Unit tests of netpasst/transport/stream.hpp against a raw socketpair end as
// the peer (passt's side of the wire).
// GCC 12 under ASan (-O1) reports -Wmaybe-uninitialized inside Asio's
// use_future handler that these tests instantiate, and -Wstringop-overflow
// where a test shortens a vector it filled (it cannot see the size): false
// positives.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#endif

// Test seam (see impl/stream.hpp): count the transport's sendmsg/recv calls.
// Declared generically so that the header under test is still included first.
namespace seam {
template <class... A> long sendmsg(A... a);
template <class... A> int sendmmsg(A... a);
template <class... A> long recv(A... a);
template <class... A> int setsockopt(A... a);
template <class... A> int getsockopt(A... a);
} // namespace seam
#define NETPASST_STREAM_SYSCALL(name) seam::name
#include <netpasst/transport/stream.hpp>

#include <netpasst/concepts.hpp>

#include <asio/bind_allocator.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/bind_executor.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/experimental/deferred.hpp>
#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>
#include <asio/system_executor.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>
#include <catch2/catch.hpp>

#include "../common/test_support.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <variant>
#include <cstring>
#include <functional>
#include <future>
#include <thread>
#include <vector>

namespace seam {
std::atomic<long> sendmsg_calls{0}, recv_calls{0};
// Set: the next sendmmsg of two or more writes behaves as no Linux kernel
// does, taking half of the first and then all of the second.
bool take_half_then_go_on = false;
template <class... A> long sendmsg(A... a) {
  ++sendmsg_calls;
  return ::sendmsg(a...);
}
template <class... A> int sendmmsg(A... a) {
  ++sendmsg_calls; // one system call that writes, like sendmsg
  return ::sendmmsg(a...);
}
template <> int sendmmsg(int fd, mmsghdr* writes, unsigned count, int flags) {
  ++sendmsg_calls;
  if (!take_half_then_go_on || count < 2) return ::sendmmsg(fd, writes, count, flags);
  take_half_then_go_on = false;
  std::vector<char> half;
  for (std::size_t i = 0; i < writes[0].msg_hdr.msg_iovlen; ++i) {
    const auto& part = writes[0].msg_hdr.msg_iov[i];
    half.insert(half.end(), static_cast<char*>(part.iov_base), static_cast<char*>(part.iov_base) + part.iov_len);
  }
  half.resize(half.size() / 2);
  writes[0].msg_len = unsigned(::send(fd, half.data(), half.size(), flags));
  return ::sendmmsg(fd, writes + 1, 1, flags) == 1 ? 2 : 1;
}
template <class... A> int setsockopt(A... a) { return ::setsockopt(a...); }
template <class... A> int getsockopt(A... a) { return ::getsockopt(a...); }
template <class... A> long recv(A... a) {
  ++recv_calls;
  return ::recv(a...);
}
} // namespace seam

using namespace std::chrono_literals;
using netpasst::errc;
using netpasst::frame;
using netpasst::frame_batch;
using netpasst::stream_transport;
using netpasst::unique_fd;
using bytes = std::vector<std::byte>;

// Both ways: the transport models FrameTransport; look-alikes missing a piece do not.
static_assert(netpasst::FrameTransport<stream_transport>);
static_assert(netpasst::FrameTransport<netpasst::basic_stream_transport<asio::io_context::executor_type>>);
static_assert(!netpasst::FrameTransport<int>);
struct no_receive {
  using executor_type = asio::any_io_executor;
  executor_type get_executor();
  bool try_send(frame, std::error_code&);
  std::size_t try_send(std::span<const frame>, std::error_code&);
  template <class T> void async_wait_writable(T&&);
  bool is_open() const;
  void close();
  netpasst::transport_counters counters() const;
};
static_assert(!netpasst::FrameTransport<no_receive>);
static_assert(!std::is_copy_constructible_v<stream_transport>);
static_assert(std::is_nothrow_move_constructible_v<stream_transport>);

namespace {

std::pair<unique_fd, unique_fd> socket_pair() {
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
  return {unique_fd(fds[0]), unique_fd(fds[1])};
}

bytes make_frame(std::size_t size, unsigned seed) {
  bytes f(size);
  for (std::size_t i = 0; i < size; ++i) f[i] = std::byte((i * 7 + seed * 31 + (i >> 8)) & 0xff);
  if (size >= 4) std::memcpy(f.data(), &seed, 4); // frames carry their sequence number
  return f;
}

void append_record(bytes& out, std::span<const std::byte> f, std::uint32_t length) {
  const std::byte header[4] = {std::byte(length >> 24), std::byte(length >> 16), std::byte(length >> 8),
                               std::byte(length)};
  out.insert(out.end(), header, header + 4);
  out.insert(out.end(), f.begin(), f.end());
}
void append_record(bytes& out, std::span<const std::byte> f) { append_record(out, f, std::uint32_t(f.size())); }

void write_all(int fd, std::span<const std::byte> data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    REQUIRE(n > 0);
    data = data.subspan(std::size_t(n));
  }
}

// Reads framed records from the raw peer until `count` frames arrived (10 s deadline).
std::vector<bytes> read_frames(int fd, std::size_t count) {
  std::vector<bytes> frames;
  bytes pending;
  std::byte chunk[65536];
  while (frames.size() < count) {
    pollfd p{fd, POLLIN, 0};
    REQUIRE(::poll(&p, 1, 10000) == 1);
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    REQUIRE(n > 0);
    pending.insert(pending.end(), chunk, chunk + n);
    std::size_t at = 0;
    while (pending.size() - at >= 4) {
      const auto* h = reinterpret_cast<const unsigned char*>(pending.data() + at);
      std::size_t length = std::size_t(h[0]) << 24 | h[1] << 16 | h[2] << 8 | h[3];
      if (pending.size() - at - 4 < length) break;
      frames.emplace_back(pending.begin() + long(at + 4), pending.begin() + long(at + 4 + length));
      at += 4 + length;
    }
    pending.erase(pending.begin(), pending.begin() + long(at));
  }
  REQUIRE(pending.empty());
  return frames;
}

bool peer_has_data(int fd) {
  std::byte b;
  return ::recv(fd, &b, 1, MSG_DONTWAIT | MSG_PEEK) > 0;
}

std::size_t open_fds() { return netpasst::test::fd_count(); }

// Keeps an async_receive loop going and copies every frame out.
struct collector {
  explicit collector(stream_transport& transport) : t(transport) {}
  stream_transport& t;
  std::vector<bytes> frames;
  std::error_code error;
  std::size_t batches = 0;
  void start() {
    t.async_receive([this](std::error_code ec, frame_batch batch) {
      if (ec) return void(error = ec);
      ++batches;
      for (frame f : batch) frames.emplace_back(f.begin(), f.end());
      start();
    });
  }
};

// Runs `ctx` until `done()` (10 s deadline as a hang guard).
template <class Done> void run_until(asio::io_context& ctx, Done done) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  ctx.restart();
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    ctx.run_one_for(100ms);
    ctx.restart();
  }
  REQUIRE(done());
}

} // namespace

TEST_CASE("frames of 14, 60, 1514 and 65535 bytes round-trip through the raw peer") {
  asio::io_context ctx;
  auto [ours, theirs] = socket_pair();
  netpasst::stream_transport_config config;
  config.direct_write_bytes = GENERATE(0u, 1000u); // 1000: the two large frames skip the ring
  stream_transport t(ctx, std::move(ours), config);
  const std::size_t sizes[] = {14, 60, 1514, 65535};

  std::error_code ec;
  for (unsigned i = 0; i < 4; ++i) REQUIRE(t.try_send(make_frame(sizes[i], i), ec));
  CHECK_FALSE(ec);
  ctx.run_for(5s); // the posted flush writes all four
  CHECK(t.queued_bytes() == 0);
  auto got = read_frames(theirs.get(), 4);
  for (unsigned i = 0; i < 4; ++i) CHECK(got[i] == make_frame(sizes[i], i));
  CHECK(t.counters().frames_sent == 4);
  CHECK(t.counters().bytes_sent == 14 + 60 + 1514 + 65535);

  bytes wire;
  for (unsigned i = 0; i < 4; ++i) append_record(wire, make_frame(sizes[i], 10 + i));
  write_all(theirs.get(), wire);
  collector c(t);
  c.start();
  run_until(ctx, [&] { return c.frames.size() == 4; });
  for (unsigned i = 0; i < 4; ++i) CHECK(c.frames[i] == make_frame(sizes[i], 10 + i));
  CHECK(t.counters().frames_received == 4);
  CHECK(t.counters().bytes_received == 14 + 60 + 1514 + 65535);
  CHECK_FALSE(c.error);
}

TEST_CASE("frames split by the peer at every byte position are reassembled") {
  asio::io_context ctx;
  auto [ours, theirs] = socket_pair();
  stream_transport t(ctx, std::move(ours));
  collector c(t);
  c.start();

  auto check_splits = [&](const std::vector<bytes>& frames) {
    bytes wire;
    for (auto& f : frames) append_record(wire, f);
    for (std::size_t split = 1; split < wire.size(); ++split) {
      c.frames.clear();
      write_all(theirs.get(), std::span(wire).first(split));
      ctx.restart();
      ctx.poll(); // the transport reads the first part before the second is written
      write_all(theirs.get(), std::span(wire).subspan(split));
      run_until(ctx, [&] { return c.frames.size() == frames.size(); });
      REQUIRE(c.frames == frames);
    }
  };
  SECTION("one frame per write") { check_splits({make_frame(1514, 1)}); }
  SECTION("several frames per write, headers split too") {
    check_splits({make_frame(14, 1), make_frame(60, 2), make_frame(100, 3), make_frame(14, 4)});
  }
  SECTION("a header split over three writes") {
    bytes wire;
    append_record(wire, make_frame(60, 5));
    for (std::size_t cut : {1, 2, 3}) {
      c.frames.clear();
      write_all(theirs.get(), std::span(wire).first(cut));
      ctx.restart();
      ctx.poll();
      write_all(theirs.get(), std::span(wire).subspan(cut, 4 - cut));
      ctx.restart();
      ctx.poll();
      CHECK(c.frames.empty());
      write_all(theirs.get(), std::span(wire).subspan(4));
      run_until(ctx, [&] { return c.frames.size() == 1; });
      CHECK(c.frames[0] == make_frame(60, 5));
    }
  }
  CHECK_FALSE(c.error);
}

TEST_CASE("frames outside 14..65535 bytes are refused, counted and never written") {
  asio::io_context ctx;
  auto [ours, theirs] = socket_pair();
  stream_transport t(ctx, std::move(ours));
  std::error_code ec;
  CHECK_FALSE(t.try_send(frame{}, ec));
  CHECK(ec == errc::frame_too_short);
  CHECK(ec == netpasst::condition::frame_refused);
  CHECK_FALSE(t.try_send(make_frame(13, 0), ec));
  CHECK(ec == errc::frame_too_short);
  CHECK_FALSE(t.try_send(make_frame(65536, 0), ec));
  CHECK(ec == errc::frame_too_long);
  CHECK_THROWS_AS(t.send(make_frame(13, 0)), std::system_error);
  CHECK(t.counters().frames_refused == 4);
  CHECK(t.counters().frames_sent == 0);
  t.flush(ec);
  ctx.run_for(100ms);
  CHECK_FALSE(peer_has_data(theirs.get()));

  // A refused frame stops the prefix of the span form, which says which one.
  const bytes good = make_frame(60, 1), bad = make_frame(13, 2);
  const frame frames[] = {good, good, bad, good};
  CHECK(t.try_send(frames, ec) == 2);
  CHECK(ec == errc::frame_too_short);
  CHECK(t.counters().frames_refused == 5);

  // Still usable.
  CHECK(t.is_open());
  t.send(good);
  auto got = read_frames(theirs.get(), 3);
  CHECK(got == std::vector<bytes>(3, good));
}

TEST_CASE("a peer length outside 14..65535 ends the connection with bad_frame_length") {
  const std::uint32_t length = GENERATE(0u, 13u, 65536u, 0xffffffffu);
  asio::io_context ctx;
  auto [ours, theirs] = socket_pair();
  stream_transport t(ctx, std::move(ours));
  bytes wire;
  append_record(wire, make_frame(60, 1)); // frames before the bad header are still delivered
  append_record(wire, make_frame(14, 2), length);
  write_all(theirs.get(), wire);
  collector c(t);
  c.start();
  run_until(ctx, [&] { return bool(c.error); });
  CHECK(c.error == errc::bad_frame_length);
  CHECK(c.error == netpasst::condition::connection_lost);
  REQUIRE(c.frames.size() == 1);
  CHECK(c.frames[0] == make_frame(60, 1));
  CHECK_FALSE(t.is_open());
  CHECK(t.native_handle() == -1);
  std::error_code ec;
  CHECK_FALSE(t.try_send(make_frame(60, 3), ec));
  CHECK(ec == errc::bad_frame_length);
  CHECK(t.receive(ec).empty());
  CHECK(ec == errc::bad_frame_length);
  std::byte b; // the transport closed its end: the peer sees EOF
  CHECK(::recv(theirs.get(), &b, 1, 0) == 0);
}

TEST_CASE("peer EOF ends receives with connection_closed after the whole frames") {
  asio::io_context ctx;
  auto [ours, theirs] = socket_pair();
  stream_transport t(ctx, std::move(ours));
  bytes wire;
  append_record(wire, make_frame(60, 1));
  append_record(wire, make_frame(60, 2));
  wire.resize(wire.size() - 10); // the second record is cut short
  write_all(theirs.get(), wire);
  theirs.reset();
  std::error_code ec;
  frame_batch batch = t.receive(ec);
  REQUIRE(batch.size() == 1);
  CHECK(bytes(batch[0].begin(), batch[0].end()) == make_frame(60, 1));
  CHECK(t.receive(ec).empty());
  CHECK(ec == errc::connection_closed);
  CHECK_FALSE(t.is_open());
  CHECK_THROWS_AS(t.receive(), std::system_error);
  CHECK_FALSE(t.try_send(make_frame(60, 1), ec));
  CHECK(ec == errc::connection_closed);
}

TEST_CASE("sending to a closed peer reports connection_closed, without SIGPIPE") {
  asio::io_context ctx;
  auto [ours, theirs] = socket_pair();
  stream_transport t(ctx, std::move(ours));
  theirs.reset();
  std::error_code ec;
  t.send(make_frame(60, 1), ec);
  CHECK(ec == errc::connection_closed);
  CHECK_FALSE(t.is_open());
}

TEST_CASE("a direct write whose ring flush fails reports the error, and the frame is not counted") {
  asio::io_context ctx;
  auto [ours, theirs] = socket_pair();
  netpasst::stream_transport_config config;
  config.direct_write_bytes = 1000;
  config.write_mode = GENERATE(netpasst::stream_write_mode::every_passt,
                               netpasst::stream_write_mode::any_split_passt_2024_07);
  stream_transport t(ctx, std::move(ours), config);
  std::error_code ec;
  REQUIRE(t.try_send(make_frame(60, 1), ec)); // queued; its flush is posted, not run
  REQUIRE(t.queued_bytes() == 64);
  theirs.reset();
  CHECK_FALSE(t.try_send(make_frame(2000, 2), ec)); // flushing the ring first fails with EPIPE
  CHECK(ec == errc::connection_closed);
  CHECK_FALSE(t.is_open());
  CHECK(t.queued_bytes() == 0);
  CHECK(t.counters().frames_sent == 1);
}

TEST_CASE("a write taken in part with a later one taken after it breaks the stream: protocol_error, the transport closes") {
  // No Linux kernel does this with the writes every_passt plans (each fits in
  // one socket buffer); the transport must still not go on as if the stream
  // were intact.
  asio::io_context ctx;
  auto [ours, theirs] = socket_pair();
  stream_transport t(ctx, std::move(ours));
  std::error_code ec;
  for (std::uint8_t i = 0; i < 3; ++i) REQUIRE(t.try_send(make_frame(30000, i), ec)); // three writes
  seam::take_half_then_go_on = true;
  t.flush(ec);
  seam::take_half_then_go_on = false;
  CHECK(ec == errc::protocol_error);
  CHECK(ec == netpasst::condition::connection_lost);
  CHECK_FALSE(t.is_open());
}

TEST_CASE("backpressure: would_block when full, writable again once the peer drains, nothing lost") {
  asio::io_context ctx;
  auto [ours, theirs] = socket_pair();
  netpasst::stream_transport_config config;
  config.send_queue_bytes = 256 << 10;
  config.socket_buffer_bytes = 64 << 10;
  config.direct_write_bytes = GENERATE(0u, 1000u); // direct writes, partial ones included
  stream_transport t(ctx, std::move(ours), config);
  const std::size_t total = 3000, size = 1514;

  // Fill the socket and then the ring (the posted flush runs in poll()).
  std::size_t next = 0;
  std::error_code ec;
  while (next < total && t.try_send(make_frame(size, unsigned(next)), ec))
    if (++next % 16 == 0) ctx.poll();
  REQUIRE(ec == errc::would_block);
  REQUIRE(next < total);
  CHECK(t.queued_bytes() > config.send_queue_bytes / 2);

  bool writable = false;
  t.async_wait_writable([&](std::error_code e) {
    REQUIRE_FALSE(e);
    writable = true;
  });
  ctx.poll();
  ctx.poll();
  CHECK_FALSE(writable); // the peer reads nothing yet

  std::vector<bytes> got;
  bytes pending;
  std::vector<std::byte> chunk(64 << 10);
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (got.size() < total && std::chrono::steady_clock::now() < deadline) {
    ssize_t n = ::recv(theirs.get(), chunk.data(), chunk.size(), MSG_DONTWAIT);
    if (n > 0) pending.insert(pending.end(), chunk.begin(), chunk.begin() + n);
    std::size_t at = 0;
    while (pending.size() - at >= 4) {
      const auto* h = reinterpret_cast<const unsigned char*>(pending.data() + at);
      std::size_t length = std::size_t(h[0]) << 24 | h[1] << 16 | h[2] << 8 | h[3];
      if (pending.size() - at - 4 < length) break;
      got.emplace_back(pending.begin() + long(at + 4), pending.begin() + long(at + 4 + length));
      at += 4 + length;
    }
    pending.erase(pending.begin(), pending.begin() + long(at));
    ctx.restart();
    ctx.poll();
    if (writable && next < total) {
      writable = false;
      while (next < total && t.try_send(make_frame(size, unsigned(next)), ec)) ++next;
      if (next < total) {
        REQUIRE(ec == errc::would_block);
        t.async_wait_writable([&](std::error_code e) {
          REQUIRE_FALSE(e);
          writable = true;
        });
      }
    }
  }
  REQUIRE(got.size() == total);
  for (std::size_t i = 0; i < total; ++i) REQUIRE(got[i] == make_frame(size, unsigned(i)));
  CHECK(t.counters().frames_sent == total);
}

TEST_CASE("many frames go out per sendmsg and come in per recv") {
  asio::io_context ctx;
  auto [ours, theirs] = socket_pair();
  stream_transport t(ctx, std::move(ours));
  const bytes f = make_frame(60, 1);
  std::error_code ec;
  const long sends_before = seam::sendmsg_calls;
  for (int i = 0; i < 1000; ++i) REQUIRE(t.try_send(f, ec));
  CHECK(seam::sendmsg_calls == sends_before); // nothing written yet: one flush is posted
  ctx.run_for(1s);
  CHECK(seam::sendmsg_calls - sends_before == 1);
  CHECK(read_frames(theirs.get(), 1000).size() == 1000);

  bytes wire;
  for (int i = 0; i < 1000; ++i) append_record(wire, f);
  write_all(theirs.get(), wire);
  const long recvs_before = seam::recv_calls;
  collector c(t);
  c.start();
  run_until(ctx, [&] { return c.frames.size() == 1000; });
  CHECK(c.batches == 1);
  CHECK(seam::recv_calls - recvs_before <= 2); // one read, maybe one EAGAIN when re-armed

  SECTION("the queue is written at once when it passes the flush threshold") {
    const long before = seam::sendmsg_calls;
    const bytes big = make_frame(1514, 2);
    std::size_t n = 0;
    while (seam::sendmsg_calls == before) {
      REQUIRE(t.try_send(big, ec));
      ++n;
    }
    CHECK(n * (4 + 1514) >= t.config().flush_threshold_bytes);
    CHECK(n * (4 + 1514) < t.config().flush_threshold_bytes + 4 + 1514);
  }
}

TEST_CASE("close() and cancel() complete pending operations") {
  asio::io_context ctx;
  auto [ours, theirs] = socket_pair();
  netpasst::stream_transport_config config;
  config.send_queue_bytes = 256 << 10;
  config.socket_buffer_bytes = 64 << 10;
  stream_transport t(ctx, std::move(ours), config);
  std::error_code ec;
  for (int i = 1; t.try_send(make_frame(1514, 0), ec); ++i)
    if (i % 16 == 0) ctx.poll();
  REQUIRE(ec == errc::would_block);

  std::error_code receive_error, writable_error;
  int completions = 0;
  auto start = [&] {
    t.async_receive([&](std::error_code e, frame_batch b) {
      receive_error = e;
      CHECK(b.empty());
      ++completions;
    });
    t.async_wait_writable([&](std::error_code e) {
      writable_error = e;
      ++completions;
    });
  };
  start();
  ctx.poll();
  CHECK(completions == 0);

  SECTION("cancel: operation_aborted, the transport stays open") {
    t.cancel();
    run_until(ctx, [&] { return completions == 2; });
    CHECK(receive_error == asio::error::operation_aborted);
    CHECK(writable_error == asio::error::operation_aborted);
    CHECK(t.is_open());
    bytes wire;
    append_record(wire, make_frame(14, 9));
    write_all(theirs.get(), wire);
    CHECK(t.receive().size() == 1);
  }
  SECTION("close: transport_closed, and for every later operation") {
    t.close();
    run_until(ctx, [&] { return completions == 2; });
    CHECK(receive_error == errc::transport_closed);
    CHECK(writable_error == errc::transport_closed);
    CHECK_FALSE(t.is_open());
    CHECK(t.queued_bytes() == 0);
    start();
    run_until(ctx, [&] { return completions == 4; });
    CHECK(receive_error == errc::transport_closed);
    CHECK(writable_error == errc::transport_closed);
    CHECK_FALSE(t.try_send(make_frame(60, 0), ec));
    CHECK(ec == errc::transport_closed);
    t.close(); // idempotent
  }
  SECTION("destruction: pending handlers still run, with transport_closed") {
    { stream_transport gone = std::move(t); }
    run_until(ctx, [&] { return completions == 2; });
    CHECK(receive_error == errc::transport_closed);
    CHECK(writable_error == errc::transport_closed);
  }
}

TEST_CASE("async_receive works with callbacks, use_future and use_awaitable") {
  asio::io_context ctx;
  auto [ours, theirs] = socket_pair();
  stream_transport t(ctx, std::move(ours));
  bytes wire;
  for (unsigned i = 0; i < 3; ++i) append_record(wire, make_frame(100, i));

  SECTION("use_future") {
    std::future<frame_batch> future = t.async_receive(asio::use_future);
    std::thread runner([&] { ctx.run_for(10s); });
    write_all(theirs.get(), wire);
    REQUIRE(future.wait_for(10s) == std::future_status::ready);
    frame_batch batch = future.get();
    CHECK(batch.size() == 3);
    CHECK(bytes(batch[2].begin(), batch[2].end()) == make_frame(100, 2));
    runner.join(); // one thread at a time uses the transport
    auto failed = t.async_receive(asio::use_future);
    ctx.restart();
    std::thread second_runner([&] { ctx.run_for(10s); });
    theirs.reset();
    REQUIRE(failed.wait_for(10s) == std::future_status::ready);
    // Joined first: the runner releases the promise's exception through
    // libstdc++'s uninstrumented reference count, which TSan cannot see.
    second_runner.join();
    try {
      failed.get();
      FAIL("no exception");
    } catch (const std::system_error& e) {
      CHECK(e.code() == errc::connection_closed);
    }
  }
#if defined(ASIO_HAS_CO_AWAIT)
  SECTION("use_awaitable") {
    std::vector<bytes> got;
    std::error_code error;
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
          try {
            for (;;)
              for (frame f : co_await t.async_receive(asio::use_awaitable)) got.emplace_back(f.begin(), f.end());
          } catch (const std::system_error& e) {
            error = e.code();
          }
        },
        asio::detached);
    write_all(theirs.get(), wire);
    run_until(ctx, [&] { return got.size() == 3; });
    theirs.reset();
    run_until(ctx, [&] { return bool(error); });
    CHECK(got[1] == make_frame(100, 1));
    CHECK(error == errc::connection_closed);
  }
#endif
  SECTION("callback, never invoked inside the initiating call") {
    write_all(theirs.get(), wire);
    bool done = false;
    t.async_receive([&](std::error_code ec, frame_batch b) {
      CHECK_FALSE(ec);
      CHECK(b.size() == 3);
      done = true;
    });
    CHECK_FALSE(done); // data was ready, yet completion is posted
    run_until(ctx, [&] { return done; });
  }
}

TEST_CASE("the transport owns its fd: closed on destruction, nothing leaks") {
  const std::size_t before = open_fds();
  {
    asio::io_context ctx;
    for (int i = 0; i < 20; ++i) {
      auto [ours, theirs] = socket_pair();
      const int fd = ours.get();
      {
        stream_transport t(ctx, std::move(ours));
        CHECK(t.native_handle() == fd);
        CHECK((::fcntl(fd, F_GETFL) & O_NONBLOCK) != 0);
        CHECK(::fcntl(fd, F_GETFD) & FD_CLOEXEC);
        std::error_code ec;
        t.try_send(make_frame(60, 0), ec);
        t.async_receive([](std::error_code, frame_batch) {});
      }
      CHECK(::fcntl(fd, F_GETFD) == -1);
      std::byte b;
      CHECK(::recv(theirs.get(), &b, 1, MSG_DONTWAIT) >= 0); // data then EOF, never EAGAIN
    }
    ctx.run_for(1s);
  }
  CHECK(open_fds() == before);

  // A bad fd is refused, and the fd given is closed.
  {
    asio::io_context ctx;
    CHECK_THROWS_AS(stream_transport(ctx, unique_fd()), std::system_error);
    int dgram[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, dgram) == 0);
    ::close(dgram[1]);
    CHECK_THROWS_AS(stream_transport(ctx, unique_fd(dgram[0])), std::system_error);
    CHECK(::fcntl(dgram[0], F_GETFD) == -1);
  }
  CHECK(open_fds() == before);
}

TEST_CASE("blocking send and receive work without a running io_context, and a transport moves") {
  asio::io_context ctx;
  auto [a_fd, b_fd] = socket_pair();
  stream_transport a(ctx, std::move(a_fd));
  stream_transport b(ctx.get_executor(), std::move(b_fd));
  const bytes big = make_frame(65535, 7);
  std::thread sender([&] {
    for (int i = 0; i < 100; ++i) a.send(big); // more than the socket holds: send waits
  });
  std::size_t received = 0;
  while (received < 100) {
    for (frame f : b.receive()) {
      CHECK(f.size() == big.size());
      CHECK(std::memcmp(f.data(), big.data(), f.size()) == 0);
      ++received;
    }
  }
  sender.join();
  stream_transport moved = std::move(a);
  CHECK(moved.is_open());
  CHECK_FALSE(a.is_open());
  moved.send(make_frame(14, 1));
  CHECK(b.receive().size() == 1);
  b = std::move(moved); // b's own connection is closed first
  CHECK(b.counters().frames_sent == 101);
}

TEST_CASE("sender and receiver on different threads, each with its own io_context") {
  auto [a_fd, b_fd] = socket_pair();
  const std::size_t total = 20000;
  std::atomic<bool> ok{true};
  std::thread receiver([&, fd = std::move(b_fd)]() mutable {
    asio::io_context ctx;
    stream_transport t(ctx, std::move(fd));
    std::size_t next = 0;
    std::function<void()> loop = [&] {
      t.async_receive([&](std::error_code ec, frame_batch batch) {
        if (ec) return;
        for (frame f : batch) {
          unsigned seq;
          std::memcpy(&seq, f.data(), 4);
          if (seq != next || f.size() != 14 + seq % 1500) ok = false;
          ++next;
        }
        if (next < total) loop();
      });
    };
    loop();
    ctx.run_for(30s);
    if (next != total) ok = false;
  });
  {
    asio::io_context ctx;
    stream_transport t(ctx, std::move(a_fd));
    std::size_t next = 0;
    std::function<void()> pump = [&] {
      std::error_code ec;
      while (next < total && t.try_send(make_frame(14 + next % 1500, unsigned(next)), ec)) ++next;
      if (next < total) t.async_wait_writable([&](std::error_code e) {
        if (!e) pump();
      });
    };
    pump();
    ctx.run_for(30s);
    CHECK(next == total);
    CHECK(t.queued_bytes() == 0);
  }
  receiver.join();
  CHECK(ok);
}

// --- per-operation cancellation, associated executor and allocator -----------

namespace {

using netpasst::test::counting_allocator;

/// Fills the send ring and the socket so that async_wait_writable must wait.
void fill_until_blocked(asio::io_context& ctx, stream_transport& t) {
  std::error_code ec;
  for (int i = 1; t.try_send(make_frame(1514, 0), ec); ++i)
    if (i % 16 == 0) ctx.poll();
  REQUIRE(ec == errc::would_block);
}

} // namespace

TEST_CASE("a cancellation slot ends a pending receive or writable wait with operation_aborted, the transport stays usable") {
  const auto type = GENERATE(asio::cancellation_type::terminal, asio::cancellation_type::partial,
                             asio::cancellation_type::total);
  asio::io_context ctx;
  auto [ours, theirs] = socket_pair();
  netpasst::stream_transport_config config;
  config.send_queue_bytes = 256 << 10;
  config.socket_buffer_bytes = 128 << 10;
  stream_transport t(ctx, std::move(ours), config);

  SECTION("async_receive") {
    asio::cancellation_signal signal;
    std::optional<std::error_code> result;
    t.async_receive(asio::bind_cancellation_slot(signal.slot(), [&](std::error_code ec, frame_batch b) {
      result = ec;
      CHECK(b.empty());
    }));
    ctx.poll();
    CHECK_FALSE(result);
    signal.emit(type);
    run_until(ctx, [&] { return result.has_value(); });
    CHECK(*result == asio::error::operation_aborted);
    CHECK(t.is_open());
    // Nothing was consumed: frames written now are received whole.
    bytes wire;
    append_record(wire, make_frame(60, 1));
    append_record(wire, make_frame(70, 2));
    write_all(theirs.get(), wire);
    collector c(t);
    c.start();
    run_until(ctx, [&] { return c.frames.size() == 2; });
    CHECK(c.frames[1] == make_frame(70, 2));
  }
  SECTION("async_wait_writable") {
    fill_until_blocked(ctx, t);
    asio::cancellation_signal signal;
    std::optional<std::error_code> result;
    t.async_wait_writable(asio::bind_cancellation_slot(signal.slot(), [&](std::error_code ec) { result = ec; }));
    ctx.poll();
    CHECK_FALSE(result);
    signal.emit(type);
    run_until(ctx, [&] { return result.has_value(); });
    CHECK(*result == asio::error::operation_aborted);
    CHECK(t.is_open());
    // The queued frames are still sent, once the peer reads.
    const std::size_t queued = t.queued_bytes();
    CHECK(queued > 0);
    std::vector<std::byte> sink(1 << 20);
    std::size_t drained = 0;
    run_until(ctx, [&] {
      ssize_t n = ::recv(theirs.get(), sink.data(), sink.size(), MSG_DONTWAIT);
      if (n > 0) drained += std::size_t(n);
      return t.queued_bytes() == 0;
    });
    std::optional<std::error_code> again;
    t.async_wait_writable([&](std::error_code ec) { again = ec; });
    run_until(ctx, [&] { return again.has_value(); });
    CHECK_FALSE(*again);
  }
}

TEST_CASE("a cancellation that lands after a receive's wait completed, before the receive resumed, still ends it") {
  // On a strand run by two threads: a strand handler lets a partial frame
  // arrive, and while it still runs, the other thread completes the
  // receive's wait and queues its continuation behind it on the strand; the
  // handler then cancels, finding no wait to cancel. The receive resumes,
  // finds nothing whole, and must not wait again, or it (and whoever
  // cancelled) waits for more data that may never come.
  const bool through_slot = GENERATE(false, true);
  asio::io_context ctx;
  const auto strand = asio::make_strand(ctx);
  auto [ours, theirs] = socket_pair();
  stream_transport t(strand, std::move(ours));
  asio::cancellation_signal signal;
  std::promise<std::error_code> result;
  std::atomic<bool> sent_partial{false};
  asio::post(strand, [&] {
    t.async_receive(asio::bind_cancellation_slot(signal.slot(), [&](std::error_code ec, frame_batch) {
      result.set_value(ec);
    }));
  });
  auto work = asio::make_work_guard(ctx);
  std::thread other([&] { ctx.run(); });
  std::this_thread::sleep_for(50ms); // the receive is waiting
  asio::post(strand, [&] {
    const std::byte partial_header[2] = {};
    sent_partial = ::send(theirs.get(), partial_header, sizeof partial_header, 0) == 2;
    std::this_thread::sleep_for(200ms); // meanwhile the main thread's reactor completes the wait
    if (through_slot) signal.emit(asio::cancellation_type::terminal);
    else t.cancel();
  });
  std::thread second([&] { ctx.run(); });
  auto outcome = result.get_future();
  const bool ended = outcome.wait_for(3s) == std::future_status::ready;
  if (!ended) asio::post(strand, [&] { t.close(); }); // let the threads finish
  work.reset();
  other.join(), second.join();
  REQUIRE(sent_partial);
  REQUIRE(ended);
  CHECK(outcome.get() == asio::error::operation_aborted);
}

TEST_CASE("async_receive and async_wait_writable honour the handler's executor and allocator") {
  asio::io_context ctx, other;
  auto [ours, theirs] = socket_pair();
  stream_transport t(ctx, std::move(ours));

  SECTION("associated executor: the handler runs on its own executor") {
    bool done = false;
    t.async_receive(asio::bind_executor(other.get_executor(), [&](std::error_code ec, frame_batch b) {
      CHECK_FALSE(ec);
      CHECK(b.size() == 1);
      CHECK(other.get_executor().running_in_this_thread());
      done = true;
    }));
    bytes wire;
    append_record(wire, make_frame(60, 1));
    write_all(theirs.get(), wire);
    ctx.run_for(200ms); // the transport's side runs here...
    CHECK_FALSE(done);
    other.run_for(1s); // ...and the handler only here
    CHECK(done);
  }
  SECTION("associated allocator: a waiting receive allocates through it") {
    netpasst::test::allocation_log allocations;
    bool done = false;
    t.async_receive(asio::bind_allocator(counting_allocator<int>(&allocations), [&](std::error_code ec, frame_batch) {
      CHECK_FALSE(ec);
      done = true;
    }));
    ctx.poll(); // now waiting for the peer
    CHECK(allocations.allocations > 0);
    bytes wire;
    append_record(wire, make_frame(60, 1));
    write_all(theirs.get(), wire);
    run_until(ctx, [&] { return done; });
  }
}

TEST_CASE("with io_context's own executor type, completions posted at once allocate through the handler's allocator too") {
  // asio::any_io_executor does not carry Asio's allocator property, so a
  // completion posted through it uses the default allocator.
  using direct_transport = netpasst::basic_stream_transport<asio::io_context::executor_type>;
  asio::io_context ctx;
  auto [ours, theirs] = socket_pair();
  direct_transport t(ctx, std::move(ours));
  netpasst::test::allocation_log allocations;
  bool done = false;
  t.async_wait_writable(asio::bind_allocator(counting_allocator<int>(&allocations), [&](std::error_code ec) {
    CHECK_FALSE(ec);
    done = true;
  }));
  run_until(ctx, [&] { return done; });
  CHECK(allocations.allocations > 0);

  const std::size_t before = allocations.allocations;
  bytes wire;
  append_record(wire, make_frame(60, 1));
  write_all(theirs.get(), wire);
  done = false;
  t.async_receive(asio::bind_allocator(counting_allocator<int>(&allocations), [&](std::error_code ec, frame_batch b) {
    CHECK_FALSE(ec);
    CHECK(b.size() == 1);
    done = true;
  }));
  run_until(ctx, [&] { return done; });
  CHECK(allocations.allocations > before);
}

TEST_CASE("deferred and use_future tokens work for both operations") {
  asio::io_context ctx;
  auto [ours, theirs] = socket_pair();
  stream_transport t(ctx, std::move(ours));
  bytes wire;
  append_record(wire, make_frame(60, 3));
  write_all(theirs.get(), wire);

  auto receive = t.async_receive(asio::experimental::deferred);
  auto writable = t.async_wait_writable(asio::experimental::deferred);
  std::size_t frames = 0;
  bool writable_done = false;
  std::move(receive)([&](std::error_code ec, frame_batch b) {
    CHECK_FALSE(ec);
    frames = b.size();
  });
  std::move(writable)([&](std::error_code ec) {
    CHECK_FALSE(ec);
    writable_done = true;
  });
  run_until(ctx, [&] { return frames == 1 && writable_done; });

  std::future<void> future = t.async_wait_writable(asio::use_future);
  ctx.restart();
  ctx.run_for(1s);
  REQUIRE(future.wait_for(1s) == std::future_status::ready);
  CHECK_NOTHROW(future.get());
}

TEST_CASE("use_future: a result ready at initiation is delivered from the transport's executor, not a system thread") {
  asio::io_context ctx;
  auto [ours, theirs] = socket_pair();
  stream_transport t(ctx, std::move(ours));
  bytes wire;
  append_record(wire, make_frame(60, 1));
  write_all(theirs.get(), wire);
  std::future<frame_batch> receive = t.async_receive(asio::use_future);
  std::future<void> writable = t.async_wait_writable(asio::use_future);
  // Nothing runs ctx yet: the state behind the transport is not touched elsewhere.
  CHECK(receive.wait_for(200ms) == std::future_status::timeout);
  CHECK(writable.wait_for(0s) == std::future_status::timeout);
  ctx.run_for(1s);
  REQUIRE(receive.wait_for(0s) == std::future_status::ready);
  CHECK(receive.get().size() == 1);
  REQUIRE(writable.wait_for(0s) == std::future_status::ready);
  CHECK_NOTHROW(writable.get());
}

#if defined(ASIO_HAS_CO_AWAIT)
TEST_CASE("receive || timer with use_awaitable: the timer wins when nothing arrives, and the transport stays usable") {
  using namespace asio::experimental::awaitable_operators;
  asio::io_context ctx;
  auto [ours, theirs] = socket_pair();
  stream_transport t(ctx, std::move(ours));
  std::optional<std::size_t> winner;
  std::size_t frames_after = 0;
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        asio::steady_timer timer(ctx, 50ms);
        auto result = co_await (t.async_receive(asio::use_awaitable) || timer.async_wait(asio::use_awaitable));
        winner = result.index();
        // The cancelled receive consumed nothing; the next one gets the frame.
        bytes wire;
        append_record(wire, make_frame(60, 4));
        write_all(theirs.get(), wire);
        frames_after = (co_await t.async_receive(asio::use_awaitable)).size();
      },
      asio::detached);
  run_until(ctx, [&] { return frames_after != 0; });
  CHECK(winner == 1u); // the timer
  CHECK(frames_after == 1);

  // And the receive wins when a frame is there first.
  std::optional<std::size_t> second;
  bytes wire;
  append_record(wire, make_frame(60, 5));
  write_all(theirs.get(), wire);
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        asio::steady_timer timer(ctx, 10s);
        auto result = co_await (t.async_receive(asio::use_awaitable) || timer.async_wait(asio::use_awaitable));
        second = result.index();
      },
      asio::detached);
  run_until(ctx, [&] { return second.has_value(); });
  CHECK(second == 0u);
}
#endif
