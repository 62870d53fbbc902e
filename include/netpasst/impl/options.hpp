#pragma once
// Implementation of options.hpp: the value rules. Included at its end.

#include <netpasst/options.hpp>

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <bitset>
#include <cctype>
#include <charconv>
#include <optional>
#include <string_view>
#include <utility>

namespace netpasst {
namespace detail {

/// Appends byte `c` to `out` as an escape sequence (`\n`, `\t`, `\r`, `\0`
/// or `\xNN`).
inline void append_escaped(std::string& out, unsigned char c) {
  static constexpr char hex[] = "0123456789abcdef";
  switch (c) {
    case '\n': out += "\\n"; break;
    case '\t': out += "\\t"; break;
    case '\r': out += "\\r"; break;
    case '\0': out += "\\0"; break;
    default: out += "\\x"; out += hex[c >> 4]; out += hex[c & 15];
  }
}

inline bool is_printable_ascii(unsigned char c) { return c >= 0x20 && c < 0x7f; }

/// `s` with every byte that is not printable ASCII escaped, cut after
/// `max_bytes` bytes of `s` with a marker: one printable line, whatever `s`.
inline std::string printable(std::string_view s, std::size_t max_bytes) {
  std::string out;
  const std::size_t n = std::min(s.size(), max_bytes);
  out.reserve(n + 16);
  for (std::size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (is_printable_ascii(c)) out += char(c);
    else append_escaped(out, c);
  }
  if (s.size() > max_bytes) out += "... (" + std::to_string(s.size()) + " bytes)";
  return out;
}

/// How a diagnostic quotes a value: `'value'`, with quotes, backslashes and
/// every byte that is not printable ASCII escaped, and at most `max_bytes`
/// bytes of the value, then "... (N bytes)".
inline std::string quote(std::string_view s, char q = '\'', std::size_t max_bytes = 64) {
  std::string out(1, q);
  const std::size_t n = std::min(s.size(), max_bytes);
  for (std::size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == static_cast<unsigned char>(q) || c == '\\') (out += '\\') += char(c);
    else if (is_printable_ascii(c)) out += char(c);
    else append_escaped(out, c);
  }
  out += q;
  if (s.size() > max_bytes) out += "... (" + std::to_string(s.size()) + " bytes)";
  return out;
}

/// The offset of the first byte of `s` that is not part of well-formed
/// UTF-8 (no overlong forms, surrogates or code points past U+10FFFF), or
/// `s.size()` when there is none.
inline std::size_t invalid_utf8_offset(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t n;
    unsigned char lo = 0x80, hi = 0xbf; // range of the second byte
    if (c < 0x80) n = 1;
    else if (c >= 0xc2 && c <= 0xdf) n = 2;
    else if (c >= 0xe0 && c <= 0xef) n = 3, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
    else if (c >= 0xf0 && c <= 0xf4) n = 4, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
    else return i;
    if (s.size() - i < n) return i;
    for (std::size_t k = 1; k < n; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xbf)) return i;
    }
    i += n;
  }
  return i;
}

/// Why `s` cannot be an option string, or "" when it can: too long, a NUL,
/// another control character, not UTF-8 (JSON, the options' text form,
/// carries nothing else).
inline std::string string_problem(std::string_view s) {
  if (s.size() > option_limits::string_bytes)
    return "too long: " + std::to_string(s.size()) + " bytes, at most " + std::to_string(option_limits::string_bytes);
  if (auto bad = invalid_utf8_offset(s); bad != s.size())
    return quote(s) + " is not valid UTF-8 at offset " + std::to_string(bad);
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == 0)
      return quote(s) + " contains a NUL byte at offset " + std::to_string(i) +
             " (exec would cut the argument there)";
    if (c < 0x20 || c == 0x7f) {
      std::string name;
      append_escaped(name, c);
      return quote(s) + " contains the control character " + name + " at offset " + std::to_string(i);
    }
  }
  return {};
}

/// Parses a decimal number in [0, max]; false on anything else.
inline bool parse_number(std::string_view s, unsigned max, unsigned& out) {
  if (s.empty() || s.size() > 10) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && end == s.data() + s.size() && out <= max;
}

/// The family of an IP address (4 or 6), 0 when `s` is none. With
/// `allow_prefix`, a "/len" suffix is accepted and checked.
inline int ip_family(std::string_view s, bool allow_prefix = false) {
  if (auto slash = s.find('/'); slash != s.npos) {
    if (!allow_prefix) return 0;
    int family = ip_family(s.substr(0, slash));
    unsigned len;
    if (!parse_number(s.substr(slash + 1), family == 4 ? 32 : 128, len)) return 0;
    return family;
  }
  // inet_pton reads a C string: a NUL inside `s` must not end it early.
  if (s.size() > 64 || s.find('\0') != s.npos) return 0;
  std::string text(s);
  unsigned char buf[16];
  if (inet_pton(AF_INET, text.c_str(), buf) == 1) return 4;
  if (inet_pton(AF_INET6, text.c_str(), buf) == 1) return 6;
  return 0;
}

