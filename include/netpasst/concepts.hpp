#pragma once
/// @file concepts.hpp
/// The four concepts an embedder assembles, documented here once.
///
/// 1. **OptionsToArgv** turns a validated `netpasst::options` value into the
///    arguments passt is started with, without the launcher-owned ones
///    (`--pid`, `--fd`, `--foreground`): `argv_builder` is the model.
/// 2. **DaemonLauncher** starts passt with one end of a connected socket on
///    fd 3 and hands back a `passt_process`: the running passt held by pidfd,
///    with our end of the socket and passt's captured stderr. Models:
///    `daemon_launcher` (passt daemonizes and writes a pidfile, QEMU's way)
///    and `foreground_launcher` (passt stays our child).
/// 3. **FrameTransport** moves Ethernet frames to and from passt over the
///    socket it was started with. Sending never blocks: a frame is taken or
///    refused with `errc::would_block`, and `async_wait_writable` says when to
///    try again (QEMU's net-queue backpressure). Receiving hands out a
///    `frame_batch` of views into the transport's buffer. Model:
///    `stream_transport` (4-byte big-endian length framing).
/// 4. **Lifecycle** assembles the three: start, link up/down, restart passt
///    when it dies, stop and clean up, with events. Model: `basic_lifecycle`
///    (alias `lifecycle`).
///
/// Async operations take any Asio completion token (callbacks,
/// `asio::use_awaitable`, `asio::use_future`); each concept is checked here
/// with a plain callback.

#include <concepts>
#include <string>
#include <system_error>
#include <vector>

#include <netpasst/frame.hpp>

namespace netpasst {

struct options;
struct diagnostic;
class passt_process;

namespace detail {
/// A completion handler of signature `Signature` that does nothing: lets the
/// concepts below check `async_` operations without picking a token type.
template <class Signature> struct archetype_handler;
template <class... Args> struct archetype_handler<void(Args...)> {
  void operator()(Args...) const {}
};
} // namespace detail

/// A model turns options into passt's argv.
/// 1. `b.build(o, diags)` returns the argv (argv[0] is the binary) or, when the
///    options are invalid, an empty vector with one `diagnostic` per problem.
/// 2. `b.build(o)` is the throwing form (`invalid_options_error`).
template <class B>
concept OptionsToArgv = requires(const B& b, const options& o, std::vector<diagnostic>& diags) {
  { b.build(o, diags) } -> std::same_as<std::vector<std::string>>;
  { b.build(o) } -> std::same_as<std::vector<std::string>>;
};

/// A model starts passt from an argv made by an OptionsToArgv model.
/// 1. `executor_type` and `get_executor()`: where completions run.
/// 2. `l.launch(argv, ec)` blocks until passt is ready (or failed) and returns
///    the process; on failure `ec` is set and the returned (not running)
///    `passt_process` still carries passt's exit status and stderr text.
/// 3. `l.async_launch(argv, token)` does the same without blocking the
///    executor; completion signature `void(std::error_code, passt_process)`.
template <class L>
concept DaemonLauncher =
    requires { typename L::executor_type; } &&
    requires(L& l, const std::vector<std::string>& argv, std::error_code& ec) {
      { l.get_executor() } -> std::same_as<typename L::executor_type>;
      { l.launch(argv, ec) } -> std::same_as<passt_process>;
      l.async_launch(argv, detail::archetype_handler<void(std::error_code, passt_process)>{});
    };

/// A model moves whole Ethernet frames to and from passt.
/// 1. `try_send(f, ec)`: takes the frame (true) or refuses it (false) with
///    `errc::would_block` (queue full), `errc::frame_too_short/long` (counted,
///    never sent) or a connection error. Never blocks.
/// 2. `try_send(frames, ec)`: takes a prefix of `frames`, returns how many.
/// 3. `async_wait_writable(token)`: `void(std::error_code)` once a refused
///    send would be taken again.
/// 4. `async_receive(token)`: `void(std::error_code, frame_batch)`, at least
///    one frame on success; views stay valid until the next receive.
/// 5. `is_open()`, `close()`, `counters()`, `executor_type`, `get_executor()`.
template <class T>
concept FrameTransport =
    requires { typename T::executor_type; } &&
    requires(T& t, const T& ct, frame f, std::span<const frame> fs, std::error_code& ec) {
      { t.get_executor() } -> std::same_as<typename T::executor_type>;
      { t.try_send(f, ec) } -> std::same_as<bool>;
      { t.try_send(fs, ec) } -> std::same_as<std::size_t>;
      t.async_wait_writable(detail::archetype_handler<void(std::error_code)>{});
      t.async_receive(detail::archetype_handler<void(std::error_code, frame_batch)>{});
      { ct.is_open() } -> std::same_as<bool>;
      t.close();
      { ct.counters() } -> std::convertible_to<transport_counters>;
    };

/// A model runs one passt link for an embedder, and is itself a
/// FrameTransport that waits across restarts.
/// 1. `async_start(token)`: `void(std::error_code)` at the first link up or
///    when the start failed.
/// 2. `async_stop(token)`: `void(std::error_code)` once passt is gone and
///    cleaned up; `stop()` does the same synchronously. Both safe from any
///    state, idempotent.
/// 3. `set_link(bool)`: administrative link up/down; `link_up()` tells.
/// 4. `pid()` (0 when none) and `status()`, a one-line summary.
template <class L>
concept Lifecycle =
    FrameTransport<L> && requires(L& l, const L& cl) {
      l.async_start(detail::archetype_handler<void(std::error_code)>{});
      l.async_stop(detail::archetype_handler<void(std::error_code)>{});
      l.stop();
      l.set_link(true);
      { cl.link_up() } -> std::same_as<bool>;
      { cl.pid() } -> std::convertible_to<long>;
      { cl.status() } -> std::convertible_to<std::string>;
    };

} // namespace netpasst
