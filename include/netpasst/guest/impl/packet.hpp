#pragma once
// Implementation of netpasst/guest/packet.hpp; include that header instead.

#include <netpasst/guest/packet.hpp>

#include <algorithm>
#include <bitset>
#include <cstring>
#include <string_view>
#include <utility>

namespace netpasst::packet::detail {

inline std::uint16_t load16(const std::byte* p) noexcept {
  return std::uint16_t(unsigned(p[0]) << 8 | unsigned(p[1]));
}
inline std::uint32_t load32(const std::byte* p) noexcept {
  return std::uint32_t(load16(p)) << 16 | load16(p + 2);
}
inline void store16(std::byte* p, std::uint16_t v) noexcept {
  p[0] = std::byte(v >> 8);
  p[1] = std::byte(v);
}
inline void store32(std::byte* p, std::uint32_t v) noexcept {
  store16(p, std::uint16_t(v >> 16));
  store16(p + 2, std::uint16_t(v));
}
inline ipv4_address load_ip(const std::byte* p) noexcept { return ipv4_address(load32(p)); }
inline void store_ip(std::byte* p, const ipv4_address& a) noexcept { store32(p, a.to_uint()); }
inline mac_address load_mac(const std::byte* p) noexcept {
  mac_address m;
  std::memcpy(m.octets.data(), p, 6);
  return m;
}
inline void store_mac(std::byte* p, const mac_address& m) noexcept { std::memcpy(p, m.octets.data(), 6); }

template <class T> T value_or_throw(T value, const std::error_code& ec, const char* what) {
  if (ec) throw std::system_error(ec, what);
  return value;
}

/// Checksum of the IPv4 pseudo-header followed by `segment`.
inline std::uint16_t pseudo_checksum(const ipv4_address& source, const ipv4_address& destination,
                                     std::uint8_t protocol, std::span<const std::byte> segment) noexcept {
  std::byte pseudo[12] = {};
  store_ip(pseudo, source);
  store_ip(pseudo + 4, destination);
  pseudo[9] = std::byte(protocol);
  store16(pseudo + 10, std::uint16_t(segment.size()));
  return checksum_finish(checksum_add(segment, checksum_add(pseudo)));
}

/// Writes Ethernet + 20-byte IPv4 headers for `payload_length` bytes of `protocol`.
inline void write_ipv4_headers(std::byte* out, const frame_addresses& a, std::uint8_t protocol,
                               std::size_t payload_length) noexcept {
  write_ethernet_header({out, ethernet_header_size}, a.destination_mac, a.source_mac, ethertype_ipv4);
  std::byte* ip = out + ethernet_header_size;
  std::memset(ip, 0, ipv4_header_size);
  ip[0] = std::byte{0x45};
  store16(ip + 2, std::uint16_t(ipv4_header_size + payload_length));
  store16(ip + 6, 0x4000); // DF
  ip[8] = std::byte{64};
  ip[9] = std::byte(protocol);
  store_ip(ip + 12, a.source);
  store_ip(ip + 16, a.destination);
  store16(ip + 10, internet_checksum({ip, ipv4_header_size}));
}

/// Moves `payload` to `out + offset` (it may already be there, or overlap).
inline void place_payload(std::span<std::byte> out, std::size_t offset, std::span<const std::byte> payload) noexcept {
  if (!payload.empty() && payload.data() != out.data() + offset)
    std::memmove(out.data() + offset, payload.data(), payload.size());
}

/// Splits a dotted name into wire labels (each prefixed by its length, no
/// terminator); false for an empty or oversized label or name.
inline bool name_to_labels(std::string_view name, std::vector<std::string>& labels) {
  labels.clear();
  if (name.empty() || name == ".") return true;
  std::string label;
  std::size_t encoded = 1;
  bool escaped = false;
  auto finish = [&] {
    if (label.empty() || label.size() > 63) return false;
    encoded += label.size() + 1;
    labels.push_back(std::move(label));
    label.clear();
    return encoded <= 255;
  };
  for (char c : name) {
    if (escaped) {
      label += c;
      escaped = false;
    } else if (c == '\\') {
      escaped = true;
    } else if (c == '.') {
      if (!finish()) return false;
    } else {
      label += c;
    }
  }
  if (escaped) return false;
  return label.empty() ? name.back() == '.' && !labels.empty() : finish();
}

} // namespace netpasst::packet::detail

