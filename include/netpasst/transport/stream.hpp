#pragma once
/// @file transport/stream.hpp
/// `netpasst::basic_stream_transport`: the FrameTransport for passt's stream
/// protocol (QEMU's `-netdev stream`): each frame is a 4-byte big-endian
/// length, then the raw Ethernet frame, with no virtio-net header. A length
/// and its frame are called a record below.
///
/// Built for throughput:
/// - Sending copies each frame behind its length header into one send ring
///   and writes the ring with few system calls for many frames, cut the way
///   `config.write_mode` says (see `stream_write_mode`: by default so that
///   every passt version reads every frame). Optionally a frame of at least
///   `direct_write_bytes` is written straight from the caller's memory when
///   the ring can be emptied first (no copy).
/// - Receiving reads up to the whole receive buffer per `recv` and parses the
///   frames in place into a preallocated array of views: the `frame_batch`.
///   Any split of the incoming stream is accepted.
/// - Asio is used only to wait for readiness (`async_wait`); all I/O is done
///   with non-blocking system calls by the transport itself.
/// - No heap allocation after construction, and no system call per frame.
///
/// When bytes reach the socket: a frame accepted by `try_send` is written
/// (a) at once when it is a direct write (see `direct_write_bytes`), (b) at once
/// when the ring then holds `flush_threshold_bytes` or more, (c) otherwise by
/// a handler posted to the executor by the first `try_send` after the ring
/// was empty, i.e. as soon as the caller returns to the event loop, and (d)
/// whenever `flush`, `send` or `async_wait_writable` is called. Bytes the
/// socket does not take are written when it becomes writable again, as long
/// as the executor runs.
///
/// Thread safety: like an Asio socket. Distinct objects: safe. One object:
/// unsafe; calls and completion handlers must not run concurrently (use one
/// thread or a strand). At most one `async_receive`/`receive` and one
/// `async_wait_writable` may be outstanding at a time.

#include <netpasst/error.hpp>
#include <netpasst/frame.hpp>
#include <netpasst/unique_fd.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/execution_context.hpp>
#include <asio/posix/basic_stream_descriptor.hpp>

#include <cstddef>
#include <memory>
#include <span>
#include <system_error>
#include <string_view>
#include <type_traits>

namespace netpasst {

/// The most bytes one write carries in `stream_write_mode::every_passt`:
/// 32 KiB plus 4, less than the smallest buffer Linux cuts a write into
/// there, so each write is queued as one buffer (see `stream_write_mode`).
inline constexpr std::size_t stream_atomic_write_bytes = 32772;

/// Bounds of our socket's send buffer (`SO_SNDBUF` as the kernel reports it)
/// in `stream_write_mode::every_passt`; see there for why.
inline constexpr std::size_t stream_min_send_buffer_bytes = std::size_t{128} << 10;
/// See `stream_min_send_buffer_bytes`.
inline constexpr std::size_t stream_max_send_buffer_bytes = std::size_t{4} << 20;

/// How the transport cuts its outgoing byte stream into writes. It matters
/// because passt's stream reader before July 2024 (the one Debian 12 ships)
/// does not accept every split of the stream.
enum class stream_write_mode {
  /// The default: a write pattern that passt's reader accepts in every
  /// version, under any load, batched as much as that reader allows.
  ///
  /// Facts it rests on (Linux 3.13 and later, AF_UNIX stream sockets):
  /// - A write is queued as buffers (skbs) of at most
  ///   C = min(sk_sndbuf / 2 - 64, 32768 + a page less the skb overhead)
  ///   bytes, 36544 on x86_64 with 4 KiB pages. Each buffer is queued whole,
  ///   so a read sees all of it or none of it; a read copies across all the
  ///   queued buffers up to its size. A read therefore ends at the end of a
  ///   buffer, unless its size stops it first.
  /// - A non-blocking write that runs out of send buffer returns after whole
  ///   buffers, or fails with EAGAIN if not even the first one fits.
  /// - Only the sender's send buffer bounds the queue: a new buffer is taken
  ///   while the bytes charged (overhead included) are below sk_sndbuf,
  ///   which is twice the value given to SO_SNDBUF. The reader's SO_RCVBUF
  ///   plays no part. So fewer than sk_sndbuf + C bytes are ever queued.
  /// - `sendmmsg` on a stream socket goes on to the next message after a
  ///   message that was written only in part; it stops only at an error.
  ///
  /// How passt before July 2024 reads: one non-blocking `recv` of at most
  /// 8323069 bytes; then, while more than 4 bytes are left, it takes a
  /// length, and if that frame goes past the end of what was read it makes
  /// ONE blocking `recv` for the rest. If that returns less, every frame of
  /// this read is dropped and the stream is left inside a frame, where the
  /// next read takes payload for a length. Four bytes or fewer left at the
  /// end of a read (a cut header, or a header without a byte of its frame)
  /// are silently discarded, with the same effect.
  ///
  /// So a frame is lost unless every place a read can end is either between
  /// two records, or inside a frame at least one byte past its header with
  /// the whole rest of that frame in the next buffer; and the queue must
  /// never hold more than that first `recv` takes. The transport writes so:
  /// 1. Every write is at most `stream_atomic_write_bytes` (32772) bytes.
  ///    By rule 4, C is at least 32768 plus most of a page, so each write is
  ///    one buffer, queued whole or not at all; reads end only where writes end.
  /// 2. A write ends between two records, or inside a record only when the
  ///    header and at least one frame byte come before the end and the rest
  ///    of the frame is at most one write long; the next write then begins
  ///    with that rest. passt's blocking `recv` for the rest gets it at once,
  ///    from that one buffer. A record can always be cut so: it is at most
  ///    65539 bytes, less than two writes. Writes are filled this way, so
  ///    nearly all of them are full. They are planned as frames are queued,
  ///    so a flush only hands their sizes to the kernel.
  /// 3. Up to 64 writes go out in one `sendmmsg`. Since no write can be
  ///    taken in part (rule 1), `sendmmsg` takes each whole or stops at the
  ///    first that does not fit; the next call starts there.
  /// 4. The send buffer is kept between `stream_min_send_buffer_bytes`
  ///    (128 KiB: then C is above 32772, which rules 1 and 2 need) and
  ///    `stream_max_send_buffer_bytes` (4 MiB: then the queue stays far
  ///    below the 8323069 bytes of passt's first `recv`).
  /// The cost against unrestricted batching: about 12% more (and smaller)
  /// buffers, and a reader woken and scheduled once per write rather than
  /// once per call. `bench_stream` measures it beside the old batching;
  /// on a busy 2-core machine the default moved 10-20% fewer frames per
  /// second, and still 9x QEMU's one write per frame at 1514 bytes.
  every_passt,

