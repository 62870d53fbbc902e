#pragma once
// Implementation of netpasst/transport/tap.hpp; include that header instead.

#include <netpasst/transport/tap.hpp>

#include <netpasst/detail/checksum.hpp>
#include <netpasst/detail/netns.hpp>
#include <netpasst/detail/wait_again.hpp>

#include <asio/cancellation_type.hpp>
#include <asio/compose.hpp>
#include <asio/error.hpp>
#include <asio/posix/basic_stream_descriptor.hpp>
#include <asio/post.hpp>

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <utility>

/// Test seam: how the tap transport names the system calls that move frames
/// (`read`, `write`, `readv`, `writev`). A test may define it before
/// including the header to count or fake them.
#ifndef NETPASST_TAP_SYSCALL
#define NETPASST_TAP_SYSCALL(name) ::name
#endif

namespace netpasst::detail {

/// A read is only made with room for one byte more than the largest frame,
/// so that a longer one is seen (and dropped) rather than cut.
inline constexpr std::size_t tap_read_room = max_frame_size + 1;

/// The virtio-net header (`struct virtio_net_hdr` of the virtio spec; the
/// kernel's linux/virtio_net.h does not compile as C++), in host byte order
/// as a tap uses it unless told otherwise (TUNSETVNETLE/BE).
struct tap_vnet_header {
  std::uint8_t flags = 0;
  std::uint8_t gso_type = 0;
  std::uint16_t header_length = 0;
  std::uint16_t gso_size = 0;
  std::uint16_t checksum_start = 0;
  std::uint16_t checksum_offset = 0;
};
static_assert(sizeof(tap_vnet_header) == 10);
/// `flags`: the checksum is partial (VIRTIO_NET_HDR_F_NEEDS_CSUM).
inline constexpr std::uint8_t tap_vnet_needs_checksum = 1;
/// `gso_type`: not a segmentation request (VIRTIO_NET_HDR_GSO_NONE).
inline constexpr std::uint8_t tap_vnet_gso_none = 0;

/// The virtio-net header a tap the transport opens carries; a descriptor
/// handed in may carry a longer one (the fields read and written are in its
/// first 10 bytes).
inline constexpr std::size_t tap_vnet_header_size = sizeof(tap_vnet_header);
/// The longest virtio-net header a handed-in descriptor may carry.
inline constexpr std::size_t tap_max_vnet_header_size = 64;

/// True for a name the kernel takes for an interface: 1..15 bytes, no '/',
/// ':' or white space, not "." or "..".
inline bool valid_interface_name(std::string_view name) noexcept {
  if (name.empty() || name.size() >= IFNAMSIZ || name == "." || name == "..") return false;
  return std::none_of(name.begin(), name.end(), [](char c) {
    return c == '/' || c == ':' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\0';
  });
}

/// What open_tap_in_this_netns did: the device, or the error and its step.
struct tap_open_result {
  tap_device device;
  std::error_code error;
  const char* step = nullptr;
};

inline void fill_ifreq_name(ifreq& request, std::string_view name) noexcept {
  std::memset(&request, 0, sizeof request);
  std::memcpy(request.ifr_name, name.data(), std::min(name.size(), std::size_t(IFNAMSIZ - 1)));
}

/// Opens /dev/net/tun and attaches it to tap `name` in the calling thread's
/// network namespace. Never throws.
inline tap_open_result open_tap_in_this_netns(const tap_device_options& options) noexcept {
  tap_open_result r;
  auto fail = [&](const char* step) {
    r.error = {errno, std::system_category()};
    r.step = step;
    r.device = {};
    return std::move(r);
  };
  unique_fd fd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK));
  if (!fd) return fail("open /dev/net/tun");
  ifreq request;
  fill_ifreq_name(request, options.name);
  request.ifr_flags = IFF_TAP | IFF_NO_PI | (options.virtio_net_header ? IFF_VNET_HDR : 0);
  if (::ioctl(fd.get(), TUNSETIFF, &request) != 0) return fail("TUNSETIFF");
  if (options.virtio_net_header) {
    const int header_size = tap_vnet_header_size;
    if (::ioctl(fd.get(), TUNSETVNETHDRSZ, &header_size) != 0)
      return fail("set the virtio-net header size (TUNSETVNETHDRSZ)");
    if (::ioctl(fd.get(), TUNSETOFFLOAD, static_cast<unsigned long>(TUN_F_CSUM)) != 0)
      return fail("set the checksum offload (TUNSETOFFLOAD)");
  }
  r.device.name.assign(request.ifr_name, ::strnlen(request.ifr_name, IFNAMSIZ));
  if (options.mac) {
    ifreq address;
    fill_ifreq_name(address, r.device.name);
    address.ifr_hwaddr.sa_family = ARPHRD_ETHER;
    std::memcpy(address.ifr_hwaddr.sa_data, options.mac->octets.data(), 6);
    if (::ioctl(fd.get(), SIOCSIFHWADDR, &address) != 0) return fail("set the MAC address (SIOCSIFHWADDR)");
  }
  r.device.fd = std::move(fd);
  return r;
}

