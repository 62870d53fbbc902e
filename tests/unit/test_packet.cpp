#include <netpasst/guest/packet.hpp>

#include <catch2/catch.hpp>

#include <cstring>
#include <initializer_list>
#include <random>
#include <string>
#include <vector>

using namespace netpasst::packet;
using netpasst::errc;
using netpasst::guest_errc;
using bytes = std::vector<std::byte>;

namespace {

bytes make(std::initializer_list<int> values) {
  bytes out;
  for (int v : values) out.push_back(std::byte(v));
  return out;
}
bytes text(std::string_view s) {
  bytes out;
  for (char c : s) out.push_back(std::byte(c));
  return out;
}
void append(bytes& to, const bytes& from) { to.insert(to.end(), from.begin(), from.end()); }

const mac_address guest_mac{{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}};
const mac_address passt_mac{{0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55}};
const ipv4_address guest_ip = asio::ip::make_address_v4("192.0.2.10");
const ipv4_address gateway_ip = asio::ip::make_address_v4("192.0.2.1");

// A BOOTREPLY's fixed part (240 bytes, cookie included) for xid 0x01020304.
bytes bootreply_fixed() {
  bytes b(240, std::byte{0});
  b[0] = std::byte{2};
  b[1] = std::byte{1};
  b[2] = std::byte{6};
  b[4] = std::byte{1}, b[5] = std::byte{2}, b[6] = std::byte{3}, b[7] = std::byte{4};
  b[16] = std::byte{192}, b[17] = std::byte{0}, b[18] = std::byte{2}, b[19] = std::byte{10}; // yiaddr
  std::memcpy(b.data() + 28, guest_mac.octets.data(), 6);
  b[236] = std::byte{99}, b[237] = std::byte{130}, b[238] = std::byte{83}, b[239] = std::byte{99};
  return b;
}

// Option 119 for "a.example" and "b.example": the second name points (0xc002)
// at "example" inside the first.
const bytes search_ab = make({1, 'a', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 0, 1, 'b', 0xc0, 0x02});

// A DHCPACK as passt would send it, option 119 in one instance.
bytes dhcp_ack() {
  bytes b = bootreply_fixed();
  append(b, make({53, 1, 5,                        // ACK
                  54, 4, 192, 0, 2, 1,              // server id
                  1, 4, 255, 255, 255, 0,           // mask
                  3, 4, 192, 0, 2, 1,               // router
                  6, 8, 192, 0, 2, 1, 198, 51, 100, 53, // DNS
                  15, 9, 'l', 'o', 'c', 'a', 'l', 'd', 'o', 'm', 0, // domain, NUL padded
                  26, 2, 0xff, 0xf0,                // MTU 65520
                  51, 4, 0xff, 0xff, 0xff, 0xff,    // infinite lease
                  119, 15}));
  append(b, search_ab);
  b.push_back(std::byte{255});
  return b;
}

std::error_code dhcp_error(const bytes& b) {
  std::error_code ec;
  parse_dhcp(b, ec);
  return ec;
}

std::vector<std::string> decode(const bytes& b, std::error_code& ec) { return decode_domain_search(b, ec); }

} // namespace

TEST_CASE("mac_address prints and compares") {
  CHECK(to_string(guest_mac) == "52:54:00:12:34:56");
  CHECK(mac_address::broadcast().is_broadcast());
  CHECK_FALSE(guest_mac.is_broadcast());
  CHECK(guest_mac != passt_mac);
}

TEST_CASE("Internet checksum known answers") {
  // RFC 1071 section 3 example: sum 0xddf2, checksum its complement.
  const bytes rfc1071 = make({0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7});
  CHECK(netpasst::packet::internet_checksum(rfc1071) == 0x220d);
  // The classic IPv4 header example (checksum field zeroed): 0xb861.
  const bytes header = make({0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
                             0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7});
  CHECK(netpasst::packet::internet_checksum(header) == 0xb861);
  // Odd length: the last byte is the high half of a word.
  CHECK(netpasst::packet::internet_checksum(make({0x01})) == 0xfeff);
  // Pieces: every piece but the last of even length.
  CHECK(checksum_finish(checksum_add(std::span(rfc1071).subspan(4), checksum_add(std::span(rfc1071).first(4)))) ==
        0x220d);
}