namespace netpasst::packet {

inline std::string to_string(const mac_address& mac) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string s;
  for (std::uint8_t o : mac.octets) {
    if (!s.empty()) s += ':';
    s += hex[o >> 4];
    s += hex[o & 15];
  }
  return s;
}

// --- checksum -----------------------------------------------------------------

inline std::uint32_t checksum_add(std::span<const std::byte> data, std::uint32_t sum) noexcept {
  std::uint64_t wide = sum;
  std::size_t i = 0;
  for (; i + 1 < data.size(); i += 2) wide += detail::load16(data.data() + i);
  if (i < data.size()) wide += unsigned(data[i]) << 8;
  while (wide >> 32) wide = (wide & 0xffffffff) + (wide >> 32);
  return std::uint32_t(wide);
}

inline std::uint16_t checksum_finish(std::uint32_t sum) noexcept {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return std::uint16_t(~sum);
}

inline std::uint16_t internet_checksum(std::span<const std::byte> data) noexcept {
  return checksum_finish(checksum_add(data));
}

// --- Ethernet -------------------------------------------------------------------

inline ethernet_view parse_ethernet(std::span<const std::byte> frame, std::error_code& ec) noexcept {
  ec.clear();
  if (frame.size() < ethernet_header_size) return ec = guest_errc::packet_truncated, ethernet_view{};
  return {detail::load_mac(frame.data()), detail::load_mac(frame.data() + 6), detail::load16(frame.data() + 12),
          frame.subspan(ethernet_header_size)};
}

inline ethernet_view parse_ethernet(std::span<const std::byte> frame) {
  std::error_code ec;
  return detail::value_or_throw(parse_ethernet(frame, ec), ec, "netpasst: parse_ethernet");
}

inline std::size_t write_ethernet_header(std::span<std::byte> out, const mac_address& destination,
                                         const mac_address& source, std::uint16_t ether_type) noexcept {
  if (out.size() < ethernet_header_size) return 0;
  detail::store_mac(out.data(), destination);
  detail::store_mac(out.data() + 6, source);
  detail::store16(out.data() + 12, ether_type);
  return ethernet_header_size;
}

// --- ARP --------------------------------------------------------------------------

inline arp_packet parse_arp(std::span<const std::byte> p, std::error_code& ec) noexcept {
  ec.clear();
  if (p.size() < 28) return ec = guest_errc::packet_truncated, arp_packet{};
  if (detail::load16(p.data()) != 1 || detail::load16(p.data() + 2) != ethertype_ipv4 || p[4] != std::byte{6} ||
      p[5] != std::byte{4})
    return ec = guest_errc::unsupported_packet, arp_packet{};
  const std::uint16_t op = detail::load16(p.data() + 6);
  if (op != 1 && op != 2) return ec = guest_errc::malformed_packet, arp_packet{};
  return {arp_operation(op), detail::load_mac(p.data() + 8), detail::load_ip(p.data() + 14),
          detail::load_mac(p.data() + 18), detail::load_ip(p.data() + 24)};
}

inline arp_packet parse_arp(std::span<const std::byte> payload) {
  std::error_code ec;
  return detail::value_or_throw(parse_arp(payload, ec), ec, "netpasst: parse_arp");
}

inline std::size_t build_arp_frame(std::span<std::byte> out, const arp_packet& arp,
                                   const mac_address& ethernet_destination) noexcept {
  if (out.size() < arp_frame_size) return 0;
  write_ethernet_header(out, ethernet_destination, arp.sender_mac, ethertype_arp);
  std::byte* p = out.data() + ethernet_header_size;
  detail::store16(p, 1);
  detail::store16(p + 2, ethertype_ipv4);
  p[4] = std::byte{6};
  p[5] = std::byte{4};
  detail::store16(p + 6, std::uint16_t(arp.operation));
  detail::store_mac(p + 8, arp.sender_mac);
  detail::store_ip(p + 14, arp.sender_ip);
  detail::store_mac(p + 18, arp.target_mac);
  detail::store_ip(p + 24, arp.target_ip);
  return arp_frame_size;
}

// --- IPv4 -------------------------------------------------------------------------