  /// Unrestricted batching: the ring goes out in one `sendmsg` of up to
  /// everything queued, cut wherever the kernel cuts it. Only readers that
  /// accept any split read it reliably: passt from tag 2024_07_26 on, which
  /// keeps a partial frame for the next read, or a QEMU-compatible peer.
  /// UNSAFE with older passt (Debian 12's): under bulk traffic it loses
  /// frames and desynchronises the stream. The send buffer is not bounded
  /// in this mode.
  any_split_passt_2024_07,
};

/// Sizes of a stream transport's buffers and how it writes. Every field has
/// a sensible default.
struct stream_transport_config {
  /// How writes are cut; see `stream_write_mode`. Keep the default unless
  /// every passt this transport may talk to is from July 2024 or later.
  stream_write_mode write_mode = stream_write_mode::every_passt;
  /// Capacity of the send ring, in bytes (4 per frame for the header plus the
  /// frame). `try_send` refuses a frame with `errc::would_block` when it does
  /// not fit. Raised to at least 2 x (4 + 65535) so that a writable transport
  /// always takes one frame of any size.
  std::size_t send_queue_bytes = std::size_t{1} << 20;
  /// Size of the receive buffer, i.e. the most one `recv` reads.
  /// 256 KiB to 1 MiB reads many frames per system call. Raised to at
  /// least 2 x (4 + 65535).
  std::size_t receive_buffer_bytes = std::size_t{512} << 10;
  /// Our end's socket send buffer as the kernel reports it (getsockopt
  /// SO_SNDBUF), which is twice what setsockopt is given: the transport
  /// sets half of this with SO_SNDBUFFORCE (which needs CAP_NET_ADMIN) or
  /// else SO_SNDBUF (capped by net.core.wmem_max), the same for the receive
  /// buffer, then reads back what the kernel granted; `config()` reports that.
  /// This transport is the one place that sizes our end of the socket.
  /// In `every_passt` mode the value is clamped to
  /// `stream_min_send_buffer_bytes`..`stream_max_send_buffer_bytes`, a
  /// socket whose buffer is outside that range is resized even when this
  /// is 0, and a kernel that grants less than the minimum makes the
  /// constructor fail. 0 otherwise keeps the socket's own sizes. Do not
  /// change the sizes afterwards through `native_handle()`.
  /// The send buffer also bounds how much passt reads at once, and so the
  /// burst it writes to a host socket: for host-local peers passt does not
  /// hold the guest back when that socket is full, and Debian 12's passt
  /// drops what it refuses (the guest's TCP recovers after a retransmission
  /// timeout). 128-256 KiB avoided that in measurements under bulk TCP, at
  /// 20-27% of guest-to-host throughput; 512 KiB and more did not always.
  std::size_t socket_buffer_bytes = stream_max_send_buffer_bytes;
  /// The most frames one receive hands out; further frames already read wait
  /// in the buffer for the next receive (no system call needed for them).
  std::size_t max_batch_frames = 4096;
  /// `try_send` writes the ring at once when it holds this many bytes
  /// (lowered to half the send ring if larger).
  std::size_t flush_threshold_bytes = std::size_t{256} << 10;
  /// Frames at least this long are written straight from the caller's memory
  /// (one sendmsg per frame, no copy) when the ring can first be emptied.
  /// 0 (the default) disables this: on a socketpair, copying 64 KiB frames
  /// into the ring and writing 256 KiB per call measured faster.
  std::size_t direct_write_bytes = 0;
};

namespace detail {
template <class Executor> class stream_state;
}

/// A FrameTransport over a connected AF_UNIX SOCK_STREAM socket, the other
/// end of which is passt's `--fd 3` (or QEMU-compatible peer).
///
/// Errors, reported through `std::error_code`:
/// - `errc::frame_too_short` / `errc::frame_too_long`: `try_send` refused a
///   frame outside 14..65535 bytes. Nothing is written, the frame is counted
///   in `counters().frames_refused`, and the transport stays usable.
/// - `errc::would_block`: the send ring is full; `async_wait_writable`.
/// - `errc::bad_frame_length`: the peer sent a length outside 14..65535.
///   Frames before it are still delivered, then the transport closes its
///   socket: the stream cannot be trusted past that point.
/// - `errc::connection_closed`: the peer closed the connection (EOF,
///   ECONNRESET or EPIPE). When a receive finds the end, whole frames
///   received before it are still delivered; when a send finds it first
///   (EPIPE), the transport closes at once and frames not yet handed out
///   are dropped.
/// - `errc::protocol_error`: the kernel took part of a write and then a
///   later one (no Linux kernel does, see `stream_write_mode`): the byte
///   stream is broken, and the transport closes its socket.
/// - `errc::transport_closed`: `close()` was called (or the transport was
///   destroyed, for operations still pending then).
/// - `asio::error::operation_aborted`: `cancel()` was called; the transport
///   stays open.
/// - Any other OS error, in `std::system_category()`; it closes the socket.
/// After a connection error every operation reports that same error, and
/// `is_open()` is false. Unsent frames are dropped when the transport closes.
template <class Executor = asio::any_io_executor>
class basic_stream_transport {
public:
  /// The executor completions run on (unless the token says otherwise).
  using executor_type = Executor;
  /// What the constructor takes besides the executor and the socket.
  using config_type = stream_transport_config;
  /// The transport's name in status lines ("stream,connected to pid N").
  static constexpr std::string_view kind = "stream";