TEST_CASE("Ethernet header") {
  bytes f(60);
  REQUIRE(write_ethernet_header(f, passt_mac, guest_mac, ethertype_arp) == 14);
  const ethernet_view e = parse_ethernet(f);
  CHECK(e.destination == passt_mac);
  CHECK(e.source == guest_mac);
  CHECK(e.ether_type == 0x0806);
  CHECK(e.payload.size() == 46);
  std::error_code ec;
  parse_ethernet(std::span(f).first(13), ec);
  CHECK(ec == guest_errc::packet_truncated);
  CHECK_THROWS_AS(parse_ethernet(std::span(f).first(0)), std::system_error);
  bytes small(13);
  CHECK(write_ethernet_header(small, passt_mac, guest_mac, 1) == 0);
}

TEST_CASE("ARP: known bytes, round trip, refusals") {
  bytes f(arp_frame_size);
  const arp_packet request{arp_operation::request, guest_mac, guest_ip, {}, gateway_ip};
  REQUIRE(build_arp_frame(f, request, mac_address::broadcast()) == 42);
  const bytes expected = make({0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x06,
                               0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 192, 0,
                               2, 10, 0, 0, 0, 0, 0, 0, 192, 0, 2, 1});
  CHECK(f == expected);
  const arp_packet back = parse_arp(parse_ethernet(f).payload);
  CHECK(back.operation == arp_operation::request);
  CHECK(back.sender_mac == guest_mac);
  CHECK(back.sender_ip == guest_ip);
  CHECK(back.target_ip == gateway_ip);

  std::error_code ec;
  const auto payload = parse_ethernet(f).payload;
  for (std::size_t n = 0; n < 28; ++n) {
    parse_arp(payload.first(n), ec);
    CHECK(ec == guest_errc::packet_truncated);
  }
  bytes bad(payload.begin(), payload.end());
  bad[1] = std::byte{6}; // IEEE 802 hardware
  parse_arp(bad, ec);
  CHECK(ec == guest_errc::unsupported_packet);
  bad.assign(payload.begin(), payload.end());
  bad[7] = std::byte{3}; // RARP request
  parse_arp(bad, ec);
  CHECK(ec == guest_errc::malformed_packet);
  CHECK(build_arp_frame(std::span(f).first(41), request, mac_address::broadcast()) == 0);
}

TEST_CASE("UDP frame: known checksums, round trip, in-place payload") {
  const frame_addresses a{guest_mac, passt_mac, guest_ip, gateway_ip};
  bytes f(100);
  const bytes payload = text("ping");
  const std::size_t n = build_udp_frame(f, a, 40000, 7, payload);
  REQUIRE(n == udp_frame_overhead + 4);
  f.resize(n);
  // Known answers computed independently (Python, RFC 768/791 sums).
  CHECK(f[24] == std::byte{0xb6});
  CHECK(f[25] == std::byte{0xc1});
  CHECK(f[40] == std::byte{0x00});
  CHECK(f[41] == std::byte{0xb2});

  const ethernet_view e = parse_ethernet(f);
  CHECK(e.ether_type == ethertype_ipv4);
  const ipv4_view ip = parse_ipv4(e.payload);
  CHECK(ip.source == guest_ip);
  CHECK(ip.destination == gateway_ip);
  CHECK(ip.protocol == ip_protocol_udp);
  CHECK(ip.ttl == 64);
  const udp_view u = parse_udp(ip);
  CHECK(u.source_port == 40000);
  CHECK(u.destination_port == 7);
  CHECK(bytes(u.payload.begin(), u.payload.end()) == payload);

  // Payload already in place, and Ethernet padding after the datagram.
  bytes g(128);
  std::memcpy(g.data() + udp_frame_overhead, "hello", 5);
  REQUIRE(build_udp_frame(g, a, 1, 2, std::span(g).subspan(udp_frame_overhead, 5)) == udp_frame_overhead + 5);
  const udp_view v = parse_udp(parse_ipv4(parse_ethernet(g).payload));
  CHECK(std::string(reinterpret_cast<const char*>(v.payload.data()), v.payload.size()) == "hello");

  CHECK(build_udp_frame(std::span(f).first(45), a, 1, 2, payload) == 0);
  bytes huge(max_udp_payload + 1);
  bytes big(70000);
  CHECK(build_udp_frame(big, a, 1, 2, huge) == 0);
  CHECK(build_udp_frame(big, a, 1, 2, std::span(huge).first(max_udp_payload)) == 65535);
}

