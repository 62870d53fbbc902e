// libFuzzer target: the guest's wire-format parsers (guest/packet.hpp), which
// read frames passt sends to the mini guest.
//
// The first input byte picks what the rest is fed to:
// - 0: a whole Ethernet frame, parsed down the chain the mini guest follows
//   (Ethernet, then ARP or IPv4, then UDP or ICMP echo, then DHCP on port
//   67/68);
// - 1: a DHCP message (a UDP payload), so that the fuzzer reaches its options
//   without first finding valid checksums;
// - 2: an RFC 3397 domain search list.
// Invariants:
// - ARP, IPv4, UDP and ICMP echo accept exactly what an independent check of
//   the same bytes accepts (written here from the RFCs, not from the
//   library), and every view they return is the span that check computes.
// - What parses survives a round trip: built again with the library's
//   builders, it parses to the same fields (ARP, UDP, ICMP echo), the same
//   message (DHCP), the same names (domain search lists, whose decoded names
//   the encoder must take).
#include <netpasst/guest/packet.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

namespace pk = netpasst::packet;

namespace {

using bytes = std::span<const std::byte>;

[[noreturn]] void violated(const char* what) {
  std::fprintf(stderr, "invariant violated: %s\n", what);
  std::abort();
}
void require(bool condition, const char* what) {
  if (!condition) violated(what);
}

bool same_span(bytes a, bytes b) { return a.data() == b.data() && a.size() == b.size(); }
bool same_bytes(bytes a, bytes b) { return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0); }

unsigned u8(bytes b, std::size_t i) { return unsigned(b[i]); }
unsigned u16(bytes b, std::size_t i) { return u8(b, i) << 8 | u8(b, i + 1); }

/// RFC 1071 sum of the 16-bit big-endian words of `b` (odd tail padded), folded.
std::uint32_t ones_sum(bytes b, std::uint32_t sum = 0) {
  for (std::size_t i = 0; i + 1 < b.size(); i += 2) sum += u16(b, i);
  if (b.size() % 2) sum += u8(b, b.size() - 1) << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return sum;
}

std::uint32_t pseudo_sum(bytes ip_header, unsigned protocol, std::size_t length) {
  return ones_sum(ip_header.subspan(12, 8), protocol + std::uint32_t(length));
}

// --- independent checks ------------------------------------------------------------------

bool arp_acceptable(bytes p) {
  return p.size() >= 28 && u16(p, 0) == 1 && u16(p, 2) == 0x0800 && u8(p, 4) == 6 && u8(p, 5) == 4 &&
         (u16(p, 6) == 1 || u16(p, 6) == 2);
}

struct ipv4_reference {
  bool ok = false;
  bytes header, payload;
};

ipv4_reference ipv4_check(bytes p) {
  ipv4_reference r;
  if (p.size() < 20 || u8(p, 0) >> 4 != 4) return r;
  const std::size_t header = (u8(p, 0) & 0xf) * 4, total = u16(p, 2);
  if (header < 20 || header > p.size() || total < header || total > p.size()) return r;
  if (ones_sum(p.first(header)) != 0xffff) return r;
  if (u16(p, 6) & 0x3fff) return r; // MF or a fragment offset
  r.ok = true;
  r.header = p.first(header);
  r.payload = p.subspan(header, total - header);
  return r;
}

struct udp_reference {
  bool ok = false;
  bytes payload;
};

udp_reference udp_check(bytes ip_header, bytes segment) {
  udp_reference r;
  if (u8(ip_header, 9) != 17 || segment.size() < 8) return r;
  const std::size_t length = u16(segment, 4);
  if (length < 8 || length > segment.size()) return r;
  if (u16(segment, 6) != 0 && ones_sum(segment.first(length), pseudo_sum(ip_header, 17, length)) != 0xffff) return r;
  r.ok = true;
  r.payload = segment.subspan(8, length - 8);
  return r;
}

bool icmp_echo_acceptable(bytes ip_header, bytes message) {
  return u8(ip_header, 9) == 1 && message.size() >= 8 && (u8(message, 0) == 0 || u8(message, 0) == 8) &&
         u8(message, 1) == 0 && ones_sum(message) == 0xffff;
}

// --- round trips ---------------------------------------------------------------------------

bool same_message(const pk::dhcp_message& a, const pk::dhcp_message& b) {
  return a.op == b.op && a.xid == b.xid && a.secs == b.secs && a.flags == b.flags && a.ciaddr == b.ciaddr &&
         a.yiaddr == b.yiaddr && a.siaddr == b.siaddr && a.giaddr == b.giaddr && a.client_mac == b.client_mac &&
         a.message_type == b.message_type && a.requested_address == b.requested_address &&
         a.server_id == b.server_id && a.subnet_mask == b.subnet_mask && a.routers == b.routers &&
         a.dns_servers == b.dns_servers && a.domain_name == b.domain_name && a.mtu == b.mtu &&
         a.lease_time == b.lease_time && a.parameter_request_list == b.parameter_request_list &&
         a.search_domains == b.search_domains;
}

void dhcp_round_trip(bytes payload) {
  std::error_code ec;
  const pk::dhcp_message message = pk::parse_dhcp(payload, ec);
  if (ec) return;
  std::vector<std::byte> out(4096);
  const std::size_t n = pk::build_dhcp(out, message);
  if (n == 0) return; // not encodable (a list option over 255 bytes, ...): refused, not mangled
  const pk::dhcp_message again = pk::parse_dhcp(std::span(out).first(n), ec);
  require(!ec, "a built DHCP message parses");
  require(same_message(message, again), "a DHCP message survives build and parse");
}

