#pragma once
// Implementation of netpasst/transport/vhost_user.hpp; include that header instead.

#include <netpasst/transport/vhost_user.hpp>

#include <netpasst/detail/checksum.hpp>
#include <netpasst/detail/wait_again.hpp>

#include <asio/cancellation_type.hpp>
#include <asio/compose.hpp>
#include <asio/error.hpp>
#include <asio/posix/basic_stream_descriptor.hpp>
#include <asio/post.hpp>

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>

namespace netpasst::detail::vhost {

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
/// The 12-byte header every frame carries on both queues (VERSION_1):
/// flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers.
inline constexpr std::size_t net_header_size = 12;
inline constexpr unsigned net_header_needs_checksum = 1; // VIRTIO_NET_HDR_F_NEEDS_CSUM
inline constexpr unsigned net_header_data_valid = 2;     // VIRTIO_NET_HDR_F_DATA_VALID
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
  /// After a publish: whether the backend wants a kick. The index store
  /// must not pass the flags load (the backend writes the flags, then reads
  /// the index): a seq_cst read-modify-write of the index, which leaves it
  /// as it is, then a seq_cst load. A full barrier like a fence, and one
  /// that thread sanitizers model (they ignore fences).
  bool wants_kick() const noexcept {
    std::atomic_ref(available_index()).fetch_add(0, std::memory_order_seq_cst);
    return !(std::atomic_ref(used_flags()).load(std::memory_order_seq_cst) & used_no_notify);
  }
};

} // namespace netpasst::detail::vhost

