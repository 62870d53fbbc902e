// vhost_user_transport's handshake and failure paths against a scripted
// backend on a socketpair (the frame paths are proven against real backends
// in tests/e2e/test_vhost_user.cpp).
#include <netpasst/concepts.hpp>
#include <netpasst/guest/packet.hpp>
#include <netpasst/lifecycle.hpp>
#include <netpasst/session/vhost_user.hpp>
#include <netpasst/testing/scripted_launcher.hpp>
#include <netpasst/transport/vhost_user.hpp>

#include "../common/test_support.hpp"
#include "../common/event_log.hpp"
#include "../common/scripted_vhost_backend.hpp"

#include <catch2/catch.hpp>

#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/post.hpp>
#include <asio/strand.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>

#include <atomic>
#include <cstring>
#include <fstream>
#include <functional>
#include <future>
#include <list>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
static_assert(netpasst::FrameTransport<netpasst::vhost_user_transport>);
static_assert(netpasst::BackendSession<netpasst::vhost_user_session>);
static_assert(netpasst::FrameTransport<netpasst::vhost_user_session>);
static_assert(netpasst::Lifecycle<netpasst::basic_lifecycle<netpasst::vhost_user_session>>);

using netpasst::test::scripted_backend;

struct pair_fixture {
  netpasst::unique_fd ours, theirs;
  pair_fixture() {
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
    ours.reset(fds[0]);
    theirs.reset(fds[1]);
  }
};

/// A blocking handshake against `backend` on a fresh socketpair, then
/// close; the backend keeps what it saw.
struct handshake_result {
  std::error_code error;
  netpasst::vhost_user_negotiation negotiation;
};
handshake_result handshake_then_close(scripted_backend& backend, const netpasst::vhost_user_transport_config& config) {
  pair_fixture p;
  std::thread peer([&] { backend.serve(p.theirs.get()); });
  asio::io_context io;
  netpasst::vhost_user_transport t(io, std::move(p.ours), config);
  handshake_result result;
  t.handshake(result.error);
  result.negotiation = t.negotiation();
  t.close(); // the backend sees the end of its stream
  peer.join();
  return result;
}

/// Ethernet + IPv4 + `protocol` (6 TCP, 17 UDP) with `payload` bytes, its
/// transport checksum set to `checksum`, then `padding` bytes of 0xee.
std::vector<std::byte> ipv4_frame(std::uint8_t protocol, std::size_t payload, std::uint16_t checksum,
                                  std::size_t padding = 0) {
  namespace packet = netpasst::packet;
  const packet::frame_addresses a{{{2, 0, 0, 0, 0, 1}}, {{2, 0, 0, 0, 0, 2}},
                                  asio::ip::make_address_v4("192.0.2.1"), asio::ip::make_address_v4("192.0.2.10")};
  const std::size_t header = protocol == 6 ? 20 : 8, start = packet::ethernet_header_size + packet::ipv4_header_size;
  std::vector<std::byte> f(start + header + payload + padding, std::byte{0xee});
  packet::detail::write_ipv4_headers(f.data(), a, protocol, header + payload);
  std::byte* segment = f.data() + start;
  std::memset(segment, 0, header);
  packet::detail::store16(segment, 8080);
  packet::detail::store16(segment + 2, 40000);
  if (protocol == 6) segment[12] = std::byte{0x50}, segment[13] = std::byte{0x18}; // 5 words; PSH, ACK
  else packet::detail::store16(segment + 4, std::uint16_t(header + payload));
  for (std::size_t i = 0; i < payload; ++i) segment[header + i] = std::byte(std::uint8_t(i * 13 + 7));
  packet::detail::store16(segment + (protocol == 6 ? 16 : 6), checksum);
  return f;
}

/// The checksum that frame's segment has when complete.
std::uint16_t complete_checksum(std::uint8_t protocol, std::size_t payload) {
  const std::vector<std::byte> f = ipv4_frame(protocol, payload, 0);
  const auto ip = netpasst::packet::parse_ipv4(netpasst::packet::parse_ethernet(f).payload);
  return netpasst::packet::detail::pseudo_checksum(ip.source, ip.destination, protocol, ip.payload);
}

/// Whether the frame's TCP or UDP checksum verifies over the segment its IP
/// header bounds.
bool checksum_verifies(std::span<const std::byte> f) {
  const auto ip = netpasst::packet::parse_ipv4(netpasst::packet::parse_ethernet(f).payload);
  return netpasst::packet::detail::pseudo_checksum(ip.source, ip.destination, ip.protocol, ip.payload) == 0;
}

} // namespace

