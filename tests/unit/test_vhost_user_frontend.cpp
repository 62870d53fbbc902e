// vhost_user_frontend against a scripted backend on a socketpair: the
// messages a VMM's device setup becomes, the checks made before anything is
// sent, stopping and resuming queues, and how failures are reported (the
// same requests against DPDK's testpmd and passt: tests/e2e/test_vhost_user.cpp).
#include <netpasst/lifecycle.hpp>
#include <netpasst/session/vhost_user_device.hpp>
#include <netpasst/testing/scripted_launcher.hpp>
#include <netpasst/transport/vhost_user_frontend.hpp>

#include "../common/event_log.hpp"
#include "../common/scripted_vhost_backend.hpp"
#include "../common/test_support.hpp"

#include <catch2/catch.hpp>

#include <asio/io_context.hpp>

#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <algorithm>
#include <csignal>
#include <cstring>
#include <stdexcept>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using netpasst::errc;
using netpasst::test::scripted_backend;
using netpasst::test::vhost_user_message;

/// The backend's thread on one end of a socketpair, the frontend on the other.
struct connected {
  scripted_backend backend;
  asio::io_context io;
  std::optional<netpasst::vhost_user_frontend> frontend;
  std::thread peer;
  explicit connected(const netpasst::vhost_user_frontend_config& config = {}) : connected(nullptr, config) {}
  connected(const std::function<void(scripted_backend&)>& script, const netpasst::vhost_user_frontend_config& config = {}) {
    if (script) script(backend);
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
    netpasst::unique_fd theirs(fds[1]);
    frontend.emplace(io, netpasst::unique_fd(fds[0]), config);
    peer = std::thread([this, fd = std::move(theirs)] { backend.serve(fd.get()); });
  }
  /// Closes the frontend and waits for the backend to see the end.
  void finish() {
    if (frontend) frontend->close();
    if (peer.joinable()) peer.join();
  }
  ~connected() { finish(); }
};

/// A VMM's memory: two memfds, placed at guest-physical addresses other
/// than their offsets and mapped where the kernel chose.
struct vmm_memory {
  netpasst::unique_fd rings_fd{::memfd_create("rings", MFD_CLOEXEC)}, buffers_fd{::memfd_create("buffers", MFD_CLOEXEC)};
  static constexpr std::size_t rings_size = 64 << 10, buffers_size = 1 << 20;
  void* rings = nullptr;
  void* buffers = nullptr;
  netpasst::unique_fd kick{::eventfd(0, EFD_CLOEXEC)}, call{::eventfd(0, EFD_CLOEXEC)};
  vmm_memory() {
    REQUIRE(::ftruncate(rings_fd.get(), rings_size) == 0);
    REQUIRE(::ftruncate(buffers_fd.get(), buffers_size) == 0);
    rings = ::mmap(nullptr, rings_size, PROT_READ | PROT_WRITE, MAP_SHARED, rings_fd.get(), 0);
    buffers = ::mmap(nullptr, buffers_size, PROT_READ | PROT_WRITE, MAP_SHARED, buffers_fd.get(), 0);
    REQUIRE(rings != MAP_FAILED);
    REQUIRE(buffers != MAP_FAILED);
  }
  ~vmm_memory() {
    ::munmap(rings, rings_size);
    ::munmap(buffers, buffers_size);
  }
  std::uint64_t rings_at(std::size_t offset) const { return reinterpret_cast<std::uintptr_t>(rings) + offset; }

  /// Queue 0 (16 descriptors, resumed at 5) with both eventfds; queue 1 (8
  /// descriptors) polled: no kick descriptor.
  netpasst::vhost_user_device_setup setup() const {
    netpasst::vhost_user_device_setup s;
    s.features = 1ull << 32 | 1ull << 30;
    s.memory = {{rings_fd.get(), 0x40000000, rings_size, rings_at(0), 0},
                {buffers_fd.get(), 0x100000000, buffers_size, reinterpret_cast<std::uintptr_t>(buffers), 0}};
    s.queues = {{0, 16, 5, rings_at(0), rings_at(0x1000), rings_at(0x2000), kick.get(), call.get()},
                {1, 8, 0, rings_at(0x4000), rings_at(0x5000), rings_at(0x6000), -1, call.get()}};
    return s;
  }
};

