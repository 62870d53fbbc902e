#pragma once
// Implementation of argv.hpp. Included at its end.

#include <netpasst/argv.hpp>

#include <algorithm>
#include <iterator>

namespace netpasst {

inline std::vector<detail::argv_segment> detail::argv_segments(const options& o) {
  std::vector<argv_segment> s;
  auto key = [](const char* k) { return std::string("/") + k; };
  auto value = [&](const char* k, const char* option, const auto& v) {
    if (v) s.push_back({key(k), {option, v->c_str()}});
  };
  auto number = [&](const char* k, const char* option, const auto& v) {
    if (v) s.push_back({key(k), {option, std::to_string(*v)}});
  };
  auto flag = [&](const char* k, const char* option, bool on) {
    if (on) s.push_back({key(k), {option}});
  };
  auto each = [&](const char* k, const char* option, const std::vector<std::string>& v, bool indexed) {
    for (std::size_t i = 0; i < v.size(); ++i)
      s.push_back({indexed ? key(k) + "/" + std::to_string(i) : key(k), {option, v[i]}});
  };
  bool verbose = o.debug.value_or(false) || o.trace.value_or(false) || param_sets_verbosity(o.param);

  flag("vhost-user", "--vhost-user", o.vhost_user.value_or(false));
  flag("quiet", "--quiet", o.quiet.value_or(!verbose));
  if (o.trace.value_or(false)) flag("trace", "--trace", true); // implies --debug; passt refuses both
  else flag("debug", "--debug", o.debug.value_or(false));
  value("log-file", "--log-file", o.log_file);
  number("log-size", "--log-size", o.log_size);
  value("pcap", "--pcap", o.pcap);
  value("runas", "--runas", o.runas);
  number("mtu", "--mtu", o.mtu);
  each("address", "--address", o.address, false);
  value("netmask", "--netmask", o.netmask);
  value("mac", "--mac-addr", o.mac);
  each("gateway", "--gateway", o.gateway, false);
  value("interface", "--interface", o.interface);
  each("outbound", "--outbound", o.outbound, false);
  value("outbound-if4", "--outbound-if4", o.outbound_if4);
  value("outbound-if6", "--outbound-if6", o.outbound_if6);
  each("dns", "--dns", o.dns, false);
  value("fqdn", "--fqdn", o.fqdn);
  value("hostname", "--hostname", o.hostname);
  flag("dhcp-dns", "--no-dhcp-dns", o.dhcp_dns == false);
  flag("dhcp-search", "--no-dhcp-search", o.dhcp_search == false);
  each("map-host-loopback", "--map-host-loopback", o.map_host_loopback, false);
  each("map-guest-addr", "--map-guest-addr", o.map_guest_addr, false);
  flag("no-map-gw", "--no-map-gw", o.no_map_gw.value_or(false));
  each("dns-forward", "--dns-forward", o.dns_forward, false);
  each("dns-host", "--dns-host", o.dns_host, false);
  flag("tcp", "--no-tcp", o.tcp == false);
  flag("udp", "--no-udp", o.udp == false);
  flag("icmp", "--no-icmp", o.icmp == false);
  flag("dhcp", "--no-dhcp", o.dhcp == false);
  flag("ndp", "--no-ndp", o.ndp == false);
  flag("dhcpv6", "--no-dhcpv6", o.dhcpv6 == false);
  flag("ra", "--no-ra", o.ra == false);
  flag("freebind", "--freebind", o.freebind.value_or(false));
  flag("ipv4", "--ipv6-only", o.ipv4 == false);
  flag("ipv6", "--ipv4-only", o.ipv6 == false);
  each("search", "--search", o.search, true);
  each("tcp-ports", "--tcp-ports", o.tcp_ports, true);
  each("udp-ports", "--udp-ports", o.udp_ports, true);
  // param in canonical form; an item that does not parse stays as it is
  // (validate refuses it, so only unsupported_options sees it).
  std::vector<bool> parsed(o.param.size(), false);
  std::vector<argv_segment> params;
  detail::parse_param(
      o.param,
      [&](std::size_t i, std::vector<std::string> args) {
        parsed[i] = true;
        params.push_back({"/param/" + std::to_string(i), std::move(args)});
      },
      [&](std::size_t i, const std::string&) {
        if (i >= parsed.size() || parsed[i]) return;
        parsed[i] = true;
        params.push_back({"/param/" + std::to_string(i), {o.param[i]}});
      });
  std::stable_sort(params.begin(), params.end(), [](const argv_segment& a, const argv_segment& b) {
    return std::stoul(a.pointer.substr(7)) < std::stoul(b.pointer.substr(7));
  });
  s.insert(s.end(), std::make_move_iterator(params.begin()), std::make_move_iterator(params.end()));
  return s;
}

inline std::vector<std::string> argv_builder::build(const options& o, std::vector<diagnostic>& diagnostics) const {
  auto problems = validate(o);
  if (!problems.empty()) {
    diagnostics.insert(diagnostics.end(), problems.begin(), problems.end());
    return {};
  }
  std::vector<std::string> argv{o.path.value_or("passt")};
  for (auto& segment : detail::argv_segments(o))
    argv.insert(argv.end(), std::make_move_iterator(segment.args.begin()), std::make_move_iterator(segment.args.end()));
  return argv;
}

inline std::vector<std::string> argv_builder::build(const options& o) const {
  std::vector<diagnostic> diagnostics;
  auto argv = build(o, diagnostics);
  if (!diagnostics.empty()) throw invalid_options_error(std::move(diagnostics));
  return argv;
}

inline void append_launcher_arguments(std::vector<std::string>& argv, const std::string& pidfile, int fd,
                                      bool foreground) {
  if (foreground) argv.emplace_back("--foreground");
  argv.insert(argv.end(), {"--pid", pidfile, "--fd", std::to_string(fd)});
}

} // namespace netpasst