  /// This transport type with another executor type.
  template <class OtherExecutor> struct rebind_executor {
    using other = basic_stream_transport<OtherExecutor>;
  };

  /// Takes ownership of `fd`, a connected AF_UNIX SOCK_STREAM socket; sets it
  /// non-blocking and sizes its socket buffers per `config`. Allocates the
  /// send ring, receive buffer and frame array (the only allocations).
  /// @throws std::system_error if `fd` is empty, not a stream socket, an
  ///         fcntl/setsockopt/getsockopt call fails, or (`every_passt` mode)
  ///         the kernel grants a send buffer below
  ///         `stream_min_send_buffer_bytes` (`std::errc::no_buffer_space`,
  ///         the message names the sizes). Then `fd` is closed.
  basic_stream_transport(const executor_type& executor, unique_fd fd,
                         const stream_transport_config& config = {});

  /// As above, with the execution context's executor.
  template <class ExecutionContext>
    requires std::is_convertible_v<ExecutionContext&, asio::execution_context&>
  basic_stream_transport(ExecutionContext& context, unique_fd fd,
                         const stream_transport_config& config = {})
      : basic_stream_transport(executor_type(context.get_executor()), std::move(fd), config) {}

  /// Moves the connection; `other` is left closed (only destruction or
  /// assignment are valid on it). Pending operations stay with the connection.
  basic_stream_transport(basic_stream_transport&& other) noexcept = default;
  /// Closes this transport (as `close()`), then takes `other`'s connection.
  basic_stream_transport& operator=(basic_stream_transport&& other) noexcept;

