// End-to-end: the stream transport against the real passt (`passt --quiet
// --foreground --fd 3`), in the private network namespace e2e_main.cpp made
// (template interface np0 192.0.2.10/24, gateway 192.0.2.1).
#include <netpasst/transport/stream.hpp>

#include <netpasst/guest/mini_guest.hpp>
#include <netpasst/launcher/passt_launcher.hpp>

#include "../common/byte_pattern.hpp"
#include "e2e_env.hpp"

#include <asio/io_context.hpp>
#include <asio/ip/udp.hpp>
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <optional>
#include <random>
#include <vector>

using namespace std::chrono_literals;
using netpasst::errc;
using netpasst::frame_batch;
using netpasst::unique_fd;
using bytes = std::vector<std::byte>;

namespace {

// passt started by the foreground launcher, held by pidfd, terminated at the end.
struct passt_child {
  netpasst::passt_process process;
  unique_fd ours;

  explicit passt_child(asio::io_context& ctx) {
    netpasst::foreground_launcher launcher(ctx);
    process = launcher.launch({netpasst::e2e::passt_binary(), "--quiet"});
    ours = process.take_socket();
  }
  ~passt_child() { kill(); }
  void kill() {
    std::error_code ignored;
    process.signal(SIGKILL, ignored);
    process.terminate(std::chrono::milliseconds(1000), ignored);
  }
  bool alive() const { return process.running(); }
};

// Receives until passt's ARP reply for the gateway arrives (10 s deadline); returns it, or nothing
// with `error` set when the transport failed.
std::optional<bytes> await_arp_reply(asio::io_context& ctx, netpasst::stream_transport& t,
                                     std::error_code& error) {
  std::optional<bytes> reply;
  std::function<void()> loop = [&] {
    t.async_receive([&](std::error_code ec, frame_batch batch) {
      if (ec) return void(error = ec);
      for (auto f : batch) {
        if (netpasst::e2e::is_gateway_arp_reply(f)) {
          reply.emplace(f.begin(), f.end());
          return;
        }
      }
      loop();
    });
  };
  loop();
  ctx.restart();
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!reply && !error && std::chrono::steady_clock::now() < deadline) ctx.run_one_for(100ms);
  return reply;
}

} // namespace

TEST_CASE("real passt answers ARP through the stream transport, survives a refused frame, and its death is seen") {
  if (!netpasst::e2e::in_private_netns) {
    WARN("not in the private network namespace (needs root): skipped");
    return;
  }
  asio::io_context ctx;
  passt_child passt(ctx);
  netpasst::stream_transport t(ctx, std::move(passt.ours));

  std::error_code ec;
  REQUIRE(t.try_send(netpasst::e2e::gateway_arp_request(), ec));
  auto reply = await_arp_reply(ctx, t, ec);
  REQUIRE_FALSE(ec);
  REQUIRE(reply);

  // An oversize frame is refused locally; passt never sees it and keeps answering.
  CHECK_FALSE(t.try_send(bytes(65536, std::byte{0}), ec));
  CHECK(ec == errc::frame_too_long);
  CHECK(t.counters().frames_refused == 1);
  t.send(netpasst::e2e::gateway_arp_request()); // blocking form, written before it returns
  ec.clear();
  reply = await_arp_reply(ctx, t, ec);
  REQUIRE_FALSE(ec);
  REQUIRE(reply);
  CHECK(passt.alive());
  CHECK(t.counters().frames_sent == 2);
  CHECK(t.counters().frames_received >= 2);

  // passt dies: the pending receive completes with connection_closed.
  std::error_code receive_error;
  bool done = false;
  t.async_receive([&](std::error_code e, frame_batch) {
    if (e) receive_error = e, done = true; // frames passt sent before dying are fine too
  });
  ctx.restart();
  ctx.poll();
  passt.kill();
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!done && std::chrono::steady_clock::now() < deadline) {
    ctx.restart();
    ctx.run_one_for(100ms);
    if (!done && ctx.stopped())
      t.async_receive([&](std::error_code e, frame_batch) {
        if (e) receive_error = e, done = true;
      });
  }
  REQUIRE(done);
  CHECK(receive_error == errc::connection_closed);
  CHECK(receive_error == netpasst::condition::connection_lost);
  CHECK_FALSE(t.is_open());
}