TEST_CASE("IPv4 refusals") {
  const frame_addresses a{guest_mac, passt_mac, guest_ip, gateway_ip};
  bytes f(100);
  f.resize(build_udp_frame(f, a, 40000, 7, text("ping")));
  const bytes packet(f.begin() + 14, f.end());
  std::error_code ec;
  for (std::size_t n = 0; n < packet.size(); ++n) {
    parse_ipv4(std::span(packet).first(n), ec);
    CHECK(ec == guest_errc::packet_truncated);
  }
  auto with = [&](std::size_t at, int value) {
    bytes p = packet;
    p[at] = std::byte(value);
    parse_ipv4(p, ec);
    return ec;
  };
  CHECK(with(0, 0x65) == guest_errc::malformed_packet); // version 6
  CHECK(with(0, 0x44) == guest_errc::malformed_packet); // IHL 4
  CHECK(with(0, 0x4f) == guest_errc::packet_truncated); // IHL 15 > buffer
  CHECK(with(3, 19) == guest_errc::malformed_packet);   // total < header
  CHECK(with(8, 63) == guest_errc::bad_checksum);       // TTL changed
  bytes fragment = packet;                        // MF set, checksum fixed
  fragment[6] = std::byte{0x20};
  fragment[10] = fragment[11] = std::byte{0};
  const std::uint16_t sum = netpasst::packet::internet_checksum(std::span(fragment).first(20));
  fragment[10] = std::byte(sum >> 8), fragment[11] = std::byte(sum);
  parse_ipv4(fragment, ec);
  CHECK(ec == guest_errc::unsupported_packet);
  CHECK_THROWS_AS(parse_ipv4(std::span(packet).first(3)), std::system_error);
}

TEST_CASE("UDP refusals, zero checksum accepted") {
  const frame_addresses a{guest_mac, passt_mac, guest_ip, gateway_ip};
  bytes f(100);
  f.resize(build_udp_frame(f, a, 40000, 7, text("ping")));
  std::error_code ec;
  auto udp_error = [&](const bytes& frame) {
    const ipv4_view ip = parse_ipv4(parse_ethernet(frame).payload);
    parse_udp(ip, ec);
    return ec;
  };
  CHECK_FALSE(udp_error(f));
  bytes g = f;
  g[40] = g[41] = std::byte{0}; // no checksum
  CHECK_FALSE(udp_error(g));
  g = f;
  g[45] ^= std::byte{1}; // payload changed
  CHECK(udp_error(g) == guest_errc::bad_checksum);
  g = f;
  g[38] = std::byte{0}, g[39] = std::byte{7}; // UDP length 7
  CHECK(udp_error(g) == guest_errc::malformed_packet);
  g[39] = std::byte{13}; // UDP length 13 > 12 carried
  CHECK(udp_error(g) == guest_errc::packet_truncated);

  ipv4_view ip = parse_ipv4(parse_ethernet(f).payload);
  ip.payload = ip.payload.first(7);
  parse_udp(ip, ec);
  CHECK(ec == guest_errc::packet_truncated);
  ip.protocol = ip_protocol_icmp;
  parse_udp(ip, ec);
  CHECK(ec == guest_errc::unsupported_packet);
}

