// netpasst/transport/tap.hpp against real tap devices, as root, in the
// private network namespace of e2e_main and in namespaces made here (inside
// a private mount namespace, see e2e_mounts.hpp). The kernel is the peer:
// it answers ARP, and sends the UDP datagrams a socket in the namespace is
// given.

// GCC 12 at -O1 (the sanitizer builds) reports -Wmaybe-uninitialized inside
// Asio's use_future handler: a false positive in library code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// Test seam (see transport/impl/tap.hpp): make chosen writes fail.
#include <cerrno>
#include <sys/uio.h>
#include <unistd.h>
namespace seam {
inline int fail_writes_with = 0; // errno for the next write, 0: none
inline bool fail_write() {
  if (fail_writes_with == 0) return false;
  errno = fail_writes_with;
  fail_writes_with = 0;
  return true;
}
inline long write(int fd, const void* data, std::size_t size) { return fail_write() ? -1 : ::write(fd, data, size); }
inline long writev(int fd, const iovec* parts, int count) { return fail_write() ? -1 : ::writev(fd, parts, count); }
inline long read(int fd, void* data, std::size_t size) { return ::read(fd, data, size); }
inline long readv(int fd, const iovec* parts, int count) { return ::readv(fd, parts, count); }
} // namespace seam
#define NETPASST_TAP_SYSCALL(name) seam::name
#include <netpasst/transport/tap.hpp>

#include "e2e_env.hpp"
#include "e2e_mounts.hpp"

#include <netpasst/concepts.hpp>
#include <netpasst/detail/netns.hpp>
#include <netpasst/guest/packet.hpp>

#include <asio/bind_allocator.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/bind_executor.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/deferred.hpp>
#include <asio/io_context.hpp>
#include <asio/strand.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using netpasst::errc;
using netpasst::frame;
using netpasst::frame_batch;
using netpasst::tap_transport;
using netpasst::unique_fd;
namespace packet = netpasst::packet;
using bytes = std::vector<std::byte>;

static_assert(netpasst::FrameTransport<tap_transport>);
static_assert(netpasst::FrameTransport<netpasst::basic_tap_transport<asio::io_context::executor_type>>);
static_assert(std::is_same_v<tap_transport::config_type, netpasst::tap_transport_config>);

static const bool private_mounts = netpasst::e2e::enter_private_mounts();

namespace {

bool usable() {
  if (netpasst::e2e::in_private_netns && private_mounts) return true;
  WARN("not root: skipped (needs a private network and mount namespace)");
  return false;
}

bool sh(const std::string& command) { return std::system((command + " >/dev/null 2>&1").c_str()) == 0; }

/// The identity of the calling thread's network namespace.
ino_t current_netns() {
  struct stat st {};
  ::stat("/proc/thread-self/ns/net", &st);
  return st.st_ino;
}

/// A named network namespace (ip netns add), deleted at the end of the test.
struct named_netns {
  std::string name;
  explicit named_netns(std::string n) : name(std::move(n)) { REQUIRE(sh("ip netns add " + name)); }
  ~named_netns() { sh("ip netns delete " + name); }
  std::string ip(const std::string& args) const { return "ip -n " + name + " " + args; }
  bool has_link(const std::string& ifname) const { return sh(ip("link show dev " + ifname)); }
};

/// Runs `io` until `done()` or 10 s (a hang guard, not a timing check).
bool run_until(asio::io_context& io, const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  io.restart();
  while (!done() && std::chrono::steady_clock::now() < deadline)
    if (io.run_one_for(50ms) == 0) io.restart();
  return done();
}

std::size_t open_fds() {
  std::size_t n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (::readdir(d)) ++n;
    ::closedir(d);
  }
  return n;
}

constexpr packet::mac_address our_mac{{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}};
const packet::ipv4_address kernel_ip = asio::ip::make_address_v4("10.77.0.1");
const packet::ipv4_address our_ip = asio::ip::make_address_v4("10.77.0.2");

/// An ARP request from us for the kernel's address.
bytes arp_request() {
  bytes f(60);
  packet::arp_packet arp;
  arp.operation = packet::arp_operation::request;
  arp.sender_mac = our_mac;
  arp.sender_ip = our_ip;
  arp.target_ip = kernel_ip;
  REQUIRE(packet::build_arp_frame(f, arp, packet::mac_address::broadcast()) == 42);
  return f;
}

/// True when `f` is the kernel's ARP reply to `arp_request()`.
bool is_arp_reply(frame f) {
  std::error_code ec;
  const auto eth = packet::parse_ethernet(f, ec);
  if (ec || eth.ether_type != 0x0806 || eth.destination != our_mac) return false;
  const auto arp = packet::parse_arp(eth.payload, ec);
  return !ec && arp.operation == packet::arp_operation::reply && arp.sender_ip == kernel_ip && arp.target_mac == our_mac;
}

/// The sequence number a datagram from `udp_sender` carries, or -1 for
/// another frame.
long udp_sequence(frame f) {
  std::error_code ec;
  const auto eth = packet::parse_ethernet(f, ec);
  if (ec || eth.ether_type != 0x0800) return -1;
  const auto ip = packet::parse_ipv4(eth.payload, ec);
  if (ec || ip.protocol != 17 || ip.destination != our_ip) return -1;
  const auto udp = packet::parse_udp(ip, ec);
  if (ec || udp.destination_port != 9 || udp.payload.size() < 4) return -1;
  std::uint32_t n;
  std::memcpy(&n, udp.payload.data(), 4);
  return long(n);
}