/// Linux's rule for interface names (dev_valid_name): 1..15 bytes, not "." or
/// "..", no '/', ':' or white space.
inline bool valid_ifname(std::string_view s) {
  if (s.empty() || s.size() > 15 || s == "." || s == "..") return false;
  return std::none_of(s.begin(), s.end(), [](unsigned char c) {
    return c == '/' || c == ':' || std::isspace(c) || c < 0x20 || c == 0x7f;
  });
}

/// A DNS name: labels of 1..63 letters, digits, '-' or '_', 253 bytes at most,
/// an optional final dot.
inline bool valid_domain(std::string_view s) {
  if (!s.empty() && s.back() == '.') s.remove_suffix(1);
  if (s.empty() || s.size() > 253) return false;
  std::size_t label = 0;
  for (unsigned char c : s) {
    if (c == '.') {
      if (label == 0) return false;
      label = 0;
    } else if (std::isalnum(c) || c == '-' || c == '_') {
      if (++label > 63) return false;
    } else {
      return false;
    }
  }
  return label > 0;
}

inline bool valid_mac(std::string_view s) {
  if (s.size() != 17) return false;
  for (std::size_t i = 0; i < s.size(); ++i)
    if (i % 3 == 2 ? s[i] != ':' : !std::isxdigit(static_cast<unsigned char>(s[i]))) return false;
  return true;
}

/// Dotted-decimal netmask with contiguous ones, or a bit count 0..32.
inline bool valid_netmask(std::string_view s) {
  unsigned bits;
  if (parse_number(s, 32, bits)) return true;
  if (s.size() > 15 || s.find('\0') != s.npos) return false;
  std::string text(s);
  in_addr a;
  if (inet_pton(AF_INET, text.c_str(), &a) != 1) return false;
  std::uint32_t m = ntohl(a.s_addr);
  return (m & (~m >> 1)) == 0; // ones then zeros only
}

/// `first[-last]` into [first, last]; "" when fine, else the reason.
inline std::string port_range(std::string_view s, unsigned& first, unsigned& last) {
  auto dash = s.find('-');
  if (!parse_number(s.substr(0, dash), 65535, first)) return quote(s) + " is not a port or port range (0..65535)";
  last = first;
  if (dash != s.npos && !parse_number(s.substr(dash + 1), 65535, last))
    return quote(s) + " is not a port or port range (0..65535)";
  if (last < first) return "range " + quote(s) + " ends before it starts";
  return {};
}

/// Checks one `-t`/`-u` spec against the grammar Debian 12's passt enforces
/// (newer builds accept more, never less):
///   spec  := "none" | [ addr ["%" ifname] "/" ] ( "all" | chunk { "," chunk } )
///   chunk := "~" first ["-" last] | first ["-" last] [ ":" tofirst ["-" tolast] ]
/// where "all" takes no address, no port is excluded twice and no port is
/// forwarded twice: in this spec, or by an earlier spec of the same list
/// when `forwarded` carries their ports (the ports this spec forwards are
/// added to it). "" when valid, else why not.
inline std::string port_spec_error(std::string_view spec, std::bitset<65536>* forwarded = nullptr) {
  if (spec == "none") return {};
  std::string_view body = spec;
  if (auto slash = spec.find('/'); slash != spec.npos) {
    std::string_view prefix = spec.substr(0, slash);
    body = spec.substr(slash + 1);
    auto pct = prefix.find('%');
    std::string_view addr = prefix.substr(0, pct);
    if (addr.empty() && pct != prefix.npos)
      return "an interface needs an address before it (Debian 12's passt refuses " + quote(spec) +
             "): write 0.0.0.0" + std::string(prefix) + "/... or ::" + std::string(prefix) + "/...";
    if (ip_family(addr) == 0)
      return quote(addr) + " before '/' is not an IPv4 or IPv6 address to bind to (passt takes no target address)";
    if (pct != prefix.npos && !valid_ifname(prefix.substr(pct + 1)))
      return quote(prefix.substr(pct + 1)) + " is not an interface name";
    if (body == "all") return "'all' takes no address (passt refuses " + quote(spec) + ")";
  }
  if (body == "all") return {};
  if (body.empty()) return "no ports given";
  std::vector<std::pair<unsigned, unsigned>> ranges; // forwarded, exclusions applied later
  std::bitset<65536> excluded, local;
  std::bitset<65536>& seen = forwarded ? *forwarded : local;
  while (true) {
    auto comma = body.find(',');
    std::string_view chunk = body.substr(0, comma);
    unsigned first, last, tofirst, tolast;
    if (chunk.empty()) return "empty item in port list";
    if (chunk == "all") return "'all' must be the whole spec";
    if (chunk[0] == '~') {
      if (auto e = port_range(chunk.substr(1), first, last); !e.empty()) return e;
      for (unsigned p = first; p <= last; ++p)
        if (excluded.test(p)) return "port " + std::to_string(p) + " is excluded twice (passt refuses overlaps)";
        else excluded.set(p);
    } else {
      auto colon = chunk.find(':');
      if (auto e = port_range(chunk.substr(0, colon), first, last); !e.empty()) return e;
      if (colon != chunk.npos) {
        if (auto e = port_range(chunk.substr(colon + 1), tofirst, tolast); !e.empty()) return e;
        if (tolast - tofirst != last - first) return quote(chunk) + " maps ranges of different lengths";
      }
      ranges.emplace_back(first, last);
    }
    if (comma == body.npos) break;
    body = body.substr(comma + 1);
  }
  // Like passt: a port already forwarded is an overlap even where this spec
  // excludes it; an excluded port is not forwarded. (An exclusion-only spec
  // forwards every other port below 49152, which is not tracked.)
  for (auto [first, last] : ranges)
    for (unsigned p = first; p <= last; ++p)
      if (seen.test(p)) return "port " + std::to_string(p) + " is forwarded twice (passt refuses overlaps)";
      else if (!excluded.test(p)) seen.set(p);
  return {};
}