template <class T> T payload_as(const vhost_user_message& m, std::size_t offset = 0) {
  T value{};
  REQUIRE(m.payload.size() >= offset + sizeof value);
  std::memcpy(&value, m.payload.data() + offset, sizeof value);
  return value;
}

enum ending_kind { hang_up, babble, close_locally };

std::vector<std::uint32_t> requests_of(const std::vector<vhost_user_message>& seen) {
  std::vector<std::uint32_t> r;
  for (const auto& m : seen) r.push_back(m.request);
  return r;
}

} // namespace

TEST_CASE("vhost-user frontend: a VMM's device becomes the messages the spec lays out, and its queues stop and resume") {
  connected c;
  vmm_memory memory;
  auto& f = *c.frontend;
  std::error_code ec;
  f.open(ec);
  REQUIRE_FALSE(ec);
  CHECK(f.negotiation().offered_features == c.backend.features);
  CHECK(f.negotiation().acked_protocol_features == 1ull << 3);
  const auto setup = memory.setup();
  f.start(setup, ec);
  INFO(f.failure_message());
  REQUIRE_FALSE(ec);
  CHECK(f.failure_message().empty());
  CHECK(f.negotiation().acked_features == (1ull << 32 | 1ull << 30));
  CHECK(f.running_queues() == std::vector<std::uint32_t>{0, 1});

  const auto& seen = c.backend.seen;
  // GET_FEATURES, GET_/SET_PROTOCOL_FEATURES, SET_OWNER, SET_FEATURES,
  // SET_MEM_TABLE, NUM BASE ADDR KICK CALL twice, SET_VRING_ENABLE twice.
  CHECK(requests_of(seen) ==
        std::vector<std::uint32_t>{1, 15, 16, 3, 2, 5, 8, 10, 9, 12, 13, 8, 10, 9, 12, 13, 18, 18});
  for (std::size_t i = 3; i < seen.size(); ++i) {
    INFO("message " << i << ", request " << seen[i].request);
    CHECK((seen[i].flags & 8u) != 0); // REPLY_ACK agreed: every setting message asks for a status
  }
  CHECK(payload_as<std::uint64_t>(seen[4]) == (1ull << 32 | 1ull << 30));

  const vhost_user_message& table = seen[5];
  REQUIRE(table.payload.size() == 8 + 2 * 32);
  CHECK(payload_as<std::uint32_t>(table) == 2);
  CHECK(table.fds.size() == 2);
  for (std::size_t r = 0; r < 2; ++r) {
    INFO("region " << r);
    CHECK(payload_as<std::uint64_t>(table, 8 + 32 * r) == setup.memory[r].guest_physical);
    CHECK(payload_as<std::uint64_t>(table, 16 + 32 * r) == setup.memory[r].size);
    CHECK(payload_as<std::uint64_t>(table, 24 + 32 * r) == setup.memory[r].user_address);
    CHECK(payload_as<std::uint64_t>(table, 32 + 32 * r) == 0);
  }
  // The backend maps what it was given: a write through its mapping of
  // region 0 shows in the VMM's.
  REQUIRE(c.backend.memory_fd >= 0);
  void* theirs = ::mmap(nullptr, vmm_memory::rings_size, PROT_READ | PROT_WRITE, MAP_SHARED, c.backend.memory_fd, 0);
  REQUIRE(theirs != MAP_FAILED);
  std::memcpy(static_cast<char*>(theirs) + 100, "ring", 4);
  CHECK(std::memcmp(static_cast<char*>(memory.rings) + 100, "ring", 4) == 0);
  ::munmap(theirs, vmm_memory::rings_size);

  for (std::size_t q = 0; q < 2; ++q) {
    const auto& queue = setup.queues[q];
    const std::size_t at = 6 + 5 * q;
    INFO("queue " << queue.index);
    CHECK(payload_as<std::uint32_t>(seen[at]) == queue.index);
    CHECK(payload_as<std::uint32_t>(seen[at], 4) == queue.size);
    CHECK(payload_as<std::uint32_t>(seen[at + 1], 4) == queue.next_available);
    CHECK(payload_as<std::uint64_t>(seen[at + 2], 8) == queue.descriptors);
    CHECK(payload_as<std::uint64_t>(seen[at + 2], 16) == queue.used);
    CHECK(payload_as<std::uint64_t>(seen[at + 2], 24) == queue.available);
    const auto kick = payload_as<std::uint64_t>(seen[at + 3]);
    CHECK((kick & 0xff) == queue.index);
    CHECK(seen[at + 3].fds.size() == (queue.kick_fd < 0 ? 0u : 1u));
    CHECK(((kick >> 8) & 1) == (queue.kick_fd < 0 ? 1u : 0u)); // "no descriptor": the backend polls
    CHECK(seen[at + 4].fds.size() == 1);
    CHECK(payload_as<std::uint32_t>(seen[16 + q]) == queue.index);
    CHECK(payload_as<std::uint32_t>(seen[16 + q], 4) == 1);
  }

  // A second start while the queues run is refused, and sends nothing.
  const std::size_t before = c.backend.requests;
  f.start(setup, ec);
  CHECK(ec == errc::invalid_device_setup);
  CHECK(ec == netpasst::condition::configuration_error);
  CHECK(std::string(f.failure_message()).find("queue 0 still runs") != std::string::npos);
  CHECK(f.is_open());

  // Stop: GET_VRING_BASE, whose index resumes the queue.
  c.backend.vring_base = 4242;
  CHECK(f.stop_queue(1, ec) == 4242);
  REQUIRE_FALSE(ec);
  CHECK(f.running_queues() == std::vector<std::uint32_t>{0});
  f.stop_queue(1, ec);
  CHECK(ec == errc::invalid_device_setup);
  CHECK(std::string(f.failure_message()) == "stop: queue 1 is not running");
  CHECK(f.stop_queue(0, ec) == 4242);
  REQUIRE_FALSE(ec);
  CHECK(f.running_queues().empty());
  REQUIRE(seen.size() == before + 2);
  CHECK(seen[before].request == 11);
  CHECK(payload_as<std::uint32_t>(seen[before]) == 1);
  CHECK(payload_as<std::uint32_t>(seen[before + 1]) == 0);

  // Resume queue 1 alone, from where it stopped.
  auto resume = setup;
  resume.queues = {setup.queues[1]};
  resume.queues[0].next_available = 4242;
  f.start(resume, ec);
  REQUIRE_FALSE(ec);
  CHECK(f.running_queues() == std::vector<std::uint32_t>{1});
  CHECK(requests_of({seen.begin() + std::ptrdiff_t(before) + 2, seen.end()}) ==
        std::vector<std::uint32_t>{2, 5, 8, 10, 9, 12, 13, 18});
  CHECK(payload_as<std::uint32_t>(seen[before + 5], 4) == 4242);
}