/// A tap "nptap0" in the namespace `ns`, up, 10.77.0.1/24, MTU 65521 (the
/// most a tap takes: 65535-byte frames), our address 10.77.0.2 resolved
/// statically to `our_mac` so the kernel sends to us without asking.
tap_transport open_configured_tap(asio::io_context& io, const named_netns& ns,
                                  const netpasst::tap_transport_config& config = {}) {
  tap_transport tap(io, netpasst::tap_device_options{"nptap0", ns.name, -1, std::nullopt}, config);
  REQUIRE(sh(ns.ip("link set dev nptap0 mtu 65521 up")));
  REQUIRE(sh(ns.ip("address add 10.77.0.1/24 dev nptap0")));
  REQUIRE(sh(ns.ip("neigh replace 10.77.0.2 lladdr 02:00:00:00:00:02 dev nptap0 nud permanent")));
  return tap;
}

/// A UDP socket created inside `ns` (it stays there), sending to us.
unique_fd udp_socket_in(const named_netns& ns) {
  std::error_code ec;
  unique_fd ns_fd = netpasst::detail::open_netns(ns.name, ec);
  REQUIRE_FALSE(ec);
  auto socket = netpasst::detail::call_in_netns(
      ns_fd.get(), [] { return unique_fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)); }, ec);
  REQUIRE_FALSE(ec);
  REQUIRE(*socket);
  return std::move(*socket);
}

void send_datagrams(int socket, std::uint32_t count, std::size_t size) {
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(9);
  to.sin_addr.s_addr = htonl(our_ip.to_uint());
  std::vector<char> payload(size, 'x');
  for (std::uint32_t i = 0; i < count; ++i) {
    std::memcpy(payload.data(), &i, std::min<std::size_t>(4, size)); // a 1-byte datagram carries part of it
    REQUIRE(::sendto(socket, payload.data(), payload.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to) ==
            ssize_t(size));
  }
}

/// A socket of `type` created inside `ns` (it stays there).
unique_fd socket_in(const named_netns& ns, int type) {
  std::error_code ec;
  unique_fd ns_fd = netpasst::detail::open_netns(ns.name, ec);
  REQUIRE_FALSE(ec);
  auto socket = netpasst::detail::call_in_netns(
      ns_fd.get(), [type] { return unique_fd(::socket(AF_INET, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)); }, ec);
  REQUIRE_FALSE(ec);
  REQUIRE(*socket);
  return std::move(*socket);
}

sockaddr_in socket_address(packet::ipv4_address address, std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(address.to_uint());
  return a;
}

/// True when `f` is IPv4 carrying TCP or UDP whose checksum verifies, summed
/// with the guest side's own code (packet.hpp), not the transport's.
bool transport_checksum_valid(frame f) {
  std::error_code ec;
  const auto eth = packet::parse_ethernet(f, ec);
  if (ec || eth.ether_type != 0x0800) return false;
  const auto ip = packet::parse_ipv4(eth.payload, ec);
  if (ec || (ip.protocol != 6 && ip.protocol != 17)) return false;
  std::byte pseudo[12]{};
  std::memcpy(pseudo, ip.header.data() + 12, 8);
  pseudo[9] = std::byte{ip.protocol};
  pseudo[10] = std::byte(ip.payload.size() >> 8);
  pseudo[11] = std::byte(ip.payload.size() & 0xff);
  return packet::checksum_finish(packet::checksum_add(ip.payload, packet::checksum_add(pseudo))) == 0;
}

/// The IPv4 protocol `f` carries from `from` to `to`, or 0.
unsigned ipv4_protocol(frame f, packet::ipv4_address from, packet::ipv4_address to) {
  std::error_code ec;
  const auto eth = packet::parse_ethernet(f, ec);
  if (ec || eth.ether_type != 0x0800) return 0;
  const auto ip = packet::parse_ipv4(eth.payload, ec);
  return !ec && ip.source == from && ip.destination == to ? ip.protocol : 0;
}

/// A UDP frame from us to the kernel's address, port 7777, with a correct
/// checksum or, if `damaged`, one off by one.
bytes udp_to_kernel(const packet::mac_address& tap_mac, bool damaged) {
  bytes f(200);
  const std::string text = "checksum probe";
  std::memcpy(f.data() + packet::udp_frame_overhead, text.data(), text.size());
  const std::size_t size =
      packet::build_udp_frame(f, {our_mac, tap_mac, our_ip, kernel_ip}, 4000, 7777,
                              std::span<const std::byte>(f).subspan(packet::udp_frame_overhead, text.size()));
  REQUIRE(size > 0);
  f.resize(size);
  if (damaged) f[40] ^= std::byte{1}; // the low byte of the UDP checksum
  return f;
}

/// What one async_receive delivered.
struct received {
  std::optional<std::error_code> ec;
  std::vector<bytes> frames;
};

void receive_into(tap_transport& t, received& r) {
  t.async_receive([&r](std::error_code ec, frame_batch batch) {
    for (frame f : batch) r.frames.emplace_back(f.begin(), f.end());
    r.ec = ec;
  });
}

