#pragma once
// Implementation of options.hpp: the value rules. Included at its end.

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <string_view>
#include <utility>

namespace netpasst {

inline invalid_options_error::invalid_options_error(std::vector<diagnostic> diagnostics, std::error_code ec)
    : std::system_error(ec), diagnostics_(std::move(diagnostics)) {
  what_ = ec.message() + ":";
  for (const auto& d : diagnostics_) what_ += "\n" + d.pointer + ": " + d.message;
}

namespace detail {

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
    return c == '/' || c == ':' || std::isspace(c) || c == 0;
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
  std::string text(s);
  in_addr a;
  if (inet_pton(AF_INET, text.c_str(), &a) != 1) return false;
  std::uint32_t m = ntohl(a.s_addr);
  return (m & (~m >> 1)) == 0; // ones then zeros only
}

/// `first[-last]` into [first, last]; "" when fine, else the reason.
inline std::string port_range(std::string_view s, unsigned& first, unsigned& last) {
  auto dash = s.find('-');
  if (!parse_number(s.substr(0, dash), 65535, first)) return "'" + std::string(s) + "' is not a port or port range (0..65535)";
  last = first;
  if (dash != s.npos && !parse_number(s.substr(dash + 1), 65535, last))
    return "'" + std::string(s) + "' is not a port or port range (0..65535)";
  if (last < first) return "range '" + std::string(s) + "' ends before it starts";
  return {};
}

/// Checks one `-t`/`-u` spec (REFERENCE.md section 2, as Debian's passt
/// enforces it: "all" only as the whole spec). "" when valid, else why not.
inline std::string port_spec_error(std::string_view spec) {
  if (spec == "none") return {};
  std::string_view body = spec;
  if (auto slash = spec.find('/'); slash != spec.npos) {
    std::string_view prefix = spec.substr(0, slash);
    auto pct = prefix.find('%');
    std::string_view addr = prefix.substr(0, pct);
    bool is_prefix = (addr.empty() && pct != prefix.npos) || ip_family(addr) != 0;
    if (is_prefix) {
      if (pct != prefix.npos && !valid_ifname(prefix.substr(pct + 1)))
        return "'" + std::string(prefix.substr(pct + 1)) + "' is not an interface name";
      body = spec.substr(slash + 1);
    }
  }
  if (body == "all") return {};
  if (body.empty()) return "no ports given";
  while (true) {
    auto comma = body.find(',');
    std::string_view chunk = body.substr(0, comma);
    unsigned first, last, tofirst, tolast;
    if (chunk.empty()) return "empty item in port list";
    if (chunk == "all") return "'all' must be the whole spec";
    if (chunk[0] == '~') {
      if (auto e = port_range(chunk.substr(1), first, last); !e.empty()) return e;
    } else {
      auto colon = chunk.find(':');
      if (auto e = port_range(chunk.substr(0, colon), first, last); !e.empty()) return e;
      if (colon != chunk.npos) {
        std::string_view to = chunk.substr(colon + 1);
        if (auto slash = to.find('/'); slash != to.npos) {
          if (ip_family(to.substr(0, slash)) == 0) return "'" + std::string(to.substr(0, slash)) + "' is not a target address";
          to = to.substr(slash + 1);
        }
        if (auto e = port_range(to, tofirst, tolast); !e.empty()) return e;
        if (tolast - tofirst != last - first) return "'" + std::string(chunk) + "' maps ranges of different lengths";
      }
    }
    if (comma == body.npos) return {};
    body = body.substr(comma + 1);
  }
}

/// Launcher-owned options a `param` must not carry: {short, long}.
inline constexpr std::array<std::pair<char, std::string_view>, 7> reserved_options{{
    {'F', "fd"}, {'P', "pid"}, {'s', "socket"}, {'f', "foreground"}, {'h', "help"},
    {0, "version"}, {0, "print-capabilities"}}};

/// passt's long options that take a separate argument (the next token is
/// then a value, not an option).
inline constexpr std::array<std::string_view, 27> options_with_argument{
    "log-file", "log-size", "runas", "socket", "fd", "pcap", "pid", "mtu", "address", "netmask",
    "mac-addr", "gateway", "interface", "outbound", "outbound-if4", "outbound-if6", "dns", "search",
    "dns-forward", "dns-host", "fqdn", "hostname", "map-host-loopback", "map-guest-addr",
    "tcp-ports", "udp-ports", "repair-path"};
inline constexpr std::string_view short_options_with_argument = "lsFpPmanMgioDStuH";

/// Scans `param` like getopt_long would (clusters, "--x=v", unambiguous
/// abbreviations, values after options) and reports reserved options.
inline void check_param(const std::vector<std::string>& param, std::vector<diagnostic>& out) {
  bool value_next = false;
  for (std::size_t i = 0; i < param.size(); ++i) {
    const std::string& p = param[i];
    std::string where = "/param/" + std::to_string(i);
    if (std::exchange(value_next, false)) continue;
    if (p.empty()) { out.push_back({where, "empty argument"}); continue; }
    if (p == "--") break;
    if (p.size() < 2 || p[0] != '-') continue;
    if (p[1] == '-') {
      std::string_view name = std::string_view(p).substr(2);
      bool has_value = name.find('=') != name.npos;
      name = name.substr(0, name.find('='));
      auto reserved = std::find_if(reserved_options.begin(), reserved_options.end(),
                                   [&](auto& r) { return r.second.starts_with(name); });
      if (reserved != reserved_options.end()) {
        out.push_back({where, "'" + p + "' is reserved (--" + std::string(reserved->second) +
                                  "): the launcher owns it, it cannot come through param"});
        continue;
      }
      auto n = std::count_if(options_with_argument.begin(), options_with_argument.end(),
                             [&](auto o) { return o.starts_with(name); });
      bool exact = std::find(options_with_argument.begin(), options_with_argument.end(), name) != options_with_argument.end();
      value_next = !has_value && (exact || n == 1);
      continue;
    }
    for (std::size_t c = 1; c < p.size(); ++c) {
      auto reserved = std::find_if(reserved_options.begin(), reserved_options.end(),
                                   [&](auto& r) { return r.first == p[c]; });
      if (reserved != reserved_options.end()) {
        out.push_back({where, "'" + p + "' is reserved (-" + std::string(1, p[c]) + ", --" +
                                  std::string(reserved->second) + "): the launcher owns it, it cannot come through param"});
        break;
      }
      if (short_options_with_argument.find(p[c]) != std::string_view::npos) {
        value_next = c + 1 == p.size();
        break;
      }
    }
  }
}

} // namespace detail