namespace netpasst::detail {

/// Everything a vhost-user transport owns, shared with its pending handlers.
template <class Executor>
class vhost_user_state : public std::enable_shared_from_this<vhost_user_state<Executor>> {
public:
  vhost_user_state(const Executor& executor, unique_fd socket, const vhost_user_transport_config& config)
      : config_(config), layout_(config.queue_size),
        frontend_(executor, std::move(socket), vhost_user_frontend_config{config.reply_timeout}),
        receive_call_(executor), transmit_call_(executor) {
    if (config_.queue_size < 2 || config_.queue_size > 1024 || !std::has_single_bit(config_.queue_size))
      throw std::system_error(std::make_error_code(std::errc::invalid_argument),
                              "netpasst: vhost-user transport: queue_size " + std::to_string(config_.queue_size) +
                                  " (a power of two from 2 to 1024)");
    config_.max_batch_frames = std::clamp<std::size_t>(config_.max_batch_frames, 1, config_.queue_size);
    auto os_failure = [](const char* what) {
      return std::system_error(errno, std::system_category(), std::string("netpasst: vhost-user transport: ") + what);
    };
    memory_fd_ = unique_fd(::memfd_create("netpasst-vhost-user", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!memory_fd_) throw os_failure("memfd_create");
    if (::ftruncate(memory_fd_.get(), off_t(layout_.size)) != 0) throw os_failure("ftruncate of the shared memory");
    // Sealed at its size: a backend that truncated it would make every
    // access to the lost pages a SIGBUS here.
    if (::fcntl(memory_fd_.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)
      throw os_failure("sealing the shared memory's size");
    void* mapped = ::mmap(nullptr, layout_.size, PROT_READ | PROT_WRITE, MAP_SHARED, memory_fd_.get(), 0);
    if (mapped == MAP_FAILED) throw os_failure("mmap of the shared memory");
    memory_.reset(static_cast<std::byte*>(mapped));
    for (unique_fd& fd : events_) {
      fd = unique_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      if (!fd) throw os_failure("eventfd");
    }
    for (int q = 0; q < 2; ++q) queue_[q] = {memory_.get(), layout_.queue[q], config_.queue_size, 0, 0};
    handed_out_ = std::make_unique<std::uint16_t[]>(config_.queue_size);
    for (auto& owned : device_owns_) owned = std::make_unique<bool[]>(config_.queue_size);
    free_transmit_ = std::make_unique<std::uint16_t[]>(config_.queue_size);
    batch_ = std::make_unique<frame[]>(config_.max_batch_frames);
  }

  const vhost_user_transport_config& config() const noexcept { return config_; }
  const vhost_user_negotiation& negotiation() const noexcept { return negotiation_; }
  /// The frontend's account of a failed handshake, else the step it failed
  /// at, else what a used ring held that ended the transport.
  std::string_view failure_message() const noexcept {
    if (!frontend_.failure_message().empty()) return frontend_.failure_message();
    return negotiation_.failed_step.empty() ? std::string_view(ring_failure_) : negotiation_.failed_step;
  }
  Executor executor() const noexcept { return receive_call_executor(); }
  bool is_open() const noexcept { return started_ && !error_; }
  const std::error_code& error() const noexcept { return error_; }
  const vhost_user_counters& counters() const noexcept { return counters_; }
  auto& receive_call() noexcept { return receive_call_; }
  auto& transmit_call() noexcept { return transmit_call_; }
  auto& frontend() noexcept { return frontend_; }
  frame_batch batch(std::size_t n) const noexcept { return {batch_.get(), n}; }

  /// Ends the transport with `ec` (first error wins, except that close()
  /// always leaves transport_closed); pending waits complete with it.
  void fail(std::error_code ec) noexcept {
    if (!error_ || ec == errc::transport_closed) error_ = ec;
    frontend_.close();
    std::error_code ignored;
    receive_call_.close(ignored);
    transmit_call_.close(ignored);
    for (unique_fd& fd : events_) fd.reset();
  }

  void cancel() {
    cancels_.bump();
    std::error_code ignored;
    receive_call_.cancel(ignored);
    transmit_call_.cancel(ignored);
    if (handshaking_) frontend_.cancel();
  }
  const cancel_count& cancels() const noexcept { return cancels_; }

  /// Marks the handshake begun; refused (transport untouched) when one was
  /// already started.
  std::error_code begin_handshake() {
    if (started_ || handshaking_ || error_) return error_ ? error_ : make_error_code(errc::operation_in_progress);
    handshaking_ = true;
    return {};
  }

  /// After the frontend's open (ended with `ec`): the device to start, or
  /// the error that ends the handshake (the transport is then failed).
  std::error_code after_open(std::error_code ec) {
    negotiation_ = frontend_.negotiation();
    if (!ec && error_) ec = error_;
    if (!ec && !(negotiation_.offered_features & vhost::f_version_1)) {
      negotiation_.failed_step = "GET_FEATURES (the backend lacks VIRTIO_F_VERSION_1)";
      ec = errc::protocol_error;
    }
    if (ec) return end_handshake(ec), ec;
    setup_ = device_setup();
    return {};
  }

  /// After the frontend's start (ended with `ec`): the transport runs, or
  /// is failed with `ec`.
  void end_handshake(std::error_code ec) {
    const std::string_view failed_step = negotiation_.failed_step;
    negotiation_ = frontend_.negotiation();
    if (negotiation_.failed_step.empty()) negotiation_.failed_step = failed_step;
    if (!ec && error_) ec = error_;
    handshaking_ = false;
    setup_ = {};
    if (ec) {
      if (negotiation_.failed_step.empty()) negotiation_.failed_step = "start";
      return fail(ec);
    }
    receive_call_.assign(events_[call_event(0)].release());
    transmit_call_.assign(events_[call_event(1)].release());
    for (std::uint16_t id = 0; id < config_.queue_size; ++id) free_transmit_[free_count_++] = id;
    started_ = true;
    frontend_.async_wait_closed([weak = this->weak_from_this()](std::error_code end) {
      if (auto self = weak.lock()) self->fail(end);
    });
  }

  const vhost_user_device_setup& setup() const noexcept { return setup_; }

  /// The synchronous handshake: the frontend's blocking open and start.
  std::error_code handshake() {
    if (auto ec = begin_handshake()) return ec;
    std::error_code ec;
    frontend_.open(ec);
    if ((ec = after_open(ec))) return ec;
    frontend_.start(setup_, ec);
    end_handshake(ec);
    return error_;
  }

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
      for (std::size_t i = 0; i < handed_count_; ++i) q.offer(handed_out_[i]), device_owns_[0][handed_out_[i]] = true;
      handed_count_ = 0;
      q.publish();
      if (q.wants_kick()) kick(0);
    }
    const std::uint16_t used = q.used_now();
    std::size_t n = 0, bytes = 0;
    while (q.last_used != used && n < config_.max_batch_frames) {
      const vhost::used_element e = q.take_used();
      // An id the backend does not hold (out of range, or used twice) would
      // hand out one slot as two frames.
      if (e.id >= q.size || !device_owns_[0][e.id]) return ring_failed(0, e.id), ec = error_, 0;
      device_owns_[0][e.id] = false;
      handed_out_[handed_count_++] = std::uint16_t(e.id);
      if (e.length < vhost::net_header_size + min_frame_size || e.length > vhost::net_header_size + max_frame_size) {
        ++counters_.frames_dropped_received;
        continue;
      }
      const std::size_t size = e.length - vhost::net_header_size;
      if (!config_.guest_checksum_offload) finish_checksum(q.slot(e.id), size);
      batch_[n++] = frame(q.slot(e.id) + vhost::net_header_size, size);
      bytes += size;
    }
    if (n == 0) return ec = errc::would_block, 0;
    counters_.frames_received += n;
    counters_.bytes_received += bytes;
    ++counters_.batches;
    return n;
  }

