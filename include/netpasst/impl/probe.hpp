#pragma once
// Implementation of probe.hpp. Included at its end.

#include <netpasst/probe.hpp>

#include <netpasst/detail/spawn.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>

namespace netpasst {

inline bool passt_capabilities::supports(std::string_view long_option) const {
  std::string name = long_option.starts_with("--") ? std::string(long_option) : "--" + std::string(long_option);
  return long_options.count(name) != 0;
}

inline passt_capabilities parse_passt_help(std::string_view help_text) {
  passt_capabilities caps;
  while (!help_text.empty()) {
    auto eol = help_text.find('\n');
    std::string_view line = help_text.substr(0, eol);
    help_text = eol == help_text.npos ? std::string_view{} : help_text.substr(eol + 1);
    // Option lines: "  -d, --debug\t\tBe verbose", "  --log-size BYTES\t...".
    auto start = line.find_first_not_of(" \t");
    if (start == 0 || start == line.npos || line[start] != '-') continue;
    line.remove_prefix(start);
    while (!line.empty() && line[0] == '-') {
      auto end = std::min(line.find_first_of(" \t"), line.size());
      std::string_view word = line.substr(0, end);
      if (word.ends_with(',')) word.remove_suffix(1);
      if (word.size() > 2 && word.starts_with("--") &&
          std::all_of(word.begin() + 2, word.end(), [](unsigned char c) { return std::isalnum(c) || c == '-'; }))
        caps.long_options.emplace(word);
      line.remove_prefix(end);
      line.remove_prefix(std::min(line.find_first_not_of(' '), line.size())); // one word gap, not the tab
    }
  }
  return caps;
}

namespace detail {

/// Why `binary` cannot be executed, found the way execvp looks for it.
inline std::string why_not_executable(const std::string& binary) {
  std::string path = binary;
  if (binary.find('/') == binary.npos) {
    const char* env = std::getenv("PATH");
    std::string_view dirs = env ? env : "/usr/local/bin:/bin:/usr/bin";
    path.clear();
    while (path.empty()) {
      auto colon = dirs.find(':');
      std::string dir(dirs.substr(0, colon));
      std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + binary;
      if (::access(candidate.c_str(), F_OK) == 0) path = candidate;
      if (colon == dirs.npos) break;
      dirs.remove_prefix(colon + 1);
    }
    if (path.empty()) return quote(binary) + " was not found in PATH (" + printable(env ? env : "", 200) + ")";
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return quote(path) + ": " + std::strerror(errno);
  if (S_ISDIR(st.st_mode)) return quote(path) + " is a directory";
  if (!S_ISREG(st.st_mode)) return quote(path) + " is not a regular file";
  if (::access(path.c_str(), X_OK) != 0) return quote(path) + " is not executable: " + std::strerror(errno);
  return quote(path) + " could not be executed (not a program this system runs?)";
}

/// The end of a program's stderr, quoted, for a failure message.
inline std::string stderr_tail(const std::string& err) {
  std::string_view tail = err;
  while (!tail.empty() && (tail.back() == '\n' || tail.back() == ' ')) tail.remove_suffix(1);
  if (tail.empty()) return "nothing on stderr";
  if (tail.size() > 200) tail = tail.substr(tail.size() - 200);
  return "its stderr ends: " + quote(tail, '\'', 200);
}

} // namespace detail

inline passt_capabilities probe_passt(const std::string& binary, std::error_code& ec, std::string& failure) {
  failure.clear();
  auto run = detail::run_and_capture({binary, "--help"}, std::chrono::seconds(5), ec);
  if (ec == errc::passt_not_found) {
    failure = detail::why_not_executable(binary);
    return {};
  }
  if (ec == errc::start_timeout) {
    ec = errc::probe_failed;
    failure = detail::quote(binary) + " --help did not finish within 5 s (killed)";
    return {};
  }
  if (ec) {
    failure = "running " + detail::quote(binary) + " --help: " + ec.message();
    return {};
  }
  auto caps = parse_passt_help(run.err + "\n" + run.out);
  if (caps.long_options.empty()) {
    ec = errc::probe_failed;
    failure = detail::quote(binary) + " --help ended with status " + std::to_string(run.exit_status) +
              " and listed no options; " + detail::stderr_tail(run.err);
  }
  return caps;
}

inline passt_capabilities probe_passt(const std::string& binary, std::error_code& ec) {
  std::string failure;
  return probe_passt(binary, ec, failure);
}

inline passt_capabilities probe_passt(const std::string& binary) {
  std::error_code ec;
  std::string failure;
  auto caps = probe_passt(binary, ec, failure);
  if (ec) throw std::system_error(ec, "probing " + detail::quote(binary) + ": " + failure);
  return caps;
}

inline std::vector<diagnostic> unsupported_options(const options& o, const passt_capabilities& caps) {
  std::vector<diagnostic> out;
  auto report = [&](std::string pointer, const std::string& option) {
    diagnostic d{std::move(pointer), "this passt does not support " + detail::printable(option, 64)};
    if (std::find(out.begin(), out.end(), d) == out.end()) out.push_back(std::move(d));
  };
  for (auto& segment : detail::argv_segments(o)) {
    if (segment.args.empty()) continue;
    const std::string& first = segment.args.front();
    if (!segment.pointer.starts_with("/param/")) {
      // One diagnostic per key, even for several values ("/search/1" -> "/search").
      std::string key = segment.pointer.substr(0, segment.pointer.find('/', 1));
      if (!caps.supports(first)) report(key, first);
      continue;
    }
    // param: options in full long form ("--name" or "--name=value"); values
    // never start with '-'. An item that did not parse is checked by the
    // name it spells.
    for (const auto& arg : segment.args) {
      if (!arg.starts_with("--") || arg == "--") continue;
      std::string name = arg.substr(0, arg.find('='));
      if (!caps.supports(name)) report(segment.pointer, name);
    }
  }
  return out;
}

} // namespace netpasst
