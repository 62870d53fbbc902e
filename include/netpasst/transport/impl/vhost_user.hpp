#pragma once
// Implementation of netpasst/transport/vhost_user.hpp; include that header instead.

#include <netpasst/transport/vhost_user.hpp>

#include <asio/cancellation_type.hpp>
#include <asio/compose.hpp>
#include <asio/error.hpp>
#include <asio/posix/basic_stream_descriptor.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

namespace netpasst::detail::vhost {

// The vhost-user messages the frontend sends (request codes of the spec).
inline constexpr std::uint32_t get_features = 1, set_features = 2, set_owner = 3, set_mem_table = 5,
                               set_vring_num = 8, set_vring_addr = 9, set_vring_base = 10, set_vring_kick = 12,
                               set_vring_call = 13, get_protocol_features = 15, set_protocol_features = 16,
                               set_vring_enable = 18;
// Header flags: protocol version 1 in the low two bits, then "reply", "need reply".
inline constexpr std::uint32_t version = 1, reply_flag = 1u << 2, need_reply_flag = 1u << 3;
inline constexpr std::uint64_t f_version_1 = 1ull << 32, f_protocol_features = 1ull << 30, f_guest_csum = 1ull << 1;
inline constexpr std::uint64_t pf_reply_ack = 1ull << 3;

struct header {
  std::uint32_t request, flags, size;
};
struct vring_state {
  std::uint32_t index, num;
};
struct vring_address {
  std::uint32_t index, flags;
  std::uint64_t descriptors, used, available, log;
};
struct memory_region {
  std::uint64_t guest_physical, size, user_address, mmap_offset;
};
struct memory_table {
  std::uint32_t regions, padding;
  memory_region region;
};
static_assert(sizeof(header) == 12 && sizeof(vring_address) == 40 && sizeof(memory_table) == 40);

// The split virtqueue as the virtio spec lays it out (little-endian, as is
// every host this builds for).
struct descriptor {
  std::uint64_t address;
  std::uint32_t length;
  std::uint16_t flags, next;
};
inline constexpr std::uint16_t descriptor_write = 2;   // VIRTQ_DESC_F_WRITE: the device writes the buffer
inline constexpr std::uint16_t used_no_notify = 1;     // VRING_USED_F_NO_NOTIFY: kicks not wanted
struct used_element {
  std::uint32_t id, length;
};
/// The 12-byte header every frame carries on both queues (VERSION_1).
inline constexpr std::size_t net_header_size = 12;
/// A slot holds the header and the largest frame; 16-byte aligned.
inline constexpr std::size_t slot_size = (net_header_size + max_frame_size + 15) & ~std::size_t{15};

inline constexpr std::size_t align_up(std::size_t n, std::size_t a) noexcept { return (n + a - 1) & ~(a - 1); }

/// Where one queue's parts sit, as offsets in the shared memory.
struct queue_layout {
  std::size_t descriptors, available, used, slots;
};

/// Offsets of both queues' rings, then of their slots, and the total size.
struct memory_layout {
  queue_layout queue[2];
  std::size_t size;
  explicit memory_layout(std::size_t n) noexcept {
    std::size_t at = 0;
    for (auto& q : queue) {
      q.descriptors = at;
      q.available = align_up(at + 16 * n, 64);
      q.used = align_up(q.available + 6 + 2 * n, 64);
      at = align_up(q.used + 6 + 8 * n, 4096);
    }
    for (auto& q : queue) {
      q.slots = at;
      at += align_up(slot_size * n, 4096);
    }
    size = at;
  }
};

/// One split virtqueue seen from the driver's side.
struct split_queue {
  std::byte* base = nullptr; // start of the shared memory (guest-physical 0)
  queue_layout at{};
  std::uint16_t size = 0;
  std::uint16_t next_available = 0; // the driver's shadow of available->idx
  std::uint16_t last_used = 0;      // used entries consumed so far

  descriptor* descriptors() const noexcept { return reinterpret_cast<descriptor*>(base + at.descriptors); }
  std::uint16_t* available_ring() const noexcept { return reinterpret_cast<std::uint16_t*>(base + at.available + 4); }
  std::uint16_t& available_index() const noexcept { return *reinterpret_cast<std::uint16_t*>(base + at.available + 2); }
  std::uint16_t& used_flags() const noexcept { return *reinterpret_cast<std::uint16_t*>(base + at.used); }
  std::uint16_t& used_index() const noexcept { return *reinterpret_cast<std::uint16_t*>(base + at.used + 2); }
  used_element* used_ring() const noexcept { return reinterpret_cast<used_element*>(base + at.used + 4); }
  std::byte* slot(std::uint32_t id) const noexcept { return base + at.slots + std::size_t(id) * slot_size; }
  std::uint64_t slot_address(std::uint32_t id) const noexcept { return at.slots + std::uint64_t(id) * slot_size; }