inline ipv4_view parse_ipv4(std::span<const std::byte> p, std::error_code& ec) noexcept {
  ec.clear();
  auto fail = [&](guest_errc e) { return ec = e, ipv4_view{}; };
  if (p.size() < ipv4_header_size) return fail(guest_errc::packet_truncated);
  const unsigned version = unsigned(p[0]) >> 4, header_length = (unsigned(p[0]) & 15) * 4;
  if (version != 4 || header_length < ipv4_header_size) return fail(guest_errc::malformed_packet);
  if (p.size() < header_length) return fail(guest_errc::packet_truncated);
  const std::size_t total = detail::load16(p.data() + 2);
  if (total < header_length) return fail(guest_errc::malformed_packet);
  if (p.size() < total) return fail(guest_errc::packet_truncated);
  if (internet_checksum(p.first(header_length)) != 0) return fail(guest_errc::bad_checksum);
  if ((detail::load16(p.data() + 6) & 0x3fff) != 0) return fail(guest_errc::unsupported_packet); // MF or offset
  return {detail::load_ip(p.data() + 12), detail::load_ip(p.data() + 16), std::uint8_t(p[9]), std::uint8_t(p[8]),
          detail::load16(p.data() + 4), p.first(header_length), p.subspan(header_length, total - header_length)};
}

inline ipv4_view parse_ipv4(std::span<const std::byte> packet) {
  std::error_code ec;
  return detail::value_or_throw(parse_ipv4(packet, ec), ec, "netpasst: parse_ipv4");
}

// --- UDP ----------------------------------------------------------------------------

inline udp_view parse_udp(const ipv4_view& ip, std::error_code& ec) noexcept {
  ec.clear();
  auto fail = [&](guest_errc e) { return ec = e, udp_view{}; };
  if (ip.protocol != ip_protocol_udp) return fail(guest_errc::unsupported_packet);
  const std::span<const std::byte> p = ip.payload;
  if (p.size() < udp_header_size) return fail(guest_errc::packet_truncated);
  const std::size_t length = detail::load16(p.data() + 4);
  if (length < udp_header_size) return fail(guest_errc::malformed_packet);
  if (p.size() < length) return fail(guest_errc::packet_truncated);
  if (detail::load16(p.data() + 6) != 0 &&
      detail::pseudo_checksum(ip.source, ip.destination, ip_protocol_udp, p.first(length)) != 0)
    return fail(guest_errc::bad_checksum);
  return {detail::load16(p.data()), detail::load16(p.data() + 2), p.subspan(udp_header_size, length - udp_header_size)};
}

inline udp_view parse_udp(const ipv4_view& ip) {
  std::error_code ec;
  return detail::value_or_throw(parse_udp(ip, ec), ec, "netpasst: parse_udp");
}

inline std::size_t build_udp_frame(std::span<std::byte> out, const frame_addresses& a, std::uint16_t source_port,
                                   std::uint16_t destination_port, std::span<const std::byte> payload) noexcept {
  if (payload.size() > max_udp_payload || out.size() < udp_frame_overhead + payload.size()) return 0;
  detail::place_payload(out, udp_frame_overhead, payload);
  const std::size_t length = udp_header_size + payload.size();
  detail::write_ipv4_headers(out.data(), a, ip_protocol_udp, length);
  std::byte* udp = out.data() + ethernet_header_size + ipv4_header_size;
  detail::store16(udp, source_port);
  detail::store16(udp + 2, destination_port);
  detail::store16(udp + 4, std::uint16_t(length));
  detail::store16(udp + 6, 0);
  const std::uint16_t sum = detail::pseudo_checksum(a.source, a.destination, ip_protocol_udp, {udp, length});
  detail::store16(udp + 6, sum == 0 ? 0xffff : sum);
  return udp_frame_overhead + payload.size();
}

// --- ICMP echo ------------------------------------------------------------------------

inline icmp_echo_view parse_icmp_echo(const ipv4_view& ip, std::error_code& ec) noexcept {
  ec.clear();
  auto fail = [&](guest_errc e) { return ec = e, icmp_echo_view{}; };
  if (ip.protocol != ip_protocol_icmp) return fail(guest_errc::unsupported_packet);
  const std::span<const std::byte> p = ip.payload;
  if (p.size() < icmp_echo_header_size) return fail(guest_errc::packet_truncated);
  if (internet_checksum(p) != 0) return fail(guest_errc::bad_checksum);
  const auto type = std::uint8_t(p[0]);
  if ((type != 0 && type != 8) || p[1] != std::byte{0}) return fail(guest_errc::unsupported_packet);
  return {icmp_type(type), detail::load16(p.data() + 4), detail::load16(p.data() + 6),
          p.subspan(icmp_echo_header_size)};
}