inline std::vector<diagnostic> validate(const options& o) {
  using namespace detail;
  std::vector<diagnostic> d;
  auto at = [](const char* key, std::size_t i) { return std::string("/") + key + "/" + std::to_string(i); };
  auto nonempty = [&](const std::optional<std::string>& v, const char* key, const char* what) {
    if (v && (v->empty() || v->find('\0') != v->npos)) d.push_back({std::string("/") + key, std::string("expected ") + what});
  };
  auto ifname = [&](const std::optional<std::string>& v, const char* key) {
    if (v && !valid_ifname(*v))
      d.push_back({std::string("/") + key, "'" + *v + "' is not an interface name (1..15 bytes, no '/', ':' or blanks)"});
  };
  // Per-family addresses: at most one IPv4 and one IPv6; `none` alone where allowed.
  auto per_family = [&](const std::vector<std::string>& v, const char* key, bool prefix, bool none) {
    bool seen[2] = {false, false};
    if (v.size() > 2) d.push_back({std::string("/") + key, "expected at most two addresses, one per IP family"});
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (none && v[i] == "none") {
        if (v.size() > 1) d.push_back({at(key, i), "'none' must be the only value"});
        continue;
      }
      int family = ip_family(v[i], prefix);
      if (family == 0) {
        d.push_back({at(key, i), "'" + v[i] + "' is not an IPv4 or IPv6 address" + (prefix ? " (with optional /prefix)" : "")});
      } else if (std::exchange(seen[family == 6], true)) {
        d.push_back({at(key, i), "a second IPv" + std::to_string(family) + " address: give at most one per family"});
      }
    }
  };
  auto ports = [&](const std::vector<std::string>& v, const char* key) {
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (v[i] == "none" && v.size() > 1) d.push_back({at(key, i), "'none' must be the only port spec"});
      else if (auto e = port_spec_error(v[i]); !e.empty()) d.push_back({at(key, i), "bad port spec '" + v[i] + "': " + e});
    }
  };

  nonempty(o.path, "path", "a non-empty program path");
  if (o.quiet.value_or(false) && (o.debug.value_or(false) || o.trace.value_or(false)))
    d.push_back({"/quiet", "quiet cannot be combined with debug or trace (passt refuses both)"});
  if (o.mtu && *o.mtu != 0 && (*o.mtu < 68 || *o.mtu > 65520))
    d.push_back({"/mtu", "MTU " + std::to_string(*o.mtu) + " out of range: expected 0 (do not announce) or 68..65520"});
  per_family(o.address, "address", true, false);
  if (o.netmask) {
    if (!valid_netmask(*o.netmask))
      d.push_back({"/netmask", "'" + *o.netmask + "' is not a netmask (dotted-decimal with contiguous bits, or 0..32)"});
    else if (std::any_of(o.address.begin(), o.address.end(), [](auto& a) { return a.find('/') != a.npos && ip_family(a, true) == 4; }))
      d.push_back({"/netmask", "netmask conflicts with the prefix length given in address"});
  }
  if (o.mac && !valid_mac(*o.mac)) d.push_back({"/mac", "'" + *o.mac + "' is not a MAC address (xx:xx:xx:xx:xx:xx)"});
  per_family(o.gateway, "gateway", false, false);
  ifname(o.interface, "interface");
  per_family(o.outbound, "outbound", false, false);
  ifname(o.outbound_if4, "outbound-if4");
  ifname(o.outbound_if6, "outbound-if6");
  for (std::size_t i = 0; i < o.dns.size(); ++i) {
    if (o.dns[i] == "none") {
      if (o.dns.size() > 1) d.push_back({at("dns", i), "'none' must be the only value"});
    } else if (ip_family(o.dns[i]) == 0) {
      d.push_back({at("dns", i), "'" + o.dns[i] + "' is not an IPv4 or IPv6 address"});
    }
  }
  if (o.fqdn && !valid_domain(*o.fqdn)) d.push_back({"/fqdn", "'" + *o.fqdn + "' is not a domain name"});
  per_family(o.map_host_loopback, "map-host-loopback", false, true);
  per_family(o.map_guest_addr, "map-guest-addr", false, true);
  per_family(o.dns_forward, "dns-forward", false, false);
  per_family(o.dns_host, "dns-host", false, false);
  if (o.ipv4 == false && o.ipv6 == false) d.push_back({"/ipv6", "ipv4 and ipv6 are both false: passt needs at least one"});
  for (std::size_t i = 0; i < o.search.size(); ++i) {
    if (o.search[i] == "none") {
      if (o.search.size() > 1) d.push_back({at("search", i), "'none' must be the only value"});
    } else if (!valid_domain(o.search[i])) {
      d.push_back({at("search", i), "'" + o.search[i] + "' is not a domain name (one domain per item)"});
    }
  }
  ports(o.tcp_ports, "tcp-ports");
  ports(o.udp_ports, "udp-ports");
  check_param(o.param, d);
  if (o.hostname && (o.hostname->size() > 64 || !valid_domain(*o.hostname)))
    d.push_back({"/hostname", "'" + *o.hostname + "' is not a host name (at most 64 bytes)"});
  nonempty(o.log_file, "log-file", "a non-empty file path");
  if (o.log_size && *o.log_size < 40960) d.push_back({"/log-size", "log size " + std::to_string(*o.log_size) + " too small: expected at least 40960"});
  nonempty(o.pcap, "pcap", "a non-empty file path");
  if (o.runas && (o.runas->empty() || std::any_of(o.runas->begin(), o.runas->end(), [](unsigned char c) { return std::isspace(c) || c == 0; })))
    d.push_back({"/runas", "expected UID, UID:GID or user[:group] names"});
  return d;
}

} // namespace netpasst
