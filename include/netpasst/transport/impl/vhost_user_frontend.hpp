#pragma once
// Implementation of netpasst/transport/vhost_user_frontend.hpp; include that header instead.

#include <netpasst/transport/vhost_user_frontend.hpp>

#include <asio/cancellation_type.hpp>
#include <asio/compose.hpp>
#include <asio/error.hpp>
#include <asio/posix/basic_stream_descriptor.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <utility>

namespace netpasst::detail::vhost {

// The vhost-user requests a frontend sends (request codes of the spec).
inline constexpr std::uint32_t get_features = 1, set_features = 2, set_owner = 3, set_mem_table = 5,
                               set_vring_num = 8, set_vring_addr = 9, set_vring_base = 10, get_vring_base = 11,
                               set_vring_kick = 12, set_vring_call = 13, get_protocol_features = 15,
                               set_protocol_features = 16, set_vring_enable = 18;
// Header flags: protocol version 1 in the low two bits, then "reply", "need reply".
inline constexpr std::uint32_t version = 1, reply_flag = 1u << 2, need_reply_flag = 1u << 3;
inline constexpr std::uint64_t f_version_1 = 1ull << 32, f_protocol_features = 1ull << 30, f_guest_csum = 1ull << 1;
inline constexpr std::uint64_t pf_reply_ack = 1ull << 3;
// SET_VRING_KICK/CALL: the queue index in the low byte, "no descriptor" in bit 8.
inline constexpr std::uint64_t vring_index_mask = 0xff, vring_no_fd = 1ull << 8;
inline constexpr std::size_t max_memory_regions = 8, max_queues = 256;
inline constexpr std::uint16_t max_queue_size = 32768;

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
/// SET_MEM_TABLE's payload with one region.
struct memory_table {
  std::uint32_t regions, padding;
  memory_region region;
};
static_assert(sizeof(header) == 12 && sizeof(vring_address) == 40 && sizeof(memory_table) == 40);
/// The largest payload sent: a memory table of eight regions.
inline constexpr std::size_t max_payload = 8 + max_memory_regions * sizeof(memory_region);

/// Where `[address, address + size)` ends, or nullopt if it wraps.
inline std::optional<std::uint64_t> range_end(std::uint64_t address, std::uint64_t size) noexcept {
  return address + size < address ? std::nullopt : std::optional(address + size);
}

/// Why `setup` cannot be handed to a backend that offered `offered`, or
/// empty when it can (see the file comment of vhost_user_frontend.hpp).
inline std::string check_device_setup(const vhost_user_device_setup& setup, std::uint64_t offered) {
  auto hex = [](std::uint64_t v) {
    char text[19];
    std::snprintf(text, sizeof text, "0x%llx", static_cast<unsigned long long>(v));
    return std::string(text);
  };
  if (setup.memory.empty() || setup.memory.size() > max_memory_regions)
    return "memory: " + std::to_string(setup.memory.size()) + " regions (1 to 8)";
  for (std::size_t i = 0; i < setup.memory.size(); ++i) {
    const auto& r = setup.memory[i];
    const std::string name = "memory region " + std::to_string(i);
    if (r.fd < 0) return name + ": no descriptor";
    if (r.size == 0) return name + ": size 0";
    if (!range_end(r.guest_physical, r.size) || !range_end(r.user_address, r.size) || !range_end(r.mmap_offset, r.size))
      return name + ": wraps around the address space";
    for (std::size_t j = 0; j < i; ++j) {
      const auto& o = setup.memory[j];
      if (r.guest_physical < o.guest_physical + o.size && o.guest_physical < r.guest_physical + r.size)
        return name + ": overlaps region " + std::to_string(j) + " in guest-physical addresses";
      if (r.user_address < o.user_address + o.size && o.user_address < r.user_address + r.size)
        return name + ": overlaps region " + std::to_string(j) + " in user addresses";
    }
  }
  if (setup.queues.empty() || setup.queues.size() > max_queues)
    return "queues: " + std::to_string(setup.queues.size()) + " (1 to 256)";
  for (std::size_t i = 0; i < setup.queues.size(); ++i) {
    const auto& q = setup.queues[i];
    const std::string name = "queue " + std::to_string(q.index);
    if (q.index >= max_queues) return name + ": index above 255";
    for (std::size_t j = 0; j < i; ++j)
      if (setup.queues[j].index == q.index) return name + ": given twice";
    if (q.size == 0 || q.size > max_queue_size || !std::has_single_bit(q.size))
      return name + ": size " + std::to_string(q.size) + " (a power of two up to 32768)";
    const struct {
      const char* what;
      std::uint64_t address, size, alignment;
    } rings[] = {{"descriptor table", q.descriptors, 16ull * q.size, 16},
                 {"available ring", q.available, 6 + 2ull * q.size, 2},
                 {"used ring", q.used, 6 + 8ull * q.size, 4}};
    for (const auto& ring : rings) {
      if (ring.address % ring.alignment)
        return name + ": " + ring.what + " at " + hex(ring.address) + " is not " + std::to_string(ring.alignment) +
               "-byte aligned";
      const bool inside = std::any_of(setup.memory.begin(), setup.memory.end(), [&](const auto& r) {
        return ring.address >= r.user_address && ring.size <= r.size && ring.address - r.user_address <= r.size - ring.size;
      });
      if (!inside)
        return name + ": " + ring.what + " at " + hex(ring.address) + " (" + std::to_string(ring.size) +
               " bytes) lies in no memory region's user addresses";
    }
  }
  if (const std::uint64_t extra = setup.features & ~offered & ~f_protocol_features)
    return "features: " + hex(extra) + " not offered by the backend";
  return {};
}

} // namespace netpasst::detail::vhost

