// libFuzzer target: the stream transport's frame parser.
//
// The input is written, as it is, into one end of a socketpair by a writer
// thread (then the write side is shut down); `netpasst::stream_transport`
// receives on the other end. The frames it hands out and the error it ends
// with must equal an independent parse of the same bytes: 4-byte big-endian
// length, then that many bytes; a length outside 14..65535 ends the stream
// with errc::bad_frame_length after the frames before it; otherwise the end
// of input (a partial frame is dropped) gives errc::connection_closed.
#include <netpasst/transport/stream.hpp>

#include <asio/io_context.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <thread>
#include <vector>

namespace {

[[noreturn]] void violated(const char* what, std::size_t detail) {
  std::fprintf(stderr, "invariant violated: %s (%zu)\n", what, detail);
  std::abort();
}

struct reference_parse {
  std::vector<std::string_view> frames;
  std::error_code end;
};

reference_parse parse(std::string_view bytes) {
  reference_parse r;
  while (bytes.size() >= 4) {
    const auto b = [&](std::size_t i) { return std::uint32_t(static_cast<unsigned char>(bytes[i])); };
    const std::uint32_t length = b(0) << 24 | b(1) << 16 | b(2) << 8 | b(3);
    if (length < 14 || length > 65535) {
      r.end = netpasst::errc::bad_frame_length;
      return r;
    }
    if (bytes.size() - 4 < length) break;
    r.frames.push_back(bytes.substr(4, length));
    bytes.remove_prefix(4 + length);
  }
  r.end = netpasst::errc::connection_closed;
  return r;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const reference_parse expected = parse(input);

  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) violated("socketpair", std::size_t(errno));
  asio::io_context io;
  netpasst::stream_transport transport(io, netpasst::unique_fd(sv[0]));
  std::thread writer([&] {
    for (std::size_t done = 0; done < input.size();) {
      const ssize_t n = ::send(sv[1], input.data() + done, input.size() - done, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) break; // the transport closed its end after a bad length
      done += std::size_t(n);
    }
    ::shutdown(sv[1], SHUT_WR);
  });

  std::size_t received = 0;
  std::error_code ec;
  while (true) {
    auto batch = transport.receive(ec);
    if (ec) break;
    if (batch.empty()) violated("empty batch without an error", received);
    for (const auto& f : batch) {
      if (received >= expected.frames.size()) violated("more frames than the input holds", received);
      const auto& want = expected.frames[received];
      if (f.size() != want.size() || std::memcmp(f.data(), want.data(), want.size()) != 0)
        violated("frame differs from the reference parse", received);
      ++received;
    }
  }
  writer.join();
  ::close(sv[1]);
  if (received != expected.frames.size()) violated("frames missing", expected.frames.size() - received);
  if (ec != expected.end) violated("wrong final error", std::size_t(ec.value()));
  return 0;
}