TEST_CASE("vhost-user frontend: without REPLY_ACK nothing asks for a status and a GET_FEATURES round trip closes the start") {
  const bool offered = GENERATE(true, false);
  INFO("protocol features offered: " << offered);
  connected c([&](scripted_backend& b) {
    if (!offered) b.features = 1ull << 32;
  }, {.reply_ack = false});
  vmm_memory memory;
  std::error_code ec;
  c.frontend->open(ec);
  REQUIRE_FALSE(ec);
  CHECK(c.frontend->negotiation().acked_protocol_features == 0);
  auto setup = memory.setup();
  setup.features = 1ull << 32; // bit 30 is the frontend's to set
  c.frontend->start(setup, ec);
  REQUIRE_FALSE(ec);
  // Protocol features agreed: the rings start disabled, SET_VRING_ENABLE
  // is owed even without REPLY_ACK.
  const std::vector<std::uint32_t> expected =
      offered ? std::vector<std::uint32_t>{1, 15, 16, 3, 2, 5, 8, 10, 9, 12, 13, 8, 10, 9, 12, 13, 18, 18, 1}
              : std::vector<std::uint32_t>{1, 3, 2, 5, 8, 10, 9, 12, 13, 8, 10, 9, 12, 13, 1};
  CHECK(requests_of(c.backend.seen) == expected);
  for (const auto& m : c.backend.seen) CHECK((m.flags & 8u) == 0);
  const auto& set_features = c.backend.seen[offered ? 4 : 2];
  CHECK(payload_as<std::uint64_t>(set_features) == (offered ? (1ull << 32 | 1ull << 30) : 1ull << 32));
}