/// open_tap_device with the failing step named (`step` null when none failed).
inline tap_device open_tap_device_at(const tap_device_options& options, std::error_code& ec, const char*& step) {
  ec.clear();
  step = nullptr;
  auto invalid = [&](const char* what) {
    ec = std::make_error_code(std::errc::invalid_argument);
    step = what;
    return tap_device{};
  };
  if (!options.name.empty() && !valid_interface_name(options.name))
    return invalid("check the interface name (1 to 15 bytes, no '/', ':' or white space)");
  if (!options.netns.empty() && options.netns_fd >= 0)
    return invalid("choose the namespace (netns and netns_fd are both set)");
  if (options.netns.empty() && options.netns_fd < 0) {
    tap_open_result r = open_tap_in_this_netns(options);
    ec = r.error;
    step = r.step;
    return std::move(r.device);
  }
  unique_fd opened;
  int netns_fd = options.netns_fd;
  if (netns_fd < 0) {
    opened = open_netns(options.netns, ec);
    if (ec) {
      step = "open the network namespace";
      return {};
    }
    netns_fd = opened.get();
  }
  auto r = call_in_netns(netns_fd, [&] { return open_tap_in_this_netns(options); }, ec);
  if (ec) {
    step = ec.value() == EINVAL ? "enter the network namespace (setns: not a network namespace)"
                                : "enter the network namespace (setns)";
    return {};
  }
  ec = r->error;
  step = r->step;
  return std::move(r->device);
}

inline std::string describe_tap(const tap_device_options& options) {
  std::string s = "netpasst: tap '" + (options.name.empty() ? std::string("(any)") : options.name) + "'";
  if (!options.netns.empty()) s += " in network namespace '" + netns_path(options.netns) + "'";
  else if (options.netns_fd >= 0) s += " in network namespace fd " + std::to_string(options.netns_fd);
  return s;
}

inline tap_device_options with_vnet_header(tap_device_options options, bool virtio_net_header) {
  options.virtio_net_header = virtio_net_header;
  return options;
}

inline std::error_code tap_os_error(int e) {
  if (e == EBADFD) return errc::connection_closed; // the interface was deleted
  return {e, std::system_category()};
}