namespace netpasst::detail {

/// Everything a vhost-user frontend owns, shared with its pending handlers.
template <class Executor>
class vhost_user_frontend_state : public std::enable_shared_from_this<vhost_user_frontend_state<Executor>> {
public:
  enum class request { none, open, start, stop };

  vhost_user_frontend_state(const Executor& executor, unique_fd socket, const vhost_user_frontend_config& config)
      : config_(config), socket_(executor), reply_timer_(executor) {
    if (!socket) throw std::system_error(EBADF, std::system_category(), "netpasst: vhost-user frontend needs a socket");
    const int status = ::fcntl(socket.get(), F_GETFL);
    if (status < 0 || ::fcntl(socket.get(), F_SETFL, status | O_NONBLOCK) < 0 ||
        ::fcntl(socket.get(), F_SETFD, FD_CLOEXEC) < 0)
      throw std::system_error(errno, std::system_category(), "netpasst: vhost-user frontend: fcntl on the socket");
    socket_.assign(socket.release());
  }

  const vhost_user_frontend_config& config() const noexcept { return config_; }
  const vhost_user_negotiation& negotiation() const noexcept { return negotiation_; }
  std::string_view failure_message() const noexcept { return failure_; }
  const std::vector<std::uint32_t>& running_queues() const noexcept { return running_; }
  Executor executor() const noexcept { return const_cast<decltype(socket_)&>(socket_).get_executor(); }
  bool is_open() const noexcept { return !error_; }
  const std::error_code& error() const noexcept { return error_; }
  bool busy() const noexcept { return request_ != request::none; }
  int native_handle() const noexcept { return error_ ? -1 : const_cast<decltype(socket_)&>(socket_).native_handle(); }
  std::uint16_t stopped_at() const noexcept { return stopped_at_; }
  auto& socket() noexcept { return socket_; }

  /// Ends the connection with `ec` (first error wins, except that close()
  /// always leaves transport_closed).
  void fail(std::error_code ec) noexcept {
    if (!error_ || ec == errc::transport_closed) error_ = ec;
    std::error_code ignored;
    socket_.close(ignored);
    reply_timer_.cancel();
  }

  void cancel() {
    std::error_code ignored;
    socket_.cancel(ignored);
  }

  /// Starts a request, its first message ready to go; a refusal sends
  /// nothing and leaves the frontend as it was.
  std::error_code begin(request kind, const vhost_user_device_setup* setup, std::uint32_t index) {
    if (error_) return error_;
    if (busy()) return errc::operation_in_progress;
    failure_.clear();
    negotiation_.failed_step = {};
    auto refuse = [&](std::string why) {
      failure_ = std::move(why);
      return make_error_code(errc::invalid_device_setup);
    };
    switch (kind) {
    case request::open:
      if (opened_) return refuse("open: the backend was already opened");
      break;
    case request::start:
      if (!opened_) return refuse("start: the backend was not opened");
      if (!running_.empty()) return refuse("start: queue " + std::to_string(running_.front()) + " still runs");
      if (std::string why = vhost::check_device_setup(*setup, negotiation_.offered_features); !why.empty())
        return refuse(std::move(why));
      setup_ = *setup;
      break;
    case request::stop:
      if (std::find(running_.begin(), running_.end(), index) == running_.end())
        return refuse("stop: queue " + std::to_string(index) + " is not running");
      stopping_ = index;
      break;
    case request::none: break;
    }
    request_ = kind;
    step_ = 0;
    while (!prepare(step_)) ++step_;
    return {};
  }

