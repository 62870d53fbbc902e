#pragma once
// A vhost-user backend scripted on one end of a socketpair, for the unit
// tests of the frontend and of the transport built on it.
#include "vhost_user_messages.hpp"

#include <netpasst/lifecycle.hpp>
#include <netpasst/testing/scripted_launcher.hpp>
#include <netpasst/unique_fd.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <list>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

namespace netpasst::test {

/// Sends a reply carrying `value`; false if the socket did not take it.
/// (Runs on the backend's thread: no Catch assertion there.)
inline bool reply_u64(int fd, std::uint32_t request, std::uint64_t value) {
  std::uint32_t header[3] = {request, 1u | 4u, 8};
  std::byte out[20];
  std::memcpy(out, header, 12);
  std::memcpy(out + 12, &value, 8);
  return ::send(fd, out, sizeof out, MSG_NOSIGNAL) == sizeof out;
}

/// A backend that answers like passt does (VERSION_1, PROTOCOL_FEATURES,
/// REPLY_ACK) until `stop_after` requests were read, then returns (its end
/// of the socket stays open until the caller closes it). Records requests.
struct scripted_backend {
  std::uint64_t features = (1ull << 32) | (1ull << 30);
  std::uint64_t protocol_features = 1ull << 3;
  std::size_t stop_after = SIZE_MAX;
  /// Reads and counts requests but answers none.
  bool silent = false;
  /// When set, the first reply waits until it is true (20 s at most).
  const std::atomic<bool>* gate = nullptr;
  /// Replies with a header announcing no payload (malformed: a u64 is owed).
  bool empty_replies = false;
  /// A request whose REPLY_ACK status is 1 (refused); 0 for none.
  std::uint32_t refuse = 0;
  /// GET_VRING_BASE answers with this index (and the queue asked about, or
  /// `vring_base_queue` when not -1). A test may change it while serving.
  std::atomic<std::uint32_t> vring_base{0};
  std::int64_t vring_base_queue = -1;
  /// The answer to this request (counted from 1) goes out in one write
  /// with 12 bytes more, unasked.
  std::size_t babble_after = SIZE_MAX;
  /// The descriptor SET_MEM_TABLE carried, kept open (-1 before).
  int memory_fd = -1;
  /// The call eventfd SET_VRING_CALL carried for queue 0 (receive), kept
  /// open (-1 before): writing to it signals the frontend.
  std::atomic<int> receive_call_fd{-1};

  scripted_backend() = default;
  scripted_backend(const scripted_backend&) = delete;
  ~scripted_backend() {
    if (memory_fd >= 0) ::close(memory_fd);
    if (receive_call_fd >= 0) ::close(receive_call_fd);
  }
  std::vector<vhost_user_message> seen;
  std::atomic<std::size_t> requests{0};

  void serve(int fd) {
    while (seen.size() < stop_after) {
      auto m = read_vhost_user_message(fd);
      if (!m) return;
      if (m->request == 5 && memory_fd < 0 && !m->fds.empty()) memory_fd = std::exchange(m->fds.front(), -1);
      if (m->request == 13 && receive_call_fd < 0 && !m->fds.empty() && !m->payload.empty() &&
          (std::uint8_t(m->payload[0]) == 0))
        receive_call_fd = std::exchange(m->fds.front(), -1);
      m->close_fds();
      seen.push_back(*m);
      ++requests;
      if (silent) continue;
      for (int waited = 0; gate && !*gate && waited < 20000; ++waited)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      bool sent = true;
      if (seen.size() == babble_after) {
        std::byte out[32];
        const std::uint32_t header[3] = {m->request, 1u | 4u, 8};
        std::uint32_t queue = 0;
        if (m->request == 11 && m->payload.size() >= 4) std::memcpy(&queue, m->payload.data(), 4);
        const std::uint64_t value = m->request == 11 ? queue | std::uint64_t(vring_base.load()) << 32 : 0;
        std::memcpy(out, header, 12);
        std::memcpy(out + 12, &value, 8);
        std::memcpy(out + 20, "unasked-junk", 12);
        sent = ::send(fd, out, sizeof out, MSG_NOSIGNAL) == sizeof out;
      } else if (empty_replies) {
        const std::uint32_t header[3] = {m->request, 1u | 4u, 0};
        sent = ::send(fd, header, sizeof header, MSG_NOSIGNAL) == sizeof header;
      } else if (m->request == 1) sent = reply_u64(fd, 1, features);
      else if (m->request == 15) sent = reply_u64(fd, 15, protocol_features);
      else if (m->request == 11) {
        std::uint32_t queue = 0;
        if (m->payload.size() >= 4) std::memcpy(&queue, m->payload.data(), 4);
        if (vring_base_queue >= 0) queue = std::uint32_t(vring_base_queue);
        sent = reply_u64(fd, 11, queue | std::uint64_t(vring_base.load()) << 32);
      } else if (m->flags & 8u) sent = reply_u64(fd, m->request, m->request == refuse ? 1 : 0);
      if (!sent) return;
    }
  }
};

/// Plays passt for a lifecycle: a scripted backend on each launch's fd 3.
struct vhost_passts {
  std::list<netpasst::unique_fd> ends;
  std::list<scripted_backend> backends;
  std::list<std::thread> threads;
  std::vector<std::shared_ptr<netpasst::testing::scripted_exit>> processes;
  std::size_t silent_from = SIZE_MAX; // launches from this index on never answer

  void operator()(netpasst::testing::scripted_launch launch) {
    processes.push_back(launch.process);
    auto& backend = backends.emplace_back();
    backend.silent = processes.size() > silent_from;
    const int fd = ends.emplace_back(std::move(launch.passt_end)).get();
    threads.emplace_back([&backend, fd] { backend.serve(fd); });
  }
  ~vhost_passts() {
    for (auto& end : ends) ::shutdown(end.get(), SHUT_RDWR);
    for (auto& thread : threads) thread.join();
  }
};

/// A scripted launcher whose every launch is a scripted backend, and a
/// lifecycle configuration that restarts at once. A lifecycle using them
/// must be destroyed first.
struct scripted_vhost_launches {
  asio::io_context io;
  netpasst::testing::scripted_launcher launcher{io};
  vhost_passts passts;
  netpasst::lifecycle_config config;
  scripted_vhost_launches() {
    launcher.on_launch([this](netpasst::testing::scripted_launch l) { passts(std::move(l)); });
    config.restart.initial_backoff = std::chrono::milliseconds(10);
    config.restart.min_uptime = std::chrono::milliseconds(0);
    config.stop_grace = std::chrono::milliseconds(50);
    config.loss_settle = std::chrono::milliseconds(20);
  }
};

} // namespace netpasst::test