/// Everything a tap transport owns, shared with its pending handlers.
template <class Executor>
class tap_state : public std::enable_shared_from_this<tap_state<Executor>> {
public:
  tap_state(const Executor& executor, unique_fd fd, const tap_transport_config& config)
      : config_(config), descriptor_(executor) {
    if (!fd) throw std::system_error(EBADF, std::system_category(), "netpasst: tap transport needs a descriptor");
    ifreq request;
    std::memset(&request, 0, sizeof request);
    if (::ioctl(fd.get(), TUNGETIFF, &request) != 0)
      throw std::system_error(errno, std::system_category(), "netpasst: tap transport: TUNGETIFF (not a tun/tap?)");
    const auto flags = request.ifr_flags;
    if ((flags & (IFF_TUN | IFF_TAP)) != IFF_TAP || !(flags & IFF_NO_PI))
      throw std::system_error(std::make_error_code(std::errc::invalid_argument),
                              "netpasst: tap transport needs a tap with IFF_NO_PI");
    name_.assign(request.ifr_name, ::strnlen(request.ifr_name, IFNAMSIZ));
    if (flags & IFF_VNET_HDR) {
      int header_size = 0;
      if (::ioctl(fd.get(), TUNGETVNETHDRSZ, &header_size) != 0)
        throw std::system_error(errno, std::system_category(), "netpasst: tap transport: TUNGETVNETHDRSZ");
      if (header_size < int(tap_vnet_header_size) || header_size > int(tap_max_vnet_header_size))
        throw std::system_error(std::make_error_code(std::errc::invalid_argument),
                                "netpasst: tap transport: virtio-net header of " + std::to_string(header_size) +
                                    " bytes (10 to 64 taken)");
      const unsigned long offload = config_.checksum_offload ? TUN_F_CSUM : 0;
      if (::ioctl(fd.get(), TUNSETOFFLOAD, offload) != 0)
        throw std::system_error(errno, std::system_category(), "netpasst: tap transport: TUNSETOFFLOAD");
      vnet_header_size_ = std::size_t(header_size);
    } else {
      config_.checksum_offload = false;
    }
    config_.trust_checksums = config_.trust_checksums && config_.checksum_offload;
    const int status = ::fcntl(fd.get(), F_GETFL);
    if (status < 0 || ::fcntl(fd.get(), F_SETFL, status | O_NONBLOCK) < 0 ||
        ::fcntl(fd.get(), F_SETFD, FD_CLOEXEC) < 0)
      throw std::system_error(errno, std::system_category(), "netpasst: tap transport: fcntl");
    config_.receive_buffer_bytes = std::max(config_.receive_buffer_bytes, 2 * (tap_read_room + 7));
    config_.max_batch_frames = std::max<std::size_t>(config_.max_batch_frames, 1);
    buffer_ = std::make_unique_for_overwrite<std::byte[]>(config_.receive_buffer_bytes);
    batch_ = std::make_unique<frame[]>(config_.max_batch_frames);
    descriptor_.assign(fd.get());
    fd_ = fd.release();
  }

  const tap_transport_config& config() const noexcept { return config_; }
  Executor executor() const noexcept { // Asio 1.22's get_executor() is not const
    return const_cast<asio::posix::basic_stream_descriptor<Executor>&>(descriptor_).get_executor();
  }
  const std::string& name() const noexcept { return name_; }
  bool is_open() const noexcept { return !error_; }
  int fd() const noexcept { return error_ ? -1 : fd_; }
  const tap_counters& counters() const noexcept { return counters_; }
  const std::error_code& error() const noexcept { return error_; }
  auto& descriptor() noexcept { return descriptor_; }
  frame_batch batch(std::size_t n) const noexcept { return {batch_.get(), n}; }
  bool send_blocked() const noexcept { return send_blocked_; }
  void clear_send_blocked() noexcept { send_blocked_ = false; }

  packet::mac_address mac() const {
    if (error_) throw std::system_error(error_, "netpasst: tap transport: mac");
    ifreq request;
    fill_ifreq_name(request, name_);
    if (::ioctl(fd_, SIOCGIFHWADDR, &request) != 0)
      throw std::system_error(errno, std::system_category(), "netpasst: tap transport: SIOCGIFHWADDR");
    packet::mac_address mac;
    std::memcpy(mac.octets.data(), request.ifr_hwaddr.sa_data, 6);
    return mac;
  }

  /// Ends the transport with `ec` (first error wins, except that close()
  /// always leaves transport_closed). Pending waits complete with it.
  void fail(std::error_code ec) noexcept {
    if (!error_ || ec == errc::transport_closed) error_ = ec;
    std::error_code ignored;
    descriptor_.close(ignored);
  }

