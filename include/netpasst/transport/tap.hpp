#pragma once
/// @file transport/tap.hpp
/// `netpasst::basic_tap_transport`: a FrameTransport over a Linux tap device
/// (`IFF_TAP | IFF_NO_PI`), so that the network stack of a Linux network
/// namespace can stand in for a guest kernel: bridge the tap to passt (see
/// bridge.hpp) and processes in the namespace talk through passt as a VM's
/// would.
///
/// How it moves frames:
/// - The kernel hands out one frame per `read` and takes one per `write`; a
///   tap carries no framing of its own beyond the optional virtio-net header.
/// - Receiving reads frames back to back into the transport's own buffer
///   until the tap has no more (`EAGAIN`), the buffer cannot hold another
///   frame of the largest size, or `max_batch_frames` were read, and hands
///   them out as one `frame_batch` of views into that buffer. Asio waits for
///   readiness edge-triggered, so a receive only waits after a read said
///   `EAGAIN`; a batch that stopped for room is followed by reads at once.
/// - Sending writes the frame at once (one `write`, a `writev` with the
///   virtio-net header; the kernel copies it).
///   The tap refuses with `EAGAIN` only when its socket send budget is used
///   up; `try_send` then refuses with `errc::would_block` and
///   `async_wait_writable` waits for the tap to be writable again.
/// - While the interface is administratively down the kernel refuses every
///   written frame (`EIO`): such frames are taken, dropped and counted in
///   `tap_counters::frames_dropped_link_down`, as a cable with no link
///   would; so are frames the kernel has no memory for. Nothing is dropped
///   without being counted.
/// - No heap allocation after construction, and no copy besides the kernel's.
///
/// Checksum offload (`tap_transport_config::checksum_offload`, on by
/// default): the tap is opened with a virtio-net header (`IFF_VNET_HDR`) and
/// told that its reader completes checksums (`TUNSETOFFLOAD` with
/// `TUN_F_CSUM`, no segmentation offload, so no frame exceeds the MTU). The
/// namespace's stack then leaves TCP and UDP checksums partial and may hand
/// out data in pages rather than one linear copy, which is what makes a tap
/// fast. Frames handed out by a receive always carry complete checksums: the
/// transport computes those the kernel left partial (one pass over the
/// segment, the work the kernel saved) before the batch is delivered, so the
/// peer (passt) never sees a partial one. The header never leaves the
/// transport; frames are plain Ethernet both ways.
///
/// Trusted checksums (`tap_transport_config::trust_checksums`, off by
/// default, needs the offload): the peer's checksums are taken as correct,
/// and the namespace's stack is spared verifying them. Each TCP or UDP frame
/// sent (IPv4 not fragmented, or IPv6 with TCP/UDP as the first next header)
/// goes to the kernel as a frame whose checksum is partial, as a local
/// sender's would be: the header points at the checksum field and the field
/// is written with the pseudo-header sum (the frame itself is not modified;
/// the write gathers around the field). The kernel delivers such data
/// without checking it, and recomputes a full checksum from the data if the
/// namespace forwards the frame elsewhere. A frame corrupted before it was
/// sent therefore reaches its socket undetected: turn this on only for a
/// peer that computes its checksums itself over data it holds intact, as
/// passt does for every frame it builds.
///
/// Lifetime of the device: a tap the transport creates exists as long as its
/// descriptor is open (it is not made persistent), so closing or destroying
/// the transport, or the process ending, removes it. Opening an existing
/// persistent tap attaches to it and leaves it in place.
///
/// Thread safety: like an Asio socket. Distinct objects: safe. One object:
/// calls and completion handlers must not run concurrently (one thread or a
/// strand). At most one `async_receive` and one `async_wait_writable` may be
/// outstanding at a time.

#include <netpasst/error.hpp>
#include <netpasst/frame.hpp>
#include <netpasst/guest/packet.hpp>
#include <netpasst/unique_fd.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/execution_context.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>

