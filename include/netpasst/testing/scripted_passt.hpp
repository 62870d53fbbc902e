#pragma once
/// @file testing/scripted_passt.hpp
/// `netpasst::testing::scripted_passt`: plays passt's side of a link over
/// any FrameTransport, enough for a guest's first steps: a DHCP server, an
/// ARP responder for every address but the guest's, a UDP echo on one port
/// of the gateway, and an ICMP echo responder. Knobs make it misbehave
/// (drop DISCOVERs, NAK, a stray OFFER with a wrong xid, stay silent per
/// protocol). Frames it does not handle are kept for inspection.
///
/// Run it on the other end of a `memory_transport` pair, or on a stream
/// transport over passt's end of a `scripted_launcher` socket, to test a
/// guest, a lifecycle or an embedder's NIC model without a real passt.
///
/// It keeps one `async_receive` pending from `run()` until the transport
/// fails or `stop()`; the transport must outlive it. Single-threaded: use it
/// on the transport's executor.

#include <netpasst/concepts.hpp>
#include <netpasst/guest/packet.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

namespace netpasst::testing {

/// What a scripted passt hands out and how it behaves.
struct scripted_passt_config {
  packet::mac_address passt_mac{{0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55}};
  packet::ipv4_address guest_address = asio::ip::make_address_v4("192.0.2.10");
  packet::ipv4_address gateway = asio::ip::make_address_v4("192.0.2.1");
  packet::ipv4_address dns = asio::ip::make_address_v4("192.0.2.53");
  int prefix_length = 24;
  std::uint16_t mtu = 65520;
  std::vector<std::string> search_domains{"a.example", "b.example"};
  /// The gateway's UDP port that echoes datagrams back.
  std::uint16_t echo_port = 7;
  int drop_discovers = 0;       ///< Ignore this many DISCOVERs first.
  bool nak = false;             ///< Answer REQUESTs with NAK.
  bool wrong_xid_first = false; ///< Send an OFFER with another xid before the right one.
  bool dhcp = true, arp = true, udp = true, icmp = true;  ///< Which responders answer.
};

/// What a scripted passt saw and did.
struct scripted_passt_counters {
  int discovers = 0, requests = 0, arp_requests = 0, udp_datagrams = 0, echo_requests = 0;
  std::uint64_t frames_received = 0, frames_sent = 0, sends_refused = 0;
};

namespace detail {
template <class Transport> struct scripted_passt_state;
}

/// A scripted passt over `Transport` (see the file comment).
template <FrameTransport Transport>
class scripted_passt {
public:
  explicit scripted_passt(Transport& transport, const scripted_passt_config& config = {});
  scripted_passt(const scripted_passt&) = delete;
  scripted_passt& operator=(const scripted_passt&) = delete;
  /// As `stop()`.
  ~scripted_passt();

  /// Starts answering; idempotent.
  void run();
  /// Stops answering and cancels its pending receive.
  void stop();

  scripted_passt_config& config() noexcept;
  const scripted_passt_counters& counters() const noexcept;
  /// Frames no responder handled, copied, in arrival order.
  const std::vector<std::vector<std::byte>>& other_frames() const noexcept;
  /// The error that ended its receive loop, if one did.
  std::error_code receive_error() const noexcept;

private:
  std::shared_ptr<detail::scripted_passt_state<Transport>> state_;
};

} // namespace netpasst::testing

#include <netpasst/testing/impl/scripted_passt.hpp>
