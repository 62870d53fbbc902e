#pragma once
// Implementation of netpasst/transport/stream.hpp; include that header instead.

#include <netpasst/transport/stream.hpp>

#include <netpasst/detail/wait_again.hpp>

#include <asio/cancellation_type.hpp>
#include <asio/compose.hpp>
#include <asio/error.hpp>
#include <asio/post.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

/// Test seam: how the transport names the system calls that move bytes and
/// size the socket (`sendmsg`, `sendmmsg`, `recv`, and `setsockopt`/
/// `getsockopt` for the buffer sizes). A test may define it before including
/// the header to count or fake them, as {fmt} does with FMT_SYSTEM.
#ifndef NETPASST_STREAM_SYSCALL
#define NETPASST_STREAM_SYSCALL(name) ::name
#endif

namespace netpasst::detail {

inline constexpr std::size_t stream_header_size = 4;
inline constexpr std::size_t stream_max_record = stream_header_size + max_frame_size;
/// Writes per sendmmsg in every_passt mode (see stream_write_mode, rule 4).
inline constexpr std::size_t stream_writes_per_call = 64;

inline std::error_code stream_os_error(int e) {
  if (e == ECONNRESET || e == EPIPE) return errc::connection_closed;
  return {e, std::system_category()};
}

/// Waits with poll(2) for `events` on `fd`; retries on EINTR.
inline std::error_code stream_poll(int fd, short events) {
  pollfd p{fd, events, 0};
  while (::poll(&p, 1, -1) < 0)
    if (errno != EINTR) return {errno, std::system_category()};
  return {};
}

/// Everything a transport owns, shared with its pending handlers so that they
/// never outlive it.
template <class Executor>
class stream_state : public std::enable_shared_from_this<stream_state<Executor>> {
public:
  stream_state(const Executor& executor, unique_fd fd, const stream_transport_config& config)
      : config_(config), descriptor_(executor) {
    if (!fd) throw std::system_error(EBADF, std::system_category(), "netpasst: stream transport");
    auto fail = [](const char* what) { throw std::system_error(errno, std::system_category(), what); };
    int type = 0;
    socklen_t length = sizeof type;
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_TYPE, &type, &length) != 0) fail("netpasst: getsockopt(SO_TYPE)");
    if (type != SOCK_STREAM)
      throw std::system_error(std::make_error_code(std::errc::wrong_protocol_type),
                              "netpasst: stream transport needs a SOCK_STREAM socket");
    int flags = ::fcntl(fd.get(), F_GETFL);
    if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) < 0) fail("netpasst: fcntl(O_NONBLOCK)");
    size_socket_buffers(fd.get());
    config_.send_queue_bytes = std::max(config_.send_queue_bytes, 2 * stream_max_record);
    config_.receive_buffer_bytes = std::max(config_.receive_buffer_bytes, 2 * stream_max_record);
    config_.max_batch_frames = std::max<std::size_t>(config_.max_batch_frames, 1);
    config_.flush_threshold_bytes = std::min(config_.flush_threshold_bytes, config_.send_queue_bytes / 2);
    send_ring_ = std::make_unique_for_overwrite<std::byte[]>(config_.send_queue_bytes);
    if (config_.write_mode == stream_write_mode::every_passt) {
      sealed_capacity_ = 2 * (config_.send_queue_bytes / (stream_atomic_write_bytes - stream_header_size)) + 4;
      sealed_ = std::make_unique_for_overwrite<std::uint32_t[]>(sealed_capacity_);
    }
    receive_buffer_ = std::make_unique_for_overwrite<std::byte[]>(config_.receive_buffer_bytes);
    batch_ = std::make_unique<frame[]>(config_.max_batch_frames);
    descriptor_.assign(fd.get());
    fd_ = fd.release();
  }

  // --- state ---------------------------------------------------------------

  const stream_transport_config& config() const noexcept { return config_; }
  Executor executor() const noexcept { // Asio 1.22's get_executor() is not const
    return const_cast<asio::posix::basic_stream_descriptor<Executor>&>(descriptor_).get_executor();
  }
  bool is_open() const noexcept { return !error_; }
  int fd() const noexcept { return error_ ? -1 : fd_; }
  const transport_counters& counters() const noexcept { return counters_; }
  std::size_t queued() const noexcept { return send_size_; }
  bool writable() const noexcept { return send_size_ <= config_.send_queue_bytes / 2; }
  const std::error_code& error() const noexcept { return error_; }
  auto& descriptor() noexcept { return descriptor_; }
  frame_batch batch(std::size_t n) const noexcept { return {batch_.get(), n}; }

  /// Ends the connection with `ec` (first error wins, except that close()
  /// always leaves transport_closed). Pending waits complete with it.
  void fail(std::error_code ec) noexcept {
    if (!error_ || ec == errc::transport_closed) error_ = ec;
    send_head_ = send_size_ = 0;
    sealed_head_ = sealed_count_ = open_write_ = 0;
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

  // --- sending -------------------------------------------------------------

  bool try_send(frame f, std::error_code& ec) {
    if (error_) return ec = error_, false;
    if (f.size() < min_frame_size || f.size() > max_frame_size) {
      ++counters_.frames_refused;
      ec = f.size() < min_frame_size ? errc::frame_too_short : errc::frame_too_long;
      return false;
    }
    std::byte header[stream_header_size] = {std::byte(f.size() >> 24), std::byte(f.size() >> 16),
                                            std::byte(f.size() >> 8), std::byte(f.size())};
    const std::size_t record = stream_header_size + f.size();
    ec.clear();
    if (config_.direct_write_bytes != 0 && f.size() >= config_.direct_write_bytes && !write_waiting_ &&
        (send_size_ == 0 || (flush_now() && send_size_ == 0))) {
      std::size_t written = 0;
      if (!write_direct(header, f, written)) return ec = error_, false;
      count_sent(f.size());
      if (written < sizeof header) append({header + written, sizeof header - written});
      append(f.subspan(written < sizeof header ? 0 : written - sizeof header));
      if (config_.write_mode == stream_write_mode::every_passt && send_size_ != 0) {
        if (written == 0) plan_record(record);
        else if (send_size_ <= stream_atomic_write_bytes) open_write_ = send_size_; // the rest starts the next write
        else seal(send_size_); // only if the kernel cut where it cannot: send it as it is
      }
      if (send_size_ != 0) arm_write_wait();
      return true;
    }
    if (error_) return ec = error_, false; // flushing the ring for a direct write failed
    if (config_.send_queue_bytes - send_size_ < record) return ec = errc::would_block, false;
    std::size_t tail = send_head_ + send_size_;
    if (tail >= config_.send_queue_bytes) tail -= config_.send_queue_bytes;
    if (config_.send_queue_bytes - tail >= record) { // the usual case: no wrap
      std::byte* at = send_ring_.get() + tail;
      std::memcpy(at, header, sizeof header);
      std::memcpy(at + sizeof header, f.data(), f.size());
      send_size_ += record;
    } else {
      append({header, sizeof header});
      append(f);
    }
    count_sent(f.size());
    if (config_.write_mode == stream_write_mode::every_passt) plan_record(record);
    if (send_size_ >= config_.flush_threshold_bytes && !write_waiting_)
      flush_and_arm();
    else
      schedule_flush();
    return true;
  }

  /// Writes the ring until it is empty or the socket is full; false on a
  /// connection error (then error() says which).
  bool flush_now() {
    if (error_) return false;
    if (config_.write_mode == stream_write_mode::every_passt) {
      while (send_size_ != 0)
        if (!write_whole_buffers()) return false;
        else if (socket_full_) break;
    } else {
      while (send_size_ != 0) {
        const std::size_t first = std::min(send_size_, config_.send_queue_bytes - send_head_);
        iovec iov[2] = {{send_ring_.get() + send_head_, first}, {send_ring_.get(), send_size_ - first}};
        std::size_t written = 0;
        if (!write(iov, iov[1].iov_len ? 2 : 1, written)) return false;
        consume(written);
        if (written < first + iov[1].iov_len) break; // the socket is full
      }
    }
    if (send_size_ == 0) send_head_ = 0;
    return true;
  }

  /// flush_now, then make sure the rest is written once the socket drains.
  void flush_and_arm() {
    if (flush_now() && send_size_ != 0) arm_write_wait();
  }

  // --- receiving -----------------------------------------------------------

  /// Hands out the frames already read or, if there are none, reads once or
  /// more until there are. Returns how many; 0 with `ec` set to would_block
  /// (nothing to read now) or to the error that closed the transport.
  std::size_t receive_some(std::error_code& ec) {
    ec.clear();
    if (error_) return ec = error_, 0;
    for (;;) {
      if (std::size_t n = parse(ec)) return n;
      if (ec) return fail(ec), 0;
      std::byte* buffer = receive_buffer_.get();
      const std::size_t capacity = config_.receive_buffer_bytes;
      if (begin_ == end_) {
        begin_ = end_ = 0;
      } else if (capacity - end_ < capacity / 4 || capacity - begin_ < stream_max_record) {
        // Less than one whole frame is left (else parse would have found it).
        std::memmove(buffer, buffer + begin_, end_ - begin_);
        end_ -= begin_;
        begin_ = 0;
      }
      const ssize_t got = NETPASST_STREAM_SYSCALL(recv)(fd_, buffer + end_, capacity - end_, MSG_DONTWAIT);
      if (got > 0) {
        end_ += std::size_t(got);
      } else if (got == 0) {
        return ec = errc::connection_closed, fail(ec), 0;
      } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
        return ec = errc::would_block, 0;
      } else if (errno != EINTR) {
        return ec = stream_os_error(errno), fail(ec), 0;
      }
    }
  }

  // --- internal flush scheduling ---------------------------------------------

  void schedule_flush() {
    if (flush_posted_ || write_waiting_) return;
    flush_posted_ = true;
    asio::post(descriptor_.get_executor(), [self = this->shared_from_this()] {
      self->flush_posted_ = false;
      if (!self->write_waiting_) self->flush_and_arm();
    });
  }

  void arm_write_wait() {
    if (write_waiting_ || error_) return;
    write_waiting_ = true;
    descriptor_.async_wait(asio::posix::descriptor_base::wait_write,
                           [self = this->shared_from_this()](std::error_code ec) {
                             self->write_waiting_ = false;
                             if (!ec || (ec == asio::error::operation_aborted && !self->error_))
                               self->flush_and_arm(); // cancel() must not stall the ring
                           });
  }