struct allocation_count {
  std::size_t allocations = 0;
};
template <class T> struct counting_allocator {
  using value_type = T;
  allocation_count* count;
  explicit counting_allocator(allocation_count* c) : count(c) {}
  template <class U> counting_allocator(const counting_allocator<U>& other) : count(other.count) {}
  T* allocate(std::size_t n) {
    ++count->allocations;
    return std::allocator<T>().allocate(n);
  }
  void deallocate(T* p, std::size_t n) { std::allocator<T>().deallocate(p, n); }
  template <class U> bool operator==(const counting_allocator<U>& other) const { return count == other.count; }
};

} // namespace

TEST_CASE("tap: opens a tap by name in the caller's namespace; the kernel's name if none; gone on close") {
  if (!usable()) return;
  const std::size_t fds_before = open_fds();
  {
    asio::io_context io;
    packet::mac_address mac{{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}};
    tap_transport tap(io, netpasst::tap_device_options{"nptap0", "", -1, mac});
    CHECK(tap.name() == "nptap0");
    CHECK(tap.is_open());
    CHECK(tap.native_handle() >= 0);
    CHECK(tap.mac() == mac);
    CHECK(::if_nametoindex("nptap0") != 0);
    CHECK((::fcntl(tap.native_handle(), F_GETFD) & FD_CLOEXEC));
    CHECK((::fcntl(tap.native_handle(), F_GETFL) & O_NONBLOCK));
    tap.close();
    tap.close(); // idempotent
    CHECK_FALSE(tap.is_open());
    CHECK(tap.native_handle() == -1);
    CHECK(::if_nametoindex("nptap0") == 0);
    CHECK_THROWS_AS(tap.mac(), std::system_error);
    tap_transport any(io, netpasst::tap_device_options{});
    CHECK(any.name().rfind("tap", 0) == 0);
    CHECK(::if_nametoindex(any.name().c_str()) != 0);
  }
  CHECK(open_fds() == fds_before);
}