/// What passt does with an option when it comes through `param`.
enum class param_use {
  allowed,   ///< passed on
  reserved,  ///< the launcher owns it
  pasta_only ///< passt refuses it ("is for pasta mode only")
};

/// One entry of passt's getopt_long table.
struct passt_option {
  std::string_view name;        ///< long name, without "--"
  char short_name;              ///< short option letter, 0 if none
  bool takes_value;             ///< required_argument (passt has no optional ones)
  param_use use = param_use::allowed;
};

/// The union of passt's option tables, from Debian 12's build (2023) to
/// current upstream. An option a given build lacks makes that build exit
/// with "unrecognized option", which `unsupported_options` (probe.hpp) names.
inline constexpr passt_option passt_options[] = {
    {"debug", 'd', false},
    {"quiet", 'q', false},
    {"foreground", 'f', false, param_use::reserved},
    {"stderr", 'e', false},
    {"log-file", 'l', true},
    {"help", 'h', false, param_use::reserved},
    {"socket", 's', true, param_use::reserved},
    {"fd", 'F', true, param_use::reserved},
    {"ns-ifname", 'I', true, param_use::pasta_only},
    {"pcap", 'p', true},
    {"pid", 'P', true, param_use::reserved},
    {"mtu", 'm', true},
    {"address", 'a', true},
    {"netmask", 'n', true},
    {"mac-addr", 'M', true},
    {"gateway", 'g', true},
    {"interface", 'i', true},
    {"outbound", 'o', true},
    {"dns", 'D', true},
    {"search", 'S', true},
    {"hostname", 'H', true},
    {"no-tcp", 0, false},
    {"no-udp", 0, false},
    {"no-icmp", 0, false},
    {"no-dhcp", 0, false},
    {"no-dhcpv6", 0, false},
    {"no-ndp", 0, false},
    {"no-ra", 0, false},
    {"no-splice", 0, false},
    {"splice-only", 0, false},
    {"freebind", 0, false},
    {"no-map-gw", 0, false},
    {"ipv4-only", '4', false},
    {"ipv6-only", '6', false},
    {"one-off", '1', false},
    {"tcp-ports", 't', true},
    {"udp-ports", 'u', true},
    {"tcp-ns", 'T', true, param_use::pasta_only},
    {"udp-ns", 'U', true, param_use::pasta_only},
    {"userns", 0, true, param_use::pasta_only},
    {"netns", 0, true, param_use::pasta_only},
    {"netns-only", 0, false, param_use::pasta_only},
    {"config-net", 0, false, param_use::pasta_only},
    {"ns-mac-addr", 0, true, param_use::pasta_only},
    {"dhcp-dns", 0, false, param_use::pasta_only},
    {"no-dhcp-dns", 0, false},
    {"dhcp-search", 0, false, param_use::pasta_only},
    {"no-dhcp-search", 0, false},
    {"dns-forward", 0, true},
    {"no-netns-quit", 0, false, param_use::pasta_only},
    {"trace", 0, false},
    {"runas", 0, true},
    {"log-size", 0, true},
    {"version", 0, false, param_use::reserved},
    {"outbound-if4", 0, true},
    {"outbound-if6", 0, true},
    {"no-copy-routes", 0, false, param_use::pasta_only},
    {"no-copy-addrs", 0, false, param_use::pasta_only},
    {"map-host-loopback", 0, true},
    {"map-guest-addr", 0, true},
    {"host-lo-to-ns-lo", 0, false, param_use::pasta_only},
    {"dns-host", 0, true},
    {"vhost-user", 0, false},
    {"print-capabilities", 0, false, param_use::reserved},
    {"socket-path", 0, true, param_use::reserved}, // an alias of -s
    {"fqdn", 0, true},
    {"repair-path", 0, true},
    {"migrate-exit", 0, false},
    {"migrate-no-linger", 0, false},
    {"stats", 0, true},
};