private:
  /// Sets and checks our end's socket buffers (config's `socket_buffer_bytes`,
  /// and in every_passt mode the bounds of stream_write_mode's rule 5), then
  /// records what the kernel granted in config_.
  void size_socket_buffers(int fd) {
    const bool bounded = config_.write_mode == stream_write_mode::every_passt;
    std::size_t wanted = config_.socket_buffer_bytes;
    std::size_t granted = send_buffer_size(fd);
    if (wanted == 0 && bounded &&
        (granted < stream_min_send_buffer_bytes || granted > stream_max_send_buffer_bytes))
      wanted = granted; // the socket's own size is out of bounds: clamp it below
    if (wanted != 0) {
      if (bounded) wanted = std::clamp(wanted, stream_min_send_buffer_bytes, stream_max_send_buffer_bytes);
      // The kernel doubles what it is given; it refuses nothing below INT_MAX / 2.
      const int half = int(std::min<std::size_t>(wanted / 2, std::size_t{1} << 30));
      for (auto [force, plain] : {std::pair{SO_SNDBUFFORCE, SO_SNDBUF}, std::pair{SO_RCVBUFFORCE, SO_RCVBUF}})
        if (NETPASST_STREAM_SYSCALL(setsockopt)(fd, SOL_SOCKET, force, &half, sizeof half) != 0 &&
            NETPASST_STREAM_SYSCALL(setsockopt)(fd, SOL_SOCKET, plain, &half, sizeof half) != 0)
          throw std::system_error(errno, std::system_category(), "netpasst: setsockopt(SO_SNDBUF/SO_RCVBUF)");
      granted = send_buffer_size(fd);
    }
    if (bounded && (granted < stream_min_send_buffer_bytes || granted > stream_max_send_buffer_bytes))
      throw std::system_error(std::make_error_code(std::errc::no_buffer_space),
                              "netpasst: stream transport: the kernel granted a socket send buffer of " +
                                  std::to_string(granted) + " bytes, outside the " +
                                  std::to_string(stream_min_send_buffer_bytes) + ".." +
                                  std::to_string(stream_max_send_buffer_bytes) +
                                  " the every_passt write mode needs (raise net.core.wmem_max, or run "
                                  "with CAP_NET_ADMIN)");
    config_.socket_buffer_bytes = granted;
  }

  static std::size_t send_buffer_size(int fd) {
    int size = 0;
    socklen_t length = sizeof size;
    if (NETPASST_STREAM_SYSCALL(getsockopt)(fd, SOL_SOCKET, SO_SNDBUF, &size, &length) != 0)
      throw std::system_error(errno, std::system_category(), "netpasst: getsockopt(SO_SNDBUF)");
    return size > 0 ? std::size_t(size) : 0;
  }

  void count_sent(std::size_t bytes) noexcept {
    ++counters_.frames_sent;
    counters_.bytes_sent += bytes;
  }

  /// Copies `bytes` to the tail of the ring (the caller checked the room).
  void append(std::span<const std::byte> bytes) noexcept {
    if (bytes.empty()) return;
    const std::size_t capacity = config_.send_queue_bytes;
    std::size_t tail = send_head_ + send_size_;
    if (tail >= capacity) tail -= capacity;
    const std::size_t first = std::min(bytes.size(), capacity - tail);
    std::memcpy(send_ring_.get() + tail, bytes.data(), first);
    if (first < bytes.size()) std::memcpy(send_ring_.get(), bytes.data() + first, bytes.size() - first);
    send_size_ += bytes.size();
  }

  /// Drops `bytes` written from the head of the ring.
  void consume(std::size_t bytes) noexcept {
    send_head_ += bytes;
    if (send_head_ >= config_.send_queue_bytes) send_head_ -= config_.send_queue_bytes;
    send_size_ -= bytes;
  }

  // --- every_passt: the ring's bytes as writes --------------------------------
  // The ring holds sealed writes (sizes in sealed_, oldest first), then the
  // open write that new records join. Each write is at most
  // stream_atomic_write_bytes and is cut as stream_write_mode's rules 1 and 2
  // say, so it is planned once, when its records are queued, and the flush
  // only hands the sizes to sendmmsg. The open write always ends between two
  // records; a cut record seals its write and its rest starts the next one.
  // Every sealed write shorter than the limit less a header is followed by a
  // full one, so sealed_ needs at most 2 entries per write's worth of ring.

  /// Plans a record of `record` bytes just appended to the ring.
  void plan_record(std::size_t record) noexcept {
    constexpr std::size_t limit = stream_atomic_write_bytes;
    for (;;) {
      const std::size_t room = limit - open_write_;
      if (record <= room) { // rule 1: it fits in the open write
        open_write_ += record;
        return;
      }
      // Rule 2: cut it at the end of the open write, past its header and a
      // frame byte, if the rest fits in one write. An empty write can always
      // cut it (a record is at most 65539 bytes, less than two writes).
      if (room > stream_header_size && record - room <= limit) {
        seal(limit);
        open_write_ = record - room;
        return;
      }
      seal(open_write_);
      open_write_ = 0;
    }
  }

  void seal(std::size_t bytes) noexcept {
    std::size_t at = sealed_head_ + sealed_count_++;
    if (at >= sealed_capacity_) at -= sealed_capacity_;
    sealed_[at] = std::uint32_t(bytes);
  }

  /// Appends one write of the ring's bytes [at, at + bytes) to writes_.
  void plan_write(std::size_t at, std::size_t bytes, std::size_t count) noexcept {
    const std::size_t first = std::min(bytes, config_.send_queue_bytes - at);
    iovec* iov = &write_iov_[2 * count];
    iov[0] = {send_ring_.get() + at, first};
    iov[1] = {send_ring_.get(), bytes - first};
    writes_[count] = {};
    writes_[count].msg_hdr.msg_iov = iov;
    writes_[count].msg_hdr.msg_iovlen = first < bytes ? 2 : 1;
    write_sizes_[count] = bytes;
  }

  /// One sendmmsg (or sendmsg for a single write) of up to
  /// stream_writes_per_call planned writes from the head of the ring. Sets
  /// socket_full_ when the socket took fewer than offered. False on a
  /// connection error.
  bool write_whole_buffers() {
    const std::size_t capacity = config_.send_queue_bytes;
    std::size_t count = 0, at = send_head_;
    auto add = [&](std::size_t bytes) {
      plan_write(at, bytes, count++);
      at += bytes;
      if (at >= capacity) at -= capacity;
    };
    for (std::size_t i = sealed_head_; count < std::min(sealed_count_, stream_writes_per_call); ++i)
      add(sealed_[i < sealed_capacity_ ? i : i - sealed_capacity_]);
    const bool with_open = count == sealed_count_ && count < stream_writes_per_call && open_write_ != 0;
    if (with_open) add(open_write_);
    if (count == 0) return socket_full_ = send_size_ != 0, true; // nothing planned (never with bytes queued)

    int done = 0;
    for (;;) { // rule 3: every write is one buffer, so sendmmsg never cuts one
      if (count == 1) {
        const ssize_t n = NETPASST_STREAM_SYSCALL(sendmsg)(fd_, &writes_[0].msg_hdr, MSG_NOSIGNAL | MSG_DONTWAIT);
        done = n >= 0 ? 1 : -1;
        if (n >= 0) writes_[0].msg_len = unsigned(n);
      } else {
        done = NETPASST_STREAM_SYSCALL(sendmmsg)(fd_, writes_.data(), unsigned(count), MSG_NOSIGNAL | MSG_DONTWAIT);
      }
      if (done >= 0) break;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return socket_full_ = true, true;
      if (errno != EINTR) return fail(stream_os_error(errno)), false;
    }
    socket_full_ = std::size_t(done) < count;
    for (std::size_t i = 0; i < std::size_t(done); ++i) {
      const std::size_t written = writes_[i].msg_len;
      const bool open = with_open && i + 1 == count;
      consume(written);
      if (written == write_sizes_[i]) {
        if (open) open_write_ = 0;
        else if (--sealed_count_, ++sealed_head_ == sealed_capacity_) sealed_head_ = 0;
        continue;
      }
      // Only a kernel that broke the facts of stream_write_mode takes part of
      // a write. If sendmmsg went on after it, the byte stream is broken;
      // else the rest of that write goes first next time.
      if (i + 1 < std::size_t(done)) return fail(errc::protocol_error), false;
      if (open) open_write_ -= written;
      else sealed_[sealed_head_] -= std::uint32_t(written);
      socket_full_ = true;
    }
    return true;
  }

  /// Writes one record straight from the caller's memory (the ring is
  /// empty); `written` says how much the socket took. In every_passt mode a
  /// record longer than one write goes as two writes cut as rule 2 allows:
  /// its first `stream_atomic_write_bytes` bytes, then the rest (at most as
  /// long), so only the whole first write can be taken alone.
  bool write_direct(std::byte* header, frame f, std::size_t& written) {
    auto* data = const_cast<std::byte*>(f.data());
    const std::size_t record = stream_header_size + f.size();
    if (config_.write_mode != stream_write_mode::every_passt || record <= stream_atomic_write_bytes) {
      iovec iov[2] = {{header, stream_header_size}, {data, f.size()}};
      return write(iov, 2, written);
    }
    const std::size_t first = stream_atomic_write_bytes - stream_header_size;
    iovec iov[3] = {{header, stream_header_size}, {data, first}, {data + first, f.size() - first}};
    mmsghdr two[2] = {};
    two[0].msg_hdr.msg_iov = iov;
    two[0].msg_hdr.msg_iovlen = 2;
    two[1].msg_hdr.msg_iov = iov + 2;
    two[1].msg_hdr.msg_iovlen = 1;
    for (;;) {
      const int done = NETPASST_STREAM_SYSCALL(sendmmsg)(fd_, two, 2, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (done >= 0) {
        written = done == 0 ? 0 : done == 1 ? two[0].msg_len : two[0].msg_len + two[1].msg_len;
        return true;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) return written = 0, true;
      if (errno != EINTR) return fail(stream_os_error(errno)), false;
    }
  }

  /// One sendmsg; `written` is 0 when the socket is full. False on error.
  bool write(iovec* iov, int count, std::size_t& written) {
    msghdr message{};
    message.msg_iov = iov;
    message.msg_iovlen = std::size_t(count);
    for (;;) {
      const ssize_t n = NETPASST_STREAM_SYSCALL(sendmsg)(fd_, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n >= 0) return written = std::size_t(n), true;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return written = 0, true;
      if (errno != EINTR) return fail(stream_os_error(errno)), false;
    }
  }

  /// Parses whole frames at begin_ into batch_. A bad length stops parsing;
  /// it is reported (in `ec`) only when no frame precedes it.
  std::size_t parse(std::error_code& ec) noexcept {
    const std::byte* buffer = receive_buffer_.get();
    std::size_t n = 0, at = begin_, bytes = 0;
    while (n < config_.max_batch_frames && end_ - at >= stream_header_size) {
      std::uint32_t big_endian;
      std::memcpy(&big_endian, buffer + at, sizeof big_endian);
      const std::size_t length = ntohl(big_endian);
      if (length < min_frame_size || length > max_frame_size) {
        if (n == 0) ec = errc::bad_frame_length;
        break;
      }
      if (end_ - at - stream_header_size < length) break;
      batch_[n++] = frame(buffer + at + stream_header_size, length);
      at += stream_header_size + length;
      bytes += length;
    }
    begin_ = at;
    counters_.frames_received += n;
    counters_.bytes_received += bytes;
    return n;
  }

  stream_transport_config config_;
  asio::posix::basic_stream_descriptor<Executor> descriptor_;
  int fd_ = -1;
  std::error_code error_;
  cancel_count cancels_;
  transport_counters counters_;
  std::unique_ptr<std::byte[]> send_ring_;
  std::size_t send_head_ = 0, send_size_ = 0;
  // every_passt mode: the writes planned in the ring, and those of one call.
  std::unique_ptr<std::uint32_t[]> sealed_;
  std::size_t sealed_capacity_ = 0, sealed_head_ = 0, sealed_count_ = 0, open_write_ = 0;
  bool socket_full_ = false;
  std::array<mmsghdr, stream_writes_per_call> writes_{};
  std::array<iovec, 2 * stream_writes_per_call> write_iov_{};
  std::array<std::size_t, stream_writes_per_call> write_sizes_{};
  bool flush_posted_ = false, write_waiting_ = false;
  std::unique_ptr<std::byte[]> receive_buffer_;
  std::size_t begin_ = 0, end_ = 0;
  std::unique_ptr<frame[]> batch_;
};

