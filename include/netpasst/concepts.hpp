#pragma once
/// @file concepts.hpp
/// The concepts an embedder assembles, documented here once. Each is built
/// from small named pieces; every piece lists what a model must provide.
///
/// 1. **OptionsToArgv** turns a validated `netpasst::options` value into the
///    arguments passt is started with, without the launcher-owned ones
///    (`--pid`, `--fd`, `--foreground`). Model: `argv_builder`.
/// 2. **DaemonLauncher** starts passt ("daemon" is passt, whether it forks
///    away or stays our child) with one end of a connected socket on fd 3 and
///    hands back a **PasstProcess**: the running passt held by pidfd, with our
///    end of the socket and passt's captured stderr. Model:
///    `basic_passt_launcher` with a policy, `daemon_launcher` (passt
///    daemonizes and writes a pidfile, QEMU's way), `foreground_launcher`
///    (passt stays our child), or `passt_launcher` (either, chosen at run time).
///    An embedder's own launcher can return `passt_process::adopt(...)` or a
///    process type of its own.
/// 3. **FrameTransport** moves whole Ethernet frames. Sending never blocks: a
///    frame is taken or refused with `errc::would_block`, and
///    `async_wait_writable` says when to try again (QEMU's net-queue
///    backpressure). Receiving hands out a `frame_batch` of views into the
///    transport's buffer. Models: `stream_transport` (passt's 4-byte length
///    framing), `vhost_user_transport` (a vhost-user frontend and virtio-net
///    driver: frames in shared memory), `tap_transport`,
///    `persistent_transport` (across restarts), `testing::memory_transport`.
/// 4. **BackendSession** is what a lifecycle attaches to each new passt: it
///    is handed the socket, does its handshake, reports when the connection
///    is lost, and is detached when passt dies, keeping what it must keep for
///    the next passt. It declares the passt mode it speaks (`mode`), from
///    which `--vhost-user` follows. Models: `stream_session` and
///    `vhost_user_session` (each also a FrameTransport whose operations
///    wait across restarts).
/// 5. **Lifecycle** supervises a launcher and a session: start, link up/down,
///    restart passt when it dies, stop and clean up, with events. Model:
///    `basic_lifecycle` (alias `lifecycle`); it is a FrameTransport too when
///    its session is one.
///
/// Every asynchronous operation of every model takes any Asio completion
/// token (callbacks, `asio::use_awaitable`, `asio::use_future`,
/// `asio::experimental::deferred`) and honours the handler's associated
/// executor, allocator and cancellation slot: a `terminal` or `partial`
/// cancellation completes the operation with `asio::error::operation_aborted`
/// and leaves the object usable (a few operations document a stronger effect:
/// cancelling a launch kills what it started). The concepts check each async
/// operation with a plain callback.

#include <chrono>
#include <concepts>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <sys/types.h>

#include <netpasst/frame.hpp>
#include <netpasst/unique_fd.hpp>