void domain_search_round_trip(bytes list) {
  std::error_code ec;
  const std::vector<std::string> names = pk::decode_domain_search(list, ec);
  if (ec) return;
  std::vector<std::byte> encoded;
  require(pk::encode_domain_search(names, encoded), "decoded names encode");
  const std::vector<std::string> again = pk::decode_domain_search(encoded, ec);
  require(!ec, "an encoded list decodes");
  require(again == names, "a domain search list survives encode and decode");
}

void arp(bytes input, const pk::ethernet_view& ethernet) {
  std::error_code ec;
  const pk::arp_packet a = pk::parse_arp(ethernet.payload, ec);
  require(!ec == arp_acceptable(ethernet.payload), "parse_arp accepts what the RFC allows");
  if (ec) return;
  require(a.sender_mac.octets[0] == u8(input, 22) && a.target_ip.to_uint() == (std::uint32_t(u16(input, 38)) << 16 | u16(input, 40)),
          "ARP fields come from their offsets");
  std::byte out[pk::arp_frame_size];
  require(pk::build_arp_frame(out, a, ethernet.destination) == sizeof out, "an ARP frame fits 42 bytes");
  const pk::ethernet_view e = pk::parse_ethernet(bytes(out), ec);
  const pk::arp_packet b = pk::parse_arp(e.payload, ec);
  require(!ec && b.operation == a.operation && b.sender_mac == a.sender_mac && b.sender_ip == a.sender_ip &&
              b.target_mac == a.target_mac && b.target_ip == a.target_ip && e.destination == ethernet.destination,
          "an ARP packet survives build and parse");
}

void ipv4(const pk::ethernet_view& ethernet) {
  std::error_code ec;
  const pk::ipv4_view ip = pk::parse_ipv4(ethernet.payload, ec);
  const ipv4_reference expected = ipv4_check(ethernet.payload);
  require(!ec == expected.ok, "parse_ipv4 accepts what the RFC allows");
  if (ec) return;
  require(same_span(ip.header, expected.header) && same_span(ip.payload, expected.payload), "IPv4 views");
  const pk::frame_addresses addresses{ethernet.source, ethernet.destination, ip.source, ip.destination};
  std::vector<std::byte> out(65535);

  const pk::udp_view udp = pk::parse_udp(ip, ec);
  const udp_reference udp_expected = udp_check(ip.header, ip.payload);
  require(!ec == udp_expected.ok, "parse_udp accepts what the RFC allows");
  if (!ec) {
    require(same_span(udp.payload, udp_expected.payload), "UDP payload view");
    if (udp.source_port == pk::dhcp_server_port || udp.source_port == pk::dhcp_client_port) dhcp_round_trip(udp.payload);
    const std::size_t n = pk::build_udp_frame(out, addresses, udp.source_port, udp.destination_port, udp.payload);
    require(n == pk::udp_frame_overhead + udp.payload.size(), "a parsed datagram fits a frame");
    const auto e = pk::parse_ethernet(std::span(out).first(n), ec);
    const auto ip2 = pk::parse_ipv4(e.payload, ec);
    require(!ec, "a built UDP frame's IPv4 header parses");
    const auto udp2 = pk::parse_udp(ip2, ec);
    require(!ec && udp2.source_port == udp.source_port && udp2.destination_port == udp.destination_port &&
                same_bytes(udp2.payload, udp.payload) && ip2.source == ip.source && ip2.destination == ip.destination,
            "a UDP datagram survives build and parse");
  }

  const pk::icmp_echo_view echo = pk::parse_icmp_echo(ip, ec);
  require(!ec == icmp_echo_acceptable(ip.header, ip.payload), "parse_icmp_echo accepts what the RFC allows");
  if (!ec) {
    require(same_span(echo.payload, ip.payload.subspan(8)), "ICMP payload view");
    const std::size_t n =
        pk::build_icmp_echo_frame(out, addresses, echo.type, echo.identifier, echo.sequence, echo.payload);
    require(n == pk::icmp_echo_frame_overhead + echo.payload.size(), "a parsed echo fits a frame");
    const auto e = pk::parse_ethernet(std::span(out).first(n), ec);
    const auto ip2 = pk::parse_ipv4(e.payload, ec);
    const auto echo2 = pk::parse_icmp_echo(ip2, ec);
    require(!ec && echo2.type == echo.type && echo2.identifier == echo.identifier &&
                echo2.sequence == echo.sequence && same_bytes(echo2.payload, echo.payload),
            "an ICMP echo survives build and parse");
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const bytes input(reinterpret_cast<const std::byte*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0: {
      std::error_code ec;
      const pk::ethernet_view ethernet = pk::parse_ethernet(input, ec);
      require(!ec == (input.size() >= 14), "parse_ethernet takes 14 bytes or more");
      if (ec) return 0;
      require(same_span(ethernet.payload, input.subspan(14)) && ethernet.ether_type == u16(input, 12),
              "Ethernet view");
      if (ethernet.ether_type == pk::ethertype_arp) arp(input, ethernet);
      if (ethernet.ether_type == pk::ethertype_ipv4) ipv4(ethernet);
      break;
    }
    case 1: dhcp_round_trip(input); break;
    case 2: domain_search_round_trip(input); break;
  }
  return 0;
}
