#pragma once
// Helpers shared by the unit and end-to-end tests.
#include <asio/io_context.hpp>

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

namespace netpasst::test {

/// Runs `io` until `done()` or until `limit` passed (a guard against hangs,
/// not a timing assertion). Returns done().
inline bool run_until(asio::io_context& io, const std::function<bool()>& done,
                      std::chrono::seconds limit = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    io.restart();
    io.run_for(std::chrono::milliseconds(10));
  }
  return done();
}

/// Writes an executable shell script `name` with `body` into a directory of
/// this test program's that is removed when the program exits.
inline std::string write_script(const std::string& name, const std::string& body) {
  static const struct scratch_directory {
    std::filesystem::path path =
        std::filesystem::temp_directory_path() / ("netpasst-test-" + std::to_string(::getpid()));
    scratch_directory() { std::filesystem::create_directories(path); }
    ~scratch_directory() {
      std::error_code ignored;
      std::filesystem::remove_all(path, ignored);
    }
  } scratch;
  const auto path = scratch.path / name;
  std::ofstream(path) << "#!/bin/sh\n" << body;
  using std::filesystem::perms;
  std::filesystem::permissions(path, perms::owner_all | perms::group_read | perms::group_exec | perms::others_read |
                                         perms::others_exec);
  return path.string();
}

} // namespace netpasst::test