  /// Moves the request on as far as the socket allows without blocking:
  /// `done`, or `wait_for` says what to wait for (POLLIN, POLLOUT). On
  /// error the frontend is failed and the failure described.
  std::error_code advance(bool& done, short& wait_for) {
    done = false;
    std::error_code ec = advance_some(done, wait_for);
    if (ec) fail_request(ec);
    return ec;
  }

  /// A whole request, blocking: waits with poll(), at most the reply
  /// timeout at a time.
  std::error_code run(request kind, const vhost_user_device_setup* setup, std::uint32_t index) {
    if (auto ec = begin(kind, setup, index)) return ec;
    for (;;) {
      bool done;
      short wait_for = 0;
      if (auto ec = advance(done, wait_for)) return ec;
      if (done) return {};
      pollfd p{socket_.native_handle(), wait_for, 0};
      // poll() takes an int of milliseconds: a longer timeout takes several.
      auto left = config_.reply_timeout.count();
      int ready;
      do {
        const int slice = int(std::clamp<decltype(left)>(left, 0, INT_MAX));
        if ((ready = ::poll(&p, 1, slice)) == 0) left -= slice;
      } while ((ready < 0 && errno == EINTR) || (ready == 0 && left > 0));
      if (ready <= 0) {
        const std::error_code ec = ready == 0 ? make_error_code(errc::start_timeout)
                                              : std::error_code(errno, std::system_category());
        return fail_request(ec), ec;
      }
    }
  }

  /// One asynchronous wait of a request, bounded by the reply timeout: the
  /// timer fails the request, which ends the socket's waits with the
  /// timeout (a mere cancel would end a pending closed wait as cancelled).
  template <class Handler> void wait(short wait_for, Handler&& handler) {
    const std::uint64_t generation = ++wait_generation_;
    using timer_duration = typename decltype(reply_timer_)::duration; // nanoseconds: no room for every timeout
    reply_timer_.expires_after(std::min(
        config_.reply_timeout, std::chrono::duration_cast<std::chrono::milliseconds>(timer_duration::max())));
    reply_timer_.async_wait([self = this->shared_from_this(), generation](std::error_code ec) {
      if (!ec && generation == self->wait_generation_) self->fail_request(errc::start_timeout);
    });
    socket_.async_wait(wait_for == POLLIN ? asio::posix::descriptor_base::wait_read
                                          : asio::posix::descriptor_base::wait_write,
                       std::forward<Handler>(handler));
  }

  /// After a request's wait completed with `ec`: the error that ends the
  /// request (the frontend's own, a timeout, a cancellation), if any.
  std::error_code end_wait(std::error_code ec) {
    ++wait_generation_;
    reply_timer_.cancel();
    if (error_) ec = error_;
    if (ec) fail_request(ec);
    return ec;
  }