TEST_CASE("ICMP echo: known checksum, round trip, refusals") {
  const frame_addresses a{guest_mac, passt_mac, guest_ip, gateway_ip};
  bytes f(100);
  f.resize(build_icmp_echo_frame(f, a, icmp_type::echo_request, 0x1234, 1, text("abc")));
  REQUIRE(f.size() == icmp_echo_frame_overhead + 3);
  CHECK(f[36] == std::byte{0x21});
  CHECK(f[37] == std::byte{0x68});
  const ipv4_view ip = parse_ipv4(parse_ethernet(f).payload);
  const icmp_echo_view echo = parse_icmp_echo(ip);
  CHECK(echo.type == icmp_type::echo_request);
  CHECK(echo.identifier == 0x1234);
  CHECK(echo.sequence == 1);
  CHECK(echo.payload.size() == 3);

  std::error_code ec;
  ipv4_view short_ip = ip;
  short_ip.payload = ip.payload.first(7);
  parse_icmp_echo(short_ip, ec);
  CHECK(ec == guest_errc::packet_truncated);
  ipv4_view udp_ip = ip;
  udp_ip.protocol = ip_protocol_udp;
  parse_icmp_echo(udp_ip, ec);
  CHECK(ec == guest_errc::unsupported_packet);
  bytes bad(ip.payload.begin(), ip.payload.end());
  bad[8] ^= std::byte{0xff};
  ipv4_view bad_ip = ip;
  bad_ip.payload = bad;
  parse_icmp_echo(bad_ip, ec);
  CHECK(ec == guest_errc::bad_checksum);
  bytes unreachable(ip.payload.begin(), ip.payload.end()); // type 3, checksum fixed
  unreachable[0] = std::byte{3};
  unreachable[2] = unreachable[3] = std::byte{0};
  const std::uint16_t sum = netpasst::packet::internet_checksum(unreachable);
  unreachable[2] = std::byte(sum >> 8), unreachable[3] = std::byte(sum);
  bad_ip.payload = unreachable;
  parse_icmp_echo(bad_ip, ec);
  CHECK(ec == guest_errc::unsupported_packet);
}

TEST_CASE("Domain search: known bytes with a compression pointer") {
  std::error_code ec;
  CHECK(decode(search_ab, ec) == std::vector<std::string>{"a.example", "b.example"});
  CHECK_FALSE(ec);
  bytes encoded;
  const std::vector<std::string> names = {"a.example", "b.example"};
  REQUIRE(encode_domain_search(names, encoded));
  CHECK(encoded == search_ab);

  // The single name QEMU's joined --search produces: one label holds a space.
  const bytes joined = make({1, 'a', 9, 'e', 'x', 'a', 'm', 'p', 'l', 'e', ' ', 'b', 7, 'e', 'x', 'a', 'm', 'p', 'l',
                             'e', 0});
  CHECK(decode(joined, ec) == std::vector<std::string>{"a.example b.example"});
  // Dots and backslashes inside labels are escaped, and encode back.
  const bytes odd = make({3, 'a', '.', 'b', 2, 'c', '\\', 0, 0});
  const auto odd_names = decode(odd, ec);
  CHECK(odd_names == std::vector<std::string>{"a\\.b.c\\\\", "."});
  REQUIRE(encode_domain_search(odd_names, encoded));
  CHECK(encoded == odd);
  // Longer chains: pointer to a name that itself ends in a pointer.
  const std::vector<std::string> chain = {"example", "b.example", "a.b.example", "c.a.b.example."};
  REQUIRE(encode_domain_search(chain, encoded));
  CHECK(encoded.size() == 9 + 4 + 4 + 4);
  CHECK(decode(encoded, ec) == std::vector<std::string>{"example", "b.example", "a.b.example", "c.a.b.example"});
}