inline icmp_echo_view parse_icmp_echo(const ipv4_view& ip) {
  std::error_code ec;
  return detail::value_or_throw(parse_icmp_echo(ip, ec), ec, "netpasst: parse_icmp_echo");
}

inline std::size_t build_icmp_echo_frame(std::span<std::byte> out, const frame_addresses& a, icmp_type type,
                                         std::uint16_t identifier, std::uint16_t sequence,
                                         std::span<const std::byte> payload) noexcept {
  if (payload.size() > max_udp_payload || out.size() < icmp_echo_frame_overhead + payload.size()) return 0;
  detail::place_payload(out, icmp_echo_frame_overhead, payload);
  const std::size_t length = icmp_echo_header_size + payload.size();
  detail::write_ipv4_headers(out.data(), a, ip_protocol_icmp, length);
  std::byte* icmp = out.data() + ethernet_header_size + ipv4_header_size;
  icmp[0] = std::byte(type);
  icmp[1] = std::byte{0};
  detail::store16(icmp + 2, 0);
  detail::store16(icmp + 4, identifier);
  detail::store16(icmp + 6, sequence);
  detail::store16(icmp + 2, internet_checksum({icmp, length}));
  return icmp_echo_frame_overhead + payload.size();
}

// --- DNS names (RFC 1035 section 4.1.4, RFC 3397) -------------------------------------

inline std::vector<std::string> decode_domain_search(std::span<const std::byte> data, std::error_code& ec) {
  ec.clear();
  std::vector<std::string> names;
  std::size_t start = 0;
  while (start < data.size()) {
    std::string name;
    std::size_t at = start, limit = start, encoded = 1, next = 0;
    bool jumped = false;
    for (;;) {
      if (at >= data.size()) return ec = guest_errc::packet_truncated, std::vector<std::string>{};
      const unsigned length = unsigned(data[at]);
      if (length == 0) {
        if (!jumped) next = at + 1;
        break;
      }
      if ((length & 0xc0) == 0xc0) {
        if (at + 1 >= data.size()) return ec = guest_errc::packet_truncated, std::vector<std::string>{};
        const std::size_t target = (length & 0x3f) << 8 | unsigned(data[at + 1]);
        // Each pointer must go before the previous target (or itself): strictly
        // decreasing targets cannot loop.
        if (target >= std::min(limit, at)) return ec = guest_errc::malformed_packet, std::vector<std::string>{};
        if (!jumped) next = at + 2;
        jumped = true;
        limit = at = target;
        continue;
      }
      if (length & 0xc0) return ec = guest_errc::malformed_packet, std::vector<std::string>{};
      if (at + 1 + length > data.size()) return ec = guest_errc::packet_truncated, std::vector<std::string>{};
      if ((encoded += length + 1) > 255) return ec = guest_errc::malformed_packet, std::vector<std::string>{};
      if (!name.empty()) name += '.';
      for (std::size_t i = at + 1; i <= at + length; ++i) {
        const char c = char(data[i]);
        if (c == '.' || c == '\\') name += '\\';
        name += c;
      }
      at += 1 + length;
    }
    names.push_back(name.empty() ? "." : std::move(name));
    start = next;
  }
  return names;
}

inline bool encode_domain_search(std::span<const std::string> names, std::vector<std::byte>& out) {
  out.clear();
  std::vector<std::pair<std::string, std::size_t>> suffixes; // wire labels -> offset
  std::vector<std::string> labels;
  for (const std::string& name : names) {
    if (!detail::name_to_labels(name, labels)) return false;
    std::size_t i = 0;
    for (; i < labels.size(); ++i) {
      std::string key;
      for (std::size_t j = i; j < labels.size(); ++j) key += char(labels[j].size()), key += labels[j];
      auto found = std::find_if(suffixes.begin(), suffixes.end(), [&](const auto& s) { return s.first == key; });
      if (found != suffixes.end()) {
        out.push_back(std::byte(0xc0 | found->second >> 8));
        out.push_back(std::byte(found->second & 0xff));
        break;
      }
      if (out.size() < 0x4000) suffixes.emplace_back(std::move(key), out.size());
      out.push_back(std::byte(labels[i].size()));
      for (char c : labels[i]) out.push_back(std::byte(c));
    }
    if (i == labels.size()) out.push_back(std::byte{0});
  }
  return true;
}

// --- DHCP ---------------------------------------------------------------------------------

