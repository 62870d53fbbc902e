// An embedder's own launcher, transport and session, written here with only
// public headers and the concepts, supervised by basic_lifecycle against the
// real passt: start, a DHCP lease and an ARP exchange through the embedder's
// transport, passt SIGKILLed and restarted by the lifecycle through the
// embedder's launcher, a new lease, stop. Nothing of the library's own
// launcher or stream transport is used.
#include <netpasst/concepts.hpp>

#include <netpasst/guest/mini_guest.hpp>
#include <netpasst/launcher/process.hpp>
#include <netpasst/lifecycle.hpp>
#include <netpasst/transport/persistent.hpp>

#include "e2e_env.hpp"

#include <asio/compose.hpp>
#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/steady_timer.hpp>
#include <asio/write.hpp>
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>

using namespace std::chrono_literals;

namespace embedder {

/// Starts passt in the foreground by hand (fork, exec) and adopts it once
/// its pidfile names it.
class launcher {
public:
  using executor_type = asio::any_io_executor;
  using process_type = netpasst::passt_process;
  explicit launcher(asio::io_context& io) : executor_(io.get_executor()) {}
  executor_type get_executor() const { return executor_; }
  int launches = 0;

  template <class Token> auto async_launch(const std::vector<std::string>& argv, Token&& token) {
    return asio::async_compose<Token, void(std::error_code, netpasst::passt_process)>(
        launch_op{this, argv}, token, executor_);
  }

private:
  struct launch_op {
    launch_op(launcher* l, std::vector<std::string> a) : self(l), argv(std::move(a)) {}
    launcher* self;
    std::vector<std::string> argv;
    std::filesystem::path dir, pidfile;
    netpasst::unique_fd ours, pidfd;
    std::shared_ptr<asio::steady_timer> poll;
    int tries = 0;

    template <class Self> void operator()(Self& op, std::error_code = {}) {
      if (!poll) return start(op);
      std::ifstream in(pidfile);
      pid_t written = 0;
      if (in >> written && written > 0) {
        netpasst::adopted_passt what;
        what.executor = self->executor_;
        what.pidfd = std::move(pidfd);
        what.socket = std::move(ours);
        what.is_child = true;
        what.private_directory = dir;
        std::error_code ec;
        auto process = netpasst::passt_process::adopt(std::move(what), ec);
        return op.complete(ec, std::move(process));
      }
      if (++tries > 1000) return op.complete(make_error_code(std::errc::timed_out), netpasst::passt_process{});
      poll->expires_after(10ms);
      poll->async_wait(std::move(op));
    }

    template <class Self> void start(Self& op) {
      ++self->launches;
      char templ[] = "/tmp/embedder-XXXXXX";
      dir = ::mkdtemp(templ);
      ::chmod(dir.c_str(), 0777);  // passt drops to nobody as root
      pidfile = dir / "pid";
      int pair[2];
      if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0)
        return op.complete(std::error_code(errno, std::system_category()), netpasst::passt_process{});
      ours.reset(pair[0]);
      std::vector<std::string> full = argv;
      full.insert(full.end(), {"--foreground", "--pid", pidfile.string(), "--fd", "3"});
      std::vector<char*> args;
      for (auto& a : full) args.push_back(a.data());
      args.push_back(nullptr);
      const pid_t child = ::fork();
      if (child == 0) {
        ::dup2(pair[1], 3);  // clears close-on-exec on fd 3
        const int devnull = ::open("/dev/null", O_RDWR);
        ::dup2(devnull, 0), ::dup2(devnull, 1), ::dup2(devnull, 2);
        ::syscall(SYS_close_range, 4u, ~0u, 0u);
        ::execvp(args[0], args.data());
        ::_exit(127);
      }
      ::close(pair[1]);
      pidfd.reset(int(::syscall(SYS_pidfd_open, child, 0u)));
      poll = std::make_shared<asio::steady_timer>(self->executor_, 10ms);
      poll->async_wait(std::move(op));
    }
  };
  executor_type executor_;
};