TEST_CASE("Domain search: malformed lists are refused") {
  std::error_code ec;
  auto refused = [&](const bytes& b) {
    auto names = decode(b, ec);
    return names.empty() ? ec : std::error_code{};
  };
  CHECK(refused(make({0xc0, 0x00})) == guest_errc::malformed_packet);            // points at itself
  CHECK(refused(make({1, 'a', 0xc0, 0x00})) == guest_errc::malformed_packet);     // into its own name
  CHECK(refused(make({1, 'a', 0, 0xc0, 0x05, 1, 'b', 0})) == guest_errc::malformed_packet); // forward
  // Two pointers bouncing: name 2 -> name 1's pointer -> name 2.
  CHECK(refused(make({1, 'a', 0xc0, 0x04, 1, 'b', 0xc0, 0x00})) == guest_errc::malformed_packet);
  CHECK(refused(make({1, 'a', 0, 0xc0})) == guest_errc::packet_truncated);        // half a pointer
  CHECK(refused(make({5, 'a', 'b'})) == guest_errc::packet_truncated);            // label past the end
  CHECK(refused(make({1, 'a'})) == guest_errc::packet_truncated);                 // no terminator
  CHECK(refused(make({0x41, 'a', 0})) == guest_errc::malformed_packet);           // label type 01
  CHECK(refused(make({0x80, 0})) == guest_errc::malformed_packet);                // label type 10
  bytes long_name;
  for (int i = 0; i < 5; ++i) {
    long_name.push_back(std::byte{63});
    long_name.insert(long_name.end(), 63, std::byte{'x'});
  }
  long_name.push_back(std::byte{0});
  CHECK(refused(long_name) == guest_errc::malformed_packet); // 321 bytes > 255
  CHECK(decode(bytes{}, ec).empty());
  CHECK_FALSE(ec);

  bytes out;
  CHECK_FALSE(encode_domain_search(std::vector<std::string>{"a..b"}, out));
  CHECK_FALSE(encode_domain_search(std::vector<std::string>{std::string(64, 'x') + ".example"}, out));
  CHECK_FALSE(encode_domain_search(std::vector<std::string>{"trailing\\"}, out));
}

TEST_CASE("DHCP: an ACK as passt sends it") {
  const dhcp_message m = parse_dhcp(dhcp_ack());
  CHECK(m.op == 2);
  CHECK(m.xid == 0x01020304);
  CHECK(m.yiaddr == guest_ip);
  CHECK(m.client_mac == guest_mac);
  REQUIRE(m.message_type);
  CHECK(*m.message_type == dhcp_message_type::ack);
  CHECK(m.server_id == gateway_ip);
  CHECK(m.subnet_mask == asio::ip::make_address_v4("255.255.255.0"));
  CHECK(m.routers == std::vector<ipv4_address>{gateway_ip});
  CHECK(m.dns_servers == std::vector<ipv4_address>{gateway_ip, asio::ip::make_address_v4("198.51.100.53")});
  CHECK(m.domain_name == "localdom");
  CHECK(m.mtu == 65520);
  CHECK(m.lease_time == 0xffffffffu);
  CHECK(m.search_domains == std::vector<std::string>{"a.example", "b.example"});
}

TEST_CASE("DHCP: option 119 split in two instances is concatenated (RFC 3396)") {
  bytes b = bootreply_fixed();
  append(b, make({53, 1, 2, 119, 8}));
  append(b, bytes(search_ab.begin(), search_ab.begin() + 8));
  append(b, make({15, 3, 'x', 'y', 'z', 119, 7})); // another option in between
  append(b, bytes(search_ab.begin() + 8, search_ab.end()));
  b.push_back(std::byte{255});
  const dhcp_message m = parse_dhcp(b);
  CHECK(m.message_type == dhcp_message_type::offer);
  CHECK(m.search_domains == std::vector<std::string>{"a.example", "b.example"});
  CHECK(m.domain_name == "xyz");
}