  /// While no request runs, readability of the socket means the backend
  /// closed it or wrote unasked: that ends the connection. Returns the error
  /// then, or nothing to wait again.
  std::error_code judge_readable() {
    if (error_) return error_;
    if (busy()) return {};
    char byte;
    const ssize_t got = ::recv(socket_.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (got < 0 && (errno == EAGAIN || errno == EINTR)) return {};
    if (got > 0) failure_ = "the backend wrote on the socket unasked";
    fail(got == 0 ? make_error_code(errc::connection_closed)
                  : got > 0 ? make_error_code(errc::protocol_error) : std::error_code(errno, std::system_category()));
    return error_;
  }

private:
  static constexpr unsigned open_steps = 4;
  unsigned queue_count() const noexcept { return unsigned(setup_.queues.size()); }
  /// Start: SET_FEATURES, SET_MEM_TABLE, five per queue, an enable per
  /// queue, the barrier.
  unsigned enable_step() const noexcept { return 2 + 5 * queue_count(); }
  unsigned barrier_step() const noexcept { return enable_step() + queue_count(); }

  /// Queues the message of `step`; false if it does not apply to what was
  /// negotiated. Past the last step, "applies" and queues nothing.
  bool prepare(unsigned step) {
    using namespace vhost;
    out_size_ = 0;
    switch (request_) {
    case request::open:
      switch (step) {
      case 0: return message(get_features, "GET_FEATURES", nullptr, 0, reply::value), true;
      case 1:
        return protocol_offered() &&
               (message(get_protocol_features, "GET_PROTOCOL_FEATURES", nullptr, 0, reply::value), true);
      case 2:
        return protocol_offered() && (message(set_protocol_features, "SET_PROTOCOL_FEATURES",
                                              &negotiation_.acked_protocol_features, 8, reply::none),
                                      true);
      case 3: return message(set_owner, "SET_OWNER", nullptr, 0, reply::ack), true;
      default: return true;
      }
    case request::stop: {
      if (step > 0) return true;
      const vring_state state{stopping_, 0};
      return message(get_vring_base, "GET_VRING_BASE", &state, sizeof state, reply::value), true;
    }
    case request::start: break;
    case request::none: return true;
    }
    if (step == 0) {
      const std::uint64_t features =
          (setup_.features & ~f_protocol_features) | (protocol_offered() ? f_protocol_features : 0);
      return message(set_features, "SET_FEATURES", &features, 8, reply::ack), true;
    }
    if (step == 1) {
      std::byte table[max_payload]{};
      const std::uint32_t count = std::uint32_t(setup_.memory.size());
      std::memcpy(table, &count, 4);
      for (std::uint32_t i = 0; i < count; ++i) {
        const auto& r = setup_.memory[i];
        const memory_region region{r.guest_physical, r.size, r.user_address, r.mmap_offset};
        std::memcpy(table + 8 + i * sizeof region, &region, sizeof region);
        fds_[i] = r.fd;
      }
      message(set_mem_table, "SET_MEM_TABLE", table, 8 + count * sizeof(memory_region), reply::ack);
      fd_count_ = count;
      return true;
    }
    if (step < enable_step()) {
      const auto& q = setup_.queues[(step - 2) / 5];
      switch ((step - 2) % 5) {
      case 0: {
        const vring_state num{q.index, q.size};
        return message(set_vring_num, "SET_VRING_NUM", &num, sizeof num, reply::ack), true;
      }
      case 1: {
        const vring_state base{q.index, q.next_available};
        return message(set_vring_base, "SET_VRING_BASE", &base, sizeof base, reply::ack), true;
      }
      case 2: {
        const vring_address addresses{q.index, 0, q.descriptors, q.used, q.available, 0};
        return message(set_vring_addr, "SET_VRING_ADDR", &addresses, sizeof addresses, reply::ack), true;
      }
      default: {
        const bool kick = (step - 2) % 5 == 3;
        const int fd = kick ? q.kick_fd : q.call_fd;
        const std::uint64_t which = q.index | (fd < 0 ? vring_no_fd : 0);
        message(kick ? set_vring_kick : set_vring_call, kick ? "SET_VRING_KICK" : "SET_VRING_CALL", &which, 8,
                reply::ack);
        if (fd >= 0) fds_[0] = fd, fd_count_ = 1;
        return true;
      }
      }
    }
    if (step < barrier_step()) {
      const vring_state enable{setup_.queues[step - enable_step()].index, 1};
      return protocol_offered() &&
             (message(set_vring_enable, "SET_VRING_ENABLE", &enable, sizeof enable, reply::ack), true);
    }
    if (step == barrier_step())
      return !acked_reply_ && (message(get_features, "GET_FEATURES (barrier)", nullptr, 0, reply::value), true);
    return true;
  }

  enum class reply { none, ack, value };

  /// Queues one message; its reply is awaited for `value`, and for `ack`
  /// when REPLY_ACK was agreed (the backend then reports a status).
  void message(std::uint32_t request, const char* name, const void* payload, std::size_t size, reply answer) {
    const bool need_reply = answer == reply::ack && acked_reply_;
    const vhost::header h{request, vhost::version | (need_reply ? vhost::need_reply_flag : 0u), std::uint32_t(size)};
    std::memcpy(out_, &h, sizeof h);
    if (size) std::memcpy(out_ + sizeof h, payload, size);
    out_size_ = sizeof h + size;
    out_written_ = 0;
    fd_count_ = 0;
    in_read_ = 0;
    in_wanted_ = need_reply || answer == reply::value ? sizeof in_ : 0;
    in_request_ = request;
    step_name_ = name;
  }

  bool protocol_offered() const noexcept { return negotiation_.offered_features & vhost::f_protocol_features; }

  /// A reply to another request, or one not carrying exactly eight bytes,
  /// fails as soon as its header is in, instead of waiting for bytes it does
  /// not announce.
  std::error_code check_reply_header() {
    using namespace vhost;
    header h;
    std::memcpy(&h, in_, sizeof h);
    if (h.request != in_request_ || (h.flags & 3) != version || !(h.flags & reply_flag) || h.size != 8) {
      detail_ = "malformed reply (request " + std::to_string(h.request) + ", flags " + std::to_string(h.flags) +
                ", " + std::to_string(h.size) + " bytes)";
      return errc::protocol_error;
    }
    return {};
  }

  /// Takes what the reply just read (header checked) says.
  std::error_code take_reply() {
    using namespace vhost;
    std::uint64_t value;
    std::memcpy(&value, in_ + sizeof(header), sizeof value);
    if (request_ == request::open && step_ == 0) {
      negotiation_.offered_features = value;
      return {};
    }
    if (request_ == request::open && step_ == 1) {
      negotiation_.offered_protocol_features = value;
      negotiation_.acked_protocol_features = value & (config_.reply_ack ? pf_reply_ack : 0);
      acked_reply_ = negotiation_.acked_protocol_features & pf_reply_ack; // from SET_PROTOCOL_FEATURES on
      return {};
    }
    if (request_ == request::stop) {
      vring_state state;
      std::memcpy(&state, &value, sizeof state);
      if (state.index != stopping_ || state.num > 0xffff) {
        detail_ = "reply for queue " + std::to_string(state.index) + " with index " + std::to_string(state.num);
        return errc::protocol_error;
      }
      stopped_at_ = std::uint16_t(state.num);
      return {};
    }
    if (in_request_ == get_features) return {}; // the barrier
    if (value == 0) return {};
    detail_ = "the backend refused it (status " + std::to_string(value) + ")";
    return errc::protocol_error;
  }

  /// The request's end: what it agreed takes effect.
  void finish() {
    switch (request_) {
    case request::open:
      opened_ = true;
      break;
    case request::start:
      negotiation_.acked_features =
          (setup_.features & ~vhost::f_protocol_features) | (protocol_offered() ? vhost::f_protocol_features : 0);
      for (const auto& q : setup_.queues) running_.push_back(q.index);
      setup_ = {}; // its descriptors are the caller's again
      break;
    case request::stop: std::erase(running_, stopping_); break;
    case request::none: break;
    }
    request_ = request::none;
  }

  void fail_request(std::error_code ec) noexcept {
    if (busy()) {
      negotiation_.failed_step = step_name_;
      std::string why = detail_;
      if (why.empty()) {
        if (ec == errc::start_timeout) why = "no reply within " + std::to_string(config_.reply_timeout.count()) + " ms";
        else if (ec == errc::connection_closed) why = "the backend closed the connection";
        else why = ec.message();
      }
      failure_ = step_name_;
      if (request_ == request::start && step_ >= 2 && step_ < barrier_step()) {
        const unsigned q = step_ < enable_step() ? (step_ - 2) / 5 : step_ - enable_step();
        failure_ += " (queue " + std::to_string(setup_.queues[q].index) + ")";
      } else if (request_ == request::stop) {
        failure_ += " (queue " + std::to_string(stopping_) + ")";
      }
      failure_ += ": " + why;
      detail_.clear();
      setup_ = {};
      request_ = request::none;
    }
    fail(ec);
  }

  /// The non-blocking core of a request (see advance).
  std::error_code advance_some(bool& done, short& wait_for) {
    for (;;) {
      if (out_written_ < out_size_) {
        iovec part{out_ + out_written_, out_size_ - out_written_};
        msghdr m{};
        m.msg_iov = &part;
        m.msg_iovlen = 1;
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * vhost::max_memory_regions)];
        if (fd_count_ > 0 && out_written_ == 0) {
          m.msg_control = control;
          m.msg_controllen = CMSG_SPACE(sizeof(int) * fd_count_);
          cmsghdr* c = CMSG_FIRSTHDR(&m);
          c->cmsg_level = SOL_SOCKET;
          c->cmsg_type = SCM_RIGHTS;
          c->cmsg_len = CMSG_LEN(sizeof(int) * fd_count_);
          std::memcpy(CMSG_DATA(c), fds_, sizeof(int) * fd_count_);
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
          const bool header_in = in_read_ < sizeof(vhost::header) && in_read_ + std::size_t(got) >= sizeof(vhost::header);
          in_read_ += std::size_t(got);
          if (header_in)
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
      while (!prepare(++step_)) {
      }
      if (out_size_ == 0) return finish(), done = true, std::error_code{};
    }
  }

  vhost_user_frontend_config config_;
  asio::posix::basic_stream_descriptor<Executor> socket_;
  asio::basic_waitable_timer<std::chrono::steady_clock, asio::wait_traits<std::chrono::steady_clock>, Executor>
      reply_timer_;
  vhost_user_negotiation negotiation_;
  std::string failure_, detail_;
  std::error_code error_;
  vhost_user_device_setup setup_;
  std::vector<std::uint32_t> running_;
  request request_ = request::none;
  unsigned step_ = 0;
  const char* step_name_ = "";
  std::uint32_t stopping_ = 0;
  std::uint16_t stopped_at_ = 0;
  bool opened_ = false, acked_reply_ = false;
  // The message being written, the reply awaited.
  std::byte out_[sizeof(vhost::header) + vhost::max_payload];
  std::size_t out_size_ = 0, out_written_ = 0;
  int fds_[vhost::max_memory_regions];
  std::size_t fd_count_ = 0;
  std::byte in_[sizeof(vhost::header) + sizeof(std::uint64_t)];
  std::size_t in_wanted_ = 0, in_read_ = 0;
  std::uint32_t in_request_ = 0;
  std::uint64_t wait_generation_ = 0;
};

/// A request without blocking: advance, and wait (bounded by the reply
/// timeout) whenever the socket says so. `Stop` completes with the index
/// GET_VRING_BASE returned.
template <class Executor, bool Stop>
struct vhost_user_request_op {
  using state_type = vhost_user_frontend_state<Executor>;
  vhost_user_request_op(std::shared_ptr<state_type> s, typename state_type::request k, vhost_user_device_setup d,
                        std::uint32_t i)
      : state(std::move(s)), kind(k), setup(std::move(d)), index(i) {}
  std::shared_ptr<state_type> state;
  typename state_type::request kind;
  vhost_user_device_setup setup; // for a start; empty otherwise
  std::uint32_t index = 0;
  std::error_code result;
  bool started = false, finished = false;