  /// Closes the socket, as `close()`.
  ~basic_stream_transport();

  /// The executor given at construction.
  executor_type get_executor() const noexcept;

  /// The configuration in effect (after minimums were applied).
  const stream_transport_config& config() const noexcept;

  /// True until `close()`, a connection error or a bad peer length.
  bool is_open() const noexcept;

  /// The socket, still owned by the transport; -1 once closed.
  int native_handle() const noexcept;

  /// Frames and bytes moved so far (see frame.hpp).
  transport_counters counters() const noexcept;

  /// Bytes (headers included) accepted but not yet written to the socket.
  std::size_t queued_bytes() const noexcept;

  /// Queues one frame and never blocks. Returns true when the frame was taken
  /// (it will be sent in order; see the file comment for when). Returns false
  /// with `ec` set to `errc::frame_too_short`/`frame_too_long` (counted,
  /// never sent), `errc::would_block` (ring full), or the error that closed
  /// the transport. The frame's memory is not used after the call returns.
  bool try_send(frame f, std::error_code& ec);

  /// Queues the longest prefix of `frames` that can be taken and returns its
  /// length. When fewer than `frames.size()` were taken, `ec` says why
  /// `frames[result]` was not (as for the single-frame form); a refused size
  /// stops the prefix so the caller knows which frame it was.
  std::size_t try_send(std::span<const frame> frames, std::error_code& ec);

  /// Writes as much of the send ring as the socket takes now, without
  /// blocking, and returns the bytes still queued (they are written when the
  /// socket becomes writable while the executor runs). Sets `ec` only for a
  /// connection error.
  std::size_t flush(std::error_code& ec);

  /// Sends one frame, blocking (with poll(2), no io_context needed) until
  /// the ring has room and then until every queued byte is written.
  /// Errors as `try_send`, never `errc::would_block`.
  void send(frame f, std::error_code& ec);
  /// Throwing form of `send`. @throws std::system_error
  void send(frame f);

  /// Receives at least one frame, blocking (with poll(2), no io_context
  /// needed) until one arrives. The views point into the transport's receive
  /// buffer and stay valid until the next receive or the transport's
  /// destruction. On error returns an empty batch with `ec` set.
  frame_batch receive(std::error_code& ec);
  /// Throwing form of `receive`. @throws std::system_error
  frame_batch receive();

  /// Waits until `try_send` would take a frame of any size again, i.e. until
  /// at most half of the send ring is queued, writing the ring as the socket
  /// allows. Completes at once if that is already so (never inside this call).
  /// Completion signature: `void(std::error_code)`; errors are connection
  /// errors, `errc::transport_closed` or `asio::error::operation_aborted`
  /// (after `cancel()`, or a terminal, partial or total cancellation through
  /// the handler's cancellation slot; the transport stays usable and queued
  /// frames are still sent). The handler's associated executor and
  /// allocator are used (see `async_receive` for one exception).
  template <asio::completion_token_for<void(std::error_code)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_wait_writable(Token&& token = asio::default_completion_token_t<executor_type>{});

  /// Receives at least one frame. Completion signature
  /// `void(std::error_code, frame_batch)`: on success the batch holds 1 to
  /// `max_batch_frames` whole frames (views valid until the next receive);
  /// on error it is empty. Never completes inside this call. A terminal,
  /// partial or total cancellation through the handler's cancellation slot
  /// (or `cancel()`) completes a receive still waiting with
  /// `asio::error::operation_aborted`; no byte is consumed and the transport
  /// stays usable. The handler's associated executor and allocator are used,
  /// with one exception: a completion ready at once is posted through the
  /// transport's executor, and `asio::any_io_executor` does not pass an
  /// allocator on (Asio 1.22), so that one allocation uses the default
  /// allocator; `basic_stream_transport<asio::io_context::executor_type>`
  /// uses the handler's there too.
  template <asio::completion_token_for<void(std::error_code, frame_batch)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_receive(Token&& token = asio::default_completion_token_t<executor_type>{});

  /// Makes pending `async_receive`/`async_wait_writable` complete with
  /// `asio::error::operation_aborted`. The transport stays open and queued
  /// frames are still sent.
  void cancel();

  /// Closes the socket and drops unsent frames. Pending operations complete
  /// with `errc::transport_closed`; so does every later operation.
  /// Idempotent, never throws.
  void close() noexcept;

private:
  std::shared_ptr<detail::stream_state<Executor>> state_;
};

/// The stream transport on `asio::any_io_executor`.
using stream_transport = basic_stream_transport<>;

} // namespace netpasst

#include <netpasst/transport/impl/stream.hpp>