TEST_CASE("DHCP: option overload continues into file and sname") {
  bytes b = bootreply_fixed();
  append(b, make({53, 1, 5, 52, 1, 3, 255}));
  const bytes in_file = make({119, 8, 1, 'a', 7, 'e', 'x', 'a', 'm', 'p', 255});
  const bytes in_sname = make({119, 7, 'l', 'e', 0, 1, 'b', 0xc0, 0x02, 26, 2, 0x05, 0xdc, 255});
  std::memcpy(b.data() + 108, in_file.data(), in_file.size());
  std::memcpy(b.data() + 44, in_sname.data(), in_sname.size());
  const dhcp_message m = parse_dhcp(b);
  CHECK(m.search_domains == std::vector<std::string>{"a.example", "b.example"});
  CHECK(m.mtu == 1500);
}

TEST_CASE("DHCP: round trip through build_dhcp, long search list split") {
  dhcp_message m;
  m.op = 2;
  m.xid = 0xdeadbeef;
  m.yiaddr = guest_ip;
  m.client_mac = guest_mac;
  m.message_type = dhcp_message_type::offer;
  m.server_id = gateway_ip;
  m.subnet_mask = asio::ip::make_address_v4("255.255.255.0");
  m.routers = {gateway_ip};
  m.dns_servers = {gateway_ip};
  m.domain_name = "example";
  m.mtu = 65520;
  m.lease_time = 3600;
  for (int i = 0; i < 40; ++i) m.search_domains.push_back("host" + std::to_string(i) + ".some-long-domain.example");
  bytes out(1500);
  const std::size_t n = build_dhcp(out, m);
  REQUIRE(n > 300);
  out.resize(n);
  const dhcp_message back = parse_dhcp(out);
  CHECK(back.xid == m.xid);
  CHECK(back.yiaddr == m.yiaddr);
  CHECK(back.message_type == m.message_type);
  CHECK(back.server_id == m.server_id);
  CHECK(back.subnet_mask == m.subnet_mask);
  CHECK(back.routers == m.routers);
  CHECK(back.domain_name == m.domain_name);
  CHECK(back.mtu == m.mtu);
  CHECK(back.lease_time == m.lease_time);
  CHECK(back.search_domains == m.search_domains);
  int instances = 0; // the list is longer than 255 bytes: several option 119s
  for (std::size_t i = 240; i < n && out[i] != std::byte{255}; i += 2 + unsigned(out[i + 1]))
    instances += out[i] == std::byte{119};
  CHECK(instances >= 2);
  CHECK(build_dhcp(std::span(out).first(300), m) == 0);
}

TEST_CASE("DHCP: a client DISCOVER frame") {
  dhcp_message m;
  m.xid = 42;
  m.client_mac = guest_mac;
  m.message_type = dhcp_message_type::discover;
  m.parameter_request_list.assign(default_parameter_request_list.begin(), default_parameter_request_list.end());
  bytes f(600);
  const std::size_t n = build_dhcp_client_frame(f, m);
  REQUIRE(n == udp_frame_overhead + 300);
  f.resize(n);
  const ethernet_view e = parse_ethernet(f);
  CHECK(e.destination.is_broadcast());
  CHECK(e.source == guest_mac);
  const ipv4_view ip = parse_ipv4(e.payload);
  CHECK(ip.source == ipv4_address::any());
  CHECK(ip.destination == ipv4_address::broadcast());
  const udp_view u = parse_udp(ip);
  CHECK(u.source_port == 68);
  CHECK(u.destination_port == 67);
  const dhcp_message back = parse_dhcp(u.payload);
  CHECK(back.op == 1);
  CHECK(back.xid == 42);
  CHECK(back.message_type == dhcp_message_type::discover);
  CHECK(back.parameter_request_list ==
        std::vector<std::uint8_t>(default_parameter_request_list.begin(), default_parameter_request_list.end()));
}

