#include <netpasst/error.hpp>

#include <netpasst/guest/error.hpp>

#include <catch2/catch.hpp>

#include <map>
#include <optional>
#include <set>
#include <string>

using netpasst::condition;
using netpasst::errc;
using netpasst::guest_errc;

TEST_CASE("every errc has netpasst's category, its own message, and at most one condition") {
  // The whole table: each code and the one condition it belongs to (or none).
  const std::map<errc, std::optional<condition>> expected = {
      {errc::invalid_options, condition::configuration_error},
      {errc::unsupported_option, condition::configuration_error},
      {errc::probe_failed, condition::start_failure},
      {errc::passt_not_found, condition::configuration_error},
      {errc::passt_exited, condition::start_failure},
      {errc::passt_killed, condition::start_failure},
      {errc::start_timeout, condition::start_failure},
      {errc::bad_pidfile, condition::start_failure},
      {errc::process_gone, condition::start_failure},
      {errc::frame_too_short, condition::frame_refused},
      {errc::frame_too_long, condition::frame_refused},
      {errc::bad_frame_length, condition::connection_lost},
      {errc::would_block, std::nullopt},
      {errc::connection_closed, condition::connection_lost},
      {errc::transport_closed, std::nullopt},
      {errc::restart_limit_reached, std::nullopt},
      {errc::stopped, std::nullopt},
      {errc::not_running, std::nullopt},
      {errc::operation_in_progress, std::nullopt},
      {errc::passt_terminated, condition::connection_lost},
      {errc::protocol_error, condition::connection_lost},
      {errc::invalid_device_setup, condition::configuration_error},
  };
  const condition all[] = {condition::configuration_error, condition::start_failure, condition::connection_lost,
                           condition::frame_refused};
  std::set<std::string> messages;
  for (const auto& [code, group] : expected) {
    const std::error_code ec = code;
    INFO(ec.message());
    CHECK(ec.category() == netpasst::error_category());
    CHECK(std::string(ec.category().name()) == "netpasst");
    CHECK(ec.message() != "unknown netpasst error");
    CHECK(messages.insert(ec.message()).second);
    for (condition c : all) CHECK((ec == c) == (group == c));
  }
  // The table covers the enum: the value after the last one is unknown.
  CHECK(std::error_code(static_cast<errc>(int(errc::invalid_device_setup) + 1)).message() == "unknown netpasst error");
  CHECK(expected.size() == std::size_t(errc::invalid_device_setup));
}

TEST_CASE("OS errors and guest errors never match a netpasst condition") {
  CHECK(std::make_error_code(std::errc::connection_reset) != condition::connection_lost);
  CHECK(std::error_code(guest_errc::guest_timeout) != condition::start_failure);
  CHECK(std::error_code(guest_errc::malformed_packet) != condition::frame_refused);
}

TEST_CASE("guest errors have their own category") {
  for (int value = int(guest_errc::packet_truncated); value <= int(guest_errc::no_address); ++value) {
    const std::error_code ec = static_cast<guest_errc>(value);
    CHECK(ec.category() == netpasst::guest_category());
    CHECK(ec.message() != "unknown netpasst guest error");
  }
  CHECK(std::error_code(guest_errc::dhcp_nak) != std::error_code(static_cast<errc>(int(guest_errc::dhcp_nak))));
}