  void cancel() {
    cancels_.bump();
    if (error_) return;
    std::error_code ignored;
    descriptor_.cancel(ignored);
  }
  const cancel_count& cancels() const noexcept { return cancels_; }

  bool try_send(frame f, std::error_code& ec) {
    if (error_) return ec = error_, false;
    if (f.size() < min_frame_size || f.size() > max_frame_size) {
      ++counters_.frames_refused;
      ec = f.size() < min_frame_size ? errc::frame_too_short : errc::frame_too_long;
      return false;
    }
    ec.clear();
    for (;;) {
      if (write_frame(f) >= 0) {
        ++counters_.frames_sent;
        counters_.bytes_sent += f.size();
        return true;
      }
      switch (errno) {
        case EINTR: continue;
        case EAGAIN:
          ++counters_.sends_would_block;
          send_blocked_ = true;
          return ec = errc::would_block, false;
        case EIO: // the interface is down: the kernel drops what it is given
          ++counters_.frames_dropped_link_down;
          return true;
        case ENOMEM:
        case ENOBUFS:
          ++counters_.frames_dropped_no_memory;
          return true;
        default: return fail(tap_os_error(errno)), ec = error_, false;
      }
    }
  }

  /// Reads frames into the buffer (see the file comment). Returns how many;
  /// 0 with `ec` set to would_block (nothing to read now) or to the error
  /// that closed the transport.
  std::size_t receive_some(std::error_code& ec) {
    ec.clear();
    if (error_) return ec = error_, 0;
    std::byte* const buffer = buffer_.get();
    const std::size_t capacity = config_.receive_buffer_bytes;
    std::size_t n = 0, at = 0, bytes = 0;
    while (n < config_.max_batch_frames && capacity - at >= tap_read_room) {
      const ssize_t got = read_frame(buffer + at, capacity - at);
      if (got > 0) {
        ++counters_.reads;
        const auto size = std::size_t(got) - std::min(std::size_t(got), vnet_header_size_);
        if (size < min_frame_size || size > max_frame_size ||
            !finish_received({buffer + at, size})) {
          ++counters_.frames_dropped_received;
          continue;
        }
        batch_[n++] = frame(buffer + at, size);
        bytes += size;
        at = (at + size + 7) & ~std::size_t{7}; // keep each frame 8-byte aligned
        continue;
      }
      if (got < 0 && errno == EINTR) continue;
      if (got == 0 || errno == EAGAIN) break;
      const std::error_code error = tap_os_error(errno);
      fail(error);
      if (n == 0) return ec = error, 0;
      break; // deliver what was read; the next receive reports the error
    }
    if (n == 0) return ec = errc::would_block, 0;
    counters_.frames_received += n;
    counters_.bytes_received += bytes;
    ++counters_.batches;
    return n;
  }

private:
  /// One frame to the tap, behind a virtio-net header if the tap has one;
  /// with trusted checksums the header marks the TCP/UDP checksum partial
  /// and the field goes out as the pseudo-header sum (see the file comment).
  ssize_t write_frame(frame f) {
    if (vnet_header_size_ == 0) return NETPASST_TAP_SYSCALL(write)(fd_, f.data(), f.size());
    std::array<std::byte, tap_max_vnet_header_size> header{};
    iovec parts[4];
    parts[0] = {header.data(), vnet_header_size_};
    std::byte field[2];
    const auto location = config_.trust_checksums ? locate_transport_checksum(f) : std::nullopt;
    if (!location) {
      parts[1] = {const_cast<std::byte*>(f.data()), f.size()};
      return NETPASST_TAP_SYSCALL(writev)(fd_, parts, 2);
    }
    tap_vnet_header fields;
    fields.flags = tap_vnet_needs_checksum;
    fields.checksum_start = static_cast<std::uint16_t>(location->start);
    fields.checksum_offset = static_cast<std::uint16_t>(location->offset);
    std::memcpy(header.data(), &fields, sizeof fields);
    const std::size_t at = location->start + location->offset;
    store_be16(field, location->pseudo_header_sum);
    parts[1] = {const_cast<std::byte*>(f.data()), at};
    parts[2] = {field, 2};
    parts[3] = {const_cast<std::byte*>(f.data()) + at + 2, f.size() - at - 2};
    const ssize_t written = NETPASST_TAP_SYSCALL(writev)(fd_, parts, 4);
    if (written >= 0) ++counters_.checksums_trusted;
    return written;
  }