/// The entry for `--name`, as getopt_long resolves it: an exact name, else
/// the one option `name` abbreviates. `ambiguous` lists the candidates when
/// several match. Like glibc, which takes an abbreviation of several
/// entries for the same option (`--sock`: `--socket`, `--socket-path`) as
/// that option, an abbreviation of reserved options only is the first.
inline const passt_option* find_long_option(std::string_view name, std::vector<std::string_view>* ambiguous = nullptr) {
  const passt_option* found = nullptr;
  std::size_t matches = 0;
  bool all_reserved = true;
  for (const auto& o : passt_options) {
    if (o.name == name) return &o;
    if (!name.empty() && o.name.starts_with(name)) {
      if (!found) found = &o;
      ++matches;
      all_reserved = all_reserved && o.use == param_use::reserved;
      if (ambiguous) ambiguous->push_back(o.name);
    }
  }
  return matches == 1 || (matches > 1 && all_reserved) ? found : nullptr;
}

inline const passt_option* find_short_option(char c) {
  for (const auto& o : passt_options)
    if (o.short_name == c && c != 0) return &o;
  return nullptr;
}

/// One option read from `param`, in canonical form, with the item it started at.
struct param_option {
  std::size_t item;
  std::string args[2]; ///< "--name" and the value, or one of them empty
};

/// `--name value`, or `--name=value` when the value starts with '-' (so no
/// argument after argv[0] that starts with '-' is ever a value).
inline std::vector<std::string> canonical_args(const passt_option& o, std::optional<std::string_view> value) {
  std::string name = "--" + std::string(o.name);
  if (!value) return {std::move(name)};
  if (!value->empty() && value->front() == '-') return {name + "=" + std::string(*value)};
  return {std::move(name), std::string(*value)};
}

/// Reads `param` as passt's getopt_long would. Each parsed option is passed
/// to `emit(item, args)` in canonical form; each problem to
/// `problem(item, message)`. Returns true when everything parsed.
template <class Emit, class Problem>
bool parse_param(const std::vector<std::string>& param, Emit&& emit, Problem&& problem) {
  bool ok = true;
  auto fail = [&](std::size_t i, std::string message) {
    problem(i, std::move(message));
    ok = false;
  };
  auto refused = [&](std::size_t i, const passt_option& o, std::string_view spelled) {
    if (o.use == param_use::allowed) return false;
    std::string names = o.short_name ? std::string("-") + o.short_name + ", --" + std::string(o.name)
                                     : "--" + std::string(o.name);
    if (o.use == param_use::reserved)
      fail(i, quote(spelled) + " is reserved (" + names + "): the launcher owns it, it cannot come through param");
    else
      fail(i, quote(spelled) + (spelled == "--" + std::string(o.name) ? "" : " (" + names + ")") +
                  " is for pasta mode only: passt refuses it");
    return true;
  };
  for (std::size_t i = 0; i < param.size(); ++i) {
    const std::string& p = param[i];
    // A value in the next item: present and not empty.
    auto next_value = [&](const passt_option& o) -> std::optional<std::string_view> {
      if (i + 1 >= param.size()) {
        fail(i, quote(p) + " needs a value (--" + std::string(o.name) + " VALUE): none follows in param");
        return std::nullopt;
      }
      if (param[i + 1].empty()) {
        fail(i + 1, "empty value for --" + std::string(o.name));
        ++i;
        return std::nullopt;
      }
      return std::string_view(param[++i]);
    };
    if (p.empty()) {
      fail(i, "empty argument");
    } else if (p == "--") {
      fail(i, "'--' ends passt's options: the launcher's own arguments after it would be ignored");
    } else if (p[0] != '-' || p == "-") {
      fail(i, quote(p) + " is not an option: passt takes no other arguments (a value belongs right after its option)");
    } else if (p[1] == '-') {
      std::string_view body = std::string_view(p).substr(2);
      auto eq = body.find('=');
      std::string_view name = body.substr(0, eq);
      std::vector<std::string_view> candidates;
      const passt_option* o = find_long_option(name, &candidates);
      if (!o) {
        if (candidates.size() > 1) {
          std::string list;
          for (auto c : candidates) list += (list.empty() ? "--" : ", --") + std::string(c);
          fail(i, quote(p) + " is ambiguous (" + list + "): write the option in full");
        } else {
          fail(i, quote(p) + " is not a passt option");
        }
        continue;
      }
      if (refused(i, *o, p)) {
        if (o->takes_value && eq == body.npos && i + 1 < param.size()) ++i; // its value
        continue;
      }
      if (!o->takes_value) {
        if (eq != body.npos) fail(i, quote(p) + ": --" + std::string(o->name) + " takes no value");
        else emit(i, canonical_args(*o, std::nullopt));
        continue;
      }
      const std::size_t start = i;
      std::optional<std::string_view> value;
      if (eq != body.npos) {
        value = body.substr(eq + 1);
        if (value->empty()) {
          fail(i, "empty value for --" + std::string(o->name));
          continue;
        }
      } else {
        value = next_value(*o);
      }
      if (value) emit(start, canonical_args(*o, value));
    } else {
      // A cluster of short options: "-dq", "-P5", "-qP" + next item.
      const std::size_t start = i;
      std::vector<std::string> args;
      bool cluster_ok = true;
      for (std::size_t c = 1; c < p.size(); ++c) {
        const passt_option* o = find_short_option(p[c]);
        if (!o) {
          fail(i, quote(p) + ": -" + printable(std::string_view(p).substr(c, 1), 1) + " is not a passt option");
          cluster_ok = false;
          break;
        }
        if (refused(i, *o, p)) {
          if (o->takes_value && c + 1 == p.size() && i + 1 < param.size()) ++i; // its value
          cluster_ok = false;
          break;
        }
        if (!o->takes_value) {
          args.push_back("--" + std::string(o->name));
          continue;
        }
        std::optional<std::string_view> value;
        if (c + 1 < p.size()) value = std::string_view(p).substr(c + 1);
        else value = next_value(*o);
        if (!value) {
          cluster_ok = false;
        } else {
          auto a = canonical_args(*o, value);
          args.insert(args.end(), a.begin(), a.end());
        }
        break;
      }
      if (cluster_ok) emit(start, std::move(args));
    }
  }
  return ok;
}

