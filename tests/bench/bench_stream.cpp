// Throughput of the stream transport over a socketpair, against baselines
// measured in the same run:
//   netpasst  the transport's public API in its default write mode
//             (every_passt: every write one kernel buffer, see stream.hpp):
//             try_send/async_wait_writable on one thread, an async_receive
//             loop on another, each its own io_context
//   old-batch the same in any_split_passt_2024_07 mode: the ring in one
//             sendmsg, cut anywhere (unsafe with passt before July 2024)
//   qemu      QEMU's pattern: one sendmsg per frame (header + frame iovecs)
//   writev    a hand-written loop: up to 512 frames (1024 iovecs) per writev
//   raw       unframed bytes, 256 KiB writes
// The three baselines share one receiver: 512 KiB recv, framing parsed in
// place. Every socket's send buffer is 4 MiB as the kernel reports it.
// "mix" cycles through 4096 sizes: 40% 14..1514, 20% 1515..9000, 40% 9001..65535.
// Also counts heap allocations per frame in the transport's steady state.
// Usage: bench_stream [--quick] [--size N|mix] [--direct BYTES] [--threshold BYTES]
//                    [--mode every_passt|any_split]  (that transport case alone, for profiling)
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
#include <random>
#include <string>
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

constexpr int socket_buffer = 2 << 20; // the kernel doubles it: 4 MiB, as the transport's default
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

/// What a case sends: frames cut from one buffer, with sizes cycling
/// through `sizes` (one size, or the mix).
struct workload {
  std::vector<std::byte> data = std::vector<std::byte>(65535, std::byte{0x5a});
  std::vector<std::size_t> sizes;
  std::size_t mean = 0;
  frame at(std::size_t i) const { return frame(data).first(sizes[i % sizes.size()]); }
};

result bench_qemu(const workload& w) {
  return run_plain(w.mean, true, [&](int fd, clock_type::time_point deadline) {
    std::vector<std::byte> rest(4 + 65535);
    for (std::size_t i = 0;; ++i) {
      if (i % 64 == 0 && clock_type::now() >= deadline) return;
      const frame f = w.at(i);
      const std::uint32_t length = htonl(std::uint32_t(f.size()));
      iovec iov[2] = {{const_cast<std::uint32_t*>(&length), 4}, {const_cast<std::byte*>(f.data()), f.size()}};
      msghdr m{};
      m.msg_iov = iov;
      m.msg_iovlen = 2;
      ssize_t n = ::sendmsg(fd, &m, MSG_NOSIGNAL);
      if (n < 0) std::abort();
      if (std::size_t(n) < 4 + f.size()) { // QEMU finishes a short write before the next frame
        std::memcpy(rest.data(), &length, 4);
        std::memcpy(rest.data() + 4, f.data(), f.size());
        write_all(fd, rest.data() + n, 4 + f.size() - std::size_t(n));
      }
    }
  });
}

