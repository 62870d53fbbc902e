#pragma once
/// @file guest/packet.hpp
/// Wire formats a tiny IPv4 guest needs, in `netpasst::packet`: Ethernet II,
/// ARP, IPv4, UDP, ICMP echo and DHCP (BOOTP with options, including the
/// RFC 3397 domain search list).
///
/// Conventions, the same for every format:
/// - `parse_X(bytes, ec)` takes a span and never reads outside it. It returns
///   a view (spans into `bytes`, valid as long as `bytes` is) or, for DHCP, a
///   value. Malformed input is refused with `ec` set and a default-constructed
///   result; the errors are in error.hpp's guest group:
///   `guest_errc::packet_truncated` (shorter than a header or length field says),
///   `guest_errc::bad_checksum`, `guest_errc::malformed_packet` (a field the format
///   forbids), `guest_errc::unsupported_packet` (well formed, but outside what these
///   codecs handle: IPv4 fragments, non-Ethernet ARP, ICMP other than echo,
///   non-Ethernet BOOTP). `parse_X(bytes)` is the throwing form
///   (`std::system_error` carrying the same code).
/// - `build_X_frame(out, ...)` writes a whole Ethernet frame into `out` and
///   returns its length, or 0 (nothing usable written) when it does not fit or
///   an argument cannot be encoded. Nothing is allocated; checksums are filled in.
/// - Multi-byte fields are in host order in the structs, network order on the wire.
///
/// Every parser is meant to be fed arbitrary bytes (fuzzing): there is no
/// precondition on the input.

#include <netpasst/error.hpp>
#include <netpasst/guest/error.hpp>

#include <asio/ip/address_v4.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <vector>

namespace netpasst::packet {

/// An IPv4 address (Asio's type: `to_string()`, `make_address_v4("...")`).
using ipv4_address = asio::ip::address_v4;

/// An Ethernet (EUI-48) address.
struct mac_address {
  std::array<std::uint8_t, 6> octets{};

