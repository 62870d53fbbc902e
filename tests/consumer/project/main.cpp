// Includes the umbrella header and runs the path every embedder takes: JSON
// options, a lifecycle that starts the real passt (PASST, default "passt"
// from PATH) through the stream session, a frame sent once the link is up,
// and a stop. Built by the project's compiler and by clang, so a broken
// install, a missing dependency or a construct one compiler rejects fails
// to build, and a template that only breaks when instantiated fails too.
#include <netpasst/netpasst.hpp>

#include <asio/io_context.hpp>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <system_error>
#include <vector>

int main() {
  std::vector<netpasst::diagnostic> problems;
  auto opts = netpasst::options_from_json(std::string_view(R"({"mtu": 1500, "quiet": true})"), problems);
  if (!opts) {
    for (const auto& p : problems) std::fprintf(stderr, "consumer: %s\n", netpasst::to_string(p).c_str());
    return 1;
  }
  if (const char* passt = std::getenv("PASST")) opts->path = passt;

  asio::io_context io;
  netpasst::basic_lifecycle<netpasst::stream_session, netpasst::passt_launcher> life(
      netpasst::passt_launcher(io, netpasst::launch_mode::foreground), std::move(*opts));
  std::error_code started, stopped = netpasst::errc::stopped;
  bool sent = false;
  life.async_start([&](std::error_code ec) {
    started = ec;
    if (!ec) {
      std::array<std::byte, 60> arp{};  // a minimal Ethernet frame; passt drops what it cannot use
      std::error_code send_error;
      sent = life.try_send(netpasst::frame(arp), send_error);
    }
    life.async_stop([&](std::error_code ec2) { stopped = ec2; });
  });
  io.run();
  std::printf("consumer: start %s, frame %s, stop %s, status %s\n", started.message().c_str(),
              sent ? "sent" : "not sent", stopped.message().c_str(), life.status().c_str());
  return started || !sent || stopped ? 1 : 0;
}
