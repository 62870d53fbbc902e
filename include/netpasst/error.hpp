#pragma once
/// @file error.hpp
/// netpasst's error codes (`netpasst::errc`) and the conditions that group them
/// (`netpasst::condition`). Every operation reports through `std::error_code`;
/// OS failures keep `std::system_category()`.

#include <string>
#include <system_error>

namespace netpasst {

/// Errors raised by netpasst itself.
enum class errc {
  // Options and argv
  invalid_options = 1,   ///< The options failed validation; the diagnostics name each problem.
  unsupported_option,    ///< The passt binary in use does not know an option the options need.
  probe_failed,          ///< Running `passt --help` to learn its options failed.

  // Launcher
  passt_not_found,       ///< The passt binary could not be executed (missing, not executable).
  passt_exited,          ///< passt exited with a non-zero status before it was ready.
  passt_killed,          ///< passt was killed by a signal before it was ready.
  start_timeout,         ///< passt did not become ready before the deadline.
  bad_pidfile,           ///< passt's pidfile was missing, empty or held an invalid pid.
  process_gone,          ///< The process the pidfile named is not (or no longer) passt.

  // Transport
  frame_too_short,       ///< A frame shorter than 14 bytes was refused locally, never sent.
  frame_too_long,        ///< A frame longer than 65535 bytes was refused locally, never sent.
  bad_frame_length,      ///< The peer sent a length outside 14..65535: the stream cannot be trusted.
  would_block,           ///< The send queue is full; wait until the transport is writable.
  connection_closed,     ///< The peer closed the connection (passt exited or reset it).
  transport_closed,      ///< The transport was closed locally.

  // Lifecycle
  restart_limit_reached, ///< passt kept failing; the lifecycle gave up after its attempts.
  stopped,               ///< The lifecycle was stopped; pending operations end with this.
  not_running,           ///< The operation needs a running passt and there is none.

  // Guest (mini_guest and its packet codecs)
  packet_truncated,      ///< A packet is shorter than its headers or length fields say.
  bad_checksum,          ///< An IPv4 header, UDP or ICMP checksum does not verify.
  malformed_packet,      ///< A field holds a value its format forbids (version, length, label, pointer...).
  unsupported_packet,    ///< A well-formed packet the codecs do not handle (fragment, other hardware type...).
  dhcp_nak,              ///< The DHCP server refused the request (DHCPNAK).
  guest_timeout,         ///< A guest operation got no answer before its deadline.
  operation_in_progress, ///< The guest runs one operation at a time and one is already running.
  no_address,            ///< The guest has no IPv4 address yet (no lease, none configured).
};

/// Groups of errors an embedder acts on, compared with `ec == condition::x`.
enum class condition {
  configuration_error = 1, ///< Fix the options or the binary: retrying cannot help.
  start_failure,           ///< passt could not be started or did not come up.
  connection_lost,         ///< The link to a running passt broke: a restart may help.
  frame_refused,           ///< One frame was refused; the transport is still usable.
};

namespace detail {

class errc_category_impl final : public std::error_category {
public:
  const char* name() const noexcept override { return "netpasst"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::invalid_options: return "invalid passt options";
      case errc::unsupported_option: return "option not supported by this passt binary";
      case errc::probe_failed: return "could not probe passt's options";
      case errc::passt_not_found: return "passt binary could not be executed";
      case errc::passt_exited: return "passt exited before it was ready";
      case errc::passt_killed: return "passt was killed before it was ready";
      case errc::start_timeout: return "passt did not become ready in time";
      case errc::bad_pidfile: return "passt's pidfile is missing or invalid";
      case errc::process_gone: return "passt's process is gone";
      case errc::frame_too_short: return "frame shorter than 14 bytes refused";
      case errc::frame_too_long: return "frame longer than 65535 bytes refused";
      case errc::bad_frame_length: return "peer sent an invalid frame length";
      case errc::would_block: return "send queue full";
      case errc::connection_closed: return "connection closed by passt";
      case errc::transport_closed: return "transport closed";
      case errc::restart_limit_reached: return "passt restart attempts exhausted";
      case errc::stopped: return "stopped";
      case errc::not_running: return "passt is not running";
      case errc::packet_truncated: return "packet truncated";
      case errc::bad_checksum: return "bad checksum";
      case errc::malformed_packet: return "malformed packet";
      case errc::unsupported_packet: return "unsupported packet";
      case errc::dhcp_nak: return "DHCP server sent NAK";
      case errc::guest_timeout: return "no answer before the deadline";
      case errc::operation_in_progress: return "another guest operation is in progress";
      case errc::no_address: return "guest has no IPv4 address";
    }
    return "unknown netpasst error";
  }
  bool equivalent(int value, const std::error_condition& cond) const noexcept override;
};

class condition_category_impl final : public std::error_category {
public:
  const char* name() const noexcept override { return "netpasst.condition"; }
  std::string message(int value) const override {
    switch (static_cast<condition>(value)) {
      case condition::configuration_error: return "configuration error";
      case condition::start_failure: return "passt start failure";
      case condition::connection_lost: return "connection to passt lost";
      case condition::frame_refused: return "frame refused";
    }
    return "unknown netpasst condition";
  }
};

} // namespace detail

/// The category of `netpasst::errc`.
inline const std::error_category& error_category() noexcept {
  static const detail::errc_category_impl category;
  return category;
}

/// The category of `netpasst::condition`.
inline const std::error_category& condition_category() noexcept {
  static const detail::condition_category_impl category;
  return category;
}

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

inline std::error_condition make_error_condition(condition c) noexcept {
  return {static_cast<int>(c), condition_category()};
}

inline bool detail::errc_category_impl::equivalent(int value, const std::error_condition& cond) const noexcept {
  if (cond.category() != condition_category()) return false;
  switch (static_cast<condition>(cond.value())) {
    case condition::configuration_error:
      return value == int(errc::invalid_options) || value == int(errc::unsupported_option) ||
             value == int(errc::passt_not_found);
    case condition::start_failure:
      return value >= int(errc::probe_failed) && value <= int(errc::process_gone);
    case condition::connection_lost:
      return value == int(errc::bad_frame_length) || value == int(errc::connection_closed) ||
             value == int(errc::process_gone);
    case condition::frame_refused:
      return value == int(errc::frame_too_short) || value == int(errc::frame_too_long);
  }
  return false;
}

} // namespace netpasst

template <> struct std::is_error_code_enum<netpasst::errc> : std::true_type {};
template <> struct std::is_error_condition_enum<netpasst::condition> : std::true_type {};