TEST_CASE("vhost-user transport: checksums the backend left unfinished are completed unless GUEST_CSUM is asked for") {
  namespace vhost = netpasst::detail::vhost;
  const bool offload = GENERATE(false, true);
  INFO("guest_checksum_offload " << offload);
  constexpr std::uint16_t queue_size = 16;
  scripted_backend backend;
  pair_fixture p;
  std::thread peer([&] { backend.serve(p.theirs.get()); });
  asio::io_context io;
  netpasst::vhost_user_transport t(io, std::move(p.ours), {.queue_size = queue_size, .guest_checksum_offload = offload});
  std::error_code ec;
  t.handshake(ec);
  ::shutdown(p.theirs.get(), SHUT_RD); // the backend's thread returns; the transport stays open
  peer.join();
  REQUIRE_FALSE(ec);
  REQUIRE(backend.memory_fd >= 0);
  const vhost::memory_layout layout(queue_size);
  void* mapped = ::mmap(nullptr, layout.size, PROT_READ | PROT_WRITE, MAP_SHARED, backend.memory_fd, 0);
  REQUIRE(mapped != MAP_FAILED);
  auto* memory = static_cast<std::byte*>(mapped);

  // Frames as backends send them, with the header's flags (1 NEEDS_CSUM,
  // 2 DATA_VALID) and its csum_start and csum_offset.
  struct sample {
    const char* what;
    std::vector<std::byte> frame;
    std::uint8_t flags;
    std::uint16_t checksum_start, checksum_offset;
    bool completed; // without the offload
  };
  // The pseudo-header sum a NEEDS_CSUM frame holds in its field: the
  // addresses 192.0.2.1 and 192.0.2.10, protocol 6, TCP length 20 + 1000.
  std::uint32_t pseudo = 0xc000 + 0x0201 + 0xc000 + 0x020a + 6 + 1020;
  while (pseudo >> 16) pseudo = (pseudo & 0xffff) + (pseudo >> 16);
  const std::vector<sample> samples = {
      {"TCP, DATA_VALID, checksum 0 (passt's vhost-user before GUEST_CSUM)", ipv4_frame(6, 1000, 0), 2, 0, 0, true},
      {"TCP, DATA_VALID, checksum 0, Ethernet padding after it", ipv4_frame(6, 3, 0, 17), 2, 0, 0, true},
      {"TCP, NEEDS_CSUM with the pseudo-header sum", ipv4_frame(6, 1000, std::uint16_t(pseudo)), 1, 34, 16, true},
      {"TCP, DATA_VALID, complete already", ipv4_frame(6, 1000, complete_checksum(6, 1000)), 2, 0, 0, false},
      {"UDP over IPv4, DATA_VALID, checksum 0 (none)", ipv4_frame(17, 100, 0), 2, 0, 0, false},
      {"TCP, no flags, checksum 0 (left to the receiver)", ipv4_frame(6, 10, 0), 0, 0, 0, false},
      {"NEEDS_CSUM with a field past the end", ipv4_frame(6, 10, 0), 1, 34, 200, false},
  };
  // The transport offered every receive descriptor in order: slot i is descriptor i.
  const vhost::queue_layout& rx = layout.queue[0];
  auto* used = reinterpret_cast<vhost::used_element*>(memory + rx.used + 4);
  for (std::uint16_t i = 0; i < samples.size(); ++i) {
    std::byte* slot = memory + rx.slots + i * vhost::slot_size;
    std::byte header[vhost::net_header_size] = {};
    header[0] = std::byte{samples[i].flags};
    std::memcpy(header + 6, &samples[i].checksum_start, 2); // little-endian, as is every host this builds for
    std::memcpy(header + 8, &samples[i].checksum_offset, 2);
    std::memcpy(slot, header, sizeof header);
    std::memcpy(slot + sizeof header, samples[i].frame.data(), samples[i].frame.size());
    used[i] = {i, std::uint32_t(sizeof header + samples[i].frame.size())};
  }
  std::atomic_ref(*reinterpret_cast<std::uint16_t*>(memory + rx.used + 2))
      .store(std::uint16_t(samples.size()), std::memory_order_release);

  std::vector<std::vector<std::byte>> received;
  t.async_receive([&](std::error_code e, netpasst::frame_batch batch) {
    CHECK_FALSE(e);
    for (netpasst::frame f : batch) received.emplace_back(f.begin(), f.end());
  });
  REQUIRE(netpasst::test::run_until(io, [&] { return !received.empty(); }, 5s));
  REQUIRE(received.size() == samples.size());
  std::uint64_t completed = 0;
  for (std::size_t i = 0; i < samples.size(); ++i) {
    INFO(samples[i].what);
    const bool expect_completed = samples[i].completed && !offload;
    completed += expect_completed;
    CHECK(received[i].size() == samples[i].frame.size());
    if (expect_completed) {
      CHECK(checksum_verifies(received[i]));
      // Nothing but the TCP checksum field (bytes 50 and 51) changed.
      auto without_field = [](std::vector<std::byte> f) { return f[50] = f[51] = std::byte{0}, f; };
      CHECK(without_field(received[i]) == without_field(samples[i].frame));
    } else {
      CHECK(received[i] == samples[i].frame);
    }
  }
  CHECK(t.counters().checksums_completed == completed);
  CHECK(t.counters().frames_received == samples.size());
  ::munmap(mapped, layout.size);
}