  /// The backend's used index, read after everything it wrote before it.
  std::uint16_t used_now() const noexcept { return std::atomic_ref(used_index()).load(std::memory_order_acquire); }
  /// The next used entry, each field read exactly once: the backend may
  /// rewrite it at any time, so what was checked must be what is used.
  used_element take_used() noexcept {
    used_element& e = used_ring()[last_used++ % size];
    return {std::atomic_ref(e.id).load(std::memory_order_relaxed),
            std::atomic_ref(e.length).load(std::memory_order_relaxed)};
  }
  void offer(std::uint16_t id) noexcept { available_ring()[next_available++ % size] = id; }
  /// Makes every offered descriptor visible to the backend.
  void publish() noexcept { std::atomic_ref(available_index()).store(next_available, std::memory_order_release); }
  /// After a publish: whether the backend wants a kick.
  bool wants_kick() const noexcept {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return !(std::atomic_ref(used_flags()).load(std::memory_order_relaxed) & used_no_notify);
  }
};

/// The handshake's steps in order; steps that do not apply to what was
/// negotiated are skipped. Each queue has five: NUM, BASE, ADDR, KICK, CALL.
enum handshake_step : unsigned {
  hs_get_features,
  hs_get_protocol_features,
  hs_set_protocol_features,
  hs_set_owner,
  hs_set_features,
  hs_set_mem_table,
  hs_first_queue_step,
  hs_enable = hs_first_queue_step + 10,
  hs_barrier = hs_enable + 2, // GET_FEATURES again when REPLY_ACK is not agreed
  hs_done
};

} // namespace netpasst::detail::vhost