TEST_CASE("tap: opens inside another namespace by name, path or fd; the calling thread never moves") {
  if (!usable()) return;
  named_netns ns("nptap-open");
  const ino_t home = current_netns();
  const std::size_t fds_before = open_fds();
  const std::string how = GENERATE("name", "path", "fd");
  INFO(how);
  {
    asio::io_context io;
    netpasst::tap_device_options where{"nptap1", "", -1, std::nullopt};
    unique_fd ns_fd(::open(("/run/netns/" + ns.name).c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(ns_fd);
    if (how == "name") where.netns = ns.name;
    else if (how == "path") where.netns = "/run/netns/" + ns.name;
    else where.netns_fd = ns_fd.get();
    tap_transport tap(io, where);
    CHECK(current_netns() == home);
    CHECK(tap.name() == "nptap1");
    CHECK(ns.has_link("nptap1"));
    CHECK(::if_nametoindex("nptap1") == 0); // not here
  }
  CHECK_FALSE(ns.has_link("nptap1")); // the tap went with its descriptor
  CHECK(open_fds() == fds_before);
}

TEST_CASE("tap: bad inputs are refused with errors that name the problem") {
  if (!usable()) return;
  asio::io_context io;
  auto refused = [&](const netpasst::tap_device_options& options, std::error_code expected, const char* words) {
    std::error_code ec;
    netpasst::tap_device device = netpasst::open_tap_device(options, ec);
    CHECK(ec == expected);
    CHECK_FALSE(device.fd);
    try {
      tap_transport t(io, options);
      FAIL("no exception");
    } catch (const std::system_error& e) {
      CHECK(e.code() == expected);
      CHECK_THAT(e.what(), Catch::Contains(words));
    }
  };
  const auto invalid = std::make_error_code(std::errc::invalid_argument);
  refused({"a/b", "", -1, std::nullopt}, invalid, "interface name");
  refused({"sixteen-bytes-xx", "", -1, std::nullopt}, invalid, "interface name");
  refused({"nptap2", "x", 0, std::nullopt}, invalid, "netns and netns_fd are both set");
  refused({"nptap2", "no-such-netns", -1, std::nullopt}, std::error_code(ENOENT, std::system_category()),
          "/run/netns/no-such-netns");
  refused({"nptap2", "..", -1, std::nullopt}, invalid, "network namespace");
  unique_fd uts(::open("/proc/self/ns/uts", O_RDONLY | O_CLOEXEC));
  refused({"nptap2", "", uts.get(), std::nullopt}, std::error_code(EINVAL, std::system_category()),
          "not a network namespace");
  refused({"nptap2", "/proc/self/ns/uts", -1, std::nullopt}, std::error_code(EINVAL, std::system_category()),
          "not a network namespace");

  // A descriptor that is not a tap (a tun carries no Ethernet header).
  CHECK_THROWS_AS(tap_transport(io, unique_fd()), std::system_error);
  CHECK_THROWS_AS(tap_transport(io, unique_fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0))), std::system_error);
  unique_fd tun(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  ifreq request{};
  std::strcpy(request.ifr_name, "nptap3");
  request.ifr_flags = IFF_TUN | IFF_NO_PI;
  REQUIRE(::ioctl(tun.get(), TUNSETIFF, &request) == 0);
  CHECK_THROWS_WITH(tap_transport(io, std::move(tun)), Catch::Contains("needs a tap"));
  CHECK(::if_nametoindex("nptap3") == 0); // the refused descriptor was closed
}

TEST_CASE("tap: frames both ways with the kernel (ARP request in, reply out)") {
  if (!usable()) return;
  asio::io_context io;
  named_netns ns("nptap-arp");
  tap_transport tap = open_configured_tap(io, ns);
  std::error_code ec;
  const bytes request = arp_request();
  REQUIRE(tap.try_send(request, ec));
  CHECK_FALSE(ec);
  CHECK(tap.counters().frames_sent == 1);
  CHECK(tap.counters().bytes_sent == 60);
  bool answered = false;
  std::function<void()> receive = [&] {
    tap.async_receive([&](std::error_code e, frame_batch batch) {
      REQUIRE_FALSE(e);
      for (frame f : batch) answered = answered || is_arp_reply(f);
      if (!answered) receive();
    });
  };
  receive();
  REQUIRE(run_until(io, [&] { return answered; }));
  CHECK(tap.counters().frames_received >= 1);
}

TEST_CASE("tap: every queued frame is read, in order, in bounded batches (reads until EAGAIN, never waits early)") {
  if (!usable()) return;
  asio::io_context io;
  named_netns ns("nptap-batch");
  const std::size_t size = GENERATE(100, 1472, 60000);
  INFO("datagram size " << size);
  netpasst::tap_transport_config config;
  config.max_batch_frames = 16;
  config.receive_buffer_bytes = 0; // the minimum: room for 2 frames of the largest size
  tap_transport tap = open_configured_tap(io, ns, config);
  CHECK(tap.config().receive_buffer_bytes >= 2 * 65536);
  unique_fd socket = udp_socket_in(ns);
  const std::uint32_t count = size == 60000 ? 40 : 300;
  // Everything is queued in the tap before the first receive: a receive that
  // waited for readiness after a batch cut short by the bounds would hang.
  send_datagrams(socket.get(), count, size);
  std::vector<long> sequence;
  std::size_t batches = 0, largest_batch = 0;
  std::function<void()> receive = [&] {
    tap.async_receive([&](std::error_code e, frame_batch batch) {
      REQUIRE_FALSE(e);
      ++batches;
      largest_batch = std::max(largest_batch, batch.size());
      for (frame f : batch)
        if (long n = udp_sequence(f); n >= 0) sequence.push_back(n);
      if (sequence.size() < count) receive();
    });
  };
  receive();
  REQUIRE(run_until(io, [&] { return sequence.size() == count; }));
  for (std::uint32_t i = 0; i < count; ++i) REQUIRE(sequence[i] == long(i));
  CHECK(largest_batch <= 16);
  CHECK(largest_batch >= 2);
  CHECK(batches < count);
  const auto c = tap.counters();
  CHECK(c.batches == batches);
  CHECK(c.reads == c.frames_received); // nothing dropped
  CHECK(c.frames_dropped_received == 0);
}

TEST_CASE("tap: sizes outside 14..65535 are refused and counted; 14 and 65535 go") {
  if (!usable()) return;
  asio::io_context io;
  named_netns ns("nptap-size");
  tap_transport tap = open_configured_tap(io, ns);
  std::error_code ec;
  CHECK_FALSE(tap.try_send(bytes(13), ec));
  CHECK(ec == errc::frame_too_short);
  CHECK(ec == netpasst::condition::frame_refused);
  CHECK_FALSE(tap.try_send(bytes(65536), ec));
  CHECK(ec == errc::frame_too_long);
  CHECK(tap.counters().frames_refused == 2);
  bytes small(14), large(65535);
  std::memcpy(small.data(), "\x02\0\0\0\0\x09\x02\0\0\0\0\x02\x88\xb5", 14); // local experimental ethertype
  std::memcpy(large.data(), small.data(), 14);
  const frame both[] = {small, large};
  CHECK(tap.try_send(both, ec) == 2);
  CHECK_FALSE(ec);
  CHECK(tap.counters().frames_sent == 2);
  CHECK(tap.counters().bytes_sent == 14 + 65535);
  CHECK(tap.is_open());
}

TEST_CASE("tap: frames sent while the interface is down are dropped and counted, not refused") {
  if (!usable()) return;
  asio::io_context io;
  named_netns ns("nptap-down");
  tap_transport tap = open_configured_tap(io, ns);
  REQUIRE(sh(ns.ip("link set dev nptap0 down")));
  std::error_code ec;
  const bytes request = arp_request();
  CHECK(tap.try_send(request, ec));
  CHECK_FALSE(ec);
  CHECK(tap.counters().frames_dropped_link_down == 1);
  CHECK(tap.counters().frames_sent == 0);
}

TEST_CASE("tap: a full tap refuses with would_block; async_wait_writable says when to send again") {
  if (!usable()) return;
  asio::io_context io;
  named_netns ns("nptap-block");
  tap_transport tap = open_configured_tap(io, ns);
  std::error_code ec;
  const bytes request = arp_request();

  // Not blocked: writable at once, but never inside the call.
  std::optional<std::error_code> writable;
  tap.async_wait_writable([&](std::error_code e) { writable = e; });
  CHECK_FALSE(writable);
  REQUIRE(run_until(io, [&] { return writable.has_value(); }));
  CHECK_FALSE(*writable);

  seam::fail_writes_with = EAGAIN;
  CHECK_FALSE(tap.try_send(request, ec));
  CHECK(ec == errc::would_block);
  CHECK(tap.counters().sends_would_block == 1);
  CHECK(tap.counters().frames_sent == 0);
  writable.reset();
  tap.async_wait_writable([&](std::error_code e) { writable = e; });
  REQUIRE(run_until(io, [&] { return writable.has_value(); }));
  CHECK_FALSE(*writable);
  CHECK(tap.try_send(request, ec));
  CHECK(tap.counters().frames_sent == 1);

  // Memory shortage in the kernel: dropped and counted, like a NIC out of buffers.
  seam::fail_writes_with = ENOBUFS;
  CHECK(tap.try_send(request, ec));
  CHECK(tap.counters().frames_dropped_no_memory == 1);

  // Any other error closes the transport with it.
  seam::fail_writes_with = EFAULT;
  CHECK_FALSE(tap.try_send(request, ec));
  CHECK(ec == std::error_code(EFAULT, std::system_category()));
  CHECK_FALSE(tap.is_open());
  CHECK_FALSE(tap.try_send(request, ec));
  CHECK(ec == std::error_code(EFAULT, std::system_category()));
}

TEST_CASE("tap: cancel() and cancellation slots (terminal, partial, total) end a receive; the tap stays usable") {
  if (!usable()) return;
  asio::io_context io;
  named_netns ns("nptap-cancel");
  tap_transport tap(io, netpasst::tap_device_options{"nptap0", ns.name, -1, std::nullopt}); // down: silent
  received r;
  receive_into(tap, r);
  io.restart();
  io.poll();
  CHECK_FALSE(r.ec);
  tap.cancel();
  REQUIRE(run_until(io, [&] { return r.ec.has_value(); }));
  CHECK(*r.ec == asio::error::operation_aborted);
  CHECK(tap.is_open());

  for (auto type : {asio::cancellation_type::terminal, asio::cancellation_type::partial,
                    asio::cancellation_type::total}) {
    asio::cancellation_signal signal;
    std::optional<std::error_code> result;
    tap.async_receive(asio::bind_cancellation_slot(signal.slot(), [&](std::error_code e, frame_batch batch) {
      result = e;
      CHECK(batch.empty());
    }));
    io.restart();
    io.poll();
    CHECK_FALSE(result);
    signal.emit(type);
    REQUIRE(run_until(io, [&] { return result.has_value(); }));
    CHECK(*result == asio::error::operation_aborted);
  }

  // Still works: bring it up and talk ARP.
  REQUIRE(sh(ns.ip("link set dev nptap0 up")));
  REQUIRE(sh(ns.ip("address add 10.77.0.1/24 dev nptap0")));
  std::error_code ec;
  REQUIRE(tap.try_send(arp_request(), ec));
  bool answered = false;
  std::function<void()> receive = [&] {
    tap.async_receive([&](std::error_code e, frame_batch batch) {
      REQUIRE_FALSE(e);
      for (frame f : batch) answered = answered || is_arp_reply(f);
      if (!answered) receive();
    });
  };
  receive();
  REQUIRE(run_until(io, [&] { return answered; }));
}

TEST_CASE("tap: a cancellation that lands after a receive's wait completed, before the receive resumed, still ends it") {
  // On a strand run by two threads: a strand handler has the kernel queue a
  // datagram on the tap; while the handler sleeps, the other thread
  // completes the receive's wait and queues its continuation behind it. The
  // handler then reads the frame away through a second descriptor and
  // cancels, finding no wait to cancel. The receive resumes, reads nothing,
  // and must not wait again on a quiet tap.
  if (!usable()) return;
  const bool through_slot = GENERATE(false, true);
  asio::io_context io;
  named_netns ns("nptap-late");
  REQUIRE(sh("ip netns exec " + ns.name + " sysctl -qw net.ipv6.conf.default.disable_ipv6=1")); // no chatter
  const auto strand = asio::make_strand(io);
  netpasst::basic_tap_transport<asio::strand<asio::io_context::executor_type>> tap(
      strand, netpasst::tap_device_options{"nptap0", ns.name, -1, std::nullopt});
  REQUIRE(sh(ns.ip("link set dev nptap0 mtu 65521 up")));
  REQUIRE(sh(ns.ip("address add 10.77.0.1/24 dev nptap0")));
  REQUIRE(sh(ns.ip("neigh replace 10.77.0.2 lladdr 02:00:00:00:00:02 dev nptap0 nud permanent")));
  const unique_fd sender = udp_socket_in(ns);
  const unique_fd second(::fcntl(tap.native_handle(), F_DUPFD_CLOEXEC, 3));
  REQUIRE(second);
  std::vector<std::byte> scratch(70000);
  while (::read(second.get(), scratch.data(), scratch.size()) > 0) {} // whatever came up with the link

  asio::cancellation_signal signal;
  std::promise<std::pair<std::error_code, std::size_t>> result;
  std::atomic<int> read_away{0};
  asio::post(strand, [&] {
    tap.async_receive(asio::bind_cancellation_slot(signal.slot(), [&](std::error_code ec, frame_batch batch) {
      result.set_value({ec, batch.size()});
    }));
  });
  auto work = asio::make_work_guard(io);
  std::thread first([&] { io.run(); });
  std::this_thread::sleep_for(50ms); // the receive is waiting
  asio::post(strand, [&] {
    send_datagrams(sender.get(), 1, 100);
    std::this_thread::sleep_for(200ms); // meanwhile the first thread's reactor completes the wait
    while (::read(second.get(), scratch.data(), scratch.size()) > 0) ++read_away;
    if (through_slot) signal.emit(asio::cancellation_type::terminal);
    else tap.cancel();
  });
  std::thread other([&] { io.run(); });
  auto outcome = result.get_future();
  const bool ended = outcome.wait_for(3s) == std::future_status::ready;
  if (!ended) asio::post(strand, [&] { tap.close(); }); // let the threads finish
  work.reset();
  first.join(), other.join();
  REQUIRE(read_away == 1);
  REQUIRE(ended);
  const auto [ec, frames] = outcome.get();
  CHECK(ec == asio::error::operation_aborted);
  CHECK(frames == 0);
}

TEST_CASE("tap: close() ends pending operations with transport_closed; deleting the interface, connection_closed") {
  if (!usable()) return;
  asio::io_context io;
  named_netns ns("nptap-close");
  {
    tap_transport tap(io, netpasst::tap_device_options{"nptap0", ns.name, -1, std::nullopt});
    received r;
    receive_into(tap, r);
    io.restart();
    io.poll();
    tap.close();
    REQUIRE(run_until(io, [&] { return r.ec.has_value(); }));
    CHECK(*r.ec == errc::transport_closed);
    std::error_code ec;
    CHECK_FALSE(tap.try_send(arp_request(), ec));
    CHECK(ec == errc::transport_closed);
    std::optional<std::error_code> writable;
    tap.async_wait_writable([&](std::error_code e) { writable = e; });
    REQUIRE(run_until(io, [&] { return writable.has_value(); }));
    CHECK(*writable == errc::transport_closed);
    CHECK_FALSE(ns.has_link("nptap0"));
  }
  {
    tap_transport tap(io, netpasst::tap_device_options{"nptap0", ns.name, -1, std::nullopt});
    received r;
    receive_into(tap, r);
    io.restart();
    io.poll();
    REQUIRE(sh(ns.ip("link delete dev nptap0")));
    REQUIRE(run_until(io, [&] { return r.ec.has_value(); }));
    CHECK(*r.ec == errc::connection_closed);
    CHECK(*r.ec == netpasst::condition::connection_lost);
    CHECK_FALSE(tap.is_open());
    std::error_code ec;
    CHECK_FALSE(tap.try_send(arp_request(), ec));
    CHECK(ec == errc::connection_closed);
  }
}

TEST_CASE("tap: use_future, deferred, use_awaitable; the handler's executor and allocator") {
  if (!usable()) return;
  asio::io_context io;
  named_netns ns("nptap-tokens");
  tap_transport tap = open_configured_tap(io, ns);
  std::error_code ec;
  auto ask = [&] { REQUIRE(tap.try_send(arp_request(), ec)); };
  auto has_reply = [](frame_batch batch) {
    return std::any_of(batch.begin(), batch.end(), [](frame f) { return is_arp_reply(f); });
  };

  SECTION("use_future") {
    ask();
    std::thread runner([&] {
      auto guard = asio::make_work_guard(io);
      io.run_for(5s);
    });
    bool found = false;
    for (int i = 0; i < 20 && !found; ++i) {
      std::future<frame_batch> batch = tap.async_receive(asio::use_future);
      REQUIRE(batch.wait_for(5s) == std::future_status::ready);
      found = has_reply(batch.get());
    }
    std::future<void> writable = tap.async_wait_writable(asio::use_future);
    REQUIRE(writable.wait_for(5s) == std::future_status::ready);
    writable.get();
    io.stop();
    runner.join();
    CHECK(found);
  }
  SECTION("deferred: nothing happens until launched") {
    ask();
    auto op = tap.async_receive(asio::experimental::deferred);
    io.restart();
    io.poll();
    bool found = false, done = false;
    std::move(op)([&](std::error_code e, frame_batch batch) {
      done = true;
      found = !e && has_reply(batch);
    });
    REQUIRE(run_until(io, [&] { return done; }));
    if (!found) { // the kernel may have sent something else first (IPv6)
      done = false;
      tap.async_receive([&](std::error_code e, frame_batch batch) { done = true, found = !e && has_reply(batch); });
      REQUIRE(run_until(io, [&] { return done; }));
    }
    CHECK(found);
  }
#ifdef ASIO_HAS_CO_AWAIT
  SECTION("use_awaitable") {
    ask();
    bool found = false;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          for (int i = 0; i < 20 && !found; ++i) found = has_reply(co_await tap.async_receive(asio::use_awaitable));
          co_await tap.async_wait_writable(asio::use_awaitable);
        },
        asio::detached);
    REQUIRE(run_until(io, [&] { return found; }));
  }