TEST_CASE("vhost-user handshake: the messages a frontend owes in order with memory and eventfds") {
  pair_fixture p;
  scripted_backend backend;
  std::thread peer([&] { backend.serve(p.theirs.get()); });
  asio::io_context io;
  netpasst::vhost_user_transport t(io, std::move(p.ours), {.queue_size = 16});
  CHECK_FALSE(t.is_open());
  std::error_code ec;
  t.handshake(ec);
  CHECK_FALSE(ec);
  CHECK(t.is_open());
  t.close(); // the backend sees the end of its stream
  peer.join();

  std::vector<std::uint32_t> requests;
  for (const auto& m : backend.seen) requests.push_back(m.request);
  // GET_FEATURES, GET/SET_PROTOCOL_FEATURES, SET_OWNER, SET_FEATURES,
  // SET_MEM_TABLE, then NUM, BASE, ADDR, KICK, CALL per queue, then ENABLE x2.
  CHECK(requests == std::vector<std::uint32_t>{1, 15, 16, 3, 2, 5, 8, 10, 9, 12, 13, 8, 10, 9, 12, 13, 18, 18});
  const auto& negotiated = t.negotiation();
  CHECK(negotiated.acked_features == ((1ull << 32) | (1ull << 30)));
  CHECK(negotiated.acked_protocol_features == (1ull << 3));
  for (const auto& m : backend.seen) {
    INFO("request " << m.request);
    CHECK(m.fds.size() == ((m.request == 5 || m.request == 12 || m.request == 13) ? 1u : 0u));
    if (m.request != 1 && m.request != 15 && m.request != 16) CHECK((m.flags & 8u) != 0); // REPLY_ACK asked
  }
  std::uint64_t acked = 0;
  std::memcpy(&acked, backend.seen[4].payload.data(), 8);
  CHECK(acked == negotiated.acked_features); // no offload, no mergeable buffers asked for
}

TEST_CASE("vhost-user handshake: GUEST_CSUM is acked only when asked for and offered") {
  // passt offers VERSION_1, GUEST_CSUM, MRG_RXBUF, LOG_ALL, PROTOCOL_FEATURES.
  static constexpr std::uint64_t passt_features = (1ull << 32) | (1ull << 1) | (1ull << 15) | (1ull << 26) | (1ull << 30);
  const auto [asked, offered, expected] = GENERATE(table<bool, std::uint64_t, std::uint64_t>({
      {false, passt_features, (1ull << 32) | (1ull << 30)},
      {true, passt_features, (1ull << 32) | (1ull << 30) | (1ull << 1)},
      {true, (1ull << 32) | (1ull << 30), (1ull << 32) | (1ull << 30)},
  }));
  INFO("asked " << asked << " offered " << std::hex << offered);
  scripted_backend backend;
  backend.features = offered;
  const auto r = handshake_then_close(backend, {.queue_size = 16, .guest_checksum_offload = asked});
  CHECK_FALSE(r.error);
  CHECK(r.negotiation.acked_features == expected);
  CHECK(r.negotiation.guest_checksum_offload() == bool(expected & (1ull << 1)));
  REQUIRE(backend.seen.size() > 4);
  REQUIRE(backend.seen[4].request == 2);
  std::uint64_t acked = 0;
  std::memcpy(&acked, backend.seen[4].payload.data(), 8);
  CHECK(acked == expected);
}

