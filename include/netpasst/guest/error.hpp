#pragma once
/// @file guest/error.hpp
/// Errors of the guest side: `mini_guest` and its packet codecs
/// (`netpasst::guest_errc`, category "netpasst.guest"). They never come from
/// passt's link itself, so no `netpasst::condition` groups them.

#include <string>
#include <system_error>

namespace netpasst {

/// Errors raised by `mini_guest` and the codecs in guest/packet.hpp.
enum class guest_errc {
  packet_truncated = 1, ///< A packet is shorter than its headers or length fields say.
  bad_checksum,         ///< An IPv4 header, UDP or ICMP checksum does not verify.
  malformed_packet,     ///< A field holds a value its format forbids (version, length, label, pointer...).
  unsupported_packet,   ///< A well-formed packet the codecs do not handle (fragment, other hardware type...).
  dhcp_nak,             ///< The DHCP server refused the request (DHCPNAK).
  guest_timeout,        ///< A guest operation got no answer before its deadline.
  no_address,           ///< The guest has no IPv4 address yet (no lease, none configured).
};

namespace detail {
class guest_category_impl final : public std::error_category {
public:
  const char* name() const noexcept override { return "netpasst.guest"; }
  std::string message(int value) const override {
    switch (static_cast<guest_errc>(value)) {
      case guest_errc::packet_truncated: return "packet truncated";
      case guest_errc::bad_checksum: return "bad checksum";
      case guest_errc::malformed_packet: return "malformed packet";
      case guest_errc::unsupported_packet: return "unsupported packet";
      case guest_errc::dhcp_nak: return "DHCP server sent NAK";
      case guest_errc::guest_timeout: return "no answer before the deadline";
      case guest_errc::no_address: return "guest has no IPv4 address";
    }
    return "unknown netpasst guest error";
  }
};
} // namespace detail

/// The category of `netpasst::guest_errc`.
inline const std::error_category& guest_category() noexcept {
  static const detail::guest_category_impl category;
  return category;
}

inline std::error_code make_error_code(guest_errc e) noexcept { return {static_cast<int>(e), guest_category()}; }

} // namespace netpasst

template <> struct std::is_error_code_enum<netpasst::guest_errc> : std::true_type {};