/// The long option ("--debug") of each option in `args`, canonical args of
/// `parse_param` (a value starting with '-' is attached after '=').
inline std::vector<std::string_view> option_names(const std::vector<std::string>& args) {
  std::vector<std::string_view> names;
  for (const auto& a : args)
    if (a.starts_with("--")) names.push_back(std::string_view(a).substr(0, a.find('=')));
  return names;
}

/// True when `param` sets passt's verbosity (--quiet, --debug, --trace) in
/// any spelling: then the argv has no default --quiet.
inline bool param_sets_verbosity(const std::vector<std::string>& param) {
  bool found = false;
  parse_param(
      param,
      [&](std::size_t, const std::vector<std::string>& args) {
        for (auto n : option_names(args)) found = found || n == "--quiet" || n == "--debug" || n == "--trace";
      },
      [](std::size_t, const std::string&) {});
  return found;
}

} // namespace detail

inline std::string to_string(const diagnostic& d) {
  return detail::printable(d.pointer, 200) + ": " + detail::printable(d.message, 4096);
}

inline invalid_options_error::invalid_options_error(std::vector<diagnostic> diagnostics, std::error_code ec)
    : std::system_error(ec), diagnostics_(std::move(diagnostics)) {
  what_ = ec.message() + ":";
  for (const auto& d : diagnostics_) what_ += "\n" + to_string(d);
}

