#pragma once
// What the end-to-end main set up (see e2e_main.cpp), and the ARP exchange
// several tests use to see that passt answers.
#include <netpasst/guest/packet.hpp>

#include <cstddef>
#include <string>
#include <vector>

namespace netpasst::e2e {

/// True when this process runs in the private namespace with the template
/// interface below; false in the host's namespace.
extern bool in_private_netns;

/// The template interface passt copies (valid when in_private_netns).
inline constexpr const char* template_address = "192.0.2.10";
inline constexpr const char* template_gateway = "192.0.2.1";
inline constexpr int template_prefix_length = 24;

/// The guest MAC the ARP helpers below speak for.
inline const netpasst::packet::mac_address test_guest_mac{{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}};

/// An ARP request from the template address (and `test_guest_mac`) for the
/// gateway, built with the library's packet codec.
inline std::vector<std::byte> gateway_arp_request() {
  namespace packet = netpasst::packet;
  std::vector<std::byte> frame(packet::arp_frame_size);
  packet::build_arp_frame(frame,
                          {packet::arp_operation::request, test_guest_mac,
                           asio::ip::make_address_v4(template_address), {},
                           asio::ip::make_address_v4(template_gateway)},
                          packet::mac_address::broadcast());
  return frame;
}

/// True when `frame` is passt's ARP reply to `gateway_arp_request()`: from
/// the gateway address, to our MAC and address.
inline bool is_gateway_arp_reply(std::span<const std::byte> frame) {
  namespace packet = netpasst::packet;
  std::error_code ec;
  const auto eth = packet::parse_ethernet(frame, ec);
  if (ec || eth.ether_type != packet::ethertype_arp || eth.destination != test_guest_mac) return false;
  const auto arp = packet::parse_arp(eth.payload, ec);
  return !ec && arp.operation == packet::arp_operation::reply &&
         arp.sender_ip == asio::ip::make_address_v4(template_gateway) && arp.target_mac == test_guest_mac &&
         arp.target_ip == asio::ip::make_address_v4(template_address);
}

/// The passt binary under test (CMake cache NETPASST_TEST_PASST).
inline std::string passt_binary() {
#ifdef NETPASST_TEST_PASST
  return NETPASST_TEST_PASST;
#else
  return "passt";
#endif
}

} // namespace netpasst::e2e