namespace detail {

inline constexpr std::size_t dhcp_fixed_size = 240; // BOOTP (236) + magic cookie
inline constexpr std::uint32_t dhcp_magic_cookie = 0x63825363;

/// Appends every option in `area` to `raw[code]` (RFC 3396 concatenation).
inline std::error_code dhcp_scan(std::span<const std::byte> area, std::array<std::vector<std::byte>, 256>& raw,
                                 std::bitset<256>& present) {
  std::size_t i = 0;
  while (i < area.size()) {
    const unsigned code = unsigned(area[i]);
    if (code == 0) {
      ++i;
      continue;
    }
    if (code == 255) return {};
    if (i + 1 >= area.size()) return guest_errc::packet_truncated;
    const std::size_t length = unsigned(area[i + 1]);
    if (i + 2 + length > area.size()) return guest_errc::packet_truncated;
    raw[code].insert(raw[code].end(), area.begin() + std::ptrdiff_t(i + 2),
                     area.begin() + std::ptrdiff_t(i + 2 + length));
    present.set(code);
    i += 2 + length;
  }
  return {}; // no end option: tolerated
}

} // namespace detail

inline dhcp_message parse_dhcp(std::span<const std::byte> p, std::error_code& ec) {
  using namespace detail;
  ec.clear();
  auto fail = [&](std::error_code e) { return ec = e, dhcp_message{}; };
  if (p.size() < dhcp_fixed_size) return fail(guest_errc::packet_truncated);
  if (load32(p.data() + 236) != dhcp_magic_cookie) return fail(guest_errc::malformed_packet);
  dhcp_message m;
  m.op = std::uint8_t(p[0]);
  if (m.op != 1 && m.op != 2) return fail(guest_errc::malformed_packet);
  if (p[1] != std::byte{1} || p[2] != std::byte{6}) return fail(guest_errc::unsupported_packet);
  m.xid = load32(p.data() + 4);
  m.secs = load16(p.data() + 8);
  m.flags = load16(p.data() + 10);
  m.ciaddr = load_ip(p.data() + 12);
  m.yiaddr = load_ip(p.data() + 16);
  m.siaddr = load_ip(p.data() + 20);
  m.giaddr = load_ip(p.data() + 24);
  m.client_mac = load_mac(p.data() + 28);

  std::array<std::vector<std::byte>, 256> raw;
  std::bitset<256> present;
  if (auto e = dhcp_scan(p.subspan(dhcp_fixed_size), raw, present)) return fail(e);
  if (present.test(52)) { // option overload: file (1), sname (2), both (3)
    if (raw[52].size() != 1 || raw[52][0] == std::byte{0} || unsigned(raw[52][0]) > 3)
      return fail(guest_errc::malformed_packet);
    const unsigned overload = unsigned(raw[52][0]);
    if (overload & 1)
      if (auto e = dhcp_scan(p.subspan(108, 128), raw, present)) return fail(e);
    if (overload & 2)
      if (auto e = dhcp_scan(p.subspan(44, 64), raw, present)) return fail(e);
  }

  auto address = [&](unsigned code, std::optional<ipv4_address>& out) {
    if (!present.test(code)) return true;
    if (raw[code].size() != 4) return false;
    out = load_ip(raw[code].data());
    return true;
  };
  auto addresses = [&](unsigned code, std::vector<ipv4_address>& out) {
    if (!present.test(code)) return true;
    if (raw[code].empty() || raw[code].size() % 4 != 0) return false;
    for (std::size_t i = 0; i < raw[code].size(); i += 4) out.push_back(load_ip(raw[code].data() + i));
    return true;
  };
  if (!address(50, m.requested_address) || !address(54, m.server_id) || !address(1, m.subnet_mask) ||
      !addresses(3, m.routers) || !addresses(6, m.dns_servers))
    return fail(guest_errc::malformed_packet);
  if (present.test(53)) {
    if (raw[53].size() != 1 || raw[53][0] == std::byte{0} || unsigned(raw[53][0]) > 8)
      return fail(guest_errc::malformed_packet);
    m.message_type = dhcp_message_type(raw[53][0]);
  }
  if (present.test(26)) {
    if (raw[26].size() != 2 || load16(raw[26].data()) < 68) return fail(guest_errc::malformed_packet);
    m.mtu = load16(raw[26].data());
  }
  if (present.test(51)) {
    if (raw[51].size() != 4) return fail(guest_errc::malformed_packet);
    m.lease_time = load32(raw[51].data());
  }
  for (std::byte b : raw[15]) m.domain_name += char(b);
  while (!m.domain_name.empty() && m.domain_name.back() == '\0') m.domain_name.pop_back();
  for (std::byte b : raw[55]) m.parameter_request_list.push_back(std::uint8_t(b));
  if (present.test(119)) {
    std::error_code e;
    m.search_domains = decode_domain_search(raw[119], e);
    if (e) return fail(e);
  }
  return m;
}

