// libFuzzer target: the vhost-user transport against a hostile backend.
//
// A backend shares memory with the frontend and may write anything there
// and on the control socket; the transport must stay memory-safe and end
// with a named error, never hand out a frame outside its shared memory, and
// complete every operation once closed. The input scripts such a backend.
//
// Input: byte 0 picks the queue size (2 to 16), whether GUEST_CSUM is asked
// for and whether the async handshake is used. Then, during the handshake,
// one byte per request the transport sends decides the answer (a correct
// one, a malformed one, a message nobody asked for, or a hang-up), with
// more bytes for feature bits and malformed fields. The rest is a script of
// steps run once the handshake is over, whatever its outcome: the backend
// writes used entries with any id and length (and the header and bytes of
// the frame in the slot, which the transport may complete a checksum in),
// moves a used index anywhere,
// tries to truncate the shared memory, signals the transport's call
// eventfds, writes to the control socket or hangs up; the frontend
// receives, sends frames of any length, waits, cancels. Checked after each step: every frame handed out lies in the
// shared mapping and is 14..65535 bytes long; the counters add up; once
// closed, every pending operation has completed.
#include <netpasst/transport/vhost_user.hpp>

#include "../common/vhost_user_messages.hpp"

#include <asio/io_context.hpp>

#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

namespace {

namespace vhost = netpasst::detail::vhost;

[[noreturn]] void violated(const char* what, std::uint64_t detail) {
  std::fprintf(stderr, "invariant violated: %s (%llu)\n", what, static_cast<unsigned long long>(detail));
  std::abort();
}

/// The fuzz input, read front to back; zeros once it is used up.
struct script {
  const std::uint8_t* at;
  std::size_t left;
  bool empty() const noexcept { return left == 0; }
  std::uint8_t byte() noexcept { return left ? (--left, *at++) : 0; }
  std::uint64_t bytes(int n) noexcept {
    std::uint64_t v = 0;
    for (int i = 0; i < n; ++i) v = v << 8 | byte();
    return v;
  }
};

bool send_all(int fd, const void* data, std::size_t size) {
  return ::send(fd, data, size, MSG_NOSIGNAL) == ssize_t(size);
}

/// What the backend keeps from the handshake.
struct backend_state {
  int memory = -1;
  vhost::memory_region region{};
  int call[2] = {-1, -1};
  bool hung_up = false;

  void close_all() {
    for (int* fd : {&memory, &call[0], &call[1]})
      if (*fd >= 0) ::close(*fd), *fd = -1;
  }
};

/// Answers the transport's requests as the script says, until the socket
/// ends (the frontend hangs up, or the main thread shuts it down).
void serve_handshake(int fd, script& in, backend_state& state) {
  while (auto m = netpasst::test::read_vhost_user_message(fd)) {
    const std::uint32_t request = m->request;
    for (int& f : m->fds) {
      if (request == vhost::set_mem_table && state.memory < 0) {
        state.memory = std::exchange(f, -1);
        if (m->payload.size() >= sizeof(vhost::memory_table))
          std::memcpy(&state.region, m->payload.data() + 8, sizeof state.region);
      } else if (request == vhost::set_vring_call && m->payload.size() >= 8 &&
                 (m->payload[0] == std::byte{0} || m->payload[0] == std::byte{1}) &&
                 state.call[std::to_integer<int>(m->payload[0])] < 0) {
        state.call[std::to_integer<int>(m->payload[0])] = std::exchange(f, -1);
      }
    }
    m->close_fds();
    const bool reply_owed = request == vhost::get_features || request == vhost::get_protocol_features ||
                            (m->flags & vhost::need_reply_flag);
    const std::uint8_t action = in.byte();
    if (action >= 0xf0) { // hang up
      ::shutdown(fd, SHUT_RDWR);
      state.hung_up = true;
      return;
    }
    if (action >= 0xe0) { // a message nobody asked for, then carry on
      vhost::header unasked;
      unasked.request = std::uint32_t(in.byte());
      unasked.flags = std::uint32_t(in.byte());
      unasked.size = std::uint32_t(in.byte() % 16);
      std::byte message[sizeof unasked + 16] = {};
      std::memcpy(message, &unasked, sizeof unasked);
      if (!send_all(fd, message, sizeof unasked + unasked.size)) return;
    }
    if (!reply_owed) continue;
    std::uint64_t value = 0;
    if (request == vhost::get_features)
      value = action & 1 ? in.bytes(8) : vhost::f_version_1 | vhost::f_protocol_features | vhost::f_guest_csum;
    else if (request == vhost::get_protocol_features)
      value = action & 1 ? in.bytes(8) : vhost::pf_reply_ack;
    else
      value = action & 1 ? in.byte() : 0; // REPLY_ACK: 0 is success
    vhost::header head{request, vhost::version | vhost::reply_flag, 8};
    if (action >= 0xc0 && action < 0xe0) // malformed: any request code, flags and size
      head.request = std::uint32_t(in.bytes(4)), head.flags = std::uint32_t(in.bytes(4)), head.size = in.byte() % 12u;
    std::byte reply[sizeof head + 12] = {};
    std::memcpy(reply, &head, sizeof head);
    std::memcpy(reply + sizeof head, &value, sizeof value);
    if (!send_all(fd, reply, sizeof head + head.size)) return;
  }
}

/// The frontend's side of the run: its pending operations and what it saw.
struct frontend {
  netpasst::vhost_user_transport& transport;
  const backend_state& backend;
  bool receiving = false, waiting = false;
  std::uint64_t frames_handed_out = 0, frames_accepted = 0;