  template <class Self> void operator()(Self& self, std::error_code ec = {}) {
    if (finished) return complete(self);
    if (!started) {
      self.reset_cancellation_state(asio::enable_total_cancellation());
      result = state->begin(kind, &setup, index);
      setup = {};
    } else {
      result = state->end_wait(ec);
    }
    if (!result) {
      bool done;
      short wait_for = 0;
      result = state->advance(done, wait_for);
      if (!result && !done) {
        started = true;
        return state->wait(wait_for, std::move(self));
      }
    }
    if (started) return complete(self);
    started = finished = true;
    asio::post(state->executor(), std::move(self));
  }

  template <class Self> void complete(Self& self) {
    if constexpr (Stop) self.complete(result, result ? std::uint16_t(0) : state->stopped_at());
    else self.complete(result);
  }
};

/// async_wait_closed: judge the socket, wait for readability, again and
/// again. (Asio re-arms the descriptor when a wait starts, so bytes a
/// request left unread wake it again.)
template <class Executor>
struct vhost_user_closed_op {
  explicit vhost_user_closed_op(std::shared_ptr<vhost_user_frontend_state<Executor>> s) : state(std::move(s)) {}
  std::shared_ptr<vhost_user_frontend_state<Executor>> state;
  std::error_code result;
  bool started = false, posted = false;