inline dhcp_message parse_dhcp(std::span<const std::byte> payload) {
  std::error_code ec;
  return detail::value_or_throw(parse_dhcp(payload, ec), ec, "netpasst: parse_dhcp");
}

inline std::size_t build_dhcp(std::span<std::byte> out, const dhcp_message& m) {
  using namespace detail;
  if (out.size() < dhcp_fixed_size) return 0;
  std::memset(out.data(), 0, dhcp_fixed_size);
  out[0] = std::byte(m.op);
  out[1] = std::byte{1};
  out[2] = std::byte{6};
  store32(out.data() + 4, m.xid);
  store16(out.data() + 8, m.secs);
  store16(out.data() + 10, m.flags);
  store_ip(out.data() + 12, m.ciaddr);
  store_ip(out.data() + 16, m.yiaddr);
  store_ip(out.data() + 20, m.siaddr);
  store_ip(out.data() + 24, m.giaddr);
  store_mac(out.data() + 28, m.client_mac);
  store32(out.data() + 236, dhcp_magic_cookie);

  std::size_t at = dhcp_fixed_size;
  auto put = [&](unsigned code, const std::byte* data, std::size_t length) {
    if (length > 255 || out.size() - at < 2 + length) return false;
    out[at] = std::byte(code);
    out[at + 1] = std::byte(length);
    if (length) std::memcpy(out.data() + at + 2, data, length);
    at += 2 + length;
    return true;
  };
  auto put_address = [&](unsigned code, const std::optional<ipv4_address>& a) {
    if (!a) return true;
    std::byte b[4];
    store_ip(b, *a);
    return put(code, b, 4);
  };
  auto put_addresses = [&](unsigned code, const std::vector<ipv4_address>& list) {
    if (list.empty()) return true;
    std::byte b[252];
    if (list.size() > 63) return false;
    for (std::size_t i = 0; i < list.size(); ++i) store_ip(b + 4 * i, list[i]);
    return put(code, b, 4 * list.size());
  };
  bool ok = true;
  if (m.message_type) {
    const std::byte type{std::uint8_t(*m.message_type)};
    ok = put(53, &type, 1);
  }
  ok = ok && put_address(50, m.requested_address) && put_address(54, m.server_id) &&
       put_address(1, m.subnet_mask) && put_addresses(3, m.routers) && put_addresses(6, m.dns_servers);
  if (ok && !m.domain_name.empty())
    ok = put(15, reinterpret_cast<const std::byte*>(m.domain_name.data()), m.domain_name.size());
  if (ok && m.mtu) {
    std::byte b[2];
    store16(b, *m.mtu);
    ok = put(26, b, 2);
  }
  if (ok && m.lease_time) {
    std::byte b[4];
    store32(b, *m.lease_time);
    ok = put(51, b, 4);
  }
  if (ok && !m.parameter_request_list.empty())
    ok = put(55, reinterpret_cast<const std::byte*>(m.parameter_request_list.data()), m.parameter_request_list.size());
  if (ok && !m.search_domains.empty()) {
    std::vector<std::byte> list;
    ok = encode_domain_search(m.search_domains, list);
    for (std::size_t i = 0; ok && i < list.size(); i += 255) // RFC 3396: split long options
      ok = put(119, list.data() + i, std::min<std::size_t>(255, list.size() - i));
  }
  if (!ok || at == out.size()) return 0;
  out[at++] = std::byte{255};
  const std::size_t padded = std::min<std::size_t>(out.size(), std::max<std::size_t>(at, 300));
  std::memset(out.data() + at, 0, padded - at);
  return padded;
}

inline std::size_t build_dhcp_client_frame(std::span<std::byte> out, const dhcp_message& m) {
  if (out.size() < udp_frame_overhead) return 0;
  const std::size_t n = build_dhcp(out.subspan(udp_frame_overhead), m);
  if (n == 0) return 0;
  const frame_addresses a{m.client_mac, mac_address::broadcast(), m.ciaddr, ipv4_address::broadcast()};
  return build_udp_frame(out, a, dhcp_client_port, dhcp_server_port, out.subspan(udp_frame_overhead, n));
}

} // namespace netpasst::packet
