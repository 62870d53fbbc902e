#pragma once
/// @file transport/vhost_user.hpp
/// `netpasst::basic_vhost_user_transport`: a FrameTransport that is both the
/// vhost-user frontend (what a VMM is to its backend) and the guest's
/// virtio-net driver, so that frames reach a vhost-user backend (passt started
/// with `--vhost-user`, DPDK's vhost PMD, ...) through shared memory instead
/// of a byte stream.
///
/// What it sets up (`async_handshake`, or `handshake`), through a
/// `vhost_user_frontend` (transport/vhost_user_frontend.hpp) that it owns:
/// - "Guest memory": one `memfd` mapped shared, sealed at its size (the
///   backend can neither shrink it, which would turn our accesses into
///   SIGBUS, nor grow it), handed to the backend with `SET_MEM_TABLE` as a
///   single region whose guest-physical addresses start at 0. It holds both
///   virtqueues (split rings: descriptor table, available ring, used ring)
///   and one buffer slot per descriptor, each large enough for the 12-byte
///   `virtio_net_hdr_v1` and the largest frame, so that every frame travels
///   in one descriptor.
/// - One queue pair: queue 0 receives (the backend writes frames into the
///   slots the driver made available), queue 1 transmits. Each has a kick
///   eventfd (driver to backend) and a call eventfd (backend to driver).
/// - Features acked: `VIRTIO_F_VERSION_1` (required of the backend) and, if
///   offered, `VHOST_USER_F_PROTOCOL_FEATURES`, then of the protocol features
///   only `REPLY_ACK`; no mergeable receive buffers and no segmentation
///   offload, so frames are plain Ethernet both ways, with complete
///   checksums unless `guest_checksum_offload` asks for
///   `VIRTIO_NET_F_GUEST_CSUM` (see there). Complete even from a backend
///   that leaves them unfinished without that feature: passt's vhost-user
///   builds from before they offered it (late 2024 to mid 2026, the passt
///   of Debian 13 among them) send TCP with a checksum of 0 and mark the
///   frame `DATA_VALID` in its header. The transport computes such a
///   checksum, and completes any marked partial (`NEEDS_CSUM`), before it
///   hands the frame out (`checksums_completed` counts them); with
///   `guest_checksum_offload` it leaves them. The handshake is the frontend's
///   `open` then `start`, so its messages, acknowledgements and failure
///   reports are the frontend's.
///
/// How it moves frames:
/// - Receiving takes every frame the backend has placed in the used ring
///   (up to `max_batch_frames`) and hands them out as views into the shared
///   slots; their descriptors go back to the backend at the next receive.
///   When the used ring is empty it waits on the receive call eventfd.
///   The backend can still write to a slot it has handed back, so a
///   consumer that parses a frame should read each byte once (copy what
///   it checks); the library's own consumers do. The transport itself
///   reads each used entry once and keeps every view inside its slot,
///   whatever the backend writes to the rings.
/// - Sending copies the frame behind a zeroed header into a free transmit
///   slot and publishes it; the span form publishes a prefix and kicks once.
///   When every transmit descriptor is in the backend's hands, `try_send`
///   refuses with `errc::would_block` and `async_wait_writable` waits on the
///   transmit call eventfd for the backend to return some.
/// - Kicks honour `VRING_USED_F_NO_NOTIFY`. No heap allocation after the
///   handshake.
/// - The control socket is watched after the handshake: the backend closing
///   it (or sending anything unasked) ends the transport with
///   `errc::connection_closed` (or `errc::protocol_error`).
///
/// The handshake comes in two forms. `async_handshake` never blocks: it
/// writes and reads as far as the socket allows and waits on the reactor
/// in between, so a backend that is slow to answer holds up nothing else on
/// the executor. `handshake` does the same steps blocking the calling
/// thread, for tools and tests. Each wait is bounded by
/// `vhost_user_transport_config::reply_timeout`.
///
/// Thread safety: like an Asio socket. Distinct objects: safe. One object:
/// calls and completion handlers must not run concurrently (one thread or a
/// strand). At most one `async_receive` and one `async_wait_writable` may be
/// outstanding at a time.

#include <netpasst/error.hpp>
#include <netpasst/frame.hpp>
#include <netpasst/transport/vhost_user_frontend.hpp>
#include <netpasst/unique_fd.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/execution_context.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <system_error>
#include <type_traits>