TEST_CASE("DHCP: malformed messages are refused") {
  const bytes good = dhcp_ack();
  for (std::size_t n = 0; n < 240; ++n) CHECK(dhcp_error(bytes(good.begin(), good.begin() + long(n))) == guest_errc::packet_truncated);
  auto changed = [&](std::size_t at, int value) {
    bytes b = good;
    b[at] = std::byte(value);
    return dhcp_error(b);
  };
  CHECK(changed(236, 0) == guest_errc::malformed_packet); // cookie
  CHECK(changed(0, 3) == guest_errc::malformed_packet);   // op
  CHECK(changed(1, 6) == guest_errc::unsupported_packet); // htype
  auto with_options = [&](std::initializer_list<int> options) {
    bytes b = bootreply_fixed();
    append(b, make(options));
    return dhcp_error(b);
  };
  CHECK(with_options({53, 1, 5, 255}) == std::error_code{});
  CHECK(with_options({53, 1, 5}) == std::error_code{}); // no end option: tolerated
  CHECK(with_options({53, 2, 5}) == guest_errc::packet_truncated);
  CHECK(with_options({53}) == guest_errc::packet_truncated);
  CHECK(with_options({53, 2, 5, 5, 255}) == guest_errc::malformed_packet);
  CHECK(with_options({53, 1, 9, 255}) == guest_errc::malformed_packet);
  CHECK(with_options({53, 1, 0, 255}) == guest_errc::malformed_packet);
  CHECK(with_options({1, 3, 255, 255, 255, 255}) == guest_errc::malformed_packet);
  CHECK(with_options({54, 0, 255}) == guest_errc::malformed_packet);
  CHECK(with_options({3, 5, 1, 2, 3, 4, 5, 255}) == guest_errc::malformed_packet);
  CHECK(with_options({6, 0, 255}) == guest_errc::malformed_packet);
  CHECK(with_options({26, 2, 0, 67, 255}) == guest_errc::malformed_packet);
  CHECK(with_options({26, 1, 5, 255}) == guest_errc::malformed_packet);
  CHECK(with_options({51, 2, 0, 0, 255}) == guest_errc::malformed_packet);
  CHECK(with_options({52, 1, 4, 255}) == guest_errc::malformed_packet);
  CHECK(with_options({119, 2, 0xc0, 0x00, 255}) == guest_errc::malformed_packet);
  CHECK(with_options({119, 2, 1, 'a', 255}) == guest_errc::packet_truncated);
  CHECK_THROWS_AS(parse_dhcp(bytes(10)), std::system_error);
}

TEST_CASE("Parsers survive arbitrary bytes") {
  // Every single-byte change and every truncation of a real DHCP frame, plus
  // random buffers, through every layer: ASan checks the bounds.
  const frame_addresses a{passt_mac, guest_mac, gateway_ip, guest_ip};
  const bytes ack = dhcp_ack();
  bytes f(1000);
  f.resize(build_udp_frame(f, a, 67, 68, ack));
  auto parse_all = [](std::span<const std::byte> frame) {
    std::error_code ec;
    const ethernet_view e = parse_ethernet(frame, ec);
    if (ec) return;
    parse_arp(e.payload, ec);
    decode_domain_search(e.payload, ec);
    const ipv4_view ip = parse_ipv4(e.payload, ec);
    if (ec) return;
    parse_icmp_echo(ip, ec);
    const udp_view u = parse_udp(ip, ec);
    if (ec) return;
    parse_dhcp(u.payload, ec);
  };
  std::size_t parsed = 0;
  for (std::size_t i = 0; i < f.size(); ++i) {
    bytes g = f;
    g[i] ^= std::byte{0x5a};
    parse_all(g);
    parse_all(std::span(f).first(i));
    ++parsed;
  }
  std::mt19937 random(7);
  for (int i = 0; i < 2000; ++i) {
    bytes g(random() % 400);
    for (auto& b : g) b = std::byte(random());
    parse_all(g);
    std::error_code ec;
    decode_domain_search(g, ec);
    parse_dhcp(g, ec);
  }
  CHECK(parsed == f.size());
}