  /// Gives the consumer a complete TCP or UDP checksum whatever the frame's
  /// header says: a partial one (NEEDS_CSUM) is completed; a 0 in a frame
  /// marked DATA_VALID is computed (passt builds from before they offered
  /// GUEST_CSUM leave TCP checksums at 0 and mark the frame so).
  void finish_checksum(std::byte* slot, std::size_t size) noexcept {
    std::byte header[vhost::net_header_size];
    std::memcpy(header, slot, sizeof header);
    const std::span<std::byte> f(slot + vhost::net_header_size, size);
    const unsigned flags = std::to_integer<unsigned>(header[0]);
    bool completed = false;
    if (flags & vhost::net_header_needs_checksum) {
      const auto le16 = [&](std::size_t at) { return std::size_t(header[at]) | std::size_t(header[at + 1]) << 8; };
      completed = complete_partial_checksum(f, le16(6), le16(8));
    } else if (flags & vhost::net_header_data_valid) {
      const auto location = locate_transport_checksum(f);
      if (!location || load_be16(f.data() + location->start + location->offset) != 0) return;
      store_be16(f.data() + location->start + location->offset, location->pseudo_header_sum);
      completed = complete_partial_checksum(f.first(location->start + location->length), location->start,
                                            location->offset);
    }
    if (completed) ++counters_.checksums_completed;
  }

  /// Takes back the transmit descriptors the backend is done with; true if
  /// any slot is free.
  bool reclaim_transmit() noexcept {
    vhost::split_queue& q = queue_[1];
    const std::uint16_t used = q.used_now();
    while (q.last_used != used) {
      const std::uint32_t id = q.take_used().id;
      // Freeing an id the backend does not hold would put two frames in one slot.
      if (id >= q.size || !device_owns_[1][id]) return ring_failed(1, id), false;
      device_owns_[1][id] = false;
      free_transmit_[free_count_++] = std::uint16_t(id);
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
        if (error_) {
          ec = error_;
          break;
        }
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
      device_owns_[1][id] = true;
      ++counters_.frames_sent;
      counters_.bytes_sent += f.size();
    }
    if (n > 0 && !error_) {
      q.publish();
      if (q.wants_kick()) kick(1);
      else ++counters_.kicks_suppressed;
    }
    return n;
  }