result bench_writev(const workload& w) {
  return run_plain(w.mean, true, [&](int fd, clock_type::time_point deadline) {
    constexpr std::size_t per_call = 512;
    std::vector<std::uint32_t> lengths(per_call);
    std::vector<iovec> iov(2 * per_call), work(iov.size());
    for (std::size_t next = 0; clock_type::now() < deadline;) {
      for (std::size_t i = 0; i < per_call; ++i, ++next) {
        const frame f = w.at(next);
        lengths[i] = htonl(std::uint32_t(f.size()));
        iov[2 * i] = {&lengths[i], 4};
        iov[2 * i + 1] = {const_cast<std::byte*>(f.data()), f.size()};
      }
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

// The transport through its public API, in `mode`.
netpasst_result bench_netpasst(const workload& w, netpasst::stream_write_mode mode) {
  netpasst::stream_transport_config config = g_config;
  config.write_mode = mode;
  auto [a, b] = socket_pair();
  const auto start = clock_type::now();
  const auto deadline = after(start, g_seconds);
  const auto warm = after(start, g_seconds * 0.2);
  netpasst_result out;

  std::thread receiver([&, fd = b] {
    asio::io_context ctx(1);
    netpasst::stream_transport t(ctx, netpasst::unique_fd(fd), config);
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
    netpasst::stream_transport t(ctx, netpasst::unique_fd(a), config);
    std::uint64_t sent = 0, sent_at_warm = 0, allocations_at_warm = 0;
    bool warmed = false;
    struct pump {
      netpasst::stream_transport& t;
      const workload& w;
      std::uint64_t& sent;
      clock_type::time_point deadline;
      std::uint64_t& sent_at_warm;
      std::uint64_t& allocations_at_warm;
      bool& warmed;
      clock_type::time_point warm;
      void operator()(std::error_code ec = {}) {
        if (ec) return;
        std::error_code e;
        for (;;) {
          bool blocked = false;
          for (int i = 0; i < 256 && !blocked; ++i)
            if (t.try_send(w.at(sent), e)) ++sent;
            else blocked = true;
          const auto now = clock_type::now();
          if (!warmed && now >= warm) {
            warmed = true;
            sent_at_warm = sent;
            allocations_at_warm = g_allocations.load();
          }
          if (now >= deadline) return;
          if (blocked) return t.async_wait_writable(*this);
        }
      }
    };
    pump{t, w, sent, deadline, sent_at_warm, allocations_at_warm, warmed, warm}();
    ctx.run();
    const std::uint64_t allocations = g_allocations.load() - allocations_at_warm;
    out.allocations_per_frame = double(allocations) / double(sent - sent_at_warm);
    std::error_code ec;
    while (t.queued_bytes() != 0 && !ec) t.send(w.at(sent++), ec); // drain what is queued, then close
  }
  receiver.join();
  return out;
}

workload make_workload(std::size_t size) {
  workload w;
  if (size != 0) {
    w.sizes = {size};
  } else { // the mix
    std::mt19937 rng(1);
    for (int i = 0; i < 4096; ++i) {
      const unsigned r = rng() % 10;
      w.sizes.push_back(r < 4 ? 14 + rng() % 1501 : r < 6 ? 1515 + rng() % 7486 : 9001 + rng() % 56535);
    }
  }
  std::size_t total = 0;
  for (std::size_t x : w.sizes) total += x;
  w.mean = total / w.sizes.size();
  return w;
}

} // namespace

int main(int argc, char** argv) {
  std::string only;         // --size N|mix: one case only
  std::string profile_mode; // --mode every_passt|any_split: only that transport case, for profiling
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--quick") g_seconds = 0.2;
    if (std::string_view(argv[i]) == "--size" && i + 1 < argc) only = argv[++i];
    if (std::string_view(argv[i]) == "--mode" && i + 1 < argc) profile_mode = argv[++i];
    if (std::string_view(argv[i]) == "--direct" && i + 1 < argc)
      g_config.direct_write_bytes = std::strtoul(argv[++i], nullptr, 10);
    if (std::string_view(argv[i]) == "--threshold" && i + 1 < argc)
      g_config.flush_threshold_bytes = std::strtoul(argv[++i], nullptr, 10);
  }
  std::printf("stream transport throughput, socketpair, %.1f s per case, send buffers 4 MiB\n", g_seconds);
  std::printf("%7s %-9s %12s %10s %9s %9s %9s  %s\n", "frame", "method", "frames/s", "Gbit/s", "vs old",
              "vs qemu", "vs raw", "allocs/frame");
  for (std::size_t size : {std::size_t{64}, std::size_t{1514}, std::size_t{9000}, std::size_t{65535}, std::size_t{0}}) {
    const std::string name = size ? std::to_string(size) : "mix";
    if (!only.empty() && only != name) continue;
    const workload w = make_workload(size);
    if (!profile_mode.empty()) {
      const auto mode = profile_mode == "any_split" ? netpasst::stream_write_mode::any_split_passt_2024_07
                                                    : netpasst::stream_write_mode::every_passt;
      const netpasst_result x = bench_netpasst(w, mode);
      std::printf("%7s %-12s %12.0f frames/s %10.2f Gbit/s\n", name.c_str(), profile_mode.c_str(), x.r.fps(),
                  x.r.gbps());
      continue;
    }
    // Interleaved so that a noisy neighbour hurts every method alike.
    const netpasst_result n = bench_netpasst(w, netpasst::stream_write_mode::every_passt);
    const netpasst_result o = bench_netpasst(w, netpasst::stream_write_mode::any_split_passt_2024_07);
    const result q = bench_qemu(w), v = bench_writev(w), r = bench_raw(w.mean);
    auto row = [&](const char* method, const result& x) {
      std::printf("%7s %-9s %12.0f %10.2f %8.2fx %8.2fx %8.2fx", name.c_str(), method, x.fps(), x.gbps(),
                  x.gbps() / o.r.gbps(), x.gbps() / q.gbps(), x.gbps() / r.gbps());
    };
    row("netpasst", n.r);
    std::printf("  %.4f\n", n.allocations_per_frame);
    row("old-batch", o.r);
    std::printf("  %.4f\n", o.allocations_per_frame);
    row("qemu", q);
    std::printf("\n");
    row("writev", v);
    std::printf("\n");
    row("raw", r);
    std::printf("\n");
  }
  return 0;
}
