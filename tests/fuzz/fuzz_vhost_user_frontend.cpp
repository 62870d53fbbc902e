// libFuzzer target: the vhost-user frontend's setup check and requests.
//
// Input: the head describes a VMM's device (memory regions and queues with
// any sizes, addresses and indices, features), the tail scripts a backend
// that answers each message correctly, malformed, with a refusal, with
// bytes nobody asked for, or hangs up (GET_VRING_BASE answers with any
// queue and index). The frontend opens, starts the device, stops queues
// and starts again as the input says.
//
// Checked: the setup check agrees with an independent one in 128-bit
// arithmetic (accepted exactly when every region is sound and apart from
// the others, every ring aligned and inside a region, every feature
// offered); the backend receives one descriptor per region; after a
// failure on the connection the frontend is closed with a failure message,
// after a refusal it is still open; the running queues are started ones;
// the closed wait completes once the frontend is closed.
#include <netpasst/transport/vhost_user_frontend.hpp>

#include "../common/vhost_user_messages.hpp"

#include <asio/io_context.hpp>

#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <thread>
#include <vector>

namespace {

namespace vhost = netpasst::detail::vhost;
__extension__ typedef unsigned __int128 u128; // 128-bit arithmetic cannot overflow here

[[noreturn]] void violated(const char* what) {
  std::fprintf(stderr, "invariant violated: %s\n", what);
  std::abort();
}

/// A part of the fuzz input, read front to back; zeros once used up.
struct script {
  const std::uint8_t* at;
  std::size_t left;
  std::uint8_t byte() noexcept { return left ? (--left, *at++) : 0; }
  std::uint64_t bytes(int n) noexcept {
    std::uint64_t v = 0;
    for (int i = 0; i < n; ++i) v = v << 8 | byte();
    return v;
  }
};

/// An address near one of a few bases, so that rings often land in regions.
std::uint64_t address(script& in, std::uint64_t base) {
  switch (in.byte() % 4) {
  case 0: return base + in.bytes(2) * 2;
  case 1: return base + in.bytes(3);
  case 2: return ~std::uint64_t{0} - in.bytes(2);
  default: return in.bytes(8);
  }
}

netpasst::vhost_user_device_setup make_setup(script& in, int fd, std::uint64_t mapped) {
  netpasst::vhost_user_device_setup s;
  s.features = in.byte() & 1 ? (1ull << 32) : in.bytes(8);
  const int regions = in.byte() % 10;
  for (int i = 0; i < regions; ++i) {
    const std::uint8_t shape = in.byte();
    netpasst::vhost_user_memory_region r;
    r.fd = shape & 1 ? -1 : fd;
    r.size = shape & 2 ? in.bytes(8) : (in.bytes(2) + 1) * 4096;
    r.guest_physical = address(in, 0x40000000ull * i);
    r.user_address = address(in, mapped + 0x10000000ull * i);
    r.mmap_offset = shape & 4 ? in.bytes(8) : 0;
    s.memory.push_back(r);
  }
  const int queues = in.byte() % 5;
  for (int i = 0; i < queues; ++i) {
    netpasst::vhost_user_queue q;
    q.index = in.byte() & 1 ? std::uint32_t(i) : std::uint32_t(in.bytes(2));
    q.size = std::uint16_t(in.byte() & 1 ? 1u << (in.byte() % 17) : in.bytes(2));
    q.next_available = std::uint16_t(in.bytes(2));
    const std::uint64_t base = s.memory.empty() ? mapped : s.memory[in.byte() % s.memory.size()].user_address;
    q.descriptors = address(in, base);
    q.available = address(in, base);
    q.used = address(in, base);
    q.kick_fd = in.byte() & 1 ? fd : -1;
    q.call_fd = in.byte() & 1 ? fd : -1;
    s.queues.push_back(q);
  }
  return s;
}

/// The setup check of vhost_user_frontend.hpp, written again without any
/// chance of overflow.
bool sound(const netpasst::vhost_user_device_setup& s, std::uint64_t offered) {
  const u128 limit = u128(1) << 64;
  if (s.memory.empty() || s.memory.size() > 8) return false;
  for (std::size_t i = 0; i < s.memory.size(); ++i) {
    const auto& r = s.memory[i];
    if (r.fd < 0 || r.size == 0) return false;
    if (u128(r.guest_physical) + r.size > limit || u128(r.user_address) + r.size > limit ||
        u128(r.mmap_offset) + r.size > limit)
      return false;
    for (std::size_t j = 0; j < i; ++j) {
      const auto& o = s.memory[j];
      if (u128(r.guest_physical) < u128(o.guest_physical) + o.size && u128(o.guest_physical) < u128(r.guest_physical) + r.size)
        return false;
      if (u128(r.user_address) < u128(o.user_address) + o.size && u128(o.user_address) < u128(r.user_address) + r.size)
        return false;
    }
  }
  if (s.queues.empty() || s.queues.size() > 256) return false;
  for (std::size_t i = 0; i < s.queues.size(); ++i) {
    const auto& q = s.queues[i];
    if (q.index > 255 || q.size == 0 || q.size > 32768 || !std::has_single_bit(q.size)) return false;
    for (std::size_t j = 0; j < i; ++j)
      if (s.queues[j].index == q.index) return false;
    const std::pair<std::uint64_t, u128> rings[] = {{q.descriptors, u128(16) * q.size},
                                                    {q.available, 6 + u128(2) * q.size},
                                                    {q.used, 6 + u128(8) * q.size}};
    const unsigned alignment[] = {16, 2, 4};
    for (int k = 0; k < 3; ++k) {
      if (rings[k].first % alignment[k]) return false;
      if (std::none_of(s.memory.begin(), s.memory.end(), [&](const auto& r) {
            return rings[k].first >= r.user_address && u128(rings[k].first) + rings[k].second <= u128(r.user_address) + r.size;
          }))
        return false;
    }
  }
  return (s.features & ~offered & ~vhost::f_protocol_features) == 0;
}

void send_all(int fd, const void* data, std::size_t size) {
  [[maybe_unused]] auto ignored = ::send(fd, data, size, MSG_NOSIGNAL);
}

/// Answers each message as the backend's script says, until the end of the
/// stream or a hang-up; checks that SET_MEM_TABLE carries a descriptor per
/// region.
void serve(int fd, script in) {
  for (;;) {
    auto m = netpasst::test::read_vhost_user_message(fd);
    if (!m) return;
    m->close_fds();
    if (m->request == vhost::set_mem_table) {
      std::uint32_t regions = 0;
      if (m->payload.size() >= 4) std::memcpy(&regions, m->payload.data(), 4);
      if (m->fds.size() != regions || m->payload.size() != 8 + 32 * std::size_t(regions))
        violated("SET_MEM_TABLE without a descriptor per region");
    }
    const bool owed = m->request == vhost::get_features || m->request == vhost::get_protocol_features ||
                      m->request == vhost::get_vring_base || (m->flags & vhost::need_reply_flag);
    const std::uint8_t action = in.byte();
    std::uint64_t value = 0;
    std::uint32_t request = m->request, flags = vhost::version | vhost::reply_flag, size = 8;
    switch (action % 8) {
    case 0: case 1: case 2: // the right answer
      if (m->request == vhost::get_features) value = action & 8 ? in.bytes(8) : vhost::f_version_1 | vhost::f_protocol_features | 3;
      else if (m->request == vhost::get_protocol_features) value = action & 8 ? in.bytes(8) : vhost::pf_reply_ack;
      else if (m->request == vhost::get_vring_base) {
        std::uint32_t queue = 0;
        if (m->payload.size() >= 4) std::memcpy(&queue, m->payload.data(), 4);
        value = (action & 8 ? in.bytes(4) : queue) | in.bytes(action & 16 ? 4 : 2) << 32;
      }
      if (!owed) continue;
      break;
    case 3: value = in.byte() | 1; break; // a refusal (or a reply nobody asked for)
    case 4: request = std::uint32_t(in.bytes(4)); break;
    case 5: flags = std::uint32_t(in.bytes(4)); break;
    case 6: size = std::uint32_t(in.byte() % 16); break;
    default: ::shutdown(fd, SHUT_RDWR); return;
    }
    std::byte out[20];
    const std::uint32_t header[3] = {request, flags, size};
    std::memcpy(out, header, 12);
    std::memcpy(out + 12, &value, 8);
    send_all(fd, out, 12 + std::min<std::size_t>(size, 8));
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::size_t head = std::min<std::size_t>(size - 1, std::size_t(data[0]) * 4);
  script device_script{data + 1, head}, backend_script{data + 1 + head, size - 1 - head};

  static const int memory = [] {
    const int fd = ::memfd_create("fuzz-vmm", MFD_CLOEXEC);
    if (fd < 0 || ::ftruncate(fd, 4096) != 0) violated("memfd");
    return fd;
  }();
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) violated("socketpair");
  std::thread backend([fd = fds[1], backend_script] {
    serve(fd, backend_script);
    ::close(fd);
  });
  {
    asio::io_context io;
    netpasst::vhost_user_frontend frontend(io, netpasst::unique_fd(fds[0]), {.reply_timeout = std::chrono::milliseconds(200)});
    std::optional<std::error_code> closed;
    frontend.async_wait_closed([&](std::error_code e) { closed = e; });
    std::error_code ec;
    // Checks what a request left, then lets the closed wait judge the socket.
    auto after = [&](bool refused_locally_allowed) {
      if (ec == netpasst::errc::invalid_device_setup) {
        if (!refused_locally_allowed) violated("a refusal where none is possible");
        if (!frontend.is_open() || frontend.failure_message().empty()) violated("a refusal closed the frontend or said nothing");
      } else if (ec && (frontend.is_open() || frontend.failure_message().empty())) {
        violated("a failed request left the frontend open or unexplained");
      }
      io.poll();
    };
    frontend.open(ec);
    after(false);
    const std::uint64_t mapped = 0x7f0000000000;
    for (int round = 0; round < 3 && frontend.is_open(); ++round) {
      const auto setup = make_setup(device_script, memory, mapped);
      const bool expected = sound(setup, frontend.negotiation().offered_features);
      const bool was_running = !frontend.running_queues().empty();
      frontend.start(setup, ec);
      after(true);
      if (ec == netpasst::errc::invalid_device_setup && expected && !was_running) violated("a sound setup refused");
      if (ec != netpasst::errc::invalid_device_setup && !expected) violated("an unsound setup accepted");
      for (std::uint32_t q : frontend.running_queues())
        if (std::none_of(setup.queues.begin(), setup.queues.end(), [&](const auto& s) { return s.index == q; }) && !was_running)
          violated("a running queue that was never started");
      for (int stops = device_script.byte() % 4; stops > 0 && frontend.is_open(); --stops) {
        const auto running = frontend.running_queues();
        const std::uint32_t index = device_script.byte() & 1 || running.empty() ? device_script.byte() : running.front();
        const bool known = std::find(running.begin(), running.end(), index) != running.end();
        frontend.stop_queue(index, ec);
        after(!known);
        if (!known && ec != netpasst::errc::invalid_device_setup) violated("a stop of a queue not running was sent");
        const auto& still = frontend.running_queues();
        if (!ec && std::find(still.begin(), still.end(), index) != still.end()) violated("a stopped queue still runs");
      }
    }
    frontend.close();
    io.restart();
    io.poll();
    if (!closed) violated("the closed wait outlived close()");
  }
  backend.join();
  return 0;
}