  void check_batch(const netpasst::frame_batch& batch) {
    const auto base = backend.region.user_address, end = base + backend.region.size;
    for (const auto& f : batch) {
      const auto at = reinterpret_cast<std::uintptr_t>(f.data());
      if (f.size() < 14 || f.size() > 65535) violated("frame length out of bounds", f.size());
      if (backend.memory >= 0 && (at < base || at + f.size() > end)) violated("frame outside shared memory", at);
    }
    frames_handed_out += batch.size();
  }

  void receive() {
    if (receiving) return;
    receiving = true;
    transport.async_receive([this](std::error_code ec, netpasst::frame_batch batch) {
      receiving = false;
      if (!ec) {
        if (batch.empty()) violated("a receive succeeded with no frame", 0);
        check_batch(batch);
      } else if (!batch.empty()) {
        violated("frames handed out with an error", batch.size());
      }
    });
  }

  void wait_writable() {
    if (waiting) return;
    waiting = true;
    transport.async_wait_writable([this](std::error_code) { waiting = false; });
  }
};

/// Writes a used entry for queue `q` (whatever id and length the script
/// says) and publishes it, as a backend returning a buffer does.
void place_used(std::byte* memory, const vhost::queue_layout& q, std::uint16_t size, std::uint32_t id,
                std::uint32_t length) {
  auto& index = *reinterpret_cast<std::uint16_t*>(memory + q.used + 2);
  const std::uint16_t now = std::atomic_ref(index).load(std::memory_order_relaxed);
  auto* entry = reinterpret_cast<vhost::used_element*>(memory + q.used + 4) + now % size;
  std::atomic_ref(entry->id).store(id, std::memory_order_relaxed);
  std::atomic_ref(entry->length).store(length, std::memory_order_relaxed);
  std::atomic_ref(index).store(std::uint16_t(now + 1), std::memory_order_release);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  script in{data, size};
  const std::uint8_t setup = in.byte();
  const std::uint16_t queue_size = std::uint16_t(2u << (setup & 3));
  const bool async_handshake = setup & 4;
  const netpasst::vhost_user_transport_config config{
      .queue_size = queue_size, .max_batch_frames = 1u + (setup >> 4), .reply_timeout = std::chrono::seconds(5),
      .guest_checksum_offload = bool(setup & 8)};

  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) violated("socketpair", std::uint64_t(errno));
  const int theirs = sv[1];
  asio::io_context io;
  std::optional<netpasst::vhost_user_transport> transport;
  transport.emplace(io, netpasst::unique_fd(sv[0]), config);