  /// One frame from the tap into `into` (room for `room` bytes); with a
  /// virtio-net header, the header goes to `received_header_` and counts in
  /// the result.
  ssize_t read_frame(std::byte* into, std::size_t room) {
    if (vnet_header_size_ == 0) return NETPASST_TAP_SYSCALL(read)(fd_, into, room);
    iovec parts[2] = {{received_header_.data(), vnet_header_size_}, {into, room}};
    return NETPASST_TAP_SYSCALL(readv)(fd_, parts, 2);
  }

  /// Acts on the virtio-net header of the frame just read into `f` (if the
  /// tap has one): completes a partial checksum. False for a frame to drop:
  /// a segmentation request, or a checksum field outside the frame.
  bool finish_received(std::span<std::byte> f) noexcept {
    if (vnet_header_size_ == 0) return true;
    tap_vnet_header fields;
    std::memcpy(&fields, received_header_.data(), sizeof fields);
    if (fields.gso_type != tap_vnet_gso_none) return false;
    if (!(fields.flags & tap_vnet_needs_checksum)) return true;
    if (!complete_partial_checksum(f, fields.checksum_start, fields.checksum_offset)) return false;
    ++counters_.checksums_completed;
    return true;
  }

  tap_transport_config config_;
  asio::posix::basic_stream_descriptor<Executor> descriptor_;
  int fd_ = -1;
  std::size_t vnet_header_size_ = 0;
  std::array<std::byte, tap_max_vnet_header_size> received_header_{};
  std::string name_;
  std::error_code error_;
  cancel_count cancels_;
  tap_counters counters_;
  bool send_blocked_ = false;
  std::unique_ptr<std::byte[]> buffer_;
  std::unique_ptr<frame[]> batch_;
};

/// The async_receive state machine: read, else wait for readability; an
/// immediate result is posted so the handler never runs inside the call.
template <class Executor>
struct tap_receive_op {
  explicit tap_receive_op(std::shared_ptr<tap_state<Executor>> s) : state(std::move(s)) {}
  std::shared_ptr<tap_state<Executor>> state;
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
      if (started && cancelled_since(self, state->cancels(), cancels))
        return self.complete(make_error_code(asio::error::operation_aborted), frame_batch{});
      started = true;
      return state->descriptor().async_wait(asio::posix::descriptor_base::wait_read, std::move(self));
    }
    if (!started) {
      started = ready = true;
      return asio::post(state->descriptor().get_executor(), std::move(self));
    }
    self.complete(result, state->batch(count));
  }
};

/// The async_wait_writable state machine: done at once unless a send was
/// refused and poll(2) does not show the tap writable; else wait for it.
template <class Executor>
struct tap_writable_op {
  explicit tap_writable_op(std::shared_ptr<tap_state<Executor>> s) : state(std::move(s)) {}
  std::shared_ptr<tap_state<Executor>> state;
  std::error_code result;
  bool started = false, ready = false;

  template <class Self> void operator()(Self& self, std::error_code ec = {}) {
    if (ready) return self.complete(result);
    if (!started) self.reset_cancellation_state(asio::enable_total_cancellation());
    if (started) {
      if (!ec) state->clear_send_blocked();
      return self.complete(state->error() ? state->error() : ec);
    }
    started = true;
    if (state->error()) {
      result = state->error();
    } else if (state->send_blocked()) {
      pollfd p{state->fd(), POLLOUT, 0};
      if (::poll(&p, 1, 0) == 1 && (p.revents & POLLOUT)) {
        state->clear_send_blocked();
      } else {
        return state->descriptor().async_wait(asio::posix::descriptor_base::wait_write, std::move(self));
      }
    }
    ready = true;
    asio::post(state->descriptor().get_executor(), std::move(self));
  }
};

} // namespace netpasst::detail