TEST_CASE("vhost-user frontend: a setup a backend would misread is refused before anything is sent, naming the field") {
  connected c;
  vmm_memory memory;
  std::error_code ec;
  auto& f = *c.frontend;
  f.start(memory.setup(), ec);
  CHECK(ec == errc::invalid_device_setup);
  CHECK(std::string(f.failure_message()) == "start: the backend was not opened");
  f.open(ec);
  REQUIRE_FALSE(ec);

  using setup_t = netpasst::vhost_user_device_setup;
  const struct {
    const char* why;
    std::function<void(setup_t&)> spoil;
  } cases[] = {
      {"memory: 0 regions (1 to 8)", [](setup_t& s) { s.memory.clear(); }},
      {"memory: 9 regions (1 to 8)", [](setup_t& s) { s.memory.resize(9, s.memory[0]); }},
      {"memory region 1: no descriptor", [](setup_t& s) { s.memory[1].fd = -1; }},
      {"memory region 0: size 0", [](setup_t& s) { s.memory[0].size = 0; }},
      {"memory region 1: wraps around the address space", [](setup_t& s) { s.memory[1].guest_physical = ~0ull - 10; }},
      {"memory region 1: overlaps region 0 in guest-physical addresses",
       [](setup_t& s) { s.memory[1].guest_physical = s.memory[0].guest_physical + 4096; }},
      {"memory region 1: overlaps region 0 in user addresses",
       [](setup_t& s) { s.memory[1].user_address = s.memory[0].user_address + 8; }},
      {"queues: 0 (1 to 256)", [](setup_t& s) { s.queues.clear(); }},
      {"queue 256: index above 255", [](setup_t& s) { s.queues[1].index = 256; }},
      {"queue 0: given twice", [](setup_t& s) { s.queues[1].index = 0; }},
      {"queue 1: size 12 (a power of two up to 32768)", [](setup_t& s) { s.queues[1].size = 12; }},
      {"queue 0: size 0 (a power of two up to 32768)", [](setup_t& s) { s.queues[0].size = 0; }},
      {"queue 1: used ring at", [](setup_t& s) { s.queues[1].used += 2; }},
      {"is not 4-byte aligned", [](setup_t& s) { s.queues[1].used += 2; }},
      {"queue 0: descriptor table at", [](setup_t& s) { s.queues[0].descriptors = 0x1000; }},
      {"lies in no memory region's user addresses", [](setup_t& s) { s.queues[0].descriptors = 0x1000; }},
      {"queue 0: available ring", [](setup_t& s) { s.queues[0].available = s.memory[0].user_address + s.memory[0].size - 8; }},
      {"features: 0x2 not offered by the backend", [](setup_t& s) { s.features |= 2; }},
  };
  for (const auto& bad : cases) {
    INFO(bad.why);
    auto setup = memory.setup();
    bad.spoil(setup);
    f.start(setup, ec);
    CHECK(ec == errc::invalid_device_setup);
    CHECK(std::string(f.failure_message()).find(bad.why) != std::string::npos);
    CHECK(f.is_open());
  }
  CHECK(c.backend.requests == 4); // only the open's messages
  f.start(memory.setup(), ec);
  CHECK_FALSE(ec);
}

