#include <netpasst/guest/mini_guest.hpp>

#include <netpasst/testing/memory_transport.hpp>
#include <netpasst/testing/scripted_passt.hpp>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>
#include <catch2/catch.hpp>

#include <array>
#include <chrono>
#include <cstring>
#include <future>
#include <optional>
#include <thread>

using namespace std::chrono_literals;
using namespace netpasst;
using netpasst::testing::memory_transport;
using bytes = std::vector<std::byte>;
using packet::ipv4_address;
using packet::mac_address;

namespace {

const mac_address passt_mac{{0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55}};
const ipv4_address guest_ip = asio::ip::make_address_v4("192.0.2.10");
const ipv4_address gateway_ip = asio::ip::make_address_v4("192.0.2.1");
const ipv4_address dns_ip = asio::ip::make_address_v4("192.0.2.53");
constexpr std::uint16_t echo_port = 7;

// io_context + memory pair + scripted passt + guest, with short deadlines.
struct bench {
  asio::io_context io;
  std::pair<memory_transport, memory_transport> pair = netpasst::testing::make_memory_transport_pair(io);
  memory_transport& guest_end = pair.first;
  netpasst::testing::scripted_passt<memory_transport> passt{pair.second};
  mini_guest<memory_transport> guest;

  static mini_guest_config quick() {
    mini_guest_config c;
    c.dhcp_timeout = c.arp_timeout = c.udp_timeout = c.ping_timeout = 300ms;
    c.retransmit_interval = 20ms;
    return c;
  }
  explicit bench(const mini_guest_config& config = quick()) : guest(guest_end, config) { passt.run(); }

  /// Sends a frame as passt would.
  void send(std::span<const std::byte> f) {
    std::error_code ec;
    REQUIRE(pair.second.try_send(f, ec));
  }

  template <class Predicate> bool run_until(Predicate done) {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    io.restart();
    while (!done() && std::chrono::steady_clock::now() < deadline)
      if (io.run_one_for(50ms) == 0) io.restart();
    return done();
  }

  template <class Result> struct outcome {
    bool done = false;
    std::error_code ec;
    Result value{};
  };