namespace netpasst::detail {

/// Everything a vhost-user transport owns, shared with its pending handlers.
template <class Executor>
class vhost_user_state : public std::enable_shared_from_this<vhost_user_state<Executor>> {
public:
  vhost_user_state(const Executor& executor, unique_fd socket, const vhost_user_transport_config& config)
      : config_(config), layout_(config.queue_size), socket_(executor), receive_call_(executor),
        transmit_call_(executor), reply_timer_(executor) {
    if (!socket) throw std::system_error(EBADF, std::system_category(), "netpasst: vhost-user transport needs a socket");
    if (config_.queue_size < 2 || config_.queue_size > 1024 || !std::has_single_bit(config_.queue_size))
      throw std::system_error(std::make_error_code(std::errc::invalid_argument),
                              "netpasst: vhost-user transport: queue_size " + std::to_string(config_.queue_size) +
                                  " (a power of two from 2 to 1024)");
    config_.max_batch_frames = std::clamp<std::size_t>(config_.max_batch_frames, 1, config_.queue_size);
    auto os_failure = [](const char* what) {
      return std::system_error(errno, std::system_category(), std::string("netpasst: vhost-user transport: ") + what);
    };
    const int status = ::fcntl(socket.get(), F_GETFL);
    if (status < 0 || ::fcntl(socket.get(), F_SETFL, status | O_NONBLOCK) < 0 ||
        ::fcntl(socket.get(), F_SETFD, FD_CLOEXEC) < 0)
      throw os_failure("fcntl on the socket");
    memory_fd_ = unique_fd(::memfd_create("netpasst-vhost-user", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!memory_fd_) throw os_failure("memfd_create");
    if (::ftruncate(memory_fd_.get(), off_t(layout_.size)) != 0) throw os_failure("ftruncate of the shared memory");
    // Sealed at its size: a backend that truncated it would make every
    // access to the lost pages a SIGBUS here.
    if (::fcntl(memory_fd_.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)
      throw os_failure("sealing the shared memory's size");
    void* mapped = ::mmap(nullptr, layout_.size, PROT_READ | PROT_WRITE, MAP_SHARED, memory_fd_.get(), 0);
    if (mapped == MAP_FAILED) throw os_failure("mmap of the shared memory");
    memory_ = static_cast<std::byte*>(mapped);
    for (unique_fd& fd : events_) {
      fd = unique_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      if (!fd) throw os_failure("eventfd");
    }
    for (int q = 0; q < 2; ++q) queue_[q] = {memory_, layout_.queue[q], config_.queue_size, 0, 0};
    handed_out_ = std::make_unique<std::uint16_t[]>(config_.queue_size);
    free_transmit_ = std::make_unique<std::uint16_t[]>(config_.queue_size);
    batch_ = std::make_unique<frame[]>(config_.max_batch_frames);
    socket_.assign(socket.release());
  }

  ~vhost_user_state() {
    if (memory_) ::munmap(memory_, layout_.size);
  }

  const vhost_user_transport_config& config() const noexcept { return config_; }
  const vhost_user_negotiation& negotiation() const noexcept { return negotiation_; }
  Executor executor() const noexcept { return const_cast<decltype(socket_)&>(socket_).get_executor(); }
  bool is_open() const noexcept { return started_ && !error_; }
  const std::error_code& error() const noexcept { return error_; }
  const vhost_user_counters& counters() const noexcept { return counters_; }
  auto& receive_call() noexcept { return receive_call_; }
  auto& transmit_call() noexcept { return transmit_call_; }
  auto& socket() noexcept { return socket_; }
  frame_batch batch(std::size_t n) const noexcept { return {batch_.get(), n}; }

  /// Ends the transport with `ec` (first error wins, except that close()
  /// always leaves transport_closed); pending waits complete with it.
  void fail(std::error_code ec) noexcept {
    if (!error_ || ec == errc::transport_closed) error_ = ec;
    std::error_code ignored;
    socket_.close(ignored);
    receive_call_.close(ignored);
    transmit_call_.close(ignored);
    reply_timer_.cancel();
    for (unique_fd& fd : events_) fd.reset();
  }

  void cancel() {
    std::error_code ignored;
    receive_call_.cancel(ignored);
    transmit_call_.cancel(ignored);
    if (handshaking_) socket_.cancel(ignored);
  }

  /// Starts the handshake of the file comment: the first message is ready
  /// to go. Refused (transport untouched) when one was already started.
  std::error_code begin_handshake() {
    if (started_ || handshaking_ || error_) return error_ ? error_ : make_error_code(errc::operation_in_progress);
    handshaking_ = true;
    step_ = vhost::hs_get_features;
    prepare(step_);
    return {};
  }

  /// Moves the handshake on as far as the socket allows without blocking:
  /// `done`, or `wait_for` says what to wait for (POLLIN, POLLOUT). On
  /// error the transport is failed and the step that failed is recorded.
  std::error_code advance_handshake(bool& done, short& wait_for) {
    done = false;
    std::error_code ec = advance(done, wait_for);
    if (ec) fail_handshake(ec);
    return ec;
  }

  /// The synchronous handshake: waits with poll(), at most the reply
  /// timeout at a time.
  std::error_code handshake() {
    if (auto ec = begin_handshake()) return ec;
    for (;;) {
      bool done;
      short wait_for = 0;
      if (auto ec = advance_handshake(done, wait_for)) return ec;
      if (done) return {};
      if (auto ec = wait_socket(wait_for)) return fail_handshake(ec), ec;
    }
  }

  /// One asynchronous wait of the handshake, bounded by the reply timeout:
  /// the timer cancels the socket wait, and `end_handshake_wait` tells a
  /// timeout from a cancellation.
  template <class Handler> void wait_handshake(short wait_for, Handler&& handler) {
    const std::uint64_t generation = ++wait_generation_;
    timed_out_ = false;
    reply_timer_.expires_after(config_.reply_timeout);
    reply_timer_.async_wait([self = this->shared_from_this(), generation](std::error_code ec) {
      if (ec || generation != self->wait_generation_) return;
      self->timed_out_ = true;
      std::error_code ignored;
      self->socket_.cancel(ignored);
    });
    socket_.async_wait(wait_for == POLLIN ? asio::posix::descriptor_base::wait_read
                                          : asio::posix::descriptor_base::wait_write,
                       std::forward<Handler>(handler));
  }

  /// After a handshake wait completed with `ec`: the error that ends the
  /// handshake (the transport's own, a timeout, a cancellation), if any; the
  /// transport is then failed with it.
  std::error_code end_handshake_wait(std::error_code ec) {
    ++wait_generation_;
    reply_timer_.cancel();
    if (error_) ec = error_;
    else if (timed_out_) ec = errc::start_timeout;
    if (ec) fail_handshake(ec);
    return ec;
  }

  /// The step the handshake failed at, for the throwing form.
  const char* failed_step() const noexcept { return negotiation_.failed_step.empty() ? "start" : negotiation_.failed_step.data(); }

  /// Drains a call eventfd, so that the next wait sees only later signals.
  static void drain(int fd) noexcept {
    std::uint64_t count;
    [[maybe_unused]] auto ignored = ::read(fd, &count, sizeof count);
  }
  int receive_call_fd() noexcept { return receive_call_.native_handle(); }
  int transmit_call_fd() noexcept { return transmit_call_.native_handle(); }

  /// Gives the previous batch's descriptors back, then takes what the
  /// backend has placed in the receive queue. 0 with `ec` = would_block when
  /// nothing is there.
  std::size_t receive_some(std::error_code& ec) {
    ec.clear();
    if (error_ || !started_) return ec = error_ ? error_ : make_error_code(errc::transport_closed), 0;
    vhost::split_queue& q = queue_[0];
    if (handed_count_) {
      for (std::size_t i = 0; i < handed_count_; ++i) q.offer(handed_out_[i]);
      handed_count_ = 0;
      q.publish();
      if (q.wants_kick()) kick(0);
    }
    const std::uint16_t used = q.used_now();
    std::size_t n = 0, bytes = 0;
    while (q.last_used != used && n < config_.max_batch_frames) {
      const vhost::used_element e = q.take_used();
      if (e.id >= q.size || handed_count_ == q.size) return fail(errc::protocol_error), ec = error_, 0;
      handed_out_[handed_count_++] = std::uint16_t(e.id);
      if (e.length < vhost::net_header_size + min_frame_size || e.length > vhost::net_header_size + max_frame_size) {
        ++counters_.frames_dropped_received;
        continue;
      }
      const std::size_t size = e.length - vhost::net_header_size;
      batch_[n++] = frame(q.slot(e.id) + vhost::net_header_size, size);
      bytes += size;
    }
    if (n == 0) return ec = errc::would_block, 0;
    counters_.frames_received += n;
    counters_.bytes_received += bytes;
    ++counters_.batches;
    return n;
  }

  /// Takes back the transmit descriptors the backend is done with; true if
  /// any slot is free.
  bool reclaim_transmit() noexcept {
    vhost::split_queue& q = queue_[1];
    const std::uint16_t used = q.used_now();
    while (q.last_used != used) {
      const std::uint32_t id = q.take_used().id;
      if (id < q.size && free_count_ < q.size) free_transmit_[free_count_++] = std::uint16_t(id);
    }
    return free_count_ > 0;
  }

  /// Copies up to `frames.size()` frames into free slots and publishes them
  /// with one kick.
  std::size_t send(std::span<const frame> frames, std::error_code& ec) {
    ec.clear();
    if (error_ || !started_) return ec = error_ ? error_ : make_error_code(errc::transport_closed), 0;
    vhost::split_queue& q = queue_[1];
    std::size_t n = 0;
    for (; n < frames.size(); ++n) {
      const frame f = frames[n];
      if (f.size() < min_frame_size || f.size() > max_frame_size) {
        ++counters_.frames_refused;
        ec = f.size() < min_frame_size ? errc::frame_too_short : errc::frame_too_long;
        break;
      }
      if (free_count_ == 0 && !reclaim_transmit()) {
        ++counters_.sends_would_block;
        ec = errc::would_block;
        break;
      }
      const std::uint16_t id = free_transmit_[--free_count_];
      std::byte* slot = q.slot(id);
      std::memset(slot, 0, vhost::net_header_size);
      std::memcpy(slot + vhost::net_header_size, f.data(), f.size());
      q.descriptors()[id] = {q.slot_address(id), std::uint32_t(vhost::net_header_size + f.size()), 0, 0};
      q.offer(id);
      ++counters_.frames_sent;
      counters_.bytes_sent += f.size();
    }
    if (n > 0) {
      q.publish();
      if (q.wants_kick()) kick(1);
    }
    return n;
  }

  bool transmit_slot_free() noexcept { return free_count_ > 0 || reclaim_transmit(); }

  /// Keeps one wait on the control socket: after the handshake the backend
  /// has nothing to say, so readability means it closed or misbehaved.
  void watch_socket() {
    socket_.async_wait(asio::posix::descriptor_base::wait_read,
                       [self = this->shared_from_this()](std::error_code ec) {
                         if (ec || self->error_) return;
                         char byte;
                         const ssize_t got = ::recv(self->socket_.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
                         if (got == 0) return self->fail(errc::connection_closed);
                         if (got > 0) return self->fail(errc::protocol_error);
                         if (errno == EAGAIN || errno == EINTR) return self->watch_socket();
                         self->fail({errno, std::system_category()});
                       });
  }

private:
  void kick(int queue) noexcept {
    const std::uint64_t one = 1;
    if (::write(events_[kick_event(queue)].get(), &one, sizeof one) == sizeof one) {
      if (queue == 1) ++counters_.kicks;
    }
  }
  static constexpr int kick_event(int queue) noexcept { return queue; }
  static constexpr int call_event(int queue) noexcept { return 2 + queue; }

  /// Name of a handshake step, for error messages.
  static const char* step_name(unsigned step) noexcept {
    using namespace vhost;
    static constexpr const char* queue_steps[] = {"SET_VRING_NUM", "SET_VRING_BASE", "SET_VRING_ADDR",
                                                  "SET_VRING_KICK", "SET_VRING_CALL"};
    switch (step) {
    case hs_get_features: return "GET_FEATURES";
    case hs_get_protocol_features: return "GET_PROTOCOL_FEATURES";
    case hs_set_protocol_features: return "SET_PROTOCOL_FEATURES";
    case hs_set_owner: return "SET_OWNER";
    case hs_set_features: return "SET_FEATURES";
    case hs_set_mem_table: return "SET_MEM_TABLE";
    case hs_enable:
    case hs_enable + 1: return "SET_VRING_ENABLE";
    case hs_barrier: return "GET_FEATURES (barrier)";
    default: return step < hs_enable ? queue_steps[(step - hs_first_queue_step) % 5] : "start";
    }
  }

  void fail_handshake(std::error_code ec) noexcept {
    if (negotiation_.failed_step.empty()) negotiation_.failed_step = step_name(step_);
    handshaking_ = false;
    fail(ec);
  }

  /// Queues a message; its reply (a u64) is awaited when `want_reply`, or
  /// when REPLY_ACK was agreed and `ack` asks for the backend's status.
  void queue_message(std::uint32_t request, const void* payload, std::size_t size, int fd, bool ack,
                     bool want_reply = false) {
    const bool need_reply = ack && acked_reply_;
    const vhost::header h{request, vhost::version | (need_reply ? vhost::need_reply_flag : 0u), std::uint32_t(size)};
    std::memcpy(out_, &h, sizeof h);
    if (size) std::memcpy(out_ + sizeof h, payload, size);
    out_size_ = sizeof h + size;
    out_written_ = 0;
    out_fd_ = fd;
    in_read_ = 0;
    in_wanted_ = need_reply || want_reply ? sizeof in_ : 0;
    in_request_ = request;
  }

  /// Queues the message of `step`; false if the step does not apply to what
  /// was negotiated.
  bool prepare(unsigned step) {
    using namespace vhost;
    const bool protocol = acked_features_ & f_protocol_features;
    switch (step) {
    case hs_barrier:
      if (acked_reply_) return false;
      [[fallthrough]];
    case hs_get_features: return queue_message(get_features, nullptr, 0, -1, false, true), true;
    case hs_get_protocol_features:
      return protocol && (queue_message(get_protocol_features, nullptr, 0, -1, false, true), true);
    case hs_set_protocol_features:
      return protocol && (queue_message(set_protocol_features, &negotiation_.acked_protocol_features, 8, -1, false), true);
    case hs_set_owner: return queue_message(set_owner, nullptr, 0, -1, true), true;
    case hs_set_features: return queue_message(set_features, &acked_features_, 8, -1, true), true;
    case hs_set_mem_table: {
      const memory_table table{1, 0, {0, layout_.size, address_of(0), 0}};
      return queue_message(set_mem_table, &table, sizeof table, memory_fd_.get(), true), true;
    }
    case hs_enable:
    case hs_enable + 1: {
      const vring_state enable{step - hs_enable, 1};
      return protocol && (queue_message(set_vring_enable, &enable, sizeof enable, -1, true), true);
    }
    default: break;
    }
    const std::uint32_t index = (step - hs_first_queue_step) / 5;
    split_queue& q = queue_[index];
    switch ((step - hs_first_queue_step) % 5) {
    case 0: {
      const bool receiving = index == 0;
      for (std::uint16_t id = 0; id < q.size; ++id)
        q.descriptors()[id] = {q.slot_address(id), std::uint32_t(slot_size),
                               std::uint16_t(receiving ? descriptor_write : 0), 0};
      if (receiving) {
        for (std::uint16_t id = 0; id < q.size; ++id) q.offer(id);
        q.publish();
      }
      const vring_state num{index, q.size};
      return queue_message(set_vring_num, &num, sizeof num, -1, true), true;
    }
    case 1: {
      const vring_state base{index, 0};
      return queue_message(set_vring_base, &base, sizeof base, -1, true), true;
    }
    case 2: {
      const vring_address addresses{index, 0, address_of(q.at.descriptors), address_of(q.at.used),
                                    address_of(q.at.available), 0};
      return queue_message(set_vring_addr, &addresses, sizeof addresses, -1, true), true;
    }
    default: {
      const std::uint64_t which = index;
      const bool kick_step = (step - hs_first_queue_step) % 5 == 3;
      const int fd = events_[kick_step ? kick_event(int(index)) : call_event(int(index))].get();
      return queue_message(kick_step ? set_vring_kick : set_vring_call, &which, sizeof which, fd, true), true;
    }
    }
  }

  std::uint64_t address_of(std::size_t offset) const noexcept {
    return std::uint64_t(reinterpret_cast<std::uintptr_t>(memory_ + offset));
  }

  /// Checks the header of the reply being read, as soon as it is in: a
  /// reply to another request, or one not carrying exactly one u64, fails
  /// at once instead of waiting for bytes it does not announce.
  std::error_code check_reply_header() const noexcept {
    using namespace vhost;
    header h;
    std::memcpy(&h, in_, sizeof h);
    if (h.request != in_request_ || (h.flags & 3) != version || !(h.flags & reply_flag) || h.size != sizeof(std::uint64_t))
      return errc::protocol_error;
    return {};
  }

  /// Takes what the reply just read (header checked) says.
  std::error_code take_reply() {
    using namespace vhost;
    std::uint64_t value;
    std::memcpy(&value, in_ + sizeof(header), sizeof value);
    switch (step_) {
    case hs_get_features:
      negotiation_.offered_features = value;
      if (!(value & f_version_1)) {
        negotiation_.failed_step = "GET_FEATURES (the backend lacks VIRTIO_F_VERSION_1)";
        return errc::protocol_error;
      }
      acked_features_ = f_version_1 | (value & f_protocol_features);
      if (config_.guest_checksum_offload) acked_features_ |= value & f_guest_csum;
      return {};
    case hs_get_protocol_features:
      negotiation_.offered_protocol_features = value;
      negotiation_.acked_protocol_features = value & pf_reply_ack;
      acked_reply_ = negotiation_.acked_protocol_features & pf_reply_ack;
      return {};
    case hs_barrier: return {};
    default: return value == 0 ? std::error_code{} : make_error_code(errc::protocol_error); // a REPLY_ACK status
    }
  }

  /// The non-blocking core of the handshake (see advance_handshake).
  std::error_code advance(bool& done, short& wait_for) {
    for (;;) {
      if (out_written_ < out_size_) {
        iovec part{out_ + out_written_, out_size_ - out_written_};
        msghdr m{};
        m.msg_iov = &part;
        m.msg_iovlen = 1;
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
        if (out_fd_ >= 0 && out_written_ == 0) {
          m.msg_control = control;
          m.msg_controllen = sizeof control;
          cmsghdr* c = CMSG_FIRSTHDR(&m);
          c->cmsg_level = SOL_SOCKET;
          c->cmsg_type = SCM_RIGHTS;
          c->cmsg_len = CMSG_LEN(sizeof(int));
          std::memcpy(CMSG_DATA(c), &out_fd_, sizeof out_fd_);
        }
        const ssize_t sent = ::sendmsg(socket_.native_handle(), &m, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent > 0) {
          out_written_ += std::size_t(sent);
          continue;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return wait_for = POLLOUT, std::error_code{};
        if (errno == EPIPE || errno == ECONNRESET) return errc::connection_closed;
        return {errno, std::system_category()};
      }
      if (in_read_ < in_wanted_) {
        const ssize_t got = ::recv(socket_.native_handle(), in_ + in_read_, in_wanted_ - in_read_, MSG_DONTWAIT);
        if (got > 0) {
          const bool header_completed = in_read_ < sizeof(vhost::header) && in_read_ + std::size_t(got) >= sizeof(vhost::header);
          in_read_ += std::size_t(got);
          if (header_completed)
            if (auto ec = check_reply_header()) return ec;
          continue;
        }
        if (got == 0 || errno == ECONNRESET) return errc::connection_closed;
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return wait_for = POLLIN, std::error_code{};
        return {errno, std::system_category()};
      }
      if (in_wanted_) {
        if (auto ec = take_reply()) return ec;
        in_wanted_ = 0;
      }
      while (++step_ < vhost::hs_done && !prepare(step_)) {
      }
      if (step_ == vhost::hs_done) return finish_handshake(), done = true, std::error_code{};
    }
  }

  void finish_handshake() {
    receive_call_.assign(events_[call_event(0)].release());
    transmit_call_.assign(events_[call_event(1)].release());
    for (std::uint16_t id = 0; id < config_.queue_size; ++id) free_transmit_[free_count_++] = id;
    negotiation_.acked_features = acked_features_;
    handshaking_ = false;
    started_ = true;
  }

  /// Waits for `events` on the socket for at most the reply timeout.
  std::error_code wait_socket(short events) {
    pollfd p{socket_.native_handle(), events, 0};
    for (;;) {
      const int ready = ::poll(&p, 1, int(config_.reply_timeout.count()));
      if (ready > 0) return {};
      if (ready == 0) return errc::start_timeout;
      if (errno != EINTR) return {errno, std::system_category()};
    }
  }

  vhost_user_transport_config config_;
  vhost::memory_layout layout_;
  asio::posix::basic_stream_descriptor<Executor> socket_, receive_call_, transmit_call_;
  unique_fd memory_fd_;
  unique_fd events_[4]; // kick 0, kick 1, call 0, call 1 (the calls move into the descriptors)
  std::byte* memory_ = nullptr;
  vhost::split_queue queue_[2];
  std::unique_ptr<std::uint16_t[]> handed_out_, free_transmit_;
  std::size_t handed_count_ = 0, free_count_ = 0;
  std::unique_ptr<frame[]> batch_;
  vhost_user_negotiation negotiation_;
  vhost_user_counters counters_;
  std::error_code error_;
  // Handshake progress: the message being written, the reply awaited.
  std::byte out_[sizeof(vhost::header) + std::max(sizeof(vhost::memory_table), sizeof(vhost::vring_address))];
  std::size_t out_size_ = 0, out_written_ = 0;
  int out_fd_ = -1;
  std::byte in_[sizeof(vhost::header) + sizeof(std::uint64_t)];
  std::size_t in_wanted_ = 0, in_read_ = 0;
  std::uint32_t in_request_ = 0;
  unsigned step_ = 0;
  std::uint64_t acked_features_ = 0;
  asio::basic_waitable_timer<std::chrono::steady_clock, asio::wait_traits<std::chrono::steady_clock>, Executor>
      reply_timer_;
  std::uint64_t wait_generation_ = 0;
  bool timed_out_ = false, handshaking_ = false;
  bool started_ = false, acked_reply_ = false;
};

/// async_handshake: advance without blocking, wait (bounded by the reply
/// timeout) whenever the socket says so.
template <class Executor>
struct vhost_user_handshake_op {
  explicit vhost_user_handshake_op(std::shared_ptr<vhost_user_state<Executor>> s) : state(std::move(s)) {}
  std::shared_ptr<vhost_user_state<Executor>> state;
  std::error_code result;
  bool started = false, finished = false;

  template <class Self> void operator()(Self& self, std::error_code ec = {}) {
    if (finished) return self.complete(result);
    if (!started) {
      self.reset_cancellation_state(asio::enable_total_cancellation());
      result = state->begin_handshake();
    } else {
      result = state->end_handshake_wait(ec);
    }
    if (!result) {
      bool done;
      short wait_for = 0;
      result = state->advance_handshake(done, wait_for);
      if (!result && !done) {
        started = true;
        return state->wait_handshake(wait_for, std::move(self));
      }
      if (!result) state->watch_socket();
    }
    if (started) return self.complete(result);
    started = finished = true;
    asio::post(state->executor(), std::move(self));
  }
};

/// async_receive: take used frames, else drain the call eventfd, look
/// again, and wait for the backend's signal.
template <class Executor>
struct vhost_user_receive_op {
  explicit vhost_user_receive_op(std::shared_ptr<vhost_user_state<Executor>> s) : state(std::move(s)) {}
  std::shared_ptr<vhost_user_state<Executor>> state;
  std::size_t count = 0;
  std::error_code result;
  bool started = false, ready = false;

  template <class Self> void operator()(Self& self, std::error_code ec = {}) {
    if (ready) return self.complete(result, state->batch(count));
    if (!started) self.reset_cancellation_state(asio::enable_total_cancellation());
    if (started && ec) return self.complete(state->error() ? state->error() : ec, frame_batch{});
    count = state->receive_some(result);
    if (result == errc::would_block) {
      state->drain(state->receive_call_fd());
      count = state->receive_some(result);
    }
    if (result == errc::would_block) {
      started = true;
      return state->receive_call().async_wait(asio::posix::descriptor_base::wait_read, std::move(self));
    }
    if (!started) {
      started = ready = true;
      return asio::post(state->executor(), std::move(self));
    }
    self.complete(result, state->batch(count));
  }
};

/// async_wait_writable: done once a transmit slot is free.
template <class Executor>
struct vhost_user_writable_op {
  explicit vhost_user_writable_op(std::shared_ptr<vhost_user_state<Executor>> s) : state(std::move(s)) {}
  std::shared_ptr<vhost_user_state<Executor>> state;
  std::error_code result;
  bool started = false, ready = false;

  template <class Self> void operator()(Self& self, std::error_code ec = {}) {
    if (ready) return self.complete(result);
    if (!started) self.reset_cancellation_state(asio::enable_total_cancellation());
    if (started && ec) return self.complete(state->error() ? state->error() : ec);
    if (state->error() || !state->is_open()) {
      result = state->error() ? state->error() : make_error_code(errc::transport_closed);
    } else if (!state->transmit_slot_free()) {
      state->drain(state->transmit_call_fd());
      if (!state->transmit_slot_free()) {
        started = true;
        return state->transmit_call().async_wait(asio::posix::descriptor_base::wait_read, std::move(self));
      }
    }
    if (started) return self.complete(result);
    started = ready = true;
    asio::post(state->executor(), std::move(self));
  }
};

} // namespace netpasst::detail

namespace netpasst {

template <class Executor>
basic_vhost_user_transport<Executor>::basic_vhost_user_transport(const executor_type& executor, unique_fd socket,
                                                                 const vhost_user_transport_config& config)
    : state_(std::make_shared<detail::vhost_user_state<Executor>>(executor, std::move(socket), config)) {}

template <class Executor>
basic_vhost_user_transport<Executor>&
basic_vhost_user_transport<Executor>::operator=(basic_vhost_user_transport&& other) noexcept {
  if (this != &other) {
    close();
    state_ = std::move(other.state_);
  }
  return *this;
}

template <class Executor> basic_vhost_user_transport<Executor>::~basic_vhost_user_transport() { close(); }

template <class Executor> void basic_vhost_user_transport<Executor>::handshake(std::error_code& ec) {
  ec = state_->handshake();
  if (!ec) state_->watch_socket();
}

template <class Executor> void basic_vhost_user_transport<Executor>::handshake() {
  if (const std::error_code ec = state_->handshake())
    throw std::system_error(ec, std::string("netpasst: vhost-user handshake: ") + state_->failed_step());
  state_->watch_socket();
}

template <class Executor>
template <asio::completion_token_for<void(std::error_code)> Token>
auto basic_vhost_user_transport<Executor>::async_handshake(Token&& token) {
  return asio::async_compose<Token, void(std::error_code)>(detail::vhost_user_handshake_op<Executor>(state_), token,
                                                           state_->socket());
}

template <class Executor>
const vhost_user_negotiation& basic_vhost_user_transport<Executor>::negotiation() const noexcept {
  return state_->negotiation();
}

template <class Executor> auto basic_vhost_user_transport<Executor>::get_executor() const noexcept -> executor_type {
  return state_->executor();
}

template <class Executor>
const vhost_user_transport_config& basic_vhost_user_transport<Executor>::config() const noexcept {
  return state_->config();
}

template <class Executor> bool basic_vhost_user_transport<Executor>::is_open() const noexcept {
  return state_ && state_->is_open();
}

template <class Executor> vhost_user_counters basic_vhost_user_transport<Executor>::counters() const noexcept {
  return state_ ? state_->counters() : vhost_user_counters{};
}

template <class Executor> bool basic_vhost_user_transport<Executor>::try_send(frame f, std::error_code& ec) {
  return state_->send({&f, 1}, ec) == 1;
}

template <class Executor>
std::size_t basic_vhost_user_transport<Executor>::try_send(std::span<const frame> frames, std::error_code& ec) {
  return state_->send(frames, ec);
}

template <class Executor>
template <asio::completion_token_for<void(std::error_code)> Token>
auto basic_vhost_user_transport<Executor>::async_wait_writable(Token&& token) {
  return asio::async_compose<Token, void(std::error_code)>(detail::vhost_user_writable_op<Executor>(state_), token,
                                                           state_->transmit_call());
}

template <class Executor>
template <asio::completion_token_for<void(std::error_code, frame_batch)> Token>
auto basic_vhost_user_transport<Executor>::async_receive(Token&& token) {
  return asio::async_compose<Token, void(std::error_code, frame_batch)>(
      detail::vhost_user_receive_op<Executor>(state_), token, state_->receive_call());
}

template <class Executor> void basic_vhost_user_transport<Executor>::cancel() {
  if (state_) state_->cancel();
}

template <class Executor> void basic_vhost_user_transport<Executor>::close() noexcept {
  if (state_) state_->fail(errc::transport_closed);
}

} // namespace netpasst