TEST_CASE("vhost-user frontend: a refusal, a wrong reply or a silent backend names the message and closes the frontend") {
  vmm_memory memory;
  SECTION("REPLY_ACK status 1 to SET_MEM_TABLE") {
    connected c([](scripted_backend& b) { b.refuse = 5; });
    std::error_code ec;
    c.frontend->open(ec);
    REQUIRE_FALSE(ec);
    c.frontend->start(memory.setup(), ec);
    CHECK(ec == errc::protocol_error);
    CHECK(c.frontend->negotiation().failed_step == "SET_MEM_TABLE");
    CHECK(std::string(c.frontend->failure_message()) == "SET_MEM_TABLE: the backend refused it (status 1)");
    CHECK_FALSE(c.frontend->is_open());
    CHECK(c.frontend->native_handle() == -1);
    CHECK(c.frontend->running_queues().empty());
  }
  SECTION("a refused SET_VRING_ADDR names its queue") {
    connected c([](scripted_backend& b) { b.refuse = 9; });
    std::error_code ec;
    c.frontend->open(ec);
    c.frontend->start(memory.setup(), ec);
    CHECK(ec == errc::protocol_error);
    CHECK(std::string(c.frontend->failure_message()) == "SET_VRING_ADDR (queue 0): the backend refused it (status 1)");
  }
  SECTION("GET_VRING_BASE answered for another queue") {
    connected c([](scripted_backend& b) { b.vring_base_queue = 7; });
    std::error_code ec;
    c.frontend->open(ec);
    c.frontend->start(memory.setup(), ec);
    REQUIRE_FALSE(ec);
    c.frontend->stop_queue(1, ec);
    CHECK(ec == errc::protocol_error);
    CHECK(std::string(c.frontend->failure_message()) ==
          "GET_VRING_BASE (queue 1): reply for queue 7 with index 0");
  }
  SECTION("a malformed reply fails as soon as its header is in") {
    connected c([](scripted_backend& b) { b.empty_replies = true; }, {.reply_timeout = 20s});
    const auto began = std::chrono::steady_clock::now();
    std::error_code ec;
    c.frontend->open(ec);
    CHECK(ec == errc::protocol_error);
    CHECK(std::chrono::steady_clock::now() - began < 10s);
    CHECK(std::string(c.frontend->failure_message()) == "GET_FEATURES: malformed reply (request 1, flags 5, 0 bytes)");
  }
  SECTION("no reply within the timeout") {
    connected c([](scripted_backend& b) { b.silent = true; }, {.reply_timeout = 100ms});
    std::error_code ec;
    c.frontend->open(ec);
    CHECK(ec == errc::start_timeout);
    CHECK(std::string(c.frontend->failure_message()) == "GET_FEATURES: no reply within 100 ms");
    c.frontend->open(ec);
    CHECK(ec == errc::start_timeout); // closed: later requests report the error that closed it
  }
}

TEST_CASE("vhost-user frontend: asynchronous requests, and a closed wait that requests do not disturb") {
  const ending_kind ending = GENERATE(hang_up, babble, close_locally);
  INFO("ending " << ending);
  // open (4 requests) and start (14), then one stop: the backend hangs up or
  // writes unasked after answering it.
  std::atomic<bool> answering{true};
  connected c([&](scripted_backend& b) {
    if (ending == hang_up) b.stop_after = 19;
    if (ending == babble) b.babble_after = 19;
    b.gate = &answering;
  });
  vmm_memory memory;
  auto& f = *c.frontend;
  std::optional<std::error_code> opened, started, second, closed;
  std::optional<std::pair<std::error_code, std::uint16_t>> stopped;
  f.async_open([&](std::error_code e) { opened = e; });
  CHECK_FALSE(opened); // never inside the call
  REQUIRE(netpasst::test::run_until(c.io, [&] { return opened.has_value(); }, 10s));
  REQUIRE_FALSE(*opened);
  answering = false; // the start cannot finish before the second request is made
  f.async_start(memory.setup(), [&](std::error_code e) { started = e; });
  f.async_stop_queue(0, [&](std::error_code e, std::uint16_t) { second = e; });
  answering = true;
  REQUIRE(netpasst::test::run_until(c.io, [&] { return started && second; }, 10s));
  CHECK_FALSE(*started);
  CHECK(*second == errc::operation_in_progress);

  f.async_wait_closed([&](std::error_code e) { closed = e; });
  c.io.run_for(20ms);
  CHECK_FALSE(closed);
  c.backend.vring_base = 9;
  // Both waits are pending when the answer (and what follows it, in the
  // same write) arrives: one wake-up for both.
  answering = false;
  f.async_stop_queue(1, [&](std::error_code e, std::uint16_t next) { stopped.emplace(e, next); });
  c.io.run_for(20ms);
  CHECK_FALSE(stopped);
  answering = true;
  REQUIRE(netpasst::test::run_until(c.io, [&] { return stopped.has_value(); }, 10s));
  CHECK_FALSE(stopped->first); // the reply went to the request, not to the closed wait
  CHECK(stopped->second == 9);
  if (ending == close_locally) {
    c.io.run_for(50ms);
    CHECK_FALSE(closed);
    f.close();
  }
  REQUIRE(netpasst::test::run_until(c.io, [&] { return closed.has_value(); }, 10s));
  switch (ending) {
  case hang_up: CHECK(*closed == errc::connection_closed); break;
  case babble:
    CHECK(*closed == errc::protocol_error);
    CHECK(std::string(f.failure_message()) == "the backend wrote on the socket unasked");
    break;
  case close_locally: CHECK(*closed == errc::transport_closed); break;
  }
  CHECK_FALSE(f.is_open());
}