TEST_CASE("vhost-user handshake: the shared memory is sealed so the backend can neither shrink nor grow it") {
  scripted_backend backend;
  REQUIRE_FALSE(handshake_then_close(backend, {.queue_size = 16}).error);
  REQUIRE(backend.memory_fd >= 0);
  struct stat st {};
  REQUIRE(::fstat(backend.memory_fd, &st) == 0);
  CHECK(st.st_size > 0);
  CHECK(::fcntl(backend.memory_fd, F_GET_SEALS) == (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL));
  CHECK(::ftruncate(backend.memory_fd, 0) == -1);
  CHECK(errno == EPERM);
  CHECK(::ftruncate(backend.memory_fd, st.st_size + 4096) == -1);
  CHECK(errno == EPERM);
}

TEST_CASE("vhost-user handshake: without REPLY_ACK a GET_FEATURES round trip closes it") {
  scripted_backend backend;
  backend.protocol_features = 0;
  CHECK_FALSE(handshake_then_close(backend, {.queue_size = 16}).error);
  REQUIRE_FALSE(backend.seen.empty());
  CHECK(backend.seen.back().request == 1);
  for (const auto& m : backend.seen) CHECK((m.flags & 8u) == 0);
}

TEST_CASE("vhost-user handshake: each failure names its cause and closes the transport") {
  pair_fixture p;
  scripted_backend backend;
  asio::io_context io;
  std::optional<std::thread> peer;
  std::error_code expected;
  std::string step;
  netpasst::vhost_user_transport_config config{.queue_size = 16};

  SECTION("a backend without VIRTIO_F_VERSION_1") {
    backend.features = 1ull << 30;
    expected = netpasst::errc::protocol_error, step = "VERSION_1";
  }
  SECTION("a backend that answers nothing") {
    backend.stop_after = 0;
    config.reply_timeout = 100ms;
    expected = netpasst::errc::start_timeout, step = "GET_FEATURES";
  }
  SECTION("a backend that hangs up after SET_OWNER") {
    backend.stop_after = 4;
    expected = netpasst::errc::connection_closed, step = "SET_FEATURES";
  }
  bool stays_connected = false;
  SECTION("a reply header announcing no payload fails at once and not after the reply timeout") {
    backend.empty_replies = true;
    backend.stop_after = 1;
    stays_connected = true;
    expected = netpasst::errc::protocol_error, step = "GET_FEATURES";
  }
  peer.emplace([&] {
    backend.serve(p.theirs.get());
    if (stays_connected) {
      char byte;
      while (::recv(p.theirs.get(), &byte, 1, 0) > 0) {
      } // until the transport closes its end
    } else if (backend.stop_after != 0) {
      ::shutdown(p.theirs.get(), SHUT_RDWR); // hang up
    }
  });
  netpasst::vhost_user_transport t(io, std::move(p.ours), config);
  try {
    t.handshake();
    FAIL("the handshake succeeded");
  } catch (const std::system_error& e) {
    CHECK(e.code() == expected);
    CHECK_THAT(e.what(), Catch::Contains(step));
  }
  CHECK_FALSE(t.is_open());
  std::error_code ec;
  CHECK_FALSE(t.try_send(netpasst::frame(), ec));
  CHECK(ec == expected);
  peer->join();
}

TEST_CASE("vhost-user transport: the backend hanging up ends a pending receive with connection_closed") {
  pair_fixture p;
  scripted_backend backend;
  std::thread peer([&] { backend.serve(p.theirs.get()); });
  asio::io_context io;
  netpasst::vhost_user_transport t(io, std::move(p.ours), {.queue_size = 16});
  t.handshake();
  std::optional<std::error_code> received, writable;
  t.async_receive([&](std::error_code ec, netpasst::frame_batch b) {
    received = ec;
    CHECK(b.empty());
  });
  netpasst::test::run_until(io, [] { return false; }, 0s); // let the receive park
  CHECK_FALSE(received);
  ::shutdown(p.theirs.get(), SHUT_RDWR);
  peer.join();
  netpasst::test::run_until(io, [&] { return received.has_value(); }, 10s);
  REQUIRE(received);
  CHECK(*received == netpasst::errc::connection_closed);
  CHECK_FALSE(t.is_open());
  std::error_code ec;
  const std::byte bytes[60]{};
  CHECK_FALSE(t.try_send(netpasst::frame(bytes), ec));
  CHECK(ec == netpasst::errc::connection_closed);
}

