#pragma once
/// @file transport/vhost_user_frontend.hpp
/// `netpasst::basic_vhost_user_frontend` (alias `vhost_user_frontend`): the
/// control side of vhost-user, for a VMM that owns its virtio-net device.
/// The VMM keeps its guest memory, the split rings its guest's driver laid
/// out there and its eventfds (an ioeventfd for the guest's notifications,
/// an irqfd for the backend's interrupts); the frontend hands them to the
/// backend (passt started with `--vhost-user`, DPDK's vhost PMD, ...), which
/// then moves frames in and out of guest memory itself: no copy and no VMM
/// thread on the data path. `vhost_user_transport` is built on it, with its
/// own memory and rings standing in for a guest.
///
/// A VMM drives it in three requests:
/// 1. `async_open`, once connected: `GET_FEATURES`, then, if the backend
///    offers protocol features, `GET_PROTOCOL_FEATURES` and
///    `SET_PROTOCOL_FEATURES`, then `SET_OWNER`. The device features to
///    offer the guest are then `negotiation().offered_features`.
/// 2. `async_start`, when the guest's driver is ready: `SET_FEATURES` with
///    the features the driver accepted, `SET_MEM_TABLE` with the memory
///    regions (one descriptor each), and per queue `SET_VRING_NUM`,
///    `SET_VRING_BASE`, `SET_VRING_ADDR`, `SET_VRING_KICK`, `SET_VRING_CALL`;
///    then `SET_VRING_ENABLE` for each queue when protocol features were
///    agreed (the backend keeps rings disabled until then).
/// 3. `async_stop_queue`, per queue, when the device is reset or paused:
///    `GET_VRING_BASE`, after which the backend no longer touches that ring.
///    It yields the available index the backend would go on from: the
///    `next_available` that resumes the queue in a later `async_start`.
///    Once every started queue is stopped, `async_start` may run again, with
///    the same or new memory and rings.
///
/// Protocol features: only `REPLY_ACK` is acked (when the configuration
/// allows it); each setting message then waits for the backend's status,
/// and a refusal names the message. Without it, `async_start` ends with a
/// `GET_FEATURES` round trip, so that the backend has read every message
/// before the guest's first notification.
///
/// Before anything is sent, `async_start` checks the setup and refuses one
/// that a backend would misread with `errc::invalid_device_setup`,
/// `failure_message()` naming the field (the frontend stays usable):
/// 1 to 8 memory regions (the protocol's limit for `SET_MEM_TABLE`), each
/// with a descriptor and a size, none overlapping another in guest-physical
/// or in user addresses, none wrapping around; 1 to 256 queues with
/// distinct indices below 256; queue sizes a power of two up to 32768; each
/// ring aligned as the virtio spec asks (descriptors 16, available 2, used
/// 4) and lying whole inside one region's user addresses; features that the
/// backend offered.
///
/// Addresses: descriptors in the rings hold guest-physical addresses, as a
/// guest writes them; `SET_VRING_ADDR` carries the rings' addresses in the
/// VMM's own mapping (`user_address` space), as QEMU sends them; the backend
/// translates both through the memory table.
///
/// Each wait for the backend is bounded by `reply_timeout`. The asynchronous
/// requests never block the executor; the blocking forms (`open`, `start`,
/// `stop_queue`) wait with `poll()` and are meant for tools and tests.
/// A request that fails on the connection (reply timeout, malformed reply,
/// refusal, the backend's end, cancellation) closes the frontend: what the
/// backend holds is unknown after it. `failure_message()` says what
/// happened, `negotiation().failed_step` names the message.
///
/// Thread safety: like an Asio socket. Distinct objects: safe. One object:
/// calls and completion handlers must not run concurrently. At most one
/// request (open, start, stop) runs at a time; another completes with
/// `errc::operation_in_progress`. `async_wait_closed` may be pending
/// alongside.

#include <netpasst/error.hpp>
#include <netpasst/unique_fd.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/execution_context.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