// --- a bulk UDP blast from the guest side through passt to the host ----------

namespace {

/// Payload of datagram `seq`, `size` bytes (at least 8): sequence number,
/// size, then seq's pattern.
void fill_payload(std::span<std::byte> out, std::uint32_t seq) {
  const std::uint32_t size = std::uint32_t(out.size());
  std::memcpy(out.data(), &seq, 4);
  std::memcpy(out.data() + 4, &size, 4);
  netpasst::test::fill_pattern(out, seq, 8);
}

/// The sequence number of an intact payload, or nothing.
std::optional<std::uint32_t> check_payload(std::span<const std::byte> in) {
  if (in.size() < 8) return {};
  std::uint32_t seq, size;
  std::memcpy(&seq, in.data(), 4);
  std::memcpy(&size, in.data() + 4, 4);
  if (size != in.size() || !netpasst::test::matches_pattern(in, seq, 8)) return {};
  return seq;
}

/// Frame sizes (Ethernet bytes) of the blast: every UDP frame size from the
/// smallest with our 8-byte payload header to 65535, shuffled, then a
/// random mix of small, jumbo and large frames.
std::vector<std::size_t> blast_sizes(std::size_t count, unsigned seed) {
  const std::size_t smallest = netpasst::packet::udp_frame_overhead + 8;
  std::vector<std::size_t> sizes;
  std::mt19937 rng(seed);
  for (std::size_t s = smallest; s <= 65535 && sizes.size() < count / 2; s += 1 + rng() % 7) sizes.push_back(s);
  sizes.push_back(65535);
  while (sizes.size() < count) {
    const unsigned r = rng() % 10;
    if (r < 4) sizes.push_back(smallest + rng() % (1514 - smallest + 1));
    else if (r < 6) sizes.push_back(1515 + rng() % (9000 - 1515 + 1));
    else sizes.push_back(9001 + rng() % (65535 - 9001 + 1));
  }
  std::shuffle(sizes.begin(), sizes.end(), rng);
  return sizes;
}

/// This network namespace's IP, ICMP and UDP counters (/proc/net/snmp and
/// /proc/net/netstat), named "Udp.InDatagrams" and so on, and the softnet
/// queue drops of all CPUs (/proc/net/softnet_stat, not per namespace).
std::vector<std::pair<std::string, long long>> network_counters() {
  std::vector<std::pair<std::string, long long>> counters;
  for (const char* file : {"/proc/net/snmp", "/proc/net/netstat"}) {
    std::ifstream in(file);
    std::string names, values;
    while (std::getline(in, names) && std::getline(in, values)) {
      std::istringstream n(names), v(values);
      std::string group, name;
      long long value;
      n >> group, v >> group;
      group.pop_back(); // the colon
      while (n >> name && v >> value) counters.emplace_back(group + "." + name, value);
    }
  }
  std::ifstream softnet("/proc/net/softnet_stat");
  long long dropped = 0;
  for (std::string line; std::getline(softnet, line);) {
    std::istringstream fields(line);
    std::string processed, drops;
    fields >> processed >> drops;
    dropped += std::stoll(drops, nullptr, 16);
  }
  counters.emplace_back("softnet.dropped", dropped);
  return counters;
}

/// The counters that moved between two readings of network_counters(), as "name +delta ...".
std::string counter_changes(const std::vector<std::pair<std::string, long long>>& before,
                            const std::vector<std::pair<std::string, long long>>& after) {
  std::string changes;
  for (std::size_t i = 0; i < before.size() && i < after.size(); ++i)
    if (after[i].second != before[i].second)
      changes += " " + after[i].first + " +" + std::to_string(after[i].second - before[i].second);
  return changes.empty() ? " none" : changes;
}

struct blast_result {
  std::size_t sent = 0;       // datagrams the transport took
  std::size_t received = 0;   // distinct, intact datagrams the host socket got
  std::size_t duplicates = 0; // intact datagrams got more than once
  std::size_t corrupt = 0;    // datagrams that failed the checks
  std::uint64_t payload_bytes = 0;
  double seconds = 0;
  bool passt_alive = false, link_ok = false;
  std::error_code transport_error;
  std::string counter_changes; // the network counters that moved during the blast
  int host_next_datagram = 0;  // size of the first datagram left unread in the host socket (0: none)
};

/// Gets a lease with mini_guest, then sends `sizes.size()` UDP datagrams from
/// the guest to the gateway (passt maps it to the host's 127.0.0.1) where a
/// socket counts and checks them. A window keeps the host socket (512 MiB
/// receive buffer, charged only as used) from overflowing: the datagrams
/// not yet seen there may take at most 200 MiB of it, counted generously as
/// twice the payload plus 2 KiB each. That is far more than our socket to
/// passt holds, so passt's input backs up as under bulk load.
/// Stops when all arrived, or when nothing arrived for 5 s.
blast_result blast(netpasst::stream_write_mode mode, const std::vector<std::size_t>& sizes) {
  using netpasst::packet::udp_frame_overhead;
  asio::io_context ctx;
  passt_child passt(ctx);
  netpasst::stream_transport_config config;
  config.write_mode = mode;
  netpasst::stream_transport t(ctx, std::move(passt.ours), config);
  blast_result result;

  asio::ip::udp::socket host(ctx, asio::ip::udp::endpoint(asio::ip::make_address_v4("127.0.0.1"), 0));
  const int receive_buffer = 256 << 20;
  ::setsockopt(host.native_handle(), SOL_SOCKET, SO_RCVBUFFORCE, &receive_buffer, sizeof receive_buffer);

  netpasst::mini_guest<netpasst::stream_transport> guest(t);
  std::optional<std::error_code> dhcp_done;
  netpasst::dhcp_lease lease;
  guest.async_dhcp([&](std::error_code ec, netpasst::dhcp_lease l) { dhcp_done = ec, lease = l; });
  for (auto deadline = std::chrono::steady_clock::now() + 10s; !dhcp_done && std::chrono::steady_clock::now() < deadline;)
    ctx.run_one_for(100ms);
  REQUIRE(dhcp_done);
  REQUIRE_FALSE(*dhcp_done);
  const auto counters_before = network_counters();

  const netpasst::packet::frame_addresses addresses{guest.mac(), lease.server_mac, lease.address, lease.gateway};
  const std::uint64_t sent_before = t.counters().frames_sent; // DHCP's
  const std::uint16_t source_port = 40000, port = host.local_endpoint().port();
  constexpr std::size_t window_bytes = 200 << 20;
  auto cost = [](std::size_t payload) { return 2 * payload + 2048; }; // the host socket's charge, at most
  std::vector<std::uint8_t> seen(sizes.size(), 0);
  std::vector<std::byte> frame_buffer(65536), host_buffer(65536);
  std::size_t next = 0, in_flight_bytes = 0, acknowledged = 0;
  bool waiting_writable = false;
  // last_arrival times the throughput; last_activity (a send or an arrival)
  // ends the blast after 5 s of neither. Filling 100 MB of payload can take
  // longer than that under a sanitizer, so sending counts as activity.
  const auto start = std::chrono::steady_clock::now();
  auto last_arrival = start, last_activity = start;

  std::function<void()> pump = [&] {
    std::error_code ec;
    while (!waiting_writable && next < sizes.size() && in_flight_bytes < window_bytes) {
      const std::size_t payload = sizes[next] - udp_frame_overhead;
      auto out = std::span(frame_buffer);
      fill_payload(out.subspan(udp_frame_overhead, payload), std::uint32_t(next));
      const std::size_t length = netpasst::packet::build_udp_frame(
          out, addresses, source_port, port, out.subspan(udp_frame_overhead, payload));
      REQUIRE(length == sizes[next]);
      if (!t.try_send(out.first(length), ec)) {
        if (ec != netpasst::errc::would_block) return void(result.transport_error = ec);
        waiting_writable = true;
        t.async_wait_writable([&](std::error_code e) {
          waiting_writable = false;
          if (e) return void(result.transport_error = e);
          pump();
        });
        return;
      }
      in_flight_bytes += cost(payload);
      ++next;
      last_activity = std::chrono::steady_clock::now();
    }
  };
  std::function<void()> receive = [&] {
    host.async_receive(asio::buffer(host_buffer), [&](std::error_code ec, std::size_t n) {
      if (ec) return;
      last_activity = last_arrival = std::chrono::steady_clock::now();
      const auto seq = check_payload(std::span(host_buffer).first(n));
      if (!seq || *seq >= sizes.size() || sizes[*seq] != n + udp_frame_overhead) {
        ++result.corrupt;
      } else if (seen[*seq]++ != 0) {
        ++result.duplicates;
      } else {
        ++result.received;
        result.payload_bytes += n;
      }
      // Datagrams arrive in order: everything before the newest one that
      // arrived has arrived or is lost, and leaves the window.
      if (seq && *seq < sizes.size())
        for (; acknowledged <= *seq; ++acknowledged) in_flight_bytes -= cost(sizes[acknowledged] - udp_frame_overhead);
      pump();
      receive();
    });
  };
  receive();
  pump();
  while (result.received + result.corrupt < sizes.size() && !result.transport_error &&
         std::chrono::steady_clock::now() - last_activity < 5s && std::chrono::steady_clock::now() - start < 300s)
    ctx.run_one_for(100ms);
  result.seconds = std::chrono::duration<double>(last_arrival - start).count();
  result.sent = std::size_t(t.counters().frames_sent - sent_before);
  result.passt_alive = passt.alive();
  result.counter_changes = counter_changes(counters_before, network_counters());
  ::ioctl(host.native_handle(), FIONREAD, &result.host_next_datagram);

  // The link still works: passt answers ARP for the gateway.
  if (t.is_open() && result.passt_alive) {
    std::optional<std::error_code> arp_done;
    guest.async_arp(lease.gateway, [&](std::error_code ec, netpasst::packet::mac_address) { arp_done = ec; });
    for (auto deadline = std::chrono::steady_clock::now() + 5s; !arp_done && std::chrono::steady_clock::now() < deadline;)
      ctx.run_one_for(100ms);
    result.link_ok = arp_done && !*arp_done;
  }
  return result;
}

void report(const char* mode, const blast_result& r, std::size_t count) {
  WARN(mode << ": " << r.received << " of " << count << " datagrams arrived intact (" << r.sent
            << " sent by the transport, " << r.corrupt << " corrupt, " << r.duplicates << " duplicates), "
            << r.payload_bytes / 1e6 << " MB in " << r.seconds << " s = " << r.payload_bytes * 8 / r.seconds / 1e9
            << " Gbit/s; passt " << (r.passt_alive ? "alive" : "DEAD") << ", link "
            << (r.link_ok ? "answers ARP" : "BROKEN") << "; counters moved:" << r.counter_changes
            << "; next unread datagram in the host socket: " << r.host_next_datagram << " bytes");
}

} // namespace