namespace netpasst {

/// Which tap device to open, and in which network namespace.
struct tap_device_options {
  /// Interface name, 1 to 15 bytes, no '/' or white space. An existing tap
  /// of that name (a persistent one) is attached to; otherwise it is
  /// created. Empty: the kernel picks a free `tapN`.
  std::string name;
  /// The network namespace to open the tap in: a name under `/run/netns`
  /// (as `ip netns add` makes them) or, if it contains a '/', a path to a
  /// namespace file (e.g. `/proc/1234/ns/net`). Empty: the caller's.
  std::string netns;
  /// An open network namespace descriptor (borrowed, not closed) to open the
  /// tap in, instead of `netns`; -1: none. Setting both is an error.
  int netns_fd = -1;
  /// If set, the interface gets this MAC address; otherwise the kernel's
  /// random one stays.
  std::optional<packet::mac_address> mac;
  /// Open with a virtio-net header (`IFF_VNET_HDR`, 10 bytes,
  /// `TUNSETVNETHDRSZ`) and checksum offload (`TUNSETOFFLOAD` with
  /// `TUN_F_CSUM` only). A tap transport sets this from its config.
  bool virtio_net_header = false;
};

/// An open tap device: the descriptor (close-on-exec, non-blocking) and the
/// interface name the kernel gave it.
struct tap_device {
  unique_fd fd;
  std::string name;
};

/// Opens (creating if needed) the tap `options.name` in the given network
/// namespace, with `IFF_TAP | IFF_NO_PI`, and with a virtio-net header and
/// checksum offload if `options.virtio_net_header` says so.
///
/// A namespace other than the caller's is entered by a short-lived thread
/// that joins it (`setns`), opens `/dev/net/tun` there (the device belongs
/// to the namespace `/dev/net/tun` was opened in) and ends: the calling
/// thread's namespace is never changed.
///
/// Errors (`ec`; the returned device is empty): `std::errc::invalid_argument`
/// for a bad name or for both `netns` and `netns_fd`; the namespace file's
/// `open` error (`ENOENT`: no such namespace); `EINVAL` from `setns` when the
/// file is not a network namespace; `EPERM` without CAP_NET_ADMIN; the
/// `TUNSETIFF` error (`EBUSY` when a non-tap or a tap with other flags has
/// that name); the `TUNSETVNETHDRSZ`/`TUNSETOFFLOAD` error. The throwing
/// form names the step and the inputs.
tap_device open_tap_device(const tap_device_options& options, std::error_code& ec);
/// Throwing form of `open_tap_device`. @throws std::system_error whose
/// `what()` names the tap, the namespace and the step that failed.
tap_device open_tap_device(const tap_device_options& options);

/// Sizes of a tap transport's receive side, and its checksum handling.
/// Every field has a default.
struct tap_transport_config {
  /// The receive buffer, i.e. what one batch can hold. Raised to at least
  /// 2 x 65536 bytes: a read is only made with room for the largest frame.
  std::size_t receive_buffer_bytes = std::size_t{1} << 20;
  /// The most frames one receive hands out (at least 1).
  std::size_t max_batch_frames = 1024;
  /// Checksum offload (see the file comment). A tap the transport opens gets
  /// a virtio-net header when this is set. A descriptor handed in keeps the
  /// header it was opened with: with one, the transport sets the offload to
  /// `TUN_F_CSUM` (or none when this is false), replacing any segmentation
  /// offload; without one, there is no offload and this reads false.
  bool checksum_offload = true;
  /// Take the peer's checksums as correct and spare the namespace's stack
  /// verifying them (see the file comment). Only with a virtio-net header;
  /// reads false without one.
  bool trust_checksums = false;
};

/// What a tap transport has moved, plus what it had to drop.
struct tap_counters : transport_counters {
  /// Frames taken by `try_send` while the interface was down (the kernel
  /// refused them with EIO) and therefore dropped.
  std::uint64_t frames_dropped_link_down = 0;
  /// Frames taken by `try_send` that the kernel could not allocate memory
  /// for (ENOMEM, ENOBUFS), dropped as a NIC out of buffers would.
  std::uint64_t frames_dropped_no_memory = 0;
  /// Frames read from the tap that no FrameTransport carries (shorter than
  /// 14 or longer than 65535 bytes), or whose virtio-net header asks for what
  /// the transport does not do (segmentation, a checksum outside the
  /// frame), dropped.
  std::uint64_t frames_dropped_received = 0;
  /// Frames received with a partial checksum, completed by the transport.
  std::uint64_t checksums_completed = 0;
  /// Frames sent with their checksum marked partial (`trust_checksums`).
  std::uint64_t checksums_trusted = 0;
  /// `try_send` refusals with `errc::would_block` (the frame was not taken).
  std::uint64_t sends_would_block = 0;
  /// `read` calls that returned a frame, and batches handed out: their ratio
  /// is the average batch.
  std::uint64_t reads = 0;
  std::uint64_t batches = 0;
};

namespace detail {
template <class Executor> class tap_state;
}

/// A FrameTransport over a tap device (see the file comment).
///
/// Errors, reported through `std::error_code`:
/// - `errc::frame_too_short` / `errc::frame_too_long`: `try_send` refused a
///   frame outside 14..65535 bytes; counted in `frames_refused`, never
///   written; the transport stays usable.
/// - `errc::would_block`: the tap's send budget is used up (EAGAIN);
///   `async_wait_writable`, then send again.
/// - `errc::connection_closed`: the interface was deleted under the
///   transport (the kernel answers `EBADFD`).
/// - `errc::transport_closed`: `close()` was called (or the transport was
///   destroyed, for operations still pending then).
/// - `asio::error::operation_aborted`: `cancel()` or a cancellation slot
///   (any cancellation type) ended an operation; the transport stays open.
/// - Any other OS error, in `std::system_category()`; it closes the transport.
template <class Executor = asio::any_io_executor>
class basic_tap_transport {
public:
  /// The executor completions run on (unless the token says otherwise).
  using executor_type = Executor;
  /// What the constructors take besides the executor and the device.
  using config_type = tap_transport_config;
  /// The transport's name in status lines.
  static constexpr std::string_view kind = "tap";