namespace netpasst {

/// Sizes of a vhost-user transport's rings, its handshake deadline and the
/// one offload it may ask for. Every field has a default.
struct vhost_user_transport_config {
  /// Descriptors per virtqueue: a power of two, 2 to 1024 (passt's limit).
  /// Each costs a 64 KiB slot of shared memory per queue.
  std::uint16_t queue_size = 256;
  /// The most frames one receive hands out (at least 1).
  std::size_t max_batch_frames = 256;
  /// How long the handshake waits for each reply of the backend.
  std::chrono::milliseconds reply_timeout{5000};
  /// Ack `VIRTIO_NET_F_GUEST_CSUM` when the backend offers it: the backend
  /// may then leave the TCP and UDP checksums of the frames it sends
  /// unfinished (passt writes 0 and skips a pass over every payload: 12% of
  /// its CPU samples in a host-to-guest bulk TCP profile), marking them
  /// valid or partial in a header the transport does not pass on. Only for
  /// a receiver that does not verify them, such as `tap_transport` with
  /// `trust_checksums`, which rewrites the field for the kernel; a receiver
  /// that verifies drops such frames. It also stops the transport from
  /// completing checksums a backend left unfinished without the feature
  /// (see the file comment). Frames sent are unaffected.
  /// `vhost_user_negotiation::guest_checksum_offload()` tells whether it
  /// was agreed.
  bool guest_checksum_offload = false;
};

/// What a vhost-user transport has moved, plus its ring events.
struct vhost_user_counters : transport_counters {
  /// Frames the backend placed in a receive slot that no FrameTransport
  /// carries (shorter than 14 or longer than 65535 bytes after the
  /// header), dropped.
  std::uint64_t frames_dropped_received = 0;
  /// `try_send` refusals with `errc::would_block` (no free transmit slot).
  std::uint64_t sends_would_block = 0;
  /// Kicks written to the transmit queue's eventfd.
  std::uint64_t kicks = 0;
  /// Kicks left out because the backend asked for none (`NO_NOTIFY`).
  std::uint64_t kicks_suppressed = 0;
  /// Batches handed out by receives.
  std::uint64_t batches = 0;
  /// Received frames whose TCP or UDP checksum the transport completed
  /// because the backend left it unfinished (see the file comment).
  std::uint64_t checksums_completed = 0;
};

namespace detail {
template <class Executor> class vhost_user_state;
}

/// A FrameTransport over a vhost-user backend (see the file comment).
///
/// Errors, reported through `std::error_code`:
/// - `errc::protocol_error`: the backend's reply was malformed, or it lacks
///   `VIRTIO_F_VERSION_1`, or a `REPLY_ACK` reported failure (handshake), or
///   it wrote on the control socket unasked, or returned in a used ring a
///   descriptor it did not hold: out of range, or returned twice
///   (afterwards). The transport then closes.
/// - `errc::connection_closed`: the backend closed the control socket.
/// - `errc::start_timeout`: the backend did not answer (or take a message)
///   within the reply timeout during the handshake.
/// - `errc::frame_too_short` / `errc::frame_too_long`: `try_send` refused a
///   frame outside 14..65535 bytes; counted, the transport stays usable.
/// - `errc::would_block`: no free transmit slot; `async_wait_writable`.
/// - `errc::transport_closed`: `close()` was called, or no handshake was
///   done yet.
/// - `errc::operation_in_progress`: a second handshake.
/// - `asio::error::operation_aborted`: `cancel()` or a cancellation slot.
/// - Any OS error, in `std::system_category()`; it closes the transport.
template <class Executor = asio::any_io_executor>
class basic_vhost_user_transport {
public:
  /// The executor completions run on (unless the token says otherwise).
  using executor_type = Executor;
  /// What the constructors take besides the executor and the socket.
  using config_type = vhost_user_transport_config;
  /// The transport's name in status lines.
  static constexpr std::string_view kind = "vhost-user";

  /// Takes ownership of `socket`, a connected unix stream socket to the
  /// backend, and allocates the shared memory; nothing is sent until
  /// `handshake`.
  /// @throws std::system_error if `socket` is empty, the configuration is
  ///         invalid (queue size) or the memory cannot be made.
  basic_vhost_user_transport(const executor_type& executor, unique_fd socket,
                             const vhost_user_transport_config& config = {});