/// The async_receive state machine: try, else wait for readability; an
/// immediate result is posted so the handler never runs inside the call.
template <class Executor>
struct stream_receive_op {
  explicit stream_receive_op(std::shared_ptr<stream_state<Executor>> s) : state(std::move(s)) {}
  std::shared_ptr<stream_state<Executor>> state;
  std::size_t count = 0;
  std::error_code result;
  std::uint64_t cancels = 0;
  bool started = false, ready = false;

  template <class Self> void operator()(Self& self, std::error_code ec = {}) {
    if (ready) return self.complete(result, state->batch(count));
    if (started && ec) return self.complete(state->error() ? state->error() : ec, frame_batch{});
    // A wait cancelled through the slot has consumed nothing: every kind of cancellation is safe.
    if (!started) self.reset_cancellation_state(asio::enable_total_cancellation()), cancels = state->cancels().value();
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

/// The async_wait_writable state machine: write the ring, done once it is
/// at most half full, else wait for the socket to drain.
template <class Executor>
struct stream_writable_op {
  explicit stream_writable_op(std::shared_ptr<stream_state<Executor>> s) : state(std::move(s)) {}
  std::shared_ptr<stream_state<Executor>> state;
  std::error_code result;
  std::uint64_t cancels = 0;
  bool started = false, ready = false;

  template <class Self> void operator()(Self& self, std::error_code ec = {}) {
    if (ready) return self.complete(result);
    if (started && ec) return self.complete(state->error() ? state->error() : ec);
    // Cancelling the wait leaves the queued frames to the transport's own flush.
    if (!started) self.reset_cancellation_state(asio::enable_total_cancellation()), cancels = state->cancels().value();
    if (!state->flush_now()) {
      result = state->error();
    } else if (started && !state->writable() && cancelled_since(self, state->cancels(), cancels)) {
      result = asio::error::operation_aborted;
    } else if (!state->writable()) {
      started = true;
      return state->descriptor().async_wait(asio::posix::descriptor_base::wait_write, std::move(self));
    }
    if (!started) {
      started = ready = true;
      return asio::post(state->descriptor().get_executor(), std::move(self));
    }
    self.complete(result);
  }
};

} // namespace netpasst::detail

namespace netpasst {

template <class Executor>
basic_stream_transport<Executor>::basic_stream_transport(const executor_type& executor, unique_fd fd,
                                                         const stream_transport_config& config)
    : state_(std::make_shared<detail::stream_state<Executor>>(executor, std::move(fd), config)) {}

template <class Executor>
basic_stream_transport<Executor>& basic_stream_transport<Executor>::operator=(basic_stream_transport&& other) noexcept {
  if (this != &other) {
    close();
    state_ = std::move(other.state_);
  }
  return *this;
}

template <class Executor> basic_stream_transport<Executor>::~basic_stream_transport() { close(); }

template <class Executor> auto basic_stream_transport<Executor>::get_executor() const noexcept -> executor_type {
  return state_->executor();
}

template <class Executor>
const stream_transport_config& basic_stream_transport<Executor>::config() const noexcept {
  return state_->config();
}

template <class Executor> bool basic_stream_transport<Executor>::is_open() const noexcept {
  return state_ && state_->is_open();
}

template <class Executor> int basic_stream_transport<Executor>::native_handle() const noexcept {
  return state_ ? state_->fd() : -1;
}

template <class Executor> transport_counters basic_stream_transport<Executor>::counters() const noexcept {
  return state_ ? state_->counters() : transport_counters{};
}

template <class Executor> std::size_t basic_stream_transport<Executor>::queued_bytes() const noexcept {
  return state_ ? state_->queued() : 0;
}

template <class Executor> bool basic_stream_transport<Executor>::try_send(frame f, std::error_code& ec) {
  return state_->try_send(f, ec);
}

template <class Executor>
std::size_t basic_stream_transport<Executor>::try_send(std::span<const frame> frames, std::error_code& ec) {
  ec.clear();
  std::size_t n = 0;
  while (n < frames.size() && state_->try_send(frames[n], ec)) ++n;
  return n;
}

template <class Executor> std::size_t basic_stream_transport<Executor>::flush(std::error_code& ec) {
  ec.clear();
  state_->flush_and_arm();
  if (!state_->is_open()) ec = state_->error();
  return state_->queued();
}

template <class Executor> void basic_stream_transport<Executor>::send(frame f, std::error_code& ec) {
  while (!state_->try_send(f, ec)) {
    if (ec != errc::would_block) return;
    if (!state_->flush_now()) return void(ec = state_->error());
    if (!state_->writable() && (ec = detail::stream_poll(state_->fd(), POLLOUT))) return;
  }
  for (;;) {
    if (!state_->flush_now()) return void(ec = state_->error());
    if (state_->queued() == 0) return void(ec.clear());
    if ((ec = detail::stream_poll(state_->fd(), POLLOUT))) return;
  }
}

template <class Executor> void basic_stream_transport<Executor>::send(frame f) {
  std::error_code ec;
  send(f, ec);
  if (ec) throw std::system_error(ec, "netpasst: stream_transport::send");
}

template <class Executor> frame_batch basic_stream_transport<Executor>::receive(std::error_code& ec) {
  for (;;) {
    if (std::size_t n = state_->receive_some(ec)) return state_->batch(n);
    if (ec != errc::would_block) return {};
    if ((ec = detail::stream_poll(state_->fd(), POLLIN))) return {};
  }
}

template <class Executor> frame_batch basic_stream_transport<Executor>::receive() {
  std::error_code ec;
  frame_batch batch = receive(ec);
  if (ec) throw std::system_error(ec, "netpasst: stream_transport::receive");
  return batch;
}

template <class Executor>
template <asio::completion_token_for<void(std::error_code)> Token>
auto basic_stream_transport<Executor>::async_wait_writable(Token&& token) {
  return asio::async_compose<Token, void(std::error_code)>(detail::stream_writable_op<Executor>(state_), token,
                                                           state_->descriptor());
}

template <class Executor>
template <asio::completion_token_for<void(std::error_code, frame_batch)> Token>
auto basic_stream_transport<Executor>::async_receive(Token&& token) {
  return asio::async_compose<Token, void(std::error_code, frame_batch)>(detail::stream_receive_op<Executor>(state_),
                                                                        token, state_->descriptor());
}

template <class Executor> void basic_stream_transport<Executor>::cancel() {
  if (state_) state_->cancel();
}

template <class Executor> void basic_stream_transport<Executor>::close() noexcept {
  if (state_) state_->fail(errc::transport_closed);
}

} // namespace netpasst