  bool transmit_slot_free() noexcept { return free_count_ > 0 || reclaim_transmit(); }

private:
  void kick(int queue) noexcept {
    const std::uint64_t one = 1;
    if (::write(events_[kick_event(queue)].get(), &one, sizeof one) == sizeof one) {
      if (queue == 1) ++counters_.kicks;
    }
  }
  static constexpr int kick_event(int queue) noexcept { return queue; }
  static constexpr int call_event(int queue) noexcept { return 2 + queue; }

  Executor receive_call_executor() const noexcept {
    return const_cast<decltype(receive_call_)&>(receive_call_).get_executor();
  }

  /// Ends the transport with `errc::protocol_error` for used ring `queue`
  /// returning `id`, which the backend does not hold.
  void ring_failed(int queue, std::uint32_t id) noexcept {
    std::snprintf(ring_failure_, sizeof ring_failure_, "%s queue: the backend returned descriptor %u, %s",
                  queue == 0 ? "receive" : "transmit", unsigned(id),
                  id >= queue_[queue].size ? "out of range" : "which it did not hold");
    fail(errc::protocol_error);
  }

  std::uint64_t address_of(std::size_t offset) const noexcept {
    return std::uint64_t(reinterpret_cast<std::uintptr_t>(memory_.get() + offset));
  }

  /// The device as the frontend hands it over: the shared memory as one
  /// region at guest-physical 0, both queues with every receive slot
  /// offered, and the features to ack.
  vhost_user_device_setup device_setup() {
    using namespace vhost;
    vhost_user_device_setup setup;
    setup.features = f_version_1;
    if (config_.guest_checksum_offload) setup.features |= negotiation_.offered_features & f_guest_csum;
    setup.memory.push_back({memory_fd_.get(), 0, layout_.size, address_of(0), 0});
    for (std::uint32_t index = 0; index < 2; ++index) {
      split_queue& q = queue_[index];
      const bool receiving = index == 0;
      for (std::uint16_t id = 0; id < q.size; ++id)
        q.descriptors()[id] = {q.slot_address(id), std::uint32_t(slot_size),
                               std::uint16_t(receiving ? descriptor_write : 0), 0};
      if (receiving) {
        for (std::uint16_t id = 0; id < q.size; ++id) q.offer(id), device_owns_[0][id] = true;
        q.publish();
      }
      setup.queues.push_back({index, q.size, 0, address_of(q.at.descriptors), address_of(q.at.available),
                              address_of(q.at.used), events_[kick_event(int(index))].get(),
                              events_[call_event(int(index))].get()});
    }
    return setup;
  }

  vhost_user_transport_config config_;
  vhost::memory_layout layout_;
  basic_vhost_user_frontend<Executor> frontend_;
  asio::posix::basic_stream_descriptor<Executor> receive_call_, transmit_call_;
  unique_fd memory_fd_;
  unique_fd events_[4]; // kick 0, kick 1, call 0, call 1 (the calls move into the descriptors)
  /// Unmapped also when the constructor throws after mapping it.
  struct unmap {
    std::size_t size;
    void operator()(std::byte* p) const noexcept { ::munmap(p, size); }
  };
  std::unique_ptr<std::byte, unmap> memory_{nullptr, unmap{layout_.size}};
  vhost::split_queue queue_[2];
  std::unique_ptr<std::uint16_t[]> handed_out_, free_transmit_;
  std::unique_ptr<bool[]> device_owns_[2]; // per queue: the descriptors the backend holds
  char ring_failure_[96] = {};
  std::size_t handed_count_ = 0, free_count_ = 0;
  std::unique_ptr<frame[]> batch_;
  vhost_user_negotiation negotiation_;
  vhost_user_counters counters_;
  std::error_code error_;
  cancel_count cancels_;
  vhost_user_device_setup setup_; // during the handshake
  bool handshaking_ = false, started_ = false;
};

/// async_handshake: the frontend's open, the transport's check of what was
/// offered, the frontend's start.
template <class Executor>
struct vhost_user_handshake_op {
  explicit vhost_user_handshake_op(std::shared_ptr<vhost_user_state<Executor>> s) : state(std::move(s)) {}
  std::shared_ptr<vhost_user_state<Executor>> state;
  enum { begin, opened, started, finished } stage = begin;
  std::error_code result;
  std::uint64_t cancels = 0;

