#include <netpasst/guest/mini_guest.hpp>

#include <netpasst/testing/memory_transport.hpp>

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

// A scripted passt on the other end of a memory transport pair: DHCP server,
// ARP responder for every address but the guest's, UDP echo on port 7 of the
// gateway, ICMP echo responder. Knobs make it misbehave.
struct fake_passt {
  memory_transport& link;
  int drop_discovers = 0;     // ignore this many DISCOVERs first
  bool nak = false;           // answer REQUEST with NAK
  bool wrong_xid_first = false; // send an OFFER with another xid before the right one
  bool dhcp = true, arp = true, udp = true, icmp = true;
  int discovers = 0, requests = 0, arp_requests = 0, udp_datagrams = 0, echo_requests = 0;
  std::vector<bytes> other_frames{}; // what the responders did not handle (e.g. ARP replies)
  std::error_code receive_error{};

  void run() {
    link.async_receive([this](std::error_code ec, frame_batch batch) {
      if (ec) return void(receive_error = ec);
      for (frame f : batch) handle(f);
      run();
    });
  }

  void send(std::span<const std::byte> f) {
    std::error_code ec;
    REQUIRE(link.try_send(f, ec));
  }

  void handle(frame f) {
    const auto eth = packet::parse_ethernet(f);
    if (eth.ether_type == packet::ethertype_arp) {
      const auto arp_in = packet::parse_arp(eth.payload);
      if (arp_in.operation == packet::arp_operation::request && arp && arp_in.target_ip != guest_ip) {
        ++arp_requests;
        std::array<std::byte, packet::arp_frame_size> out;
        send(std::span(out).first(packet::build_arp_frame(
            out, {packet::arp_operation::reply, passt_mac, arp_in.target_ip, arp_in.sender_mac, arp_in.sender_ip},
            arp_in.sender_mac)));
        return;
      }
      other_frames.emplace_back(f.begin(), f.end());
      return;
    }
    const auto ip = packet::parse_ipv4(eth.payload);
    if (ip.protocol == packet::ip_protocol_udp) {
      const auto udp = packet::parse_udp(ip);
      if (udp.destination_port == packet::dhcp_server_port) return handle_dhcp(packet::parse_dhcp(udp.payload));
      if (ip.destination == gateway_ip && udp.destination_port == echo_port) {
        ++udp_datagrams;
        bytes out(2000);
        out.resize(packet::build_udp_frame(out, {passt_mac, eth.source, gateway_ip, ip.source}, echo_port,
                                           udp.source_port, udp.payload));
        return send(out);
      }
    }
    if (ip.protocol == packet::ip_protocol_icmp && icmp) {
      const auto echo = packet::parse_icmp_echo(ip);
      ++echo_requests;
      bytes out(2000);
      out.resize(packet::build_icmp_echo_frame(out, {passt_mac, eth.source, ip.destination, ip.source},
                                               packet::icmp_type::echo_reply, echo.identifier, echo.sequence,
                                               echo.payload));
      return send(out);
    }
    other_frames.emplace_back(f.begin(), f.end());
  }

  void handle_dhcp(const packet::dhcp_message& in) {
    using type = packet::dhcp_message_type;
    if (!dhcp) return;
    if (in.message_type == type::discover && ++discovers <= drop_discovers) return;
    if (in.message_type == type::request) ++requests;
    packet::dhcp_message out;
    out.op = 2;
    out.xid = in.xid;
    out.client_mac = in.client_mac;
    out.yiaddr = guest_ip;
    out.server_id = gateway_ip;
    out.subnet_mask = asio::ip::make_address_v4("255.255.255.0");
    out.routers = {gateway_ip};
    out.dns_servers = {dns_ip};
    out.mtu = 65520;
    out.lease_time = 0xffffffff;
    out.search_domains = {"a.example", "b.example"};
    if (in.message_type == type::discover) {
      out.message_type = type::offer;
      if (wrong_xid_first) {
        packet::dhcp_message stray = out;
        stray.xid = in.xid + 1;
        send_dhcp(stray);
      }
    } else {
      out.message_type = nak ? type::nak : type::ack;
    }
    send_dhcp(out);
  }

  void send_dhcp(const packet::dhcp_message& m) {
    bytes out(1500);
    const std::size_t n = packet::build_dhcp(std::span(out).subspan(packet::udp_frame_overhead), m);
    REQUIRE(n != 0);
    out.resize(packet::build_udp_frame(out, {passt_mac, m.client_mac, gateway_ip, guest_ip}, 67, 68,
                                       std::span(out).subspan(packet::udp_frame_overhead, n)));
    send(out);
  }
};

// io_context + memory pair + fake passt + guest, with short deadlines.
struct bench {
  asio::io_context io;
  std::pair<memory_transport, memory_transport> pair = netpasst::testing::make_memory_transport_pair(io);
  memory_transport& guest_end = pair.first;
  fake_passt passt{pair.second};
  mini_guest<memory_transport> guest;