  template <class Self> void operator()(Self& self, std::error_code ec = {}) {
    if (posted) return self.complete(result);
    const bool first = !started;
    if (first) {
      started = true;
      self.reset_cancellation_state(asio::enable_total_cancellation());
    } else if (ec) {
      return self.complete(state->error() ? state->error() : ec);
    }
    if ((result = state->judge_readable())) {
      if (!first) return self.complete(result);
      posted = true;
      return asio::post(state->executor(), std::move(self));
    }
    state->socket().async_wait(asio::posix::descriptor_base::wait_read, std::move(self));
  }
};

} // namespace netpasst::detail

namespace netpasst {

template <class Executor>
basic_vhost_user_frontend<Executor>::basic_vhost_user_frontend(const executor_type& executor, unique_fd socket,
                                                               const vhost_user_frontend_config& config)
    : state_(std::make_shared<detail::vhost_user_frontend_state<Executor>>(executor, std::move(socket), config)) {}

template <class Executor>
basic_vhost_user_frontend<Executor>& basic_vhost_user_frontend<Executor>::operator=(
    basic_vhost_user_frontend&& other) noexcept {
  if (this != &other) {
    close();
    state_ = std::move(other.state_);
  }
  return *this;
}

template <class Executor> basic_vhost_user_frontend<Executor>::~basic_vhost_user_frontend() { close(); }

template <class Executor>
template <asio::completion_token_for<void(std::error_code)> Token>
auto basic_vhost_user_frontend<Executor>::async_open(Token&& token) {
  using op = detail::vhost_user_request_op<Executor, false>;
  return asio::async_compose<Token, void(std::error_code)>(op(state_, op::state_type::request::open, {}, 0), token,
                                                           state_->socket());
}

template <class Executor> void basic_vhost_user_frontend<Executor>::open(std::error_code& ec) {
  ec = state_->run(detail::vhost_user_frontend_state<Executor>::request::open, nullptr, 0);
}

template <class Executor>
template <asio::completion_token_for<void(std::error_code)> Token>
auto basic_vhost_user_frontend<Executor>::async_start(const vhost_user_device_setup& setup, Token&& token) {
  using op = detail::vhost_user_request_op<Executor, false>;
  return asio::async_compose<Token, void(std::error_code)>(op(state_, op::state_type::request::start, setup, 0),
                                                           token, state_->socket());
}

template <class Executor>
void basic_vhost_user_frontend<Executor>::start(const vhost_user_device_setup& setup, std::error_code& ec) {
  ec = state_->run(detail::vhost_user_frontend_state<Executor>::request::start, &setup, 0);
}

template <class Executor>
template <asio::completion_token_for<void(std::error_code, std::uint16_t)> Token>
auto basic_vhost_user_frontend<Executor>::async_stop_queue(std::uint32_t index, Token&& token) {
  using op = detail::vhost_user_request_op<Executor, true>;
  return asio::async_compose<Token, void(std::error_code, std::uint16_t)>(
      op(state_, op::state_type::request::stop, {}, index), token, state_->socket());
}

template <class Executor>
std::uint16_t basic_vhost_user_frontend<Executor>::stop_queue(std::uint32_t index, std::error_code& ec) {
  ec = state_->run(detail::vhost_user_frontend_state<Executor>::request::stop, nullptr, index);
  return ec ? 0 : state_->stopped_at();
}

template <class Executor>
template <asio::completion_token_for<void(std::error_code)> Token>
auto basic_vhost_user_frontend<Executor>::async_wait_closed(Token&& token) {
  return asio::async_compose<Token, void(std::error_code)>(detail::vhost_user_closed_op<Executor>(state_), token,
                                                           state_->socket());
}

template <class Executor>
const vhost_user_negotiation& basic_vhost_user_frontend<Executor>::negotiation() const noexcept {
  return state_->negotiation();
}

template <class Executor> std::string_view basic_vhost_user_frontend<Executor>::failure_message() const noexcept {
  return state_->failure_message();
}

template <class Executor>
const std::vector<std::uint32_t>& basic_vhost_user_frontend<Executor>::running_queues() const noexcept {
  return state_->running_queues();
}

template <class Executor> auto basic_vhost_user_frontend<Executor>::get_executor() const noexcept -> executor_type {
  return state_->executor();
}

template <class Executor>
const vhost_user_frontend_config& basic_vhost_user_frontend<Executor>::config() const noexcept {
  return state_->config();
}

template <class Executor> bool basic_vhost_user_frontend<Executor>::is_open() const noexcept {
  return state_ && state_->is_open();
}

template <class Executor> int basic_vhost_user_frontend<Executor>::native_handle() const noexcept {
  return state_ ? state_->native_handle() : -1;
}

template <class Executor> void basic_vhost_user_frontend<Executor>::cancel() {
  if (state_) state_->cancel();
}

template <class Executor> void basic_vhost_user_frontend<Executor>::close() noexcept {
  if (state_) state_->fail(errc::transport_closed);
}

} // namespace netpasst