  template <class Self> void operator()(Self& self, std::error_code ec = {}) {
    switch (stage) {
    case begin:
      self.reset_cancellation_state(asio::enable_total_cancellation());
      cancels = state->cancels().value();
      if ((result = state->begin_handshake())) {
        stage = finished;
        return asio::post(state->executor(), std::move(self));
      }
      stage = opened;
      return state->frontend().async_open(std::move(self));
    case opened:
      // The open may have completed posted, with no wait a cancellation could end.
      if (!ec && cancelled_since(self, state->cancels(), cancels)) ec = asio::error::operation_aborted;
      if ((result = state->after_open(ec))) break;
      stage = started;
      return state->frontend().async_start(state->setup(), std::move(self));
    case started:
      state->end_handshake(ec);
      result = state->error();
      break;
    case finished: break;
    }
    self.complete(result);
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
  std::uint64_t cancels = 0;
  bool started = false, ready = false;

  template <class Self> void operator()(Self& self, std::error_code ec = {}) {
    if (ready) return self.complete(result, state->batch(count));
    if (!started) self.reset_cancellation_state(asio::enable_total_cancellation()), cancels = state->cancels().value();
    if (started && ec) return self.complete(state->error() ? state->error() : ec, frame_batch{});
    count = state->receive_some(result);
    if (result == errc::would_block) {
      state->drain(state->receive_call_fd());
      count = state->receive_some(result);
    }
    if (result == errc::would_block) {
      if (started && cancelled_since(self, state->cancels(), cancels))
        return self.complete(make_error_code(asio::error::operation_aborted), frame_batch{});
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
  std::uint64_t cancels = 0;
  bool started = false, ready = false;

  template <class Self> void operator()(Self& self, std::error_code ec = {}) {
    if (ready) return self.complete(result);
    if (!started) self.reset_cancellation_state(asio::enable_total_cancellation()), cancels = state->cancels().value();
    if (started && ec) return self.complete(state->error() ? state->error() : ec);
    if (state->error() || !state->is_open()) {
      result = state->error() ? state->error() : make_error_code(errc::transport_closed);
    } else if (!state->transmit_slot_free()) {
      state->drain(state->transmit_call_fd());
      if (started && !state->transmit_slot_free() && cancelled_since(self, state->cancels(), cancels)) {
        result = asio::error::operation_aborted;
      } else if (!state->transmit_slot_free()) {
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
}

template <class Executor> void basic_vhost_user_transport<Executor>::handshake() {
  if (const std::error_code ec = state_->handshake())
    throw std::system_error(ec, std::string("netpasst: vhost-user handshake: ") + std::string(failure_message()));
}

template <class Executor>
template <asio::completion_token_for<void(std::error_code)> Token>
auto basic_vhost_user_transport<Executor>::async_handshake(Token&& token) {
  return asio::async_compose<Token, void(std::error_code)>(detail::vhost_user_handshake_op<Executor>(state_), token,
                                                           state_->receive_call());
}

template <class Executor>
const vhost_user_negotiation& basic_vhost_user_transport<Executor>::negotiation() const noexcept {
  return state_->negotiation();
}

template <class Executor>
std::string_view basic_vhost_user_transport<Executor>::failure_message() const noexcept {
  return state_ ? state_->failure_message() : std::string_view{};
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