  static mini_guest_config quick() {
    mini_guest_config c;
    c.dhcp_timeout = c.arp_timeout = c.udp_timeout = c.ping_timeout = 300ms;
    c.retransmit_interval = 20ms;
    return c;
  }
  explicit bench(const mini_guest_config& config = quick()) : guest(guest_end, config) { passt.run(); }

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

TEST_CASE("mini_guest: lease; ARP; UDP round trip and ping against a fake passt") {
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
  CHECK(b.passt.discovers == 1);
  CHECK(b.passt.requests == 1);

  const auto mac = b.arp(gateway_ip);
  REQUIRE_FALSE(mac.ec);
  CHECK(mac.value == passt_mac);

  const auto reply = b.udp("hello passt");
  REQUIRE_FALSE(reply.ec);
  CHECK(as_text(reply.value.payload) == "hello passt");
  CHECK(reply.value.rtt >= std::chrono::steady_clock::duration::zero());
  CHECK(b.passt.udp_datagrams == 1);

  const auto rtt = b.ping();
  REQUIRE_FALSE(rtt.ec);
  CHECK(b.passt.echo_requests == 1);
  CHECK(b.guest.counters().frames_sent == 5); // DISCOVER, REQUEST, ARP, UDP, ICMP
  CHECK(b.guest.counters().frames_malformed == 0);
  CHECK_FALSE(b.guest.busy());
}

TEST_CASE("mini_guest: a dropped DISCOVER is retransmitted") {
  bench b;
  b.passt.drop_discovers = 2;
  const auto lease = b.dhcp();
  REQUIRE_FALSE(lease.ec);
  CHECK(b.passt.discovers == 3);
  CHECK(lease.value.address == guest_ip);
}

TEST_CASE("mini_guest: NAK ends DHCP with guest_errc::dhcp_nak") {
  bench b;
  b.passt.nak = true;
  const auto lease = b.dhcp();
  CHECK(lease.ec == guest_errc::dhcp_nak);
  CHECK_FALSE(b.guest.lease());
}

TEST_CASE("mini_guest: an OFFER with the wrong xid is ignored") {
  bench b;
  b.passt.wrong_xid_first = true;
  const auto lease = b.dhcp();
  REQUIRE_FALSE(lease.ec);
  CHECK(b.guest.counters().frames_ignored >= 1);
  CHECK(b.passt.requests == 1);
}

TEST_CASE("mini_guest: every operation times out with guest_errc::guest_timeout") {
  bench b;
  b.passt.dhcp = false;
  auto lease = b.dhcp();
  CHECK(lease.ec == guest_errc::guest_timeout);

  b.passt.dhcp = true;
  lease = b.dhcp();
  REQUIRE_FALSE(lease.ec);
  b.passt.arp = b.passt.icmp = false;
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

TEST_CASE("mini_guest: one operation at a time; cancel") {
  bench b;
  b.passt.arp = false;
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
  b.passt.arp = true;
  CHECK_FALSE(b.arp(gateway_ip).ec); // usable again
}

TEST_CASE("mini_guest: answers ARP for its own address; counts malformed frames") {
  bench b;
  REQUIRE_FALSE(b.dhcp().ec);
  std::array<std::byte, packet::arp_frame_size> request;
  packet::build_arp_frame(request, {packet::arp_operation::request, passt_mac, gateway_ip, {}, guest_ip},
                          mac_address::broadcast());
  b.passt.send(request);
  packet::build_arp_frame(request,
                          {packet::arp_operation::request, passt_mac, gateway_ip, {},
                           asio::ip::make_address_v4("192.0.2.99")},
                          mac_address::broadcast());
  b.passt.send(request); // not ours: no answer
  bytes garbage(60, std::byte{0});
  std::memcpy(garbage.data(), b.guest.mac().octets.data(), 6);
  garbage[12] = std::byte{0x08}; // IPv4 with version 0
  b.passt.send(garbage);
  REQUIRE(b.run_until([&] { return b.guest.counters().frames_malformed == 1; }));
  REQUIRE(b.run_until([&] { return !b.passt.other_frames.empty(); }));
  b.io.restart();
  b.io.run_for(50ms);
  REQUIRE(b.passt.other_frames.size() == 1);
  const auto reply = packet::parse_arp(packet::parse_ethernet(b.passt.other_frames[0]).payload);
  CHECK(reply.operation == packet::arp_operation::reply);
  CHECK(reply.sender_ip == guest_ip);
  CHECK(reply.sender_mac == b.guest.mac());
  CHECK(reply.target_mac == passt_mac);
  CHECK(b.guest.counters().arp_requests_answered == 1);
}

TEST_CASE("mini_guest: the transport closing ends the running operation") {
  bench b;
  b.passt.dhcp = false;
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
    fake_passt passt{passt_end};
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
  try {
    timeout.get();
    FAIL("no error");
  } catch (const std::system_error& e) {
    CHECK(e.code() == guest_errc::guest_timeout);
  }
  work.reset();
  b.io.stop();
  runner.join();
}

#ifdef ASIO_HAS_CO_AWAIT
TEST_CASE("mini_guest: use_awaitable; the demo sequence as a coroutine") {
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