TEST_CASE("vhost-user transport: a cancellation that lands after a spurious signal woke the receive still ends it") {
  // On a strand run by two threads: a strand handler signals the receive
  // queue with nothing used (a spurious call), and while it still runs the
  // other thread completes the receive's wait and queues its continuation
  // behind it; the handler then cancels, finding no wait to cancel. The
  // receive finds nothing and must not wait again.
  const bool through_slot = GENERATE(false, true);
  pair_fixture p;
  scripted_backend backend;
  std::thread peer([&] { backend.serve(p.theirs.get()); });
  asio::io_context io;
  const auto strand = asio::make_strand(io);
  netpasst::vhost_user_transport t(strand, std::move(p.ours), {.queue_size = 16});
  t.handshake();
  REQUIRE(backend.receive_call_fd >= 0);
  asio::cancellation_signal signal;
  std::promise<std::error_code> result;
  std::atomic<bool> signalled{false};
  asio::post(strand, [&] {
    t.async_receive(asio::bind_cancellation_slot(signal.slot(), [&](std::error_code ec, netpasst::frame_batch) {
      result.set_value(ec);
    }));
  });
  auto work = asio::make_work_guard(io);
  std::thread first([&] { io.run(); });
  std::this_thread::sleep_for(50ms); // the receive is waiting
  asio::post(strand, [&] {
    const std::uint64_t one = 1;
    signalled = ::write(backend.receive_call_fd, &one, sizeof one) == sizeof one;
    std::this_thread::sleep_for(200ms); // meanwhile the other thread completes the wait
    if (through_slot) signal.emit(asio::cancellation_type::terminal);
    else t.cancel();
  });
  std::thread second([&] { io.run(); });
  auto outcome = result.get_future();
  const bool ended = outcome.wait_for(3s) == std::future_status::ready;
  asio::post(strand, [&] { t.close(); }); // the backend sees the end of its stream
  work.reset();
  first.join(), second.join();
  peer.join();
  REQUIRE(signalled);
  REQUIRE(ended);
  CHECK(outcome.get() == asio::error::operation_aborted);
}

TEST_CASE("vhost-user transport: frames outside 14..65535 bytes are refused and counted and a full queue would block") {
  pair_fixture p;
  scripted_backend backend;
  std::thread peer([&] { backend.serve(p.theirs.get()); });
  asio::io_context io;
  netpasst::vhost_user_transport t(io, std::move(p.ours), {.queue_size = 4});
  t.handshake();
  std::error_code ec;
  std::vector<std::byte> small(13), large(65536), fine(60);
  CHECK_FALSE(t.try_send(netpasst::frame(small), ec));
  CHECK(ec == netpasst::errc::frame_too_short);
  CHECK_FALSE(t.try_send(netpasst::frame(large), ec));
  CHECK(ec == netpasst::errc::frame_too_long);
  // Nobody consumes the transmit queue: four frames fill it.
  std::vector<netpasst::frame> five(5, netpasst::frame(fine));
  CHECK(t.try_send(five, ec) == 4);
  CHECK(ec == netpasst::errc::would_block);
  std::optional<std::error_code> writable;
  t.async_wait_writable([&](std::error_code e) { writable = e; });
  netpasst::test::run_until(io, [] { return false; }, 0s);
  CHECK_FALSE(writable); // still parked: nothing was returned
  t.cancel();
  netpasst::test::run_until(io, [&] { return writable.has_value(); }, 10s);
  REQUIRE(writable);
  CHECK(*writable == asio::error::operation_aborted);
  CHECK(t.is_open());
  const auto c = t.counters();
  CHECK(c.frames_refused == 2);
  CHECK(c.frames_sent == 4);
  CHECK(c.sends_would_block == 1);
  t.close();
  peer.join();
}

