// Throughput of the stream transport over a socketpair, against baselines
// measured in the same run (REFERENCE.md section 6):
//   netpasst  the transport's public API: try_send/async_wait_writable on one
//             thread, an async_receive loop on another, each its own io_context
//   qemu      QEMU's pattern: one sendmsg per frame (header + frame iovecs)
//   writev    a hand-written loop: up to 512 frames (1024 iovecs) per writev
//   raw       unframed bytes, 256 KiB writes
// The three baselines share one receiver: 512 KiB recv, framing parsed in place.
// Also counts heap allocations per frame in the transport's steady state.
// Usage: bench_stream [--quick] [--size N] [--direct BYTES] [--threshold BYTES]
#include <netpasst/transport/stream.hpp>

#include <asio/io_context.hpp>

#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string_view>
#include <thread>
#include <vector>

// --- heap allocation counter ------------------------------------------------
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
static std::atomic<std::uint64_t> g_allocations{0};
void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace {

using clock_type = std::chrono::steady_clock;
using netpasst::frame;
using netpasst::frame_batch;

constexpr int socket_buffer = 4 << 20;
double g_seconds = 0.6;
netpasst::stream_transport_config g_config; // --direct N / --threshold N tune it

clock_type::time_point after(clock_type::time_point t, double seconds) {
  return t + std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(seconds));
}

struct result {
  std::uint64_t frames = 0, bytes = 0; // payload bytes, framing excluded
  double seconds = 0;
  double fps() const { return frames / seconds; }
  double gbps() const { return bytes * 8 / seconds / 1e9; }
};

std::pair<int, int> socket_pair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) std::abort();
  for (int fd : fds)
    for (int opt : {SO_SNDBUFFORCE, SO_RCVBUFFORCE})
      if (::setsockopt(fd, SOL_SOCKET, opt, &socket_buffer, sizeof socket_buffer) != 0)
        ::setsockopt(fd, SOL_SOCKET, opt == SO_SNDBUFFORCE ? SO_SNDBUF : SO_RCVBUF, &socket_buffer,
                     sizeof socket_buffer);
  return {fds[0], fds[1]};
}

// The baselines' receiver: large blocking reads, framing parsed in place.
result plain_receiver(int fd, bool framed, std::size_t frame_size, clock_type::time_point start) {
  std::vector<unsigned char> buffer(512 << 10);
  std::size_t begin = 0, end = 0;
  result r;
  for (;;) {
    if (begin == end) begin = end = 0;
    else if (buffer.size() - end < buffer.size() / 4) {
      std::memmove(buffer.data(), buffer.data() + begin, end - begin);
      end -= begin;
      begin = 0;
    }
    ssize_t n = ::recv(fd, buffer.data() + end, buffer.size() - end, 0);
    if (n <= 0) break;
    end += std::size_t(n);
    if (!framed) {
      r.bytes += std::size_t(n);
      begin = end;
      continue;
    }
    while (end - begin >= 4) {
      const unsigned char* p = buffer.data() + begin;
      std::size_t length = std::size_t(p[0]) << 24 | p[1] << 16 | p[2] << 8 | p[3];
      if (end - begin - 4 < length) break;
      ++r.frames;
      r.bytes += length;
      begin += 4 + length;
    }
  }
  r.seconds = std::chrono::duration<double>(clock_type::now() - start).count();
  if (!framed) r.frames = r.bytes / frame_size;
  ::close(fd);
  return r;
}

void write_all(int fd, const void* data, std::size_t size) {
  auto* p = static_cast<const char*>(data);
  while (size) {
    ssize_t n = ::send(fd, p, size, MSG_NOSIGNAL);
    if (n <= 0) std::abort();
    p += n;
    size -= std::size_t(n);
  }
}