  /// ff:ff:ff:ff:ff:ff.
  static constexpr mac_address broadcast() noexcept { return {{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}; }
  /// True for ff:ff:ff:ff:ff:ff.
  constexpr bool is_broadcast() const noexcept { return *this == broadcast(); }
  friend constexpr bool operator==(const mac_address&, const mac_address&) = default;
};

/// "52:54:00:12:34:56" (lower-case hex).
inline std::string to_string(const mac_address& mac);

// --- sizes and numbers ------------------------------------------------------

inline constexpr std::size_t ethernet_header_size = 14;
inline constexpr std::size_t arp_frame_size = ethernet_header_size + 28;
inline constexpr std::size_t ipv4_header_size = 20; ///< Without options (what the builders write).
inline constexpr std::size_t udp_header_size = 8;
inline constexpr std::size_t icmp_echo_header_size = 8;
/// Ethernet + IPv4 + UDP headers: where a UDP frame's payload starts.
inline constexpr std::size_t udp_frame_overhead = ethernet_header_size + ipv4_header_size + udp_header_size;
/// Ethernet + IPv4 + ICMP echo headers: where an echo frame's payload starts.
inline constexpr std::size_t icmp_echo_frame_overhead =
    ethernet_header_size + ipv4_header_size + icmp_echo_header_size;
/// Largest UDP (or ICMP echo) payload whose frame stays within 65535 bytes.
inline constexpr std::size_t max_udp_payload = 65535 - udp_frame_overhead;

inline constexpr std::uint16_t ethertype_ipv4 = 0x0800;
inline constexpr std::uint16_t ethertype_arp = 0x0806;
inline constexpr std::uint8_t ip_protocol_icmp = 1;
inline constexpr std::uint8_t ip_protocol_udp = 17;
inline constexpr std::uint16_t dhcp_server_port = 67;
inline constexpr std::uint16_t dhcp_client_port = 68;

/// The addresses of a frame carrying IPv4: link layer and network layer.
struct frame_addresses {
  mac_address source_mac;
  mac_address destination_mac;
  ipv4_address source;
  ipv4_address destination;
};

// --- Internet checksum (RFC 1071) -------------------------------------------

/// Adds `data` as 16-bit big-endian words to the running one's-complement
/// `sum` (not folded). To checksum several pieces, every piece but the last
/// must have an even length.
inline std::uint32_t checksum_add(std::span<const std::byte> data, std::uint32_t sum = 0) noexcept;
/// Folds `sum` to 16 bits and complements it: the value to put on the wire.
/// A buffer that already holds its correct checksum folds to 0.
inline std::uint16_t checksum_finish(std::uint32_t sum) noexcept;
/// `checksum_finish(checksum_add(data))`.
inline std::uint16_t internet_checksum(std::span<const std::byte> data) noexcept;

// --- Ethernet II --------------------------------------------------------------

/// An Ethernet II frame, viewed.
struct ethernet_view {
  mac_address destination;
  mac_address source;
  std::uint16_t ether_type = 0;          ///< Raw: 0x0800 IPv4, 0x0806 ARP, 0x8100 VLAN...
  std::span<const std::byte> payload;    ///< Everything after the header, padding included.
};

/// Parses the 14-byte header. Errors: `packet_truncated` below 14 bytes.
inline ethernet_view parse_ethernet(std::span<const std::byte> frame, std::error_code& ec) noexcept;
/// Throwing form. @throws std::system_error
inline ethernet_view parse_ethernet(std::span<const std::byte> frame);

/// Writes a 14-byte Ethernet header at the start of `out`; returns 14, or 0
/// if `out` is shorter.
inline std::size_t write_ethernet_header(std::span<std::byte> out, const mac_address& destination,
                                  const mac_address& source, std::uint16_t ether_type) noexcept;

// --- ARP (RFC 826), Ethernet/IPv4 only -----------------------------------------

enum class arp_operation : std::uint16_t {
  request = 1,
  reply = 2,
};

/// An ARP packet for IPv4 over Ethernet.
struct arp_packet {
  arp_operation operation = arp_operation::request;
  mac_address sender_mac;
  ipv4_address sender_ip;
  mac_address target_mac; ///< Zero in a request.
  ipv4_address target_ip;
};

/// Parses an ARP payload (what follows the Ethernet header; trailing padding
/// ignored). Errors: `packet_truncated` below 28 bytes; `unsupported_packet`
/// for a hardware type other than Ethernet (1, length 6) or a protocol other
/// than IPv4 (0x0800, length 4); `malformed_packet` for an operation other
/// than request (1) or reply (2).
inline arp_packet parse_arp(std::span<const std::byte> payload, std::error_code& ec) noexcept;
/// Throwing form. @throws std::system_error
inline arp_packet parse_arp(std::span<const std::byte> payload);

/// Writes a 42-byte frame: Ethernet header (from `arp.sender_mac` to
/// `ethernet_destination`, usually broadcast for a request) then `arp`.
/// Returns 42, or 0 if `out` is shorter.
inline std::size_t build_arp_frame(std::span<std::byte> out, const arp_packet& arp,
                            const mac_address& ethernet_destination) noexcept;

// --- IPv4 (RFC 791) -------------------------------------------------------------

/// An IPv4 packet, viewed.
struct ipv4_view {
  ipv4_address source;
  ipv4_address destination;
  std::uint8_t protocol = 0;          ///< 1 ICMP, 17 UDP...
  std::uint8_t ttl = 0;
  std::uint16_t identification = 0;
  std::span<const std::byte> header;  ///< The whole header, options included.
  std::span<const std::byte> payload; ///< Up to the total length: link padding cut off.
};

/// Parses and checks an IPv4 packet (an Ethernet payload; bytes past the
/// total length are padding and ignored). Errors: `packet_truncated` when the
/// buffer is shorter than 20 bytes, the header length or the total length;
/// `malformed_packet` for version != 4, header length < 20 or a total length
/// below the header length; `bad_checksum` when the header checksum does not
/// verify; `unsupported_packet` for a fragment (MF set or offset != 0).
inline ipv4_view parse_ipv4(std::span<const std::byte> packet, std::error_code& ec) noexcept;
/// Throwing form. @throws std::system_error
inline ipv4_view parse_ipv4(std::span<const std::byte> packet);

// --- UDP (RFC 768) ----------------------------------------------------------------

/// A UDP datagram, viewed.
struct udp_view {
  std::uint16_t source_port = 0;
  std::uint16_t destination_port = 0;
  std::span<const std::byte> payload; ///< Up to the UDP length.
};

/// Parses the UDP datagram carried by `ip` and verifies its checksum with the
/// pseudo-header (a zero checksum means "none" and is accepted). Errors:
/// `unsupported_packet` if `ip.protocol` is not 17; `packet_truncated` below
/// 8 bytes or below the UDP length; `malformed_packet` for a UDP length below
/// 8; `bad_checksum`.
inline udp_view parse_udp(const ipv4_view& ip, std::error_code& ec) noexcept;
/// Throwing form. @throws std::system_error
inline udp_view parse_udp(const ipv4_view& ip);

/// Writes an Ethernet + IPv4 (TTL 64, DF, identification 0) + UDP frame
/// carrying `payload`, with both checksums. `payload` may already lie in `out`
/// at offset `udp_frame_overhead` (or anywhere in `out`: it is moved, not
/// copied blindly). Returns the frame length, or 0 if it does not fit in
/// `out` or the payload exceeds `max_udp_payload`.
inline std::size_t build_udp_frame(std::span<std::byte> out, const frame_addresses& addresses,
                            std::uint16_t source_port, std::uint16_t destination_port,
                            std::span<const std::byte> payload) noexcept;

// --- ICMP echo (RFC 792) -----------------------------------------------------------

enum class icmp_type : std::uint8_t {
  echo_reply = 0,
  echo_request = 8,
};

/// An ICMP echo request or reply, viewed.
struct icmp_echo_view {
  icmp_type type = icmp_type::echo_request;
  std::uint16_t identifier = 0;
  std::uint16_t sequence = 0;
  std::span<const std::byte> payload;
};

/// Parses the ICMP message carried by `ip` as an echo request or reply and
/// verifies its checksum. Errors: `unsupported_packet` if `ip.protocol` is
/// not 1 or the type is not echo request/reply (code 0); `packet_truncated`
/// below 8 bytes; `bad_checksum`.
inline icmp_echo_view parse_icmp_echo(const ipv4_view& ip, std::error_code& ec) noexcept;
/// Throwing form. @throws std::system_error
inline icmp_echo_view parse_icmp_echo(const ipv4_view& ip);

/// Writes an Ethernet + IPv4 + ICMP echo frame (request or reply per `type`)
/// with `payload` (which may lie in `out`, as for `build_udp_frame`).
/// Returns the frame length, or 0 if it does not fit or the payload exceeds
/// `max_udp_payload`.
inline std::size_t build_icmp_echo_frame(std::span<std::byte> out, const frame_addresses& addresses, icmp_type type,
                                  std::uint16_t identifier, std::uint16_t sequence,
                                  std::span<const std::byte> payload) noexcept;

// --- DHCP (RFC 2131, 2132, 3396, 3397) -----------------------------------------------

enum class dhcp_message_type : std::uint8_t {
  discover = 1,
  offer = 2,
  request = 3,
  decline = 4,
  ack = 5,
  nak = 6,
  release = 7,
  inform = 8,
};

/// What a client asks for in option 55 unless told otherwise: subnet mask
/// (1), router (3), DNS (6), domain name (15), interface MTU (26), broadcast
/// address (28), lease time (51), server id (54), domain search (119).
inline constexpr std::array<std::uint8_t, 9> default_parameter_request_list = {1, 3, 6, 15, 26, 28, 51, 54, 119};

/// A DHCP message: the BOOTP fields and the options a small client uses.
/// Absent options are empty vectors/strings or empty optionals. Other options
/// are skipped when parsing and never written.
struct dhcp_message {
  std::uint8_t op = 1;            ///< 1 BOOTREQUEST (client), 2 BOOTREPLY (server).
  std::uint32_t xid = 0;          ///< Transaction id, chosen by the client.
  std::uint16_t secs = 0;
  std::uint16_t flags = 0;        ///< 0x8000: reply by broadcast.
  ipv4_address ciaddr, yiaddr, siaddr, giaddr;
  mac_address client_mac;         ///< chaddr (hardware type 1, length 6).