TEST_CASE("vhost-user async handshake: the executor runs other work while the backend has not answered") {
  pair_fixture p;
  scripted_backend backend;
  std::atomic<bool> released{false};
  backend.gate = &released;
  std::thread peer([&] { backend.serve(p.theirs.get()); });
  asio::io_context io;
  netpasst::vhost_user_transport t(io, std::move(p.ours), {.queue_size = 16, .reply_timeout = 30s});
  std::optional<std::error_code> done;
  bool released_first = false;
  t.async_handshake([&](std::error_code ec) {
    released_first = released;
    done = ec;
  });
  CHECK_FALSE(done); // never inside the call
  // Only a handler run on this executor opens the gate: a handshake that
  // blocked the executor would never see the backend's first reply.
  asio::post(io, [&] { released = true; });
  REQUIRE(netpasst::test::run_until(io, [&] { return done.has_value(); }, 25s));
  CHECK_FALSE(*done);
  CHECK(released_first);
  CHECK(t.is_open());
  CHECK(t.negotiation().failed_step.empty());
  t.close();
  peer.join();
  std::vector<std::uint32_t> requests;
  for (const auto& m : backend.seen) requests.push_back(m.request);
  CHECK(requests == std::vector<std::uint32_t>{1, 15, 16, 3, 2, 5, 8, 10, 9, 12, 13, 8, 10, 9, 12, 13, 18, 18});
}

TEST_CASE("vhost-user async handshake: each failure names its step and cancelling or closing ends it") {
  pair_fixture p;
  scripted_backend backend;
  asio::io_context io;
  netpasst::vhost_user_transport_config config{.queue_size = 16};
  std::error_code expected;
  std::string step;
  enum { as_is, cancel_slot, cancel_call, close_call, twice } action = as_is;
  bool stays_open = false;

  SECTION("a backend that answers nothing times out") {
    backend.stop_after = 0;
    config.reply_timeout = 100ms;
    expected = netpasst::errc::start_timeout, step = "GET_FEATURES";
  }
  SECTION("a backend without VIRTIO_F_VERSION_1") {
    backend.features = 1ull << 30;
    expected = netpasst::errc::protocol_error, step = "GET_FEATURES (the backend lacks VIRTIO_F_VERSION_1)";
  }
  SECTION("a backend that hangs up after SET_MEM_TABLE") {
    backend.stop_after = 6;
    expected = netpasst::errc::connection_closed, step = "SET_VRING_NUM";
  }
  SECTION("cancelled through the token's slot") {
    backend.silent = true;
    action = cancel_slot, expected = asio::error::operation_aborted, step = "GET_FEATURES";
  }
  SECTION("cancelled with cancel()") {
    backend.silent = true;
    action = cancel_call, expected = asio::error::operation_aborted, step = "GET_FEATURES";
  }
  SECTION("closed") {
    backend.silent = true;
    action = close_call, expected = netpasst::errc::transport_closed, step = "GET_FEATURES";
  }
  SECTION("a second handshake is refused and leaves the first one's transport open") {
    action = twice, expected = netpasst::errc::operation_in_progress, stays_open = true;
  }
  std::thread peer([&] {
    backend.serve(p.theirs.get());
    if (backend.stop_after == 6) ::shutdown(p.theirs.get(), SHUT_RDWR);
  });
  netpasst::vhost_user_transport t(io, std::move(p.ours), config);
  if (action == twice) t.handshake();
  asio::cancellation_signal signal;
  std::optional<std::error_code> done;
  t.async_handshake(asio::bind_cancellation_slot(signal.slot(), [&](std::error_code ec) { done = ec; }));
  if (action != as_is && action != twice) {
    netpasst::test::run_until(io, [&] { return backend.requests > 0; }, 10s);
    CHECK_FALSE(done);
    if (action == cancel_slot) signal.emit(asio::cancellation_type::total);
    if (action == cancel_call) t.cancel();
    if (action == close_call) t.close();
  }
  REQUIRE(netpasst::test::run_until(io, [&] { return done.has_value(); }, 10s));
  CHECK(*done == expected);
  CHECK(t.is_open() == stays_open);
  CHECK(t.negotiation().failed_step == step);
  ::shutdown(p.theirs.get(), SHUT_RDWR);
  t.close();
  peer.join();
}