// Runs `sender(fd, deadline)` against plain_receiver.
template <class Sender> result run_plain(std::size_t frame_size, bool framed, Sender sender) {
  auto [a, b] = socket_pair();
  const auto start = clock_type::now();
  result r;
  std::thread receiver([&, fd = b] { r = plain_receiver(fd, framed, frame_size, start); });
  sender(a, after(start, g_seconds));
  ::shutdown(a, SHUT_WR);
  receiver.join();
  ::close(a);
  return r;
}

result bench_qemu(const std::vector<std::byte>& f) {
  return run_plain(f.size(), true, [&](int fd, clock_type::time_point deadline) {
    const std::uint32_t length = htonl(std::uint32_t(f.size()));
    for (unsigned i = 0;; ++i) {
      if (i % 64 == 0 && clock_type::now() >= deadline) return;
      iovec iov[2] = {{const_cast<std::uint32_t*>(&length), 4}, {const_cast<std::byte*>(f.data()), f.size()}};
      msghdr m{};
      m.msg_iov = iov;
      m.msg_iovlen = 2;
      ssize_t n = ::sendmsg(fd, &m, MSG_NOSIGNAL);
      if (n < 0) std::abort();
      if (std::size_t(n) < 4 + f.size()) { // QEMU finishes a short write before the next frame
        std::vector<std::byte> rest(4 + f.size());
        std::memcpy(rest.data(), &length, 4);
        std::memcpy(rest.data() + 4, f.data(), f.size());
        write_all(fd, rest.data() + n, rest.size() - std::size_t(n));
      }
    }
  });
}

result bench_writev(const std::vector<std::byte>& f) {
  return run_plain(f.size(), true, [&](int fd, clock_type::time_point deadline) {
    constexpr int per_call = 512;
    const std::uint32_t length = htonl(std::uint32_t(f.size()));
    std::vector<iovec> iov(2 * per_call);
    for (int i = 0; i < per_call; ++i) {
      iov[2 * i] = {const_cast<std::uint32_t*>(&length), 4};
      iov[2 * i + 1] = {const_cast<std::byte*>(f.data()), f.size()};
    }
    std::vector<iovec> work(iov.size());
    while (clock_type::now() < deadline) {
      work = iov;
      iovec* v = work.data();
      int count = int(work.size());
      while (count > 0) {
        ssize_t n = ::writev(fd, v, count);
        if (n < 0) std::abort();
        while (count > 0 && std::size_t(n) >= v->iov_len) n -= ssize_t(v->iov_len), ++v, --count;
        if (count > 0) v->iov_base = static_cast<char*>(v->iov_base) + n, v->iov_len -= std::size_t(n);
      }
    }
  });
}

result bench_raw(std::size_t frame_size) {
  return run_plain(frame_size, false, [&](int fd, clock_type::time_point deadline) {
    std::vector<char> chunk(256 << 10, 'x');
    while (clock_type::now() < deadline) write_all(fd, chunk.data(), chunk.size());
  });
}

struct netpasst_result {
  result r;
  double allocations_per_frame = 0;
};

