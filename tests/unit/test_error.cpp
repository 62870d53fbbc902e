#include <netpasst/error.hpp>

#include <catch2/catch.hpp>

using netpasst::condition;
using netpasst::errc;

TEST_CASE("errc values convert to error_code with netpasst's category and a message") {
  for (int value = int(errc::invalid_options); value <= int(errc::not_running); ++value) {
    std::error_code ec = static_cast<errc>(value);
    CHECK(ec.category() == netpasst::error_category());
    CHECK(std::string(ec.category().name()) == "netpasst");
    CHECK(ec.message() != "unknown netpasst error");
  }
  CHECK(std::error_code(static_cast<errc>(999)).message() == "unknown netpasst error");
}

TEST_CASE("conditions group the errors an embedder acts on") {
  CHECK(std::error_code(errc::invalid_options) == condition::configuration_error);
  CHECK(std::error_code(errc::unsupported_option) == condition::configuration_error);
  CHECK(std::error_code(errc::passt_exited) == condition::start_failure);
  CHECK(std::error_code(errc::start_timeout) == condition::start_failure);
  CHECK(std::error_code(errc::connection_closed) == condition::connection_lost);
  CHECK(std::error_code(errc::bad_frame_length) == condition::connection_lost);
  CHECK(std::error_code(errc::frame_too_long) == condition::frame_refused);

  CHECK(std::error_code(errc::would_block) != condition::frame_refused);
  CHECK(std::error_code(errc::connection_closed) != condition::start_failure);
  CHECK(std::error_code(errc::invalid_options) != condition::connection_lost);
  // An OS error never matches a netpasst condition.
  CHECK(std::make_error_code(std::errc::connection_reset) != condition::connection_lost);
}