TEST_CASE("a bulk UDP blast of frames of every size through the real passt arrives whole, in the default write mode") {
  if (!netpasst::e2e::in_private_netns) {
    WARN("not in the private network namespace (needs root): skipped");
    return;
  }
  // Every size, and a mix; then 64-byte frames, which the old batching cuts
  // right after a header every fifth kernel buffer.
  const auto sizes = GENERATE(blast_sizes(40000, 1), std::vector<std::size_t>(300000, 64));
  const auto r = blast(netpasst::stream_write_mode::every_passt, sizes);
  report("every_passt", r, sizes.size());
  CHECK_FALSE(r.transport_error);
  CHECK(r.sent == sizes.size());
  CHECK(r.received == sizes.size());
  CHECK(r.corrupt == 0);
  CHECK(r.duplicates == 0);
  CHECK(r.passt_alive);
  CHECK(r.link_ok);
}

TEST_CASE("the same blast with the old unrestricted batching loses datagrams in passt before July 2024",
          "[.][demo]") {
  // A demonstration for the passt under test (Debian 12's by default); run
  // it with the tag [demo]. A passt from July 2024 on reads any split and
  // passes it.
  if (!netpasst::e2e::in_private_netns) return;
  const auto sizes = GENERATE(blast_sizes(40000, 1), std::vector<std::size_t>(300000, 64));
  const auto r = blast(netpasst::stream_write_mode::any_split_passt_2024_07, sizes);
  report("any_split_passt_2024_07", r, sizes.size());
  CHECK(r.received < sizes.size());
}
