#pragma once
// Implementation of probe.hpp. Included at its end.

#include <netpasst/detail/spawn.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>

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

inline passt_capabilities probe_passt(const std::string& binary, std::error_code& ec) {
  auto run = detail::run_and_capture({binary, "--help"}, std::chrono::seconds(5), ec);
  if (ec == errc::start_timeout) ec = errc::probe_failed;
  if (ec) return {};
  auto caps = parse_passt_help(run.err + "\n" + run.out);
  if (caps.long_options.empty()) ec = errc::probe_failed;
  return caps;
}

inline passt_capabilities probe_passt(const std::string& binary) {
  std::error_code ec;
  auto caps = probe_passt(binary, ec);
  if (ec) throw std::system_error(ec, "probing " + binary + " --help");
  return caps;
}

inline std::vector<diagnostic> unsupported_options(const options& o, const passt_capabilities& caps) {
  std::vector<diagnostic> out;
  auto report = [&](std::string pointer, const std::string& option) {
    diagnostic d{std::move(pointer), "this passt does not support " + option};
    if (std::find(out.begin(), out.end(), d) == out.end()) out.push_back(std::move(d));
  };
  bool value_next = false;
  for (auto& segment : detail::argv_segments(o)) {
    const std::string& first = segment.args.front();
    if (!segment.pointer.starts_with("/param/")) {
      // One diagnostic per key, even for several values ("/search/1" -> "/search").
      std::string key = segment.pointer.substr(0, segment.pointer.find('/', 1));
      if (!caps.supports(first)) report(key, first);
      continue;
    }
    // param: long options (getopt accepts unambiguous abbreviations), skipping values.
    if (std::exchange(value_next, false) || !first.starts_with("--") || first == "--") continue;
    std::string name = first.substr(0, first.find('='));
    bool known = std::any_of(caps.long_options.begin(), caps.long_options.end(),
                             [&](const std::string& l) { return l.starts_with(name); });
    if (!known) report(segment.pointer, name);
    value_next = first.find('=') == first.npos &&
                 std::find(detail::options_with_argument.begin(), detail::options_with_argument.end(),
                           std::string_view(name).substr(2)) != detail::options_with_argument.end();
  }
  return out;
}

} // namespace netpasst