// The transport through its public API.
netpasst_result bench_netpasst(const std::vector<std::byte>& f) {
  auto [a, b] = socket_pair();
  const auto start = clock_type::now();
  const auto deadline = after(start, g_seconds);
  const auto warm = after(start, g_seconds * 0.2);
  netpasst_result out;

  std::thread receiver([&, fd = b] {
    asio::io_context ctx(1);
    netpasst::stream_transport t(ctx, netpasst::unique_fd(fd), g_config);
    struct loop {
      netpasst::stream_transport& t;
      result& r;
      void operator()(std::error_code ec, frame_batch batch) {
        if (ec) return;
        for (frame x : batch) r.bytes += x.size();
        r.frames += batch.size();
        t.async_receive(*this);
      }
    };
    t.async_receive(loop{t, out.r});
    ctx.run();
    out.r.seconds = std::chrono::duration<double>(clock_type::now() - start).count();
  });

  {
    asio::io_context ctx(1);
    netpasst::stream_transport t(ctx, netpasst::unique_fd(a), g_config);
    std::uint64_t sent = 0, sent_at_warm = 0, allocations_at_warm = 0;
    bool warmed = false, done = false;
    struct pump {
      netpasst::stream_transport& t;
      const std::vector<std::byte>& f;
      std::uint64_t& sent;
      bool& done;
      clock_type::time_point deadline;
      std::uint64_t& sent_at_warm;
      std::uint64_t& allocations_at_warm;
      bool& warmed;
      clock_type::time_point warm;
      void operator()(std::error_code ec = {}) {
        if (ec) return;
        std::error_code e;
        for (;;) {
          for (int i = 0; i < 256; ++i, ++sent)
            if (!t.try_send(f, e)) return t.async_wait_writable(*this);
          const auto now = clock_type::now();
          if (!warmed && now >= warm) {
            warmed = true;
            sent_at_warm = sent;
            allocations_at_warm = g_allocations.load();
          }
          if (now >= deadline) return void(done = true);
        }
      }
    };
    pump{t, f, sent, done, deadline, sent_at_warm, allocations_at_warm, warmed, warm}();
    ctx.run();
    const std::uint64_t allocations = g_allocations.load() - allocations_at_warm;
    out.allocations_per_frame = double(allocations) / double(sent - sent_at_warm);
    std::error_code ec;
    while (t.queued_bytes() != 0 && !ec) t.send(f, ec); // drain what is queued, then close
  }
  receiver.join();
  return out;
}

} // namespace

int main(int argc, char** argv) {
  std::size_t only = 0; // --size N: one frame size only
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--quick") g_seconds = 0.2;
    if (std::string_view(argv[i]) == "--size" && i + 1 < argc) only = std::strtoul(argv[++i], nullptr, 10);
    if (std::string_view(argv[i]) == "--direct" && i + 1 < argc)
      g_config.direct_write_bytes = std::strtoul(argv[++i], nullptr, 10);
    if (std::string_view(argv[i]) == "--threshold" && i + 1 < argc)
      g_config.flush_threshold_bytes = std::strtoul(argv[++i], nullptr, 10);
  }
  std::printf("stream transport throughput, socketpair, %.1f s per case, SO_SNDBUF/RCVBUF %d MiB\n", g_seconds,
              socket_buffer >> 20);
  std::printf("%7s %-9s %12s %10s %9s %9s %9s  %s\n", "frame", "method", "frames/s", "Gbit/s", "vs qemu",
              "vs writev", "vs raw", "allocs/frame");
  for (std::size_t size : {64, 256, 1514, 9000, 65535}) {
    if (only && size != only) continue;
    std::vector<std::byte> f(size, std::byte{0x5a});
    const netpasst_result n = bench_netpasst(f);
    const result q = bench_qemu(f), w = bench_writev(f), r = bench_raw(size);
    auto row = [&](const char* name, const result& x) {
      std::printf("%7zu %-9s %12.0f %10.2f %8.2fx %8.2fx %8.2fx", size, name, x.fps(), x.gbps(),
                  x.gbps() / q.gbps(), x.gbps() / w.gbps(), x.gbps() / r.gbps());
    };
    row("netpasst", n.r);
    std::printf("  %.4f\n", n.allocations_per_frame);
    row("qemu", q);
    std::printf("\n");
    row("writev", w);
    std::printf("\n");
    row("raw", r);
    std::printf("\n");
    if (size == 64)
      std::printf("  target 64 B: >= 50x qemu (%.1fx) and >= 0.5x writev (%.2fx)\n", n.r.gbps() / q.gbps(),
                  n.r.gbps() / w.gbps());
    if (size == 1514) std::printf("  target 1514 B: >= 0.7x writev (%.2fx)\n", n.r.gbps() / w.gbps());
    if (size == 65535) std::printf("  target 65535 B: >= 0.9x raw (%.2fx)\n", n.r.gbps() / r.gbps());
  }
  return 0;
}
