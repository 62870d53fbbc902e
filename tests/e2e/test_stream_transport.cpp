// End-to-end: the stream transport against the real passt (`passt --quiet
// --foreground --fd 3`), in the private network namespace e2e_main.cpp made
// (template interface np0 192.0.2.10/24, gateway 192.0.2.1).
#include <netpasst/transport/stream.hpp>

#include <netpasst/launcher/passt_launcher.hpp>

#include "e2e_env.hpp"

#include <asio/io_context.hpp>
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <functional>
#include <optional>
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
  void kill() {
    std::error_code ignored;
    process.signal(SIGKILL, ignored);
    process.terminate(std::chrono::milliseconds(1000), ignored);
  }
  bool alive() const { return process.running(); }
};

constexpr std::array<unsigned char, 6> guest_mac = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
constexpr std::array<unsigned char, 4> guest_ip = {192, 0, 2, 10};
constexpr std::array<unsigned char, 4> gateway_ip = {192, 0, 2, 1};

bytes arp_request() {
  std::vector<unsigned char> f = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}; // broadcast
  f.insert(f.end(), guest_mac.begin(), guest_mac.end());
  f.insert(f.end(), {0x08, 0x06,                          // ARP
                     0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01}); // Ethernet/IPv4, request
  f.insert(f.end(), guest_mac.begin(), guest_mac.end());
  f.insert(f.end(), guest_ip.begin(), guest_ip.end());
  f.insert(f.end(), 6, 0x00);
  f.insert(f.end(), gateway_ip.begin(), gateway_ip.end());
  bytes out(f.size());
  std::memcpy(out.data(), f.data(), f.size());
  return out;
}

// Receives until an ARP reply arrives (10 s deadline); returns it, or nothing
// with `error` set when the transport failed.
std::optional<bytes> await_arp_reply(asio::io_context& ctx, netpasst::stream_transport& t,
                                     std::error_code& error) {
  std::optional<bytes> reply;
  std::function<void()> loop = [&] {
    t.async_receive([&](std::error_code ec, frame_batch batch) {
      if (ec) return void(error = ec);
      for (auto f : batch) {
        const auto* p = reinterpret_cast<const unsigned char*>(f.data());
        if (f.size() >= 42 && p[12] == 0x08 && p[13] == 0x06 && p[21] == 2) {
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

void check_arp_reply(const bytes& reply) {
  const auto* p = reinterpret_cast<const unsigned char*>(reply.data());
  CHECK(std::memcmp(p, guest_mac.data(), 6) == 0);       // Ethernet destination: us
  CHECK(p[20] == 0x00);
  CHECK(p[21] == 0x02);                                  // opcode: reply
  CHECK(std::memcmp(p + 28, gateway_ip.data(), 4) == 0); // sender IP: the gateway
  CHECK(std::memcmp(p + 32, guest_mac.data(), 6) == 0);  // target MAC: our guest MAC
  CHECK(std::memcmp(p + 38, guest_ip.data(), 4) == 0);   // target IP: our guest IP
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
  REQUIRE(t.try_send(arp_request(), ec));
  auto reply = await_arp_reply(ctx, t, ec);
  REQUIRE_FALSE(ec);
  REQUIRE(reply);
  check_arp_reply(*reply);

  // An oversize frame is refused locally; passt never sees it and keeps answering.
  CHECK_FALSE(t.try_send(bytes(65536, std::byte{0}), ec));
  CHECK(ec == errc::frame_too_long);
  CHECK(t.counters().frames_refused == 1);
  t.send(arp_request()); // blocking form, written before it returns
  ec.clear();
  reply = await_arp_reply(ctx, t, ec);
  REQUIRE_FALSE(ec);
  REQUIRE(reply);
  check_arp_reply(*reply);
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