#endif
  SECTION("bound executor and allocator") {
    allocation_count counts;
    auto strand = asio::make_strand(io);
    bool on_strand = false, done = false;
    tap.async_receive(asio::bind_executor(
        strand, asio::bind_allocator(counting_allocator<void>(&counts), [&](std::error_code, frame_batch) {
          on_strand = strand.running_in_this_thread();
          done = true;
        })));
    io.restart();
    io.poll(); // nothing to read yet: the receive waits, in memory from the allocator
    ask();
    REQUIRE(run_until(io, [&] { return done; }));
    CHECK(on_strand);
    CHECK(counts.allocations > 0);
  }
}

TEST_CASE("tap: checksum offload: the kernel's partial checksums are completed before frames are handed out") {
  if (!usable()) return;
  asio::io_context io;
  named_netns ns("nptap-csum");
  tap_transport tap = open_configured_tap(io, ns);
  CHECK(tap.config().checksum_offload);
  CHECK_FALSE(tap.config().trust_checksums);
  const std::size_t size = GENERATE(1, 101, 1472, 60001);
  INFO("datagram size " << size);
  unique_fd udp = udp_socket_in(ns);
  const std::uint32_t count = 20;
  send_datagrams(udp.get(), count, size);
  // And a TCP SYN (the kernel leaves its checksum partial too).
  unique_fd tcp = socket_in(ns, SOCK_STREAM);
  const sockaddr_in to = socket_address(our_ip, 80);
  CHECK(::connect(tcp.get(), reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0);
  std::size_t datagrams = 0, segments = 0, invalid = 0;
  std::function<void()> receive = [&] {
    tap.async_receive([&](std::error_code e, frame_batch batch) {
      REQUIRE_FALSE(e);
      for (frame f : batch) {
        const unsigned protocol = ipv4_protocol(f, kernel_ip, our_ip);
        if (protocol == 17) ++datagrams;
        if (protocol == 6) ++segments;
        if ((protocol == 6 || protocol == 17) && !transport_checksum_valid(f)) ++invalid;
      }
      if (datagrams < count || segments == 0) receive();
    });
  };
  receive();
  REQUIRE(run_until(io, [&] { return datagrams == count && segments > 0; }));
  CHECK(invalid == 0);
  CHECK(tap.counters().checksums_completed >= count + 1); // the kernel did hand them out partial
  CHECK(tap.counters().frames_dropped_received == 0);
}

TEST_CASE("tap: without checksum offload: no virtio-net header, the kernel computes checksums itself") {
  if (!usable()) return;
  asio::io_context io;
  named_netns ns("nptap-nocsum");
  netpasst::tap_transport_config config;
  config.checksum_offload = false;
  config.trust_checksums = true; // not without the header
  tap_transport tap = open_configured_tap(io, ns, config);
  CHECK_FALSE(tap.config().checksum_offload);
  CHECK_FALSE(tap.config().trust_checksums);
  unique_fd udp = udp_socket_in(ns);
  send_datagrams(udp.get(), 10, 1001);
  std::size_t datagrams = 0, invalid = 0;
  std::function<void()> receive = [&] {
    tap.async_receive([&](std::error_code e, frame_batch batch) {
      REQUIRE_FALSE(e);
      for (frame f : batch)
        if (ipv4_protocol(f, kernel_ip, our_ip) == 17) ++datagrams, invalid += !transport_checksum_valid(f);
      if (datagrams < 10) receive();
    });
  };
  receive();
  REQUIRE(run_until(io, [&] { return datagrams == 10; }));
  CHECK(invalid == 0);
  CHECK(tap.counters().checksums_completed == 0);
  // A frame with a wrong checksum is dropped by the kernel (it verifies).
  unique_fd server = socket_in(ns, SOCK_DGRAM);
  const sockaddr_in at = socket_address(kernel_ip, 7777);
  REQUIRE(::bind(server.get(), reinterpret_cast<const sockaddr*>(&at), sizeof at) == 0);
  std::error_code ec;
  REQUIRE(tap.try_send(udp_to_kernel(tap.mac(), true), ec));
  REQUIRE(tap.try_send(udp_to_kernel(tap.mac(), false), ec));
  char got[64];
  for (int i = 0; i < 200 && ::recv(server.get(), got, sizeof got, 0) < 0; ++i) std::this_thread::sleep_for(5ms);
  CHECK(::recv(server.get(), got, sizeof got, 0) < 0); // only the good one came
  CHECK(tap.counters().checksums_trusted == 0);
}

TEST_CASE("tap: a descriptor opened with a virtio-net header is taken: its size is asked, the offload set") {
  if (!usable()) return;
  asio::io_context io;
  named_netns ns("nptap-vnet");
  const bool offload = GENERATE(true, false);
  INFO("checksum_offload " << offload);
  netpasst::tap_device device =
      netpasst::open_tap_device({"nptap0", ns.name, -1, std::nullopt, /*virtio_net_header=*/true});
  // The caller chose a 12-byte header and asked for segmentation: the
  // transport reads the size and keeps only what it does (TUN_F_CSUM).
  const int header_size = 12;
  REQUIRE(::ioctl(device.fd.get(), TUNSETVNETHDRSZ, &header_size) == 0);
  REQUIRE(::ioctl(device.fd.get(), TUNSETOFFLOAD, static_cast<unsigned long>(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)) ==
          0);
  netpasst::tap_transport_config config;
  config.checksum_offload = offload;
  tap_transport tap(io, std::move(device.fd), config);
  CHECK(tap.config().checksum_offload == offload);
  REQUIRE(sh(ns.ip("link set dev nptap0 mtu 65521 up")));
  REQUIRE(sh(ns.ip("address add 10.77.0.1/24 dev nptap0")));
  REQUIRE(sh(ns.ip("neigh replace 10.77.0.2 lladdr 02:00:00:00:00:02 dev nptap0 nud permanent")));
  std::error_code ec;
  REQUIRE(tap.try_send(arp_request(), ec)); // behind a 12-byte header, or the kernel would not answer
  unique_fd udp = udp_socket_in(ns);
  send_datagrams(udp.get(), 10, 60001);
  bool answered = false;
  std::vector<long> sequence;
  std::size_t invalid = 0;
  std::function<void()> receive = [&] {
    tap.async_receive([&](std::error_code e, frame_batch batch) {
      REQUIRE_FALSE(e);
      for (frame f : batch) {
        answered = answered || is_arp_reply(f);
        if (long n = udp_sequence(f); n >= 0) sequence.push_back(n), invalid += !transport_checksum_valid(f);
      }
      if (!answered || sequence.size() < 10) receive();
    });
  };
  receive();
  REQUIRE(run_until(io, [&] { return answered && sequence.size() == 10; }));
  for (long i = 0; i < 10; ++i) CHECK(sequence[std::size_t(i)] == i);
  CHECK(invalid == 0);
  CHECK((tap.counters().checksums_completed > 0) == offload);
}

TEST_CASE("tap: trusted checksums: the namespace takes TCP/UDP data unverified; untrusted, a bad checksum is dropped") {
  if (!usable()) return;
  asio::io_context io;
  named_netns ns("nptap-trust");
  const bool trust = GENERATE(true, false);
  INFO("trust_checksums " << trust);
  netpasst::tap_transport_config config;
  config.trust_checksums = trust;
  tap_transport tap = open_configured_tap(io, ns, config);
  CHECK(tap.config().trust_checksums == trust);
  unique_fd server = socket_in(ns, SOCK_DGRAM);
  const sockaddr_in at = socket_address(kernel_ip, 7777);
  REQUIRE(::bind(server.get(), reinterpret_cast<const sockaddr*>(&at), sizeof at) == 0);
  std::error_code ec;
  REQUIRE(tap.try_send(udp_to_kernel(tap.mac(), true), ec));
  REQUIRE(tap.try_send(udp_to_kernel(tap.mac(), false), ec));
  char got[64];
  int received = 0;
  for (int i = 0; i < 100; ++i) {
    const ssize_t n = ::recv(server.get(), got, sizeof got, 0);
    if (n > 0) {
      CHECK(std::string(got, std::size_t(n)) == "checksum probe");
      ++received;
    } else {
      std::this_thread::sleep_for(5ms);
    }
  }
  CHECK(received == (trust ? 2 : 1));
  CHECK(tap.counters().checksums_trusted == (trust ? 2u : 0u));
  CHECK(tap.counters().frames_sent == 2);
}

TEST_CASE("tap: a trusted frame the namespace forwards leaves it with a correct checksum") {
  if (!usable()) return;
  asio::io_context io;
  named_netns ns("nptap-forward");
  netpasst::tap_transport_config config;
  config.trust_checksums = true;
  tap_transport tap = open_configured_tap(io, ns, config);
  // 10.77.0.3 is another host behind the same tap: the namespace routes a
  // frame from us to it straight back out, TTL one lower, and its checksum
  // is computed from the pseudo-header sum the trusted frame carried.
  REQUIRE(sh("ip netns exec " + ns.name + " sysctl -qw net.ipv4.ip_forward=1"));
  REQUIRE(sh(ns.ip("neigh replace 10.77.0.3 lladdr 02:00:00:00:00:03 dev nptap0 nud permanent")));
  const packet::ipv4_address other = asio::ip::make_address_v4("10.77.0.3");
  bytes f(300);
  const std::string text = "forwarded, odd length";
  std::memcpy(f.data() + packet::udp_frame_overhead, text.data(), text.size());
  f.resize(packet::build_udp_frame(f, {our_mac, tap.mac(), our_ip, other}, 4000, 9,
                                   std::span<const std::byte>(f).subspan(packet::udp_frame_overhead, text.size())));
  REQUIRE(f.size() > 0);
  std::error_code ec;
  REQUIRE(tap.try_send(f, ec));
  CHECK(tap.counters().checksums_trusted == 1);
  bool forwarded = false, valid = false;
  std::function<void()> receive = [&] {
    tap.async_receive([&](std::error_code e, frame_batch batch) {
      REQUIRE_FALSE(e);
      for (frame out : batch)
        if (ipv4_protocol(out, our_ip, other) == 17) forwarded = true, valid = transport_checksum_valid(out);
      if (!forwarded) receive();
    });
  };
  receive();
  REQUIRE(run_until(io, [&] { return forwarded; }));
  CHECK(valid);
  CHECK(tap.counters().checksums_completed >= 1); // it left partial, as it came
}