TEST_CASE("vhost-user device session under a lifecycle: each passt gets the VMM's device as described then, and a stop detaches") {
  using device_lifecycle =
      netpasst::basic_lifecycle<netpasst::vhost_user_device_session, netpasst::testing::scripted_launcher>;
  static_assert(netpasst::BackendSession<netpasst::vhost_user_device_session>);
  static_assert(netpasst::Lifecycle<device_lifecycle>);
  netpasst::test::scripted_vhost_launches bench;
  auto& [io, launcher, passts, config] = bench;
  vmm_memory memory;
  std::vector<std::uint64_t> offers;
  std::uint16_t resume_at = 0;
  bool refuse = false;
  device_lifecycle life(
      launcher, {}, config, netpasst::argv_builder{}, io.get_executor(),
      [&](const netpasst::vhost_user_negotiation& n) {
        offers.push_back(n.offered_features);
        if (refuse) throw std::runtime_error("the guest has not set up its rings");
        auto setup = memory.setup();
        for (auto& q : setup.queues) q.next_available = resume_at;
        return setup;
      },
      netpasst::vhost_user_frontend_config{.reply_timeout = 30s});
  netpasst::test::event_log log(life);
  std::optional<std::error_code> started;
  life.async_start([&](std::error_code ec) { started = ec; });
  REQUIRE(netpasst::test::run_until(io, [&] { return started.has_value(); }));
  REQUIRE_FALSE(*started);
  auto& session = life.next_layer();
  CHECK(session.attached());
  REQUIRE(session.frontend());
  CHECK(session.frontend()->running_queues() == std::vector<std::uint32_t>{0, 1});
  CHECK(offers == std::vector<std::uint64_t>{passts.backends.front().features});
  const auto& first = passts.backends.front().seen;
  REQUIRE(first.size() == 18);
  CHECK(first[5].request == 5);
  CHECK(first[5].fds.size() == 2); // both of the VMM's regions

  SECTION("passt dies: the next one is described anew and resumes where the used rings stand") {
    resume_at = 77;
    passts.processes.front()->exit(128 + SIGKILL);
    ::shutdown(passts.ends.front().get(), SHUT_RDWR);
    REQUIRE(netpasst::test::run_until(io, [&] { return log.link_ups() == 2; }));
    CHECK(launcher.launches() == 2);
    CHECK(log.events.back().generation == 2);
    CHECK(offers.size() == 2);
    CHECK(session.attached());
    const auto& second = passts.backends.back().seen;
    REQUIRE(second.size() == 18);
    CHECK(payload_as<std::uint32_t>(second[7], 4) == 77); // SET_VRING_BASE of queue 0
  }
  SECTION("a describe that throws fails the attach, and the lifecycle tries another passt") {
    refuse = true;
    passts.processes.front()->exit(128 + SIGKILL);
    ::shutdown(passts.ends.front().get(), SHUT_RDWR);
    REQUIRE(netpasst::test::run_until(io, [&] { return launcher.launches() >= 2 && offers.size() >= 2; }));
    CHECK(std::string(session.failure_message()) == "describing the device: the guest has not set up its rings");
    refuse = false;
    REQUIRE(netpasst::test::run_until(io, [&] { return log.link_ups() == 2; }));
    CHECK(session.attached());
  }
  SECTION("a VMM's own stop of a queue goes through the attached frontend") {
    passts.backends.front().vring_base = 31;
    std::optional<std::pair<std::error_code, std::uint16_t>> stopped;
    session.frontend()->async_stop_queue(1, [&](std::error_code e, std::uint16_t n) { stopped.emplace(e, n); });
    REQUIRE(netpasst::test::run_until(io, [&] { return stopped.has_value(); }));
    CHECK_FALSE(stopped->first);
    CHECK(stopped->second == 31);
    CHECK(life.link_up()); // a stopped queue is not a lost connection
  }
  life.stop();
  CHECK_FALSE(session.attached());
  CHECK(session.frontend() == nullptr);
}