namespace netpasst {

/// One region of the VMM's guest memory, as the backend is to map it.
struct vhost_user_memory_region {
  /// A descriptor the backend can map (a memfd, a hugetlbfs file). Borrowed:
  /// it must stay open until `async_start` completes; the backend gets a
  /// duplicate.
  int fd = -1;
  /// Where the guest sees the region: descriptors hold these addresses.
  std::uint64_t guest_physical = 0;
  /// Bytes in the region.
  std::uint64_t size = 0;
  /// Where the VMM mapped the region: ring addresses are given in this space.
  std::uint64_t user_address = 0;
  /// Where the region starts in `fd`.
  std::uint64_t mmap_offset = 0;
};

/// One virtqueue (split ring) as the guest's driver set it up.
struct vhost_user_queue {
  /// The queue's index on the device (virtio-net: 0 receive, 1 transmit, ...).
  std::uint32_t index = 0;
  /// Descriptors in the ring: a power of two, at most 32768.
  std::uint16_t size = 0;
  /// The available-ring index the backend starts from: 0 for a fresh ring,
  /// what `async_stop_queue` returned to resume one.
  std::uint16_t next_available = 0;
  /// The descriptor table, available ring and used ring, in the VMM's
  /// address space (`vhost_user_memory_region::user_address`).
  std::uint64_t descriptors = 0, available = 0, used = 0;
  /// The eventfd the guest's notifications reach (the VMM's ioeventfd), or
  /// -1 for none: the backend then polls the ring. Borrowed as `fd` above.
  int kick_fd = -1;
  /// The eventfd the backend signals when it used buffers (the VMM's
  /// irqfd), or -1 for none. Borrowed as `fd` above.
  int call_fd = -1;
};

/// What `async_start` hands the backend.
struct vhost_user_device_setup {
  /// The virtio features the guest's driver accepted, each one the backend
  /// offered. `VHOST_USER_F_PROTOCOL_FEATURES` (bit 30) is the frontend's
  /// own: it is sent exactly when protocol features were agreed.
  std::uint64_t features = 0;
  std::vector<vhost_user_memory_region> memory;
  std::vector<vhost_user_queue> queues;
};

/// A frontend's reply deadline and protocol choices.
struct vhost_user_frontend_config {
  /// How long a request waits for each reply (or for the socket to take a
  /// message).
  std::chrono::milliseconds reply_timeout{5000};
  /// Ack `VHOST_USER_PROTOCOL_F_REPLY_ACK` when offered (see the file comment).
  bool reply_ack = true;
};

/// What the backend offered and what was agreed.
struct vhost_user_negotiation {
  std::uint64_t offered_features = 0;
  std::uint64_t acked_features = 0;
  std::uint64_t offered_protocol_features = 0;
  std::uint64_t acked_protocol_features = 0;
  /// Whether `VIRTIO_NET_F_GUEST_CSUM` was acked (see
  /// `vhost_user_transport_config::guest_checksum_offload`).
  bool guest_checksum_offload() const noexcept { return acked_features & (1ull << 1); }
  /// The message a failed request stopped at ("SET_MEM_TABLE",
  /// "GET_FEATURES (the backend lacks VIRTIO_F_VERSION_1)", ...); empty while
  /// none failed.
  std::string_view failed_step;
};

namespace detail {
template <class Executor> class vhost_user_frontend_state;
}

/// The frontend of the file comment.
///
/// Errors, reported through `std::error_code`:
/// - `errc::invalid_device_setup`: the request was refused before anything
///   was sent (a setup a backend would misread, a start before the open or
///   while queues run, a second open, a stop of a queue that is not
///   running); `failure_message()` says which. The frontend stays open.
/// - `errc::protocol_error`: a malformed reply, a refusal under
///   `REPLY_ACK`, or a message the backend sent unasked.
/// - `errc::connection_closed`: the backend closed the socket.
/// - `errc::start_timeout`: no reply (or no room for a message) within
///   `reply_timeout`.
/// - `errc::operation_in_progress`: a request is already running.
/// - `errc::transport_closed`: `close()` was called.
/// - `asio::error::operation_aborted`: `cancel()` or a cancellation slot.
/// - Any OS error, in `std::system_category()`.
template <class Executor = asio::any_io_executor>
class basic_vhost_user_frontend {
public:
  /// The executor completions run on (unless the token says otherwise).
  using executor_type = Executor;