namespace netpasst {

struct options;
struct diagnostic;

/// What passt speaks on its socket: `stream` (4-byte length framing, the
/// default) or `vhost_user` (passt started with `--vhost-user`).
enum class passt_mode { stream, vhost_user };

/// "stream" or "vhost-user", as in status lines.
constexpr std::string_view to_string(passt_mode mode) noexcept {
  return mode == passt_mode::stream ? "stream" : "vhost-user";
}

namespace detail {
/// A completion handler of signature `Signature` that does nothing: lets the
/// concepts below check `async_` operations without picking a token type.
template <class Signature> struct archetype_handler;
template <class... Args> struct archetype_handler<void(Args...)> {
  void operator()(Args...) const {}
};
} // namespace detail

// ---- pieces ------------------------------------------------------------------

/// 1. `executor_type`, and `get_executor()` returning it: where completions
///    run unless a token says otherwise.
template <class T>
concept HasExecutor = requires { typename T::executor_type; } && requires(const T& t) {
  { t.get_executor() } -> std::convertible_to<typename T::executor_type>;
};

/// 1. `try_send(f, ec)`: takes the whole frame (true) or refuses it (false)
///    with `errc::would_block` (queue full), `errc::frame_too_short/long`
///    (counted, never sent) or a connection error. Never blocks; the frame's
///    memory is not used after the call.
/// 2. `try_send(frames, ec)`: takes a prefix of `frames`, returns how many;
///    `ec` says why the next one was not taken.
/// 3. `async_wait_writable(token)`: `void(std::error_code)` once a refused
///    send would be taken again.
template <class T>
concept FrameSender = requires(T& t, frame f, std::span<const frame> fs, std::error_code& ec) {
  { t.try_send(f, ec) } -> std::same_as<bool>;
  { t.try_send(fs, ec) } -> std::same_as<std::size_t>;
  t.async_wait_writable(detail::archetype_handler<void(std::error_code)>{});
};

/// 1. `async_receive(token)`: `void(std::error_code, frame_batch)`, at least
///    one frame on success; the views stay valid until the next receive. At
///    most one receive is pending at a time.
template <class T>
concept FrameReceiver = requires(T& t) {
  t.async_receive(detail::archetype_handler<void(std::error_code, frame_batch)>{});
};

/// 1. `is_open()`: false once closed or the connection broke.
/// 2. `close()`: pending operations complete with an error; idempotent.
/// 3. `cancel()`: pending operations complete with
///    `asio::error::operation_aborted`; the object stays open.
/// 4. `counters()`: what moved so far, convertible to `transport_counters`.
template <class T>
concept TransportControl = requires(T& t, const T& ct) {
  { ct.is_open() } -> std::same_as<bool>;
  t.close();
  t.cancel();
  { ct.counters() } -> std::convertible_to<transport_counters>;
};

// ---- the concepts ------------------------------------------------------------

/// A model turns options into passt's argv.
/// 1. `b.build(o, diags)` returns the argv (argv[0] is the binary) or, when the
///    options are invalid, an empty vector with one `diagnostic` per problem.
/// 2. `b.build(o)` is the throwing form (`invalid_options_error`).
template <class B>
concept OptionsToArgv = requires(const B& b, const options& o, std::vector<diagnostic>& diags) {
  { b.build(o, diags) } -> std::same_as<std::vector<std::string>>;
  { b.build(o) } -> std::same_as<std::vector<std::string>>;
};

/// A model moves whole Ethernet frames: HasExecutor, FrameSender,
/// FrameReceiver and TransportControl.
template <class T>
concept FrameTransport = HasExecutor<T> && FrameSender<T> && FrameReceiver<T> && TransportControl<T>;

/// A started passt, as a launcher hands it over. Movable; destroying it
/// stops passt (blocking briefly) and removes what the launch created.
/// 1. `pid()`: passt's pid, 0 when there is none. Informational: every signal
///    goes through a pidfd.
/// 2. `take_socket()`: our end of the socket passt has as fd 3, once.
/// 3. `failure_message()`: one line saying why a launch failed, in passt's
///    own words when it said any; empty after a successful launch.
/// 4. `async_wait_exit(token)`: `void(std::error_code, int status)` once
///    passt has exited (status: exit code, 128 + signal, -1 if unknowable).
///    `exit_description()` then says how, in one line.
/// 5. `async_terminate(grace, token)`: `void(std::error_code)`: SIGTERM,
///    SIGKILL after `grace`, completes once passt is gone and cleaned up.
/// 6. `terminate(grace, ec)`: the same, blocking (for destructors and
///    synchronous stops).
template <class P>
concept PasstProcess = std::movable<P> && requires(P& p, const P& cp, std::chrono::milliseconds grace,
                                                   std::error_code& ec) {
  { cp.pid() } -> std::convertible_to<pid_t>;
  { p.take_socket() } -> std::same_as<unique_fd>;
  { cp.failure_message() } -> std::convertible_to<std::string>;
  { cp.exit_description() } -> std::convertible_to<std::string>;
  p.async_wait_exit(detail::archetype_handler<void(std::error_code, int)>{});
  p.async_terminate(grace, detail::archetype_handler<void(std::error_code)>{});
  p.terminate(grace, ec);
};

/// A model starts passt from an argv made by an OptionsToArgv model.
/// 1. HasExecutor.
/// 2. `process_type`, a PasstProcess.
/// 3. `l.async_launch(argv, token)`: `void(std::error_code, process_type)`
///    once passt is ready for the socket, or failed; a failed launch still
///    hands over a (not running) process whose `failure_message()` says why.
///    Cancelling it (terminal) kills whatever it started and completes with
///    `asio::error::operation_aborted`.
template <class L>
concept DaemonLauncher = HasExecutor<L> && requires { typename L::process_type; } &&
                         PasstProcess<typename L::process_type> &&
                         requires(L& l, const std::vector<std::string>& argv) {
                           l.async_launch(argv,
                                          detail::archetype_handler<void(std::error_code, typename L::process_type)>{});
                         };

/// What a lifecycle attaches to each new passt.
/// 1. HasExecutor.
/// 2. `S::mode`, a `passt_mode`: what the session speaks. The lifecycle adds
///    `--vhost-user` to passt's argv when it is `vhost_user`, and refuses
///    options that ask for the other mode before anything is spawned.
/// 3. `async_attach(socket, token)`: `void(std::error_code)`: takes our end
///    of a new passt's socket and completes once the handshake is done and
///    the session is ready for traffic (at once for the stream protocol).
///    An error means this passt cannot be used (the lifecycle replaces it).
/// 4. `async_wait_lost(token)`: `void(std::error_code)`: completes with the
///    reason when the session sees the attached connection break (end of
///    stream, protocol error), or with `asio::error::operation_aborted` when
///    it is detached first. At most one is pending.
/// 5. `detach(reason)`: passt is gone or being replaced: drop the socket and
///    keep the state the next passt needs. `reason` empty: another passt is
///    coming, so traffic waits; otherwise none is (stop, failure) and
///    pending and later traffic ends with `reason` until the next attach.
template <class S>
concept BackendSession = HasExecutor<S> && requires {
  { S::mode } -> std::convertible_to<passt_mode>;
} && requires(S& s, unique_fd socket, std::error_code reason) {
  s.async_attach(std::move(socket), detail::archetype_handler<void(std::error_code)>{});
  s.async_wait_lost(detail::archetype_handler<void(std::error_code)>{});
  s.detach(reason);
};

/// A model runs one passt link for an embedder.
/// 1. HasExecutor.
/// 2. `async_start(token)`: `void(std::error_code)` at the first link up or
///    when the start failed.
/// 3. `async_stop(token)`: `void(std::error_code)` once passt is gone and
///    cleaned up; `stop()` does the same synchronously. Both safe from any
///    state, idempotent.
/// 4. `set_link(bool)`: administrative link up/down; `link_up()` tells.
/// 5. `pid()` (0 when none) and `status()`, a one-line summary.
/// 6. `next_layer()`: the session, for traffic and backend-specific calls.
template <class L>
concept Lifecycle = HasExecutor<L> && requires(L& l, const L& cl) {
  l.async_start(detail::archetype_handler<void(std::error_code)>{});
  l.async_stop(detail::archetype_handler<void(std::error_code)>{});
  l.stop();
  l.set_link(true);
  { cl.link_up() } -> std::same_as<bool>;
  { cl.pid() } -> std::convertible_to<pid_t>;
  { cl.status() } -> std::convertible_to<std::string>;
  l.next_layer();
};

} // namespace netpasst