  outcome<dhcp_lease> dhcp() {
    outcome<dhcp_lease> o;
    guest.async_dhcp([&](std::error_code ec, dhcp_lease l) { o = {true, ec, std::move(l)}; });
    REQUIRE(run_until([&] { return o.done; }));
    return o;
  }
  outcome<mac_address> arp(ipv4_address a) {
    outcome<mac_address> o;
    guest.async_arp(a, [&](std::error_code ec, mac_address m) { o = {true, ec, m}; });
    REQUIRE(run_until([&] { return o.done; }));
    return o;
  }
  outcome<udp_reply> udp(std::string_view text, std::uint16_t port = echo_port) {
    outcome<udp_reply> o;
    guest.async_udp_exchange(gateway_ip, port, std::as_bytes(std::span(text.data(), text.size())),
                             [&](std::error_code ec, udp_reply r) { o = {true, ec, std::move(r)}; });
    REQUIRE(run_until([&] { return o.done; }));
    return o;
  }
  outcome<std::chrono::steady_clock::duration> ping(ipv4_address a = gateway_ip) {
    outcome<std::chrono::steady_clock::duration> o;
    guest.async_ping(a, [&](std::error_code ec, std::chrono::steady_clock::duration d) { o = {true, ec, d}; });
    REQUIRE(run_until([&] { return o.done; }));
    return o;
  }
};

std::string as_text(const bytes& b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

} // namespace

TEST_CASE("mini_guest: lease, ARP, UDP round trip and ping against a scripted passt") {
  bench b;
  CHECK_FALSE(b.guest.lease());
  const auto lease = b.dhcp();
  REQUIRE_FALSE(lease.ec);
  CHECK(lease.value.address == guest_ip);
  CHECK(lease.value.prefix_length == 24);
  CHECK(lease.value.gateway == gateway_ip);
  CHECK(lease.value.dns_servers == std::vector<ipv4_address>{dns_ip});
  CHECK(lease.value.search_domains == std::vector<std::string>{"a.example", "b.example"});
  CHECK(lease.value.mtu == 65520);
  CHECK(lease.value.server_id == gateway_ip);
  CHECK(lease.value.lease_time == std::chrono::seconds(0xffffffff));
  CHECK(lease.value.server_mac == passt_mac);
  REQUIRE(b.guest.lease());
  CHECK(b.guest.lease()->address == guest_ip);
  CHECK(b.passt.counters().discovers == 1);
  CHECK(b.passt.counters().requests == 1);

  const auto mac = b.arp(gateway_ip);
  REQUIRE_FALSE(mac.ec);
  CHECK(mac.value == passt_mac);

  const auto reply = b.udp("hello passt");
  REQUIRE_FALSE(reply.ec);
  CHECK(as_text(reply.value.payload) == "hello passt");
  CHECK(reply.value.rtt >= std::chrono::steady_clock::duration::zero());
  CHECK(b.passt.counters().udp_datagrams == 1);

  const auto rtt = b.ping();
  REQUIRE_FALSE(rtt.ec);
  CHECK(b.passt.counters().echo_requests == 1);
  CHECK(b.guest.counters().frames_sent == 5); // DISCOVER, REQUEST, ARP, UDP, ICMP
  CHECK(b.guest.counters().frames_malformed == 0);
  CHECK_FALSE(b.guest.busy());
}

TEST_CASE("mini_guest: a dropped DISCOVER is retransmitted") {
  bench b;
  b.passt.config().drop_discovers = 2;
  const auto lease = b.dhcp();
  REQUIRE_FALSE(lease.ec);
  CHECK(b.passt.counters().discovers == 3);
  CHECK(lease.value.address == guest_ip);
}

TEST_CASE("mini_guest: NAK ends DHCP with guest_errc::dhcp_nak") {
  bench b;
  b.passt.config().nak = true;
  const auto lease = b.dhcp();
  CHECK(lease.ec == guest_errc::dhcp_nak);
  CHECK_FALSE(b.guest.lease());
}

TEST_CASE("mini_guest: an OFFER with the wrong xid is ignored") {
  bench b;
  b.passt.config().wrong_xid_first = true;
  const auto lease = b.dhcp();
  REQUIRE_FALSE(lease.ec);
  CHECK(b.guest.counters().frames_ignored >= 1);
  CHECK(b.passt.counters().requests == 1);
}

TEST_CASE("mini_guest: every operation times out with guest_errc::guest_timeout") {
  bench b;
  b.passt.config().dhcp = false;
  auto lease = b.dhcp();
  CHECK(lease.ec == guest_errc::guest_timeout);

  b.passt.config().dhcp = true;
  lease = b.dhcp();
  REQUIRE_FALSE(lease.ec);
  b.passt.config().arp = b.passt.config().icmp = false;
  const auto requests_before = b.guest.counters().frames_sent;
  const auto mac = b.arp(gateway_ip);
  CHECK(mac.ec == guest_errc::guest_timeout);
  CHECK(b.guest.counters().frames_sent - requests_before >= 2); // retransmitted
  CHECK(b.udp("nobody listens", 9).ec == guest_errc::guest_timeout);
  CHECK(b.ping().ec == guest_errc::guest_timeout);
}

TEST_CASE("mini_guest: UDP and ping need an address") {
  bench b;
  CHECK(b.udp("x").ec == guest_errc::no_address);
  CHECK(b.ping().ec == guest_errc::no_address);
  CHECK_FALSE(b.guest.busy());
  dhcp_lease manual;
  manual.address = guest_ip;
  manual.prefix_length = 24;
  manual.gateway = gateway_ip;
  manual.server_mac = passt_mac;
  b.guest.set_lease(manual);
  CHECK_FALSE(b.udp("static").ec);
}

TEST_CASE("mini_guest: one operation at a time, cancel") {
  bench b;
  b.passt.config().arp = false;
  bench::outcome<mac_address> first;
  bench::outcome<std::chrono::steady_clock::duration> second;
  b.guest.async_arp(gateway_ip, [&](std::error_code ec, mac_address m) { first = {true, ec, m}; });
  CHECK(b.guest.busy());
  b.guest.async_ping(gateway_ip, [&](std::error_code ec, auto d) { second = {true, ec, d}; });
  REQUIRE(b.run_until([&] { return second.done; }));
  CHECK(second.ec == errc::operation_in_progress);
  CHECK_FALSE(first.done);
  b.guest.cancel();
  REQUIRE(b.run_until([&] { return first.done; }));
  CHECK(first.ec == asio::error::operation_aborted);
  CHECK_FALSE(b.guest.busy());
  b.passt.config().arp = true;
  CHECK_FALSE(b.arp(gateway_ip).ec); // usable again
}

TEST_CASE("mini_guest: answers ARP for its own address, counts malformed frames") {
  bench b;
  REQUIRE_FALSE(b.dhcp().ec);
  std::array<std::byte, packet::arp_frame_size> request;
  packet::build_arp_frame(request, {packet::arp_operation::request, passt_mac, gateway_ip, {}, guest_ip},
                          mac_address::broadcast());
  b.send(request);
  packet::build_arp_frame(request,
                          {packet::arp_operation::request, passt_mac, gateway_ip, {},
                           asio::ip::make_address_v4("192.0.2.99")},
                          mac_address::broadcast());
  b.send(request); // not ours: no answer
  bytes garbage(60, std::byte{0});
  std::memcpy(garbage.data(), b.guest.mac().octets.data(), 6);
  garbage[12] = std::byte{0x08}; // IPv4 with version 0
  b.send(garbage);
  REQUIRE(b.run_until([&] { return b.guest.counters().frames_malformed == 1; }));
  REQUIRE(b.run_until([&] { return !b.passt.other_frames().empty(); }));
  b.io.restart();
  b.io.run_for(50ms);
  REQUIRE(b.passt.other_frames().size() == 1);
  const auto reply = packet::parse_arp(packet::parse_ethernet(b.passt.other_frames()[0]).payload);
  CHECK(reply.operation == packet::arp_operation::reply);
  CHECK(reply.sender_ip == guest_ip);
  CHECK(reply.sender_mac == b.guest.mac());
  CHECK(reply.target_mac == passt_mac);
  CHECK(b.guest.counters().arp_requests_answered == 1);
}

TEST_CASE("mini_guest: the transport closing ends the running operation") {
  bench b;
  b.passt.config().dhcp = false;
  bench::outcome<dhcp_lease> o;
  b.guest.async_dhcp([&](std::error_code ec, dhcp_lease l) { o = {true, ec, std::move(l)}; });
  b.io.poll();
  b.pair.second.close();
  REQUIRE(b.run_until([&] { return o.done; }));
  CHECK(o.ec == errc::connection_closed);
}

TEST_CASE("mini_guest: destroying the guest aborts its operation") {
  asio::io_context io;
  auto [guest_end, passt_end] = netpasst::testing::make_memory_transport_pair(io);
  bench::outcome<dhcp_lease> o;
  {
    mini_guest<memory_transport> guest(guest_end);
    guest.async_dhcp([&](std::error_code ec, dhcp_lease l) { o = {true, ec, std::move(l)}; });
    io.poll();
  }
  io.run_for(1s);
  CHECK(o.done);
  CHECK(o.ec == asio::error::operation_aborted);
  CHECK(guest_end.is_open()); // the guest cancelled its receive, not the transport
}

TEST_CASE("mini_guest: every failure point of a DHCP exchange ends cleanly") {
  // fail_count over the guest's transport operations: each run must complete
  // (with the injected error or with a lease), never hang.
  const std::error_code injected = make_error_code(std::errc::io_error);
  std::size_t n = 0, failed_runs = 0;
  for (; n < 50; ++n) {
    asio::io_context io;
    netpasst::testing::fail_count faults(n, injected);
    netpasst::testing::memory_transport_options guest_options;
    guest_options.faults = &faults;
    auto [guest_end, passt_end] =
        netpasst::testing::make_memory_transport_pair(asio::any_io_executor(io.get_executor()), guest_options,
                                                      asio::any_io_executor(io.get_executor()), {});
    netpasst::testing::scripted_passt<memory_transport> passt{passt_end};
    passt.run();
    mini_guest<memory_transport> guest(guest_end, bench::quick());
    bench::outcome<dhcp_lease> o;
    guest.async_dhcp([&](std::error_code ec, dhcp_lease l) { o = {true, ec, std::move(l)}; });
    io.run_for(2s);
    REQUIRE(o.done);
    if (o.ec) {
      CHECK(o.ec == injected);
      CHECK(faults.tripped());
      ++failed_runs;
    }
    if (!faults.tripped()) break; // (it may trip after the ACK: the guest keeps receiving)
  }
  CHECK(n < 50);
  CHECK(failed_runs >= 3); // at least: the first receive, DISCOVER, REQUEST
}

TEST_CASE("mini_guest: use_future with the io_context on another thread") {
  bench b;
  auto work = asio::make_work_guard(b.io);
  std::thread runner([&] { b.io.run(); });
  // Operations are started on the executor, as the guest is not thread-safe.
  auto lease = asio::post(b.io, asio::use_future([&] { return b.guest.async_dhcp(asio::use_future); })).get();
  REQUIRE(lease.wait_for(5s) == std::future_status::ready);
  CHECK(lease.get().address == guest_ip);
  auto mac = asio::post(b.io, asio::use_future([&] { return b.guest.async_arp(gateway_ip, asio::use_future); })).get();
  REQUIRE(mac.wait_for(5s) == std::future_status::ready);
  CHECK(mac.get() == passt_mac);
  auto timeout = asio::post(b.io, asio::use_future([&] {
                   return b.guest.async_udp_exchange(gateway_ip, 9, {}, asio::use_future);
                 })).get();
  REQUIRE(timeout.wait_for(5s) == std::future_status::ready);
  // Joined first: the runner releases the promise's exception through
  // libstdc++'s uninstrumented reference count, which TSan cannot see.
  work.reset();
  b.io.stop();
  runner.join();
  try {
    timeout.get();
    FAIL("no error");
  } catch (const std::system_error& e) {
    CHECK(e.code() == guest_errc::guest_timeout);
  }
}

#ifdef ASIO_HAS_CO_AWAIT
TEST_CASE("mini_guest: use_awaitable, the demo sequence as a coroutine") {
  bench b;
  std::string echoed;
  bool finished = false;
  asio::co_spawn(
      b.io,
      [&]() -> asio::awaitable<void> {
        const dhcp_lease lease = co_await b.guest.async_dhcp(asio::use_awaitable);
        co_await b.guest.async_arp(lease.gateway, asio::use_awaitable);
        const std::string_view text = "coroutine";
        udp_reply reply = co_await b.guest.async_udp_exchange(
            lease.gateway, echo_port, std::as_bytes(std::span(text.data(), text.size())), asio::use_awaitable);
        echoed = as_text(reply.payload);
        co_await b.guest.async_ping(lease.gateway, asio::use_awaitable);
        finished = true;
      },
      asio::detached);
  REQUIRE(b.run_until([&] { return finished; }));
  CHECK(echoed == "coroutine");
}
#endif

TEST_CASE("mini_guest: per-operation cancellation through the token's slot, the guest keeps working") {
  bench b;
  b.passt.config().dhcp = false;
  asio::cancellation_signal cancel;
  std::optional<std::error_code> result;
  b.guest.async_dhcp(asio::bind_cancellation_slot(cancel.slot(), [&](std::error_code ec, dhcp_lease) { result = ec; }));
  b.io.poll();
  cancel.emit(asio::cancellation_type::partial);
  REQUIRE(b.run_until([&] { return result.has_value(); }));
  CHECK(*result == asio::error::operation_aborted);
  CHECK_FALSE(b.guest.busy());
  b.passt.config().dhcp = true;
  CHECK_FALSE(b.dhcp().ec);
}

TEST_CASE("mini_guest: destroying the guest cancels only its own receive") {
  bench b;
  std::optional<std::error_code> writable;
  {
    mini_guest<memory_transport> other(b.guest_end);
    other.start();
    b.io.poll();
  }
  REQUIRE_FALSE(b.dhcp().ec);  // the transport and the first guest are unaffected
}