inline std::vector<diagnostic> validate(const options& o) {
  using namespace detail;
  std::vector<diagnostic> d;
  auto key = [](const char* k) { return std::string("/") + k; };
  auto at = [](const char* k, std::size_t i) { return std::string("/") + k + "/" + std::to_string(i); };
  // The checks every string gets; false (and a diagnostic) when it fails.
  auto clean = [&](const std::string& pointer, const std::string& v, bool option_like_ok = false) {
    if (auto problem = string_problem(v); !problem.empty()) {
      d.push_back({pointer, problem});
      return false;
    }
    if (!option_like_ok && !v.empty() && v[0] == '-') {
      d.push_back({pointer, quote(v) + " starts with '-', which would read as an option (for a file, prefix ./)"});
      return false;
    }
    return true;
  };
  // A list: its length, then each item's hygiene. False when anything failed.
  auto clean_list = [&](const char* k, const std::vector<std::string>& v, bool option_like_ok = false) {
    if (v.size() > option_limits::list_items) {
      d.push_back({key(k), std::to_string(v.size()) + " items: at most " + std::to_string(option_limits::list_items)});
      return false;
    }
    bool ok = true;
    for (std::size_t i = 0; i < v.size(); ++i) ok = clean(at(k, i), v[i], option_like_ok) && ok;
    return ok;
  };
  auto nonempty = [&](const std::optional<std::string>& v, const char* k, const char* what) {
    if (v && v->empty()) d.push_back({key(k), std::string("expected ") + what});
    else if (v) clean(key(k), *v);
  };
  auto ifname = [&](const std::optional<std::string>& v, const char* k) {
    if (v && clean(key(k), *v) && !valid_ifname(*v))
      d.push_back({key(k), quote(*v) + " is not an interface name (1..15 bytes, no '/', ':' or blanks)"});
  };
  // Per-family addresses: at most one IPv4 and one IPv6; `none` alone where allowed.
  auto per_family = [&](const std::vector<std::string>& v, const char* k, bool prefix, bool none) {
    if (v.size() > 2) d.push_back({key(k), "expected at most two addresses, one per IP family"});
    if (!clean_list(k, v)) return;
    bool seen[2] = {false, false};
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (none && v[i] == "none") {
        if (v.size() > 1) d.push_back({at(k, i), "'none' must be the only value"});
        continue;
      }
      int family = ip_family(v[i], prefix);
      if (family == 0) {
        d.push_back({at(k, i), quote(v[i]) + " is not an IPv4 or IPv6 address" + (prefix ? " (with optional /prefix)" : "")});
      } else if (std::exchange(seen[family == 6], true)) {
        d.push_back({at(k, i), "a second IPv" + std::to_string(family) + " address: give at most one per family"});
      }
    }
  };
  // Per protocol (TCP, UDP): the ports forwarded so far, by the key then by
  // param, and whether a spec, or "none"/"all" (which stand alone), was given.
  std::bitset<65536> forwarded[2];
  bool any_spec[2] = {false, false}, lone_spec[2] = {false, false};
  auto ports = [&](const std::vector<std::string>& v, const char* k) {
    const bool udp = k[0] == 'u';
    any_spec[udp] = !v.empty();
    lone_spec[udp] = std::any_of(v.begin(), v.end(), [](auto& s) { return s == "none" || s == "all"; });
    if (!clean_list(k, v)) return;
    for (std::size_t i = 0; i < v.size(); ++i) {
      if ((v[i] == "none" || v[i] == "all") && v.size() > 1)
        d.push_back({at(k, i), quote(v[i]) + " must be the only port spec"});
      else if (auto e = port_spec_error(v[i], &forwarded[udp]); !e.empty()) d.push_back({at(k, i), "bad port spec " + quote(v[i]) + ": " + e});
    }
  };

  nonempty(o.path, "path", "a non-empty program path");
  if (o.quiet.value_or(false) && (o.debug.value_or(false) || o.trace.value_or(false)))
    d.push_back({"/quiet", "quiet cannot be combined with debug or trace (passt refuses both)"});
  if (o.mtu && *o.mtu != 0 && (*o.mtu < 68 || *o.mtu > 65520))
    d.push_back({"/mtu", "MTU " + std::to_string(*o.mtu) + " out of range: expected 0 (do not announce) or 68..65520"});
  per_family(o.address, "address", true, false);
  if (o.netmask && clean("/netmask", *o.netmask)) {
    if (!valid_netmask(*o.netmask))
      d.push_back({"/netmask", quote(*o.netmask) + " is not a netmask (dotted-decimal with contiguous bits, or 0..32)"});
    else if (std::any_of(o.address.begin(), o.address.end(), [](auto& a) { return a.find('/') != a.npos && ip_family(a, true) == 4; }))
      d.push_back({"/netmask", "netmask conflicts with the prefix length given in address"});
  }
  if (o.mac && clean("/mac", *o.mac) && !valid_mac(*o.mac))
    d.push_back({"/mac", quote(*o.mac) + " is not a MAC address (xx:xx:xx:xx:xx:xx)"});
  per_family(o.gateway, "gateway", false, false);
  ifname(o.interface, "interface");
  per_family(o.outbound, "outbound", false, false);
  ifname(o.outbound_if4, "outbound-if4");
  ifname(o.outbound_if6, "outbound-if6");
  if (clean_list("dns", o.dns)) {
    std::size_t per_family[2] = {0, 0};
    for (std::size_t i = 0; i < o.dns.size(); ++i) {
      if (o.dns[i] == "none") {
        if (o.dns.size() > 1) d.push_back({at("dns", i), "'none' must be the only value"});
      } else if (int family = ip_family(o.dns[i]); family == 0) {
        d.push_back({at("dns", i), quote(o.dns[i]) + " is not an IPv4 or IPv6 address"});
      } else if (++per_family[family == 6] > 4) { // Debian 12's passt: "Cannot use DNS address"
        d.push_back({at("dns", i), "a fifth IPv" + std::to_string(family) + " server: passt takes at most 4 per family"});
      }
    }
  }
  if (o.fqdn && clean("/fqdn", *o.fqdn) && !valid_domain(*o.fqdn))
    d.push_back({"/fqdn", quote(*o.fqdn) + " is not a domain name"});
  per_family(o.map_host_loopback, "map-host-loopback", false, true);
  per_family(o.map_guest_addr, "map-guest-addr", false, true);
  per_family(o.dns_forward, "dns-forward", false, false);
  per_family(o.dns_host, "dns-host", false, false);
  if (o.ipv4 == false && o.ipv6 == false) d.push_back({"/ipv6", "ipv4 and ipv6 are both false: passt needs at least one"});
  if (o.search.size() > 6) // MAXDNSRCH: passt dies on the seventh
    d.push_back({"/search", std::to_string(o.search.size()) + " domains: passt takes at most 6"});
  else if (clean_list("search", o.search)) {
    for (std::size_t i = 0; i < o.search.size(); ++i) {
      if (o.search[i] == "none") {
        if (o.search.size() > 1) d.push_back({at("search", i), "'none' must be the only value"});
      } else if (!valid_domain(o.search[i])) {
        d.push_back({at("search", i), quote(o.search[i]) + " is not a domain name (one domain per item)"});
      }
    }
  }
  ports(o.tcp_ports, "tcp-ports");
  ports(o.udp_ports, "udp-ports");
  if (clean_list("param", o.param, true)) {
    // --quiet with --debug or --trace, from the keys or param: passt refuses both.
    std::string quiet_at = o.quiet.value_or(false) ? "/quiet" : "";
    std::string verbose_at = o.trace.value_or(false) ? "/trace" : o.debug.value_or(false) ? "/debug" : "";
    // --dns and --search: how many the key gives, where a "none" was given.
    std::size_t dns_count[2] = {0, 0}, search_count = 0;
    std::string dns_none_at, search_none_at;
    for (const auto& s : o.dns)
      if (s == "none") dns_none_at = "/dns";
      else if (int family = ip_family(s); family != 0) ++dns_count[family == 6];
    for (const auto& s : o.search)
      if (s == "none") search_none_at = "/search";
      else ++search_count;
    // --ipv4-only, --ipv6-only: where each was given; passt refuses both.
    std::string only_at[2] = {o.ipv6 == false ? "/ipv6" : "", o.ipv4 == false ? "/ipv4" : ""};
    // The options passt refuses twice ("Multiple --mtu options given",
    // "Redundant interface"...), with where each was given.
    std::vector<std::pair<std::string_view, std::string>> once = {
        {"--quiet", quiet_at},
        {"--debug", o.trace.value_or(false) ? "/trace" : o.debug.value_or(false) ? "/debug" : ""},
        {"--trace", o.trace.value_or(false) ? "/trace" : ""}, {"--stderr", ""}, {"--one-off", ""},
        {"--log-file", o.log_file ? "/log-file" : ""}, {"--log-size", o.log_size ? "/log-size" : ""},
        {"--pcap", o.pcap ? "/pcap" : ""}, {"--runas", o.runas ? "/runas" : ""}, {"--mtu", o.mtu ? "/mtu" : ""},
        {"--interface", o.interface ? "/interface" : ""},
        {"--outbound-if4", o.outbound_if4 ? "/outbound-if4" : ""},
        {"--outbound-if6", o.outbound_if6 ? "/outbound-if6" : ""}};
    // The options passt takes once per IP family, with where each family was given.
    struct per_family_given { std::string_view name; const std::vector<std::string>& key; std::string at[2]; };
    per_family_given families[] = {{"--address", o.address, {}}, {"--gateway", o.gateway, {}},
                                   {"--outbound", o.outbound, {}}, {"--dns-forward", o.dns_forward, {}}};
    for (auto& f : families)
      for (const auto& a : f.key)
        if (int family = ip_family(a, true); family != 0) f.at[family == 6] = "/" + std::string(f.name.substr(2));
    parse_param(
        o.param,
        [&](std::size_t i, const std::vector<std::string>& args) {
          for (std::size_t j = 0; j < args.size(); ++j) {
            const std::string_view a = args[j], n = a.substr(0, a.find('='));
            // The option's value: attached after '=', else the next argument.
            const std::string_view value = n.size() < a.size() ? a.substr(n.size() + 1)
                                           : j + 1 < args.size()  ? std::string_view(args[j + 1]) : "";
            if (n == "--dns" || n == "--search") {
              const bool dns = n == "--dns";
              const int family = dns ? ip_family(value) : 0;
              if (dns && value != "none" && family == 0) continue; // passt's to refuse
              std::string& none_at = dns ? dns_none_at : search_none_at;
              std::size_t& count = dns ? dns_count[family == 6] : search_count;
              if (value == "none" ? !none_at.empty() || (dns ? dns_count[0] + dns_count[1] : search_count) > 0
                                  : !none_at.empty())
                d.push_back({at("param", i), std::string(n) + " " + quote(value) +
                                                 ": 'none' stands alone, passt refuses it with other values" +
                                                 (none_at.empty() ? "" : " (none at " + none_at + ")")});
              else if (value == "none")
                none_at = at("param", i);
              else if (++count > (dns ? 4u : 6u))
                d.push_back({at("param", i), std::string(n) + " " + quote(value) + ": passt takes at most " +
                                                 (dns ? "4 DNS servers per family" : "6 search domains") +
                                                 " (the key's included)"});
              continue;
            }
            if (n == "--tcp-ports" || n == "--udp-ports") {
              const bool udp = n[2] == 'u';
              const std::string_view spec = value;
              const bool lone = spec == "none" || spec == "all";
              // A spec that does not parse is passt's to refuse; only the overlaps are checked.
              if (!port_spec_error(spec).empty()) continue;
              if (lone_spec[udp] || (lone && any_spec[udp]))
                d.push_back({at("param", i), std::string(n) + " " + quote(spec) +
                                                 ": 'none' and 'all' stand alone, passt refuses them with other specs"});
              else if (auto e = port_spec_error(spec, &forwarded[udp]); !e.empty())
                d.push_back({at("param", i), "bad port spec " + quote(spec) + ": " + e});
              any_spec[udp] = true;
              lone_spec[udp] = lone_spec[udp] || lone;
              continue;
            }
            auto f = std::find_if(std::begin(families), std::end(families), [&](auto& e) { return e.name == n; });
            if (f == std::end(families)) continue;
            if (int family = ip_family(value, true); family != 0 && !f->at[family == 6].empty())
              d.push_back({at("param", i), std::string(n) + " gives a second IPv" + std::to_string(family) +
                                               " address (also at " + f->at[family == 6] + "): passt refuses it"});
            else if (family != 0)
              f->at[family == 6] = at("param", i);
          }
          for (auto n : option_names(args)) {
            auto given = std::find_if(once.begin(), once.end(), [&](auto& e) { return e.first == n; });
            if (given != once.end() && !given->second.empty())
              d.push_back({at("param", i), std::string(n) + " is given twice (also at " + given->second +
                                               "): passt refuses it"});
            else if (given != once.end())
              given->second = at("param", i);
            // --trace sets passt's debug flag: a --debug after it is a second one.
            if (n == "--trace" && once[1].second.empty()) once[1].second = at("param", i); // once[1]: --debug
            if (n == "--ipv4-only" || n == "--ipv6-only") {
              const bool v6 = n[5] == '6';
              if (!only_at[!v6].empty())
                d.push_back({at("param", i), std::string(n) + " cannot be combined with --ipv" + (v6 ? "4" : "6") +
                                                 "-only (at " + only_at[!v6] + "): passt refuses both"});
              only_at[v6] = at("param", i);
              continue;
            }
            const bool quiet = n == "--quiet";
            if (!quiet && n != "--debug" && n != "--trace") continue;
            if (const std::string& other = quiet ? verbose_at : quiet_at; !other.empty())
              d.push_back({at("param", i), std::string(n) + " cannot be combined with " +
                                               (quiet ? "debug or trace" : "quiet") + " (at " + other +
                                               "): passt refuses both"});
            (quiet ? quiet_at : verbose_at) = at("param", i);
          }
        },
        [&](std::size_t i, std::string message) { d.push_back({at("param", i), std::move(message)}); });
  }
  if (o.hostname && clean("/hostname", *o.hostname) && (o.hostname->size() > 64 || !valid_domain(*o.hostname)))
    d.push_back({"/hostname", quote(*o.hostname) + " is not a host name (at most 64 bytes)"});
  nonempty(o.log_file, "log-file", "a non-empty file path");
  if (o.log_size && *o.log_size < 40960) d.push_back({"/log-size", "log size " + std::to_string(*o.log_size) + " too small: expected at least 40960"});
  if (o.log_size && *o.log_size > std::uint64_t(INT64_MAX)) // passt reads a long
    d.push_back({"/log-size", "log size " + std::to_string(*o.log_size) + " too large: expected at most " + std::to_string(INT64_MAX)});
  nonempty(o.pcap, "pcap", "a non-empty file path");
  if (o.runas && clean("/runas", *o.runas) &&
      (o.runas->empty() || std::any_of(o.runas->begin(), o.runas->end(), [](unsigned char c) { return std::isspace(c); })))
    d.push_back({"/runas", "expected UID, UID:GID or user[:group] names"});
  return d;
}

} // namespace netpasst