  std::optional<dhcp_message_type> message_type;  ///< Option 53.
  std::optional<ipv4_address> requested_address;  ///< Option 50.
  std::optional<ipv4_address> server_id;          ///< Option 54.
  std::optional<ipv4_address> subnet_mask;        ///< Option 1.
  std::vector<ipv4_address> routers;              ///< Option 3.
  std::vector<ipv4_address> dns_servers;          ///< Option 6.
  std::string domain_name;                        ///< Option 15 (trailing NULs dropped).
  std::optional<std::uint16_t> mtu;               ///< Option 26 (at least 68).
  std::optional<std::uint32_t> lease_time;        ///< Option 51, seconds (0xffffffff: infinite).
  std::vector<std::uint8_t> parameter_request_list; ///< Option 55.
  std::vector<std::string> search_domains;        ///< Option 119, decoded (see decode_domain_search).
};

/// Parses a DHCP message (a UDP payload). Options may be split into several
/// instances of the same code (RFC 3396): they are concatenated in order
/// (options field, then `file`, then `sname` when option 52 overloads them)
/// before decoding. Errors: `packet_truncated` below the 240-byte fixed part
/// or for an option running past its area; `malformed_packet` for a wrong
/// magic cookie, an op other than 1/2, a known option of the wrong length or
/// value, or a bad option 119; `unsupported_packet` for a hardware type other
/// than Ethernet. Allocates (vectors, strings).
inline dhcp_message parse_dhcp(std::span<const std::byte> payload, std::error_code& ec);
/// Throwing form. @throws std::system_error
inline dhcp_message parse_dhcp(std::span<const std::byte> payload);

/// Writes `message` as a BOOTP message with its options (in the order of the
/// struct, option 119 compressed and split into 255-byte instances, then the
/// end option, padded to the classic 300 bytes). Returns its length, or 0 if it
/// does not fit in `out` or a field cannot be encoded (e.g. a DNS label over 63
/// bytes, or a list option longer than 255 bytes other than option 119).
inline std::size_t build_dhcp(std::span<std::byte> out, const dhcp_message& message);

/// `build_dhcp` wrapped in UDP/IPv4/Ethernet: a client message goes from
/// `message.ciaddr`:68 (0.0.0.0 before a lease) to 255.255.255.255:67, from
/// `message.client_mac` to broadcast. Returns the frame length or 0.
inline std::size_t build_dhcp_client_frame(std::span<std::byte> out, const dhcp_message& message);

/// Decodes an RFC 3397 domain search list: a sequence of RFC 1035 names, each
/// a run of labels ended by a zero byte or a compression pointer (0xC0 | offset
/// from the start of `data`). Labels are joined with '.'; a '.' or '\' inside
/// a label is written as "\." or "\\"; the root name is ".". The first pointer
/// of a name must point before the start of that name, each further one before
/// the previous target (as any encoder that points to earlier names does):
/// targets strictly decrease, so loops are impossible. Errors: `packet_truncated` when a label
/// or pointer runs past the end; `malformed_packet` for a label type 0x40/0x80,
/// a forward or looping pointer, or a name longer than 255 bytes encoded.
inline std::vector<std::string> decode_domain_search(std::span<const std::byte> data, std::error_code& ec);

/// Encodes `names` (dotted, as decode_domain_search writes them; a trailing
/// '.' is allowed) as an RFC 3397 list, pointing to earlier suffixes instead
/// of repeating them. Returns false (leaving `out` unspecified) for an empty
/// label, a label over 63 bytes or a name over 255 bytes encoded.
inline bool encode_domain_search(std::span<const std::string> names, std::vector<std::byte>& out);

} // namespace netpasst::packet

#include <netpasst/guest/impl/packet.hpp>