  backend_state backend;
  std::thread peer([&] { serve_handshake(theirs, in, backend); });
  std::error_code handshake_error;
  if (async_handshake) {
    bool done = false;
    transport->async_handshake([&](std::error_code ec) { handshake_error = ec, done = true; });
    while (!done)
      if (io.run_one() == 0) violated("the async handshake never completed", 0);
    io.restart();
  } else {
    transport->handshake(handshake_error);
  }
  ::shutdown(theirs, SHUT_RD); // ends serve_handshake's read
  peer.join();
  if (handshake_error == netpasst::errc::start_timeout) violated("handshake timed out: the backend always answers", 0);
  if (handshake_error && transport->is_open()) violated("open after a failed handshake", 0);
  if (handshake_error && transport->negotiation().failed_step.empty()) violated("failed step not named", 0);
  if (!handshake_error && !transport->is_open()) violated("closed after a good handshake", 0);

  std::byte* memory = nullptr;
  const vhost::memory_layout layout(queue_size);
  if (backend.memory >= 0 && backend.region.size == layout.size) {
    void* mapped = ::mmap(nullptr, layout.size, PROT_READ | PROT_WRITE, MAP_SHARED, backend.memory, 0);
    if (mapped != MAP_FAILED) memory = static_cast<std::byte*>(mapped);
  }

  frontend front{*transport, backend};
  static std::byte payload[65536 + 16];
  for (int step = 0; step < 64 && !in.empty(); ++step) {
    const std::uint8_t op = in.byte();
    const int queue = op >> 7;
    switch (op & 7) {
    case 0: // a used entry with any id and length, its slot written first when op & 8
      if (memory) {
        const auto id = std::uint32_t(in.bytes(2));
        const auto length = std::uint32_t(in.bytes(4));
        if ((op & 8) && id < queue_size) { // a net header (flags, csum_start, csum_offset...), then frame bytes
          std::byte* slot = memory + layout.queue[queue].slots + std::size_t(id) * vhost::slot_size;
          const std::size_t count = vhost::net_header_size + in.byte();
          for (std::size_t i = 0; i < count; ++i) slot[i] = std::byte(in.byte());
        }
        place_used(memory, layout.queue[queue], queue_size, id, length);
      }
      break;
    case 1: // the used index moved anywhere, or the memory truncated
      if (op & 8) {
        if (backend.memory >= 0 && ::ftruncate(backend.memory, 0) == 0) violated("the backend shrank the shared memory", 0);
      } else if (memory) {
        auto& index = *reinterpret_cast<std::uint16_t*>(memory + layout.queue[queue].used + 2);
        std::atomic_ref(index).store(std::uint16_t(in.bytes(2)), std::memory_order_release);
      }
      break;
    case 2: // a call eventfd signalled
      if (backend.call[queue] >= 0) {
        const std::uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(backend.call[queue], &one, sizeof one);
      }
      break;
    case 3:
      front.receive();
      break;
    case 4: { // up to three frames of any length, 0 to 65536 + 15
      netpasst::frame frames[3];
      const std::size_t count = in.byte() % 4;
      for (std::size_t i = 0; i < count; ++i) {
        const auto length = std::size_t(in.bytes(2));
        frames[i] = netpasst::frame(payload, length + (in.byte() & 16));
      }
      std::error_code ec;
      const std::size_t taken = front.transport.try_send(std::span<const netpasst::frame>(frames, count), ec);
      if (taken > count) violated("took more frames than offered", taken);
      if (taken < count && !ec) violated("refused a frame without saying why", taken);
      front.frames_accepted += taken;
      break;
    }
    case 5:
      front.wait_writable();
      break;
    case 6: // the backend writes on the control socket, or hangs up
      if (!backend.hung_up) {
        if (op & 8) {
          ::shutdown(theirs, SHUT_RDWR);
          backend.hung_up = true;
        } else {
          const std::uint8_t junk = in.byte();
          [[maybe_unused]] auto n = ::send(theirs, &junk, 1, MSG_NOSIGNAL);
        }
      }
      break;
    case 7:
      front.transport.cancel();
      break;
    }
    io.poll();
    io.restart();
    const auto counters = front.transport.counters();
    if (counters.frames_received != front.frames_handed_out)
      violated("frames counted differ from frames handed out", counters.frames_received);
    if (counters.frames_sent != front.frames_accepted)
      violated("frames counted sent differ from frames taken", counters.frames_sent);
  }

  front.transport.close();
  io.run_for(std::chrono::seconds(5));
  if (front.receiving || front.waiting) violated("an operation pending after close", front.receiving);
  transport.reset();
  if (memory) ::munmap(memory, layout.size);
  backend.close_all();
  ::close(theirs);
  return 0;
}