TEST_CASE("vhost-user session under a lifecycle: a dead passt is replaced with a new handshake and a stop ends a pending one") {
  using vhost_lifecycle = netpasst::basic_lifecycle<netpasst::vhost_user_session, netpasst::testing::scripted_launcher>;
  netpasst::test::scripted_vhost_launches bench;
  auto& [io, launcher, passts, config] = bench;
  vhost_lifecycle life(launcher, {}, config, netpasst::argv_builder{}, io.get_executor(),
                       netpasst::vhost_user_transport_config{.queue_size = 16, .reply_timeout = 30s});
  netpasst::test::event_log log(life);
  const auto& events = log.events;
  std::optional<std::error_code> started;

  SECTION("passt dies: link down, a second passt and handshake, link up as generation 2") {
    life.async_start([&](std::error_code ec) { started = ec; });
    REQUIRE(netpasst::test::run_until(io, [&] { return started.has_value(); }));
    REQUIRE_FALSE(*started);
    CHECK(life.next_layer().attached());
    passts.processes.front()->exit(128 + SIGKILL);
    ::shutdown(passts.ends.front().get(), SHUT_RDWR);
    REQUIRE(netpasst::test::run_until(io, [&] { return log.link_ups() == 2; }));
    CHECK(launcher.launches() == 2);
    CHECK(events.back().generation == 2);
    CHECK(log.count(netpasst::lifecycle_event_kind::link_down) > 0);
    CHECK(life.next_layer().attached());
    CHECK(passts.backends.back().requests == 18); // the whole handshake again, on fresh memory
  }
  SECTION("stop while passt has not answered: the start ends as stopped, not after the reply timeout") {
    passts.silent_from = 0;
    life.async_start([&](std::error_code ec) { started = ec; });
    REQUIRE(netpasst::test::run_until(io, [&] { return passts.backends.size() == 1 && passts.backends.front().requests > 0; }));
    CHECK_FALSE(started);
    life.stop();
    REQUIRE(netpasst::test::run_until(io, [&] { return started.has_value(); }, 10s));
    CHECK(*started == netpasst::errc::stopped);
    CHECK_FALSE(life.next_layer().attached());
  }
  life.stop();
}

TEST_CASE("vhost-user async handshake: a cancellation that lands while the open's completion is posted still ends it") {
  // The GET_FEATURES reply is in the socket before the handshake begins and
  // without protocol features SET_OWNER owes none: the open completes at
  // once, posted, with no wait for a cancellation to reach.
  const bool through_slot = GENERATE(false, true);
  INFO("through the slot: " << through_slot);
  pair_fixture p;
  REQUIRE(netpasst::test::reply_u64(p.theirs.get(), 1, 1ull << 32));
  asio::io_context io;
  netpasst::vhost_user_transport t(io, std::move(p.ours), {.queue_size = 16, .reply_timeout = 200ms});
  asio::cancellation_signal signal;
  std::optional<std::error_code> done;
  t.async_handshake(asio::bind_cancellation_slot(signal.slot(), [&](std::error_code ec) { done = ec; }));
  if (through_slot) signal.emit(asio::cancellation_type::total);
  else t.cancel();
  REQUIRE(netpasst::test::run_until(io, [&] { return done.has_value(); }, 10s));
  CHECK(*done == asio::error::operation_aborted);
  CHECK_FALSE(t.is_open());
}

TEST_CASE("vhost-user transport: a constructor that fails after mapping the shared memory leaves no mapping behind") {
  asio::io_context io;
  asio::posix::stream_descriptor reactor_first(io); // the reactor's own descriptors exist before the limit
  const auto mappings = [] {
    std::ifstream maps("/proc/self/maps");
    std::size_t n = 0;
    for (std::string line; std::getline(maps, line);) n += line.find("netpasst-vhost-user") != std::string::npos;
    return n;
  };
  const std::size_t before = mappings();
  pair_fixture p;
  const int lowest_free = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  REQUIRE(lowest_free >= 0);
  ::close(lowest_free);
  rlimit old{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &old) == 0);
  rlimit tight = old;
  tight.rlim_cur = rlim_t(lowest_free) + 1; // the memfd fits, the first eventfd does not
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &tight) == 0);
  std::error_code thrown;
  try {
    netpasst::vhost_user_transport t(io, std::move(p.ours), {.queue_size = 16});
  } catch (const std::system_error& e) {
    thrown = e.code();
  }
  ::setrlimit(RLIMIT_NOFILE, &old);
  CHECK(thrown == std::errc::too_many_files_open);
  CHECK(mappings() == before);
}