namespace netpasst {

inline tap_device open_tap_device(const tap_device_options& options, std::error_code& ec) {
  const char* step = nullptr;
  return detail::open_tap_device_at(options, ec, step);
}

inline tap_device open_tap_device(const tap_device_options& options) {
  std::error_code ec;
  const char* step = nullptr;
  tap_device device = detail::open_tap_device_at(options, ec, step);
  if (ec) throw std::system_error(ec, detail::describe_tap(options) + ": " + (step ? step : "open"));
  return device;
}

template <class Executor>
basic_tap_transport<Executor>::basic_tap_transport(const executor_type& executor, const tap_device_options& device,
                                                   const tap_transport_config& config)
    : basic_tap_transport(executor, open_tap_device(detail::with_vnet_header(device, config.checksum_offload)).fd,
                          config) {}

template <class Executor>
basic_tap_transport<Executor>::basic_tap_transport(const executor_type& executor, unique_fd fd,
                                                   const tap_transport_config& config)
    : state_(std::make_shared<detail::tap_state<Executor>>(executor, std::move(fd), config)) {}

template <class Executor>
basic_tap_transport<Executor>& basic_tap_transport<Executor>::operator=(basic_tap_transport&& other) noexcept {
  if (this != &other) {
    close();
    state_ = std::move(other.state_);
  }
  return *this;
}

template <class Executor> basic_tap_transport<Executor>::~basic_tap_transport() { close(); }

template <class Executor> auto basic_tap_transport<Executor>::get_executor() const noexcept -> executor_type {
  return state_->executor();
}

template <class Executor> const tap_transport_config& basic_tap_transport<Executor>::config() const noexcept {
  return state_->config();
}

template <class Executor> const std::string& basic_tap_transport<Executor>::name() const noexcept {
  return state_->name();
}

template <class Executor> packet::mac_address basic_tap_transport<Executor>::mac() const { return state_->mac(); }

template <class Executor> bool basic_tap_transport<Executor>::is_open() const noexcept {
  return state_ && state_->is_open();
}

template <class Executor> int basic_tap_transport<Executor>::native_handle() const noexcept {
  return state_ ? state_->fd() : -1;
}

template <class Executor> tap_counters basic_tap_transport<Executor>::counters() const noexcept {
  return state_ ? state_->counters() : tap_counters{};
}

template <class Executor> bool basic_tap_transport<Executor>::try_send(frame f, std::error_code& ec) {
  return state_->try_send(f, ec);
}

template <class Executor>
std::size_t basic_tap_transport<Executor>::try_send(std::span<const frame> frames, std::error_code& ec) {
  ec.clear();
  std::size_t n = 0;
  while (n < frames.size() && state_->try_send(frames[n], ec)) ++n;
  return n;
}

template <class Executor>
template <asio::completion_token_for<void(std::error_code)> Token>
auto basic_tap_transport<Executor>::async_wait_writable(Token&& token) {
  return asio::async_compose<Token, void(std::error_code)>(detail::tap_writable_op<Executor>(state_), token,
                                                           state_->descriptor());
}

template <class Executor>
template <asio::completion_token_for<void(std::error_code, frame_batch)> Token>
auto basic_tap_transport<Executor>::async_receive(Token&& token) {
  return asio::async_compose<Token, void(std::error_code, frame_batch)>(detail::tap_receive_op<Executor>(state_),
                                                                        token, state_->descriptor());
}

template <class Executor> void basic_tap_transport<Executor>::cancel() {
  if (state_) state_->cancel();
}

template <class Executor> void basic_tap_transport<Executor>::close() noexcept {
  if (state_) state_->fail(errc::transport_closed);
}

} // namespace netpasst