  /// This transport type with another executor type.
  template <class OtherExecutor> struct rebind_executor {
    using other = basic_tap_transport<OtherExecutor>;
  };

  /// Opens the tap described by `device` (see `open_tap_device`), with a
  /// virtio-net header if `config.checksum_offload` is set (whatever
  /// `device.virtio_net_header` says).
  /// @throws std::system_error naming the tap, the namespace and the step.
  basic_tap_transport(const executor_type& executor, const tap_device_options& device,
                      const tap_transport_config& config = {});

  /// Takes ownership of `fd`, an open tap descriptor (`/dev/net/tun` after
  /// `TUNSETIFF`), and makes it non-blocking and close-on-exec. A virtio-net
  /// header (`IFF_VNET_HDR`) is detected, its size asked of the kernel
  /// (`TUNGETVNETHDRSZ`), and the offload set as `config` says.
  /// @throws std::system_error if `fd` is empty, not a tap with `IFF_NO_PI`,
  ///         or its offload cannot be set (then `fd` is closed).
  basic_tap_transport(const executor_type& executor, unique_fd fd, const tap_transport_config& config = {});

  /// As above, with the execution context's executor.
  template <class ExecutionContext>
    requires std::is_convertible_v<ExecutionContext&, asio::execution_context&>
  basic_tap_transport(ExecutionContext& context, const tap_device_options& device,
                      const tap_transport_config& config = {})
      : basic_tap_transport(executor_type(context.get_executor()), device, config) {}

  /// As above, with the execution context's executor.
  template <class ExecutionContext>
    requires std::is_convertible_v<ExecutionContext&, asio::execution_context&>
  basic_tap_transport(ExecutionContext& context, unique_fd fd, const tap_transport_config& config = {})
      : basic_tap_transport(executor_type(context.get_executor()), std::move(fd), config) {}

  /// Moves the device; `other` is left closed (only destruction or
  /// assignment are valid on it). Pending operations stay with the device.
  basic_tap_transport(basic_tap_transport&& other) noexcept = default;
  /// Closes this transport (as `close()`), then takes `other`'s device.
  basic_tap_transport& operator=(basic_tap_transport&& other) noexcept;

  /// Closes the descriptor, as `close()` (a tap the transport created goes away).
  ~basic_tap_transport();

  /// The executor given at construction.
  executor_type get_executor() const noexcept;

  /// The configuration in effect (after minimums were applied, and with
  /// `checksum_offload`/`trust_checksums` false when the tap has no
  /// virtio-net header).
  const tap_transport_config& config() const noexcept;

  /// The interface name (inside the namespace it was opened in).
  const std::string& name() const noexcept;

  /// The interface's current MAC address (asked of the kernel).
  /// @throws std::system_error once the transport is closed.
  packet::mac_address mac() const;

  /// True until `close()` or the deletion of the interface.
  bool is_open() const noexcept;

  /// The tap descriptor, still owned by the transport; -1 once closed.
  int native_handle() const noexcept;

  /// Frames and bytes moved and dropped so far.
  tap_counters counters() const noexcept;

  /// Writes one frame and never blocks. Returns true when the kernel took it
  /// (or dropped it because the interface is down, counted). Returns false
  /// with `ec` set to `errc::frame_too_short`/`frame_too_long`,
  /// `errc::would_block` or the error that closed the transport.
  bool try_send(frame f, std::error_code& ec);

  /// Writes the longest prefix of `frames` the tap takes and returns its
  /// length; when shorter than `frames`, `ec` says why `frames[result]` was
  /// not taken (as for the single-frame form).
  std::size_t try_send(std::span<const frame> frames, std::error_code& ec);

  /// Waits until the tap takes frames again. Completes at once (posted) if
  /// no send was refused since the last wait. Completion signature:
  /// `void(std::error_code)`; errors: `errc::transport_closed`,
  /// `errc::connection_closed`, `asio::error::operation_aborted`.
  template <asio::completion_token_for<void(std::error_code)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_wait_writable(Token&& token = asio::default_completion_token_t<executor_type>{});

  /// Receives at least one frame. Completion signature
  /// `void(std::error_code, frame_batch)`: on success 1 to
  /// `max_batch_frames` frames, views valid until the next receive; on error
  /// an empty batch. Never completes inside this call.
  template <asio::completion_token_for<void(std::error_code, frame_batch)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_receive(Token&& token = asio::default_completion_token_t<executor_type>{});

  /// Makes pending `async_receive`/`async_wait_writable` complete with
  /// `asio::error::operation_aborted`. The transport stays open.
  void cancel();

  /// Closes the descriptor. Pending operations complete with
  /// `errc::transport_closed`; so does every later operation. Idempotent,
  /// never throws.
  void close() noexcept;

private:
  std::shared_ptr<detail::tap_state<Executor>> state_;
};

/// The tap transport on `asio::any_io_executor`.
using tap_transport = basic_tap_transport<>;

} // namespace netpasst

#include <netpasst/transport/impl/tap.hpp>