TEST_CASE("vhost-user transport: a send the backend asked not to be notified of counts a suppressed kick") {
  pair_fixture p;
  scripted_backend backend;
  std::thread peer([&] { backend.serve(p.theirs.get()); });
  asio::io_context io;
  netpasst::vhost_user_transport t(io, std::move(p.ours), {.queue_size = 16});
  t.handshake();
  REQUIRE(backend.memory_fd >= 0);
  const netpasst::detail::vhost::memory_layout layout(16);
  void* theirs = ::mmap(nullptr, layout.size, PROT_READ | PROT_WRITE, MAP_SHARED, backend.memory_fd, 0);
  REQUIRE(theirs != MAP_FAILED);
  const std::byte frame_bytes[60]{};
  std::error_code ec;
  REQUIRE(t.try_send(netpasst::frame(frame_bytes), ec));
  CHECK(t.counters().kicks == 1);
  CHECK(t.counters().kicks_suppressed == 0);
  const std::uint16_t no_notify = 1; // VRING_USED_F_NO_NOTIFY in the transmit queue's used flags
  std::memcpy(static_cast<std::byte*>(theirs) + layout.queue[1].used, &no_notify, sizeof no_notify);
  REQUIRE(t.try_send(netpasst::frame(frame_bytes), ec));
  CHECK(t.counters().kicks == 1);
  CHECK(t.counters().kicks_suppressed == 1);
  ::munmap(theirs, layout.size);
  t.close();
  peer.join();
}

TEST_CASE("vhost-user transport: a descriptor the backend returns twice, or never held, is a protocol error that names it") {
  // Memory-safe either way, but a slot handed out as two frames (receive),
  // or two frames written into one slot (transmit), corrupts them.
  namespace vhost = netpasst::detail::vhost;
  constexpr std::uint16_t queue_size = 16;
  scripted_backend backend;
  pair_fixture p;
  std::thread peer([&] { backend.serve(p.theirs.get()); });
  asio::io_context io;
  netpasst::vhost_user_transport t(io, std::move(p.ours), {.queue_size = queue_size});
  std::error_code ec;
  t.handshake(ec);
  ::shutdown(p.theirs.get(), SHUT_RD); // the backend's thread returns; the transport stays open
  peer.join();
  REQUIRE_FALSE(ec);
  const vhost::memory_layout layout(queue_size);
  void* mapped = ::mmap(nullptr, layout.size, PROT_READ | PROT_WRITE, MAP_SHARED, backend.memory_fd, 0);
  REQUIRE(mapped != MAP_FAILED);
  auto* memory = static_cast<std::byte*>(mapped);
  auto use = [&](int queue, std::initializer_list<vhost::used_element> elements) {
    const vhost::queue_layout& q = layout.queue[queue];
    auto* used = reinterpret_cast<vhost::used_element*>(memory + q.used + 4);
    std::uint16_t i = 0;
    for (auto e : elements) used[i++] = e;
    std::atomic_ref(*reinterpret_cast<std::uint16_t*>(memory + q.used + 2)).store(i, std::memory_order_release);
  };
  const std::uint32_t length = vhost::net_header_size + 60;

  SECTION("receive: one slot used twice") {
    use(0, {{3, length}, {3, length}});
    std::optional<std::error_code> received;
    std::size_t frames = 0;
    t.async_receive([&](std::error_code e, netpasst::frame_batch batch) { received = e, frames = batch.size(); });
    REQUIRE(netpasst::test::run_until(io, [&] { return received.has_value(); }, 5s));
    CHECK(*received == netpasst::errc::protocol_error);
    CHECK(frames == 0);
    CHECK_FALSE(t.is_open());
    CHECK(t.failure_message() == "receive queue: the backend returned descriptor 3, which it did not hold");
  }
  SECTION("transmit: a slot returned twice") {
    const std::byte frame_bytes[60]{};
    std::size_t sent = 0;
    while (t.try_send(netpasst::frame(frame_bytes), ec)) ++sent; // every slot in the backend's hands
    REQUIRE(ec == netpasst::errc::would_block);
    REQUIRE(sent == queue_size);
    use(1, {{0, 0}, {0, 0}});
    CHECK_FALSE(t.try_send(netpasst::frame(frame_bytes), ec));
    CHECK(ec == netpasst::errc::protocol_error);
    CHECK_FALSE(t.is_open());
    CHECK(t.failure_message() == "transmit queue: the backend returned descriptor 0, which it did not hold");
  }
  SECTION("receive: an id out of range") {
    use(0, {{queue_size, length}});
    std::optional<std::error_code> received;
    t.async_receive([&](std::error_code e, netpasst::frame_batch) { received = e; });
    REQUIRE(netpasst::test::run_until(io, [&] { return received.has_value(); }, 5s));
    CHECK(*received == netpasst::errc::protocol_error);
    CHECK(t.failure_message() == "receive queue: the backend returned descriptor 16, out of range");
  }
  ::munmap(mapped, layout.size);
}