/// Frames over a stream socket, 4-byte length framing, one write per frame,
/// at most 64 frames queued.
class transport {
  struct state : std::enable_shared_from_this<state> {
    explicit state(const asio::any_io_executor& e, int fd) : socket(e, fd), wakeup(e) {
      wakeup.expires_at(asio::steady_timer::time_point::max());
    }
    asio::posix::stream_descriptor socket;
    asio::steady_timer wakeup;
    std::deque<std::vector<std::byte>> queue;
    bool writing = false;
    std::error_code error;
    std::vector<std::byte> in = std::vector<std::byte>(1 << 20);
    std::size_t begin = 0, end = 0;
    std::vector<netpasst::frame> batch;
    netpasst::transport_counters counters;

    void write_next() {
      if (writing || queue.empty() || error) return;
      writing = true;
      asio::async_write(socket, asio::buffer(queue.front()), [self = shared_from_this()](std::error_code ec, std::size_t) {
        self->writing = false;
        if (ec && !self->error) self->error = netpasst::errc::connection_closed;
        self->wakeup.cancel();
        if (self->error) return;
        self->queue.pop_front();
        self->write_next();
      });
    }
    std::size_t parse() {
      batch.clear();
      if (begin == end) begin = end = 0;
      while (end - begin >= 4) {
        std::uint32_t length;
        std::memcpy(&length, in.data() + begin, 4);
        length = ntohl(length);
        if (end - begin - 4 < length) break;
        batch.emplace_back(in.data() + begin + 4, length);
        begin += 4 + length;
        ++counters.frames_received;
      }
      if (batch.empty() && begin > 0) std::memmove(in.data(), in.data() + begin, end - begin), end -= begin, begin = 0;
      return batch.size();
    }
  };

  struct receive_op {
    std::shared_ptr<state> s;
    bool reading = false, posted = false;
    template <class Self> void operator()(Self& self, std::error_code ec = {}, std::size_t n = 0) {
      if (posted) return self.complete(s->error, s->error ? netpasst::frame_batch{} : netpasst::frame_batch(s->batch));
      if (reading) {
        if (ec) return self.complete(ec == asio::error::operation_aborted ? ec : netpasst::errc::connection_closed,
                                     netpasst::frame_batch{});
        s->end += n;
        if (s->parse()) return self.complete({}, netpasst::frame_batch(s->batch));
      } else if (s->error || s->parse()) {
        posted = true;
        return asio::post(s->socket.get_executor(), std::move(self));
      }
      reading = true;
      s->socket.async_read_some(asio::buffer(s->in.data() + s->end, s->in.size() - s->end), std::move(self));
    }
  };

  struct writable_op {
    std::shared_ptr<state> s;
    bool waited = false;
    template <class Self> void operator()(Self& self, std::error_code = {}) {
      if (waited && self.get_cancellation_state().cancelled() != asio::cancellation_type::none)
        return self.complete(asio::error::operation_aborted);
      if (s->error || s->queue.size() < 64) {
        if (!waited) return waited = true, asio::post(s->socket.get_executor(), std::move(self));
        return self.complete(s->error);
      }
      waited = true;
      s->wakeup.async_wait(std::move(self));
    }
  };

public:
  using executor_type = asio::any_io_executor;
  transport(const executor_type& e, netpasst::unique_fd fd) : s_(std::make_shared<state>(e, fd.release())) {}
  transport(transport&&) = default;
  transport& operator=(transport&&) = default;
  ~transport() {
    if (s_) close();
  }
  executor_type get_executor() const { return s_->socket.get_executor(); }
  bool try_send(netpasst::frame f, std::error_code& ec) {
    ec.clear();
    if (s_->error) return ec = s_->error, false;
    if (f.size() < netpasst::min_frame_size) return ec = netpasst::errc::frame_too_short, false;
    if (f.size() > netpasst::max_frame_size) return ec = netpasst::errc::frame_too_long, false;
    if (s_->queue.size() >= 64) return ec = netpasst::errc::would_block, false;
    std::vector<std::byte> record(4 + f.size());
    const std::uint32_t length = htonl(std::uint32_t(f.size()));
    std::memcpy(record.data(), &length, 4);
    std::memcpy(record.data() + 4, f.data(), f.size());
    s_->queue.push_back(std::move(record));
    ++s_->counters.frames_sent;
    s_->write_next();
    return true;
  }
  std::size_t try_send(std::span<const netpasst::frame> frames, std::error_code& ec) {
    std::size_t n = 0;
    while (n < frames.size() && try_send(frames[n], ec)) ++n;
    return n;
  }
  template <class Token> auto async_wait_writable(Token&& token) {
    return asio::async_compose<Token, void(std::error_code)>(writable_op{s_}, token, s_->socket);
  }
  template <class Token> auto async_receive(Token&& token) {
    return asio::async_compose<Token, void(std::error_code, netpasst::frame_batch)>(receive_op{s_}, token, s_->socket);
  }
  bool is_open() const { return !s_->error; }
  void close() {
    if (!s_->error) s_->error = netpasst::errc::transport_closed;
    std::error_code ignored;
    s_->socket.close(ignored);
    s_->wakeup.cancel();
  }
  void cancel() {
    std::error_code ignored;
    s_->socket.cancel(ignored);
    s_->wakeup.cancel();
  }
  netpasst::transport_counters counters() const { return s_->counters; }

private:
  std::shared_ptr<state> s_;
};

