#pragma once
/// @file launcher/config.hpp
/// `launcher_config`, the settings of `basic_passt_launcher`, and
/// `launch_error`, what its throwing `launch` throws.

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <system_error>

namespace netpasst {

/// Settings of a passt launcher. Every field has a sensible default.
struct launcher_config {
  /// How long passt may take to become ready (daemonized, or pidfile written
  /// in foreground mode); then `errc::start_timeout`. `milliseconds::max()`:
  /// no limit.
  std::chrono::milliseconds start_timeout{10000};
  /// Parent of the private directory. Empty: $XDG_RUNTIME_DIR, else /tmp
  /// (and /tmp when passt drops to another user that could not enter it).
  std::filesystem::path runtime_directory;
  /// The most bytes of passt's stderr kept in `passt_process::error_output`:
  /// the latest ones (a failing passt says why last).
  std::size_t error_output_limit = 64 * 1024;
  /// SO_SNDBUF/SO_RCVBUF of passt's end of the socketpair (SO_*BUFFORCE tried
  /// first); 0 leaves the kernel's defaults. passt does not size a socket it
  /// is given with `--fd`. Our end is sized by the transport that takes it.
  /// Measured with Debian 12's passt and bulk TCP into a guest: 4 MiB and
  /// more run at full speed, 1 MiB at about two thirds, and at 256 KiB
  /// host-to-guest throughput collapses below 1 Gbit/s (the kernel's
  /// default, about 208 KiB, is smaller still).
  int peer_socket_buffer_bytes = 4 << 20;
};

/// Thrown by the launchers' throwing `launch`: the error code, plus passt's
/// exit status (when known) and the one-line failure message as `what()`.
class launch_error : public std::system_error {
public:
  launch_error(std::error_code ec, const std::string& message, std::optional<int> exit_status, std::string output)
      : std::system_error(ec, message), exit_status_(exit_status), error_output_(std::move(output)) {}
  /// passt's exit status, when it exited as our child.
  std::optional<int> exit_status() const noexcept { return exit_status_; }
  /// passt's captured stderr (without syslog noise).
  const std::string& error_output() const noexcept { return error_output_; }

private:
  std::optional<int> exit_status_;
  std::string error_output_;
};

} // namespace netpasst
