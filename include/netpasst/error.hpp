#pragma once
/// @file error.hpp
/// netpasst's error codes (`netpasst::errc`) and the conditions that group them
/// (`netpasst::condition`). Every operation reports through `std::error_code`;
/// OS failures keep `std::system_category()`. The guest-side codes of
/// `mini_guest` and its packet codecs are in guest/error.hpp.

#include <string>
#include <system_error>

namespace netpasst {

/// Errors raised by netpasst itself. Each belongs to at most one `condition`
/// (listed after its description).
enum class errc {
  invalid_options = 1,   ///< The options failed validation; the diagnostics name each problem. configuration_error
  unsupported_option,    ///< The passt binary in use does not know an option the options need. configuration_error
  probe_failed,          ///< Running `passt --help` to learn its options failed. start_failure
  passt_not_found,       ///< The passt binary could not be executed (missing, not executable). configuration_error
  passt_exited,          ///< passt exited with a non-zero status before it was ready. start_failure
  passt_killed,          ///< passt was killed by a signal before it was ready. start_failure
  start_timeout,         ///< passt did not become ready before the deadline. start_failure
  bad_pidfile,           ///< passt's pidfile was missing, empty or held an invalid pid. start_failure
  process_gone,          ///< The process the pidfile named is not the passt we started (or exited). start_failure
  frame_too_short,       ///< A frame shorter than 14 bytes was refused locally, never sent. frame_refused
  frame_too_long,        ///< A frame longer than 65535 bytes was refused locally, never sent. frame_refused
  bad_frame_length,      ///< The peer sent a length outside 14..65535: the stream cannot be trusted. connection_lost
  would_block,           ///< The send queue is full; wait until the transport is writable. (none)
  connection_closed,     ///< The peer closed the connection (passt exited or reset it). connection_lost
  transport_closed,      ///< The transport was closed locally. (none)
  restart_limit_reached, ///< passt kept failing; the lifecycle gave up after its attempts. (none)
  stopped,               ///< The lifecycle was stopped; pending operations end with this. (none)
  not_running,           ///< The operation needs a running passt and there is none. (none)
  operation_in_progress, ///< An operation of this kind is already pending on the object. (none)
  passt_terminated,      ///< A running passt exited or was killed; the message says how. connection_lost
  protocol_error,        ///< The protocol on the socket broke (a vhost-user peer; a stream split against its write rule). connection_lost
  invalid_device_setup,  ///< A vhost-user request was refused before anything was sent; see its failure message. configuration_error
};

/// Groups of errors an embedder acts on, compared with `ec == condition::x`.
enum class condition {
  configuration_error = 1, ///< Fix the options or the binary: retrying cannot help.
  start_failure,           ///< passt could not be started or did not come up.
  connection_lost,         ///< The link to a running passt broke: a restart may help.
  frame_refused,           ///< One frame was refused; the transport is still usable.
};

namespace detail {

/// The condition each code belongs to; 0 for none.
constexpr int condition_of(errc e) noexcept {
  switch (e) {
    case errc::invalid_options:
    case errc::unsupported_option:
    case errc::passt_not_found:
    case errc::invalid_device_setup: return int(condition::configuration_error);
    case errc::probe_failed:
    case errc::passt_exited:
    case errc::passt_killed:
    case errc::start_timeout:
    case errc::bad_pidfile:
    case errc::process_gone: return int(condition::start_failure);
    case errc::bad_frame_length:
    case errc::connection_closed:
    case errc::passt_terminated:
    case errc::protocol_error: return int(condition::connection_lost);
    case errc::frame_too_short:
    case errc::frame_too_long: return int(condition::frame_refused);
    case errc::would_block:
    case errc::transport_closed:
    case errc::restart_limit_reached:
    case errc::stopped:
    case errc::not_running:
    case errc::operation_in_progress: return 0;
  }
  return 0;
}

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
      case errc::process_gone: return "the process named by the pidfile is not the passt we started";
      case errc::frame_too_short: return "frame shorter than 14 bytes refused";
      case errc::frame_too_long: return "frame longer than 65535 bytes refused";
      case errc::bad_frame_length: return "peer sent an invalid frame length";
      case errc::would_block: return "send queue full";
      case errc::connection_closed: return "connection closed by passt";
      case errc::transport_closed: return "transport closed";
      case errc::restart_limit_reached: return "passt restart attempts exhausted";
      case errc::stopped: return "stopped";
      case errc::not_running: return "passt is not running";
      case errc::operation_in_progress: return "an operation of this kind is already pending";
      case errc::passt_terminated: return "passt exited or was killed";
      case errc::protocol_error: return "protocol error on the connection to passt";
      case errc::invalid_device_setup: return "vhost-user request refused before anything was sent";
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

inline std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), error_category()}; }

inline std::error_condition make_error_condition(condition c) noexcept {
  return {static_cast<int>(c), condition_category()};
}

inline bool detail::errc_category_impl::equivalent(int value, const std::error_condition& cond) const noexcept {
  return cond.category() == condition_category() && condition_of(static_cast<errc>(value)) == cond.value() &&
         cond.value() != 0;
}

} // namespace netpasst

template <> struct std::is_error_code_enum<netpasst::errc> : std::true_type {};
template <> struct std::is_error_condition_enum<netpasst::condition> : std::true_type {};