  /// Takes ownership of `socket`, a connected unix stream socket to the
  /// backend; nothing is sent until a request.
  /// @throws std::system_error if `socket` is empty or cannot be made
  ///         non-blocking.
  basic_vhost_user_frontend(const executor_type& executor, unique_fd socket,
                            const vhost_user_frontend_config& config = {});

  /// As above, with the execution context's executor.
  template <class ExecutionContext>
    requires std::is_convertible_v<ExecutionContext&, asio::execution_context&>
  basic_vhost_user_frontend(ExecutionContext& context, unique_fd socket, const vhost_user_frontend_config& config = {})
      : basic_vhost_user_frontend(executor_type(context.get_executor()), std::move(socket), config) {}

  /// Moves the connection; `other` is left closed (only destruction,
  /// assignment, `is_open()` and `close()` are valid on it). Pending
  /// operations stay with the connection.
  basic_vhost_user_frontend(basic_vhost_user_frontend&&) noexcept = default;
  /// Closes this frontend (as `close()`), then takes `other`'s.
  basic_vhost_user_frontend& operator=(basic_vhost_user_frontend&& other) noexcept;
  /// Closes the socket, as `close()`.
  ~basic_vhost_user_frontend();

  /// Learns the backend's features and becomes its owner (step 1 of the file
  /// comment). Completion signature `void(std::error_code)`, never inside
  /// this call.
  template <asio::completion_token_for<void(std::error_code)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_open(Token&& token = asio::default_completion_token_t<executor_type>{});
  /// Blocking form.
  void open(std::error_code& ec);

  /// Hands the device to the backend (step 2). The setup is copied before
  /// this returns; its descriptors must stay open until completion.
  /// Completion signature `void(std::error_code)`, never inside this call.
  template <asio::completion_token_for<void(std::error_code)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_start(const vhost_user_device_setup& setup,
                   Token&& token = asio::default_completion_token_t<executor_type>{});
  /// Blocking form.
  void start(const vhost_user_device_setup& setup, std::error_code& ec);

  /// Stops queue `index` (step 3). Completion signature
  /// `void(std::error_code, std::uint16_t next_available)`, never inside
  /// this call.
  template <asio::completion_token_for<void(std::error_code, std::uint16_t)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_stop_queue(std::uint32_t index, Token&& token = asio::default_completion_token_t<executor_type>{});
  /// Blocking form; returns `next_available`.
  std::uint16_t stop_queue(std::uint32_t index, std::error_code& ec);

  /// Completes when the connection ends: the backend closed it
  /// (`errc::connection_closed`) or wrote to it unasked
  /// (`errc::protocol_error`; the frontend is then closed), or `close()`
  /// (`errc::transport_closed`). Requests may run meanwhile. Completion
  /// signature `void(std::error_code)`, never inside this call.
  template <asio::completion_token_for<void(std::error_code)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_wait_closed(Token&& token = asio::default_completion_token_t<executor_type>{});

  /// What was offered and agreed so far.
  const vhost_user_negotiation& negotiation() const noexcept;
  /// Why the last request failed, in words ("queue 1: the used ring ...
  /// lies in no memory region", "SET_MEM_TABLE: the backend refused it");
  /// empty while none failed.
  std::string_view failure_message() const noexcept;
  /// The queues started and not stopped since, by index (valid until the
  /// next request ends).
  const std::vector<std::uint32_t>& running_queues() const noexcept;

  /// The executor given at construction.
  executor_type get_executor() const noexcept;
  /// The configuration in effect.
  const vhost_user_frontend_config& config() const noexcept;
  /// True until `close()` or a request's failure on the connection.
  bool is_open() const noexcept;
  /// The socket's descriptor, -1 once closed.
  int native_handle() const noexcept;

  /// Pending operations complete with `asio::error::operation_aborted`; a
  /// request cut short so closes the frontend.
  void cancel();
  /// Closes the socket (a backend started with `--fd` then exits). Pending
  /// and later operations complete with `errc::transport_closed`.
  /// Idempotent, never throws.
  void close() noexcept;

private:
  std::shared_ptr<detail::vhost_user_frontend_state<Executor>> state_;
};

/// The vhost-user frontend on `asio::any_io_executor`.
using vhost_user_frontend = basic_vhost_user_frontend<>;

} // namespace netpasst

#include <netpasst/transport/impl/vhost_user_frontend.hpp>