  /// As above, with the execution context's executor.
  template <class ExecutionContext>
    requires std::is_convertible_v<ExecutionContext&, asio::execution_context&>
  basic_vhost_user_transport(ExecutionContext& context, unique_fd socket,
                             const vhost_user_transport_config& config = {})
      : basic_vhost_user_transport(executor_type(context.get_executor()), std::move(socket), config) {}

  /// Moves the device; `other` is left closed (only destruction,
  /// assignment, `is_open()` and `close()` are valid on it). Pending
  /// operations stay with the device.
  basic_vhost_user_transport(basic_vhost_user_transport&&) noexcept = default;
  /// Closes this transport (as `close()`), then takes `other`'s.
  basic_vhost_user_transport& operator=(basic_vhost_user_transport&& other) noexcept;
  /// Closes the socket and the eventfds, as `close()`.
  ~basic_vhost_user_transport();

  /// Negotiates features, shares the memory and starts both queues (see the
  /// file comment), without blocking. Completion signature
  /// `void(std::error_code)`, never inside this call. On error the
  /// transport is closed with that error and `negotiation().failed_step`
  /// names the step. Cancellation (total, through the token's slot, or
  /// `cancel()`) ends it with `asio::error::operation_aborted` and closes
  /// the transport; `close()` ends it with `errc::transport_closed`. A
  /// second handshake completes with `errc::operation_in_progress`.
  template <asio::completion_token_for<void(std::error_code)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_handshake(Token&& token = asio::default_completion_token_t<executor_type>{});
  /// The same steps, blocking the calling thread for at most
  /// `reply_timeout` per wait; errors as above.
  void handshake(std::error_code& ec);
  /// Throwing form. @throws std::system_error naming the step that failed.
  void handshake();

  /// What was negotiated; zeros before the handshake.
  const vhost_user_negotiation& negotiation() const noexcept;
  /// Why the handshake failed, in words, naming the message ("SET_MEM_TABLE:
  /// the backend refused it (status 1)"), or why a used ring ended the
  /// transport afterwards ("receive queue: the backend returned descriptor
  /// 3, which it did not hold"); empty while neither happened.
  std::string_view failure_message() const noexcept;

  /// The executor given at construction.
  executor_type get_executor() const noexcept;
  /// The configuration in effect.
  const vhost_user_transport_config& config() const noexcept;
  /// True between a successful handshake and `close()` or the backend's end.
  bool is_open() const noexcept;
  /// Frames and bytes moved and dropped so far.
  vhost_user_counters counters() const noexcept;

  /// Copies one frame into a free transmit slot, publishes and kicks. Never
  /// blocks. False with `ec` set to `errc::frame_too_short`/`frame_too_long`,
  /// `errc::would_block` or the error that closed the transport.
  bool try_send(frame f, std::error_code& ec);
  /// Publishes the longest prefix of `frames` that free slots hold, kicks
  /// once, and returns its length; `ec` says why the next was not taken.
  std::size_t try_send(std::span<const frame> frames, std::error_code& ec);

  /// Completes once a transmit slot is free (at once, posted, if one is).
  /// Completion signature `void(std::error_code)`.
  template <asio::completion_token_for<void(std::error_code)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_wait_writable(Token&& token = asio::default_completion_token_t<executor_type>{});

  /// Receives at least one frame. Completion signature
  /// `void(std::error_code, frame_batch)`: views into shared memory, valid
  /// until the next receive. Never completes inside this call.
  template <asio::completion_token_for<void(std::error_code, frame_batch)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_receive(Token&& token = asio::default_completion_token_t<executor_type>{});

  /// Pending operations complete with `asio::error::operation_aborted`; the
  /// transport stays open.
  void cancel();
  /// Closes the control socket (a backend started with `--fd` then exits)
  /// and the eventfds. Pending and later operations complete with
  /// `errc::transport_closed`. Idempotent, never throws.
  void close() noexcept;

private:
  std::shared_ptr<detail::vhost_user_state<Executor>> state_;
};

/// The vhost-user transport on `asio::any_io_executor`.
using vhost_user_transport = basic_vhost_user_transport<>;

} // namespace netpasst

#include <netpasst/transport/impl/vhost_user.hpp>