/// The session: a persistent transport over the embedder's transports.
class session : public netpasst::basic_persistent_transport<transport> {
public:
  static constexpr netpasst::passt_mode mode = netpasst::passt_mode::stream;
  explicit session(const asio::any_io_executor& e) : basic_persistent_transport(e) {}
  template <class Token> auto async_attach(netpasst::unique_fd socket, Token&& token) {
    attach(transport(get_executor(), std::move(socket)));
    return asio::async_compose<Token, void(std::error_code)>(
        [posted = false](auto& self) mutable {
          if (!posted) return posted = true, asio::post(std::move(self));
          self.complete(std::error_code{});
        },
        token, get_executor());
  }
};

} // namespace embedder

static_assert(netpasst::DaemonLauncher<embedder::launcher>);
static_assert(netpasst::FrameTransport<embedder::transport>);
static_assert(netpasst::BackendSession<embedder::session> && netpasst::FrameTransport<embedder::session>);

TEST_CASE("an embedder's own launcher, transport and session under basic_lifecycle, against the real passt") {
  if (!netpasst::e2e::in_private_netns) {
    WARN("not in the private network namespace (needs root): skipped");
    return;
  }
  using lifecycle_type = netpasst::basic_lifecycle<embedder::session, embedder::launcher>;
  asio::io_context io;
  netpasst::options o;
  o.path = netpasst::e2e::passt_binary();
  netpasst::lifecycle_config config;
  config.restart.min_uptime = 0ms;
  lifecycle_type life(embedder::launcher(io), o, config);
  auto until = [&](const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (!done() && std::chrono::steady_clock::now() < deadline) io.restart(), io.run_one_for(50ms);
    return done();
  };
  std::optional<std::error_code> started;
  life.async_start([&](std::error_code ec) { started = ec; });
  REQUIRE(until([&] { return started.has_value(); }));
  REQUIRE_FALSE(*started);
  INFO(life.status());

  netpasst::mini_guest<lifecycle_type> guest(life);
  auto lease = [&] {
    std::optional<std::error_code> done;
    netpasst::dhcp_lease got;
    guest.async_dhcp([&](std::error_code ec, netpasst::dhcp_lease l) { done = ec, got = l; });
    REQUIRE(until([&] { return done.has_value(); }));
    REQUIRE_FALSE(*done);
    CHECK(got.address.to_string() == netpasst::e2e::template_address);
    std::optional<std::error_code> arp;
    guest.async_arp(got.gateway, [&](std::error_code ec, netpasst::packet::mac_address) { arp = ec; });
    REQUIRE(until([&] { return arp.has_value(); }));
    CHECK_FALSE(*arp);
  };
  lease();
  const pid_t first = life.pid();
  REQUIRE(first > 1);
  ::kill(first, SIGKILL);  // the test's own signal: passt is our child and unreaped, its pid cannot be reused
  REQUIRE(until([&] { return life.generation() == 2 && life.link_up(); }));
  CHECK(life.pid() != first);
  CHECK(life.launcher().launches == 2);
  lease();

  std::optional<std::error_code> stopped;
  life.async_stop([&](std::error_code ec) { stopped = ec; });
  REQUIRE(until([&] { return stopped.has_value(); }));
  CHECK_FALSE(*stopped);
  CHECK(life.state() == netpasst::lifecycle_state::stopped);
}