TEST_CASE("vhost-user frontend: a request's reply timeout ends a pending closed wait with the timeout, not as cancelled") {
  std::atomic<bool> answering{true};
  connected c([&](scripted_backend& b) { b.gate = &answering; }, {.reply_timeout = 100ms});
  vmm_memory memory;
  auto& f = *c.frontend;
  std::error_code ec;
  f.open(ec);
  REQUIRE_FALSE(ec);
  answering = false; // the start's first message gets no answer in time
  std::optional<std::error_code> started, closed;
  f.async_wait_closed([&](std::error_code e) { closed = e; });
  f.async_start(memory.setup(), [&](std::error_code e) { started = e; });
  REQUIRE(netpasst::test::run_until(c.io, [&] { return started && closed; }, 10s));
  CHECK(*started == errc::start_timeout);
  CHECK(*closed == errc::start_timeout);
  CHECK(std::string(f.failure_message()) == "SET_FEATURES: no reply within 100 ms");
  answering = true;
}

TEST_CASE("vhost-user device session: destroyed with an attach or a lost wait pending, their completions do not use it") {
  vmm_memory memory;
  asio::io_context io;
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
  netpasst::unique_fd ours(fds[0]), theirs(fds[1]);
  scripted_backend backend;
  auto session = std::make_unique<netpasst::vhost_user_device_session>(
      io, [&](const netpasst::vhost_user_negotiation&) { return memory.setup(); });
  std::optional<std::error_code> attached, lost;
  SECTION("an attach the backend has not answered") {
    session->async_attach(std::move(ours), [&](std::error_code ec) { attached = ec; });
    netpasst::test::run_until(io, [] { return false; }, 0s);
    CHECK_FALSE(attached);
    session.reset();
    REQUIRE(netpasst::test::run_until(io, [&] { return attached.has_value(); }, 10s));
    CHECK(*attached == errc::transport_closed);
  }
  SECTION("a lost wait on an attached backend") {
    std::thread peer([&] { backend.serve(theirs.get()); });
    session->async_attach(std::move(ours), [&](std::error_code ec) { attached = ec; });
    REQUIRE(netpasst::test::run_until(io, [&] { return attached.has_value(); }, 10s));
    REQUIRE_FALSE(*attached);
    session->async_wait_lost([&](std::error_code ec) { lost = ec; });
    netpasst::test::run_until(io, [] { return false; }, 0s);
    CHECK_FALSE(lost);
    session.reset();
    REQUIRE(netpasst::test::run_until(io, [&] { return lost.has_value(); }, 10s));
    CHECK(*lost == asio::error::operation_aborted);
    ::shutdown(theirs.get(), SHUT_RDWR);
    peer.join();
  }
}

TEST_CASE("vhost-user frontend: a blocking request waits out a reply timeout beyond what poll() takes in one call") {
  // 2^32 ms + 100 ms: cut to an int, 100 ms. The backend answers after 500 ms.
  std::atomic<bool> answering{false};
  connected c([&](scripted_backend& b) { b.gate = &answering; },
              {.reply_timeout = std::chrono::milliseconds((1ll << 32) + 100)});
  std::thread release([&] {
    std::this_thread::sleep_for(500ms);
    answering = true;
  });
  std::error_code ec;
  c.frontend->open(ec);
  release.join();
  CHECK_FALSE(ec);
  CHECK(c.frontend->failure_message().empty());
}

TEST_CASE("vhost-user frontend: an asynchronous request under the longest reply timeout waits without overflow") {
  connected c({.reply_timeout = std::chrono::milliseconds::max()});
  std::optional<std::error_code> opened;
  c.frontend->async_open([&](std::error_code e) { opened = e; });
  REQUIRE(netpasst::test::run_until(c.io, [&] { return opened.has_value(); }, 10s));
  CHECK_FALSE(*opened);
}
