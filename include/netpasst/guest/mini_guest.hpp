#pragma once
/// @file guest/mini_guest.hpp
/// `netpasst::mini_guest`: a tiny IPv4 guest network stack over any
/// FrameTransport, enough to prove that a passt link works end to end: a DHCP
/// lease, ARP, a UDP request/reply and an ICMP echo. Used by the demo program
/// and the end-to-end tests; a test can put a fake passt on the other end of
/// a `testing::memory_transport` pair.
///
/// How it runs:
/// - The guest drives the transport's receive side itself: from its first
///   operation (or `start()`) on, it keeps one `async_receive` pending and
///   looks at every frame. It answers ARP requests for its own address at any
///   time (passt may ask before it delivers), learns ARP replies, hands the
///   frames the current operation waits for to it, and counts the rest as
///   ignored (or malformed, when a parser refused them). Receiving copies
///   nothing and allocates nothing per frame; only a UDP reply is copied out.
/// - One operation at a time: starting one while another runs completes the
///   new one with `errc::operation_in_progress` and leaves the running one
///   alone.
/// - Every operation has a deadline (`mini_guest_config`); when it passes the
///   operation completes with `guest_errc::guest_timeout`. DHCP and ARP requests are
///   retransmitted every `retransmit_interval`; UDP and ICMP requests are sent
///   once (again at the next interval only if the transport refused them with
///   `errc::would_block`).
/// - Frames go to the MAC the guest learned by ARP for the next hop (the
///   destination if on-link, else the gateway), or else to passt's MAC from
///   the lease: passt answers for every address on the link.
/// - A transport error (closed, connection lost) ends the running operation
///   with that error; the next operation starts receiving again.
///
/// Thread safety: like an Asio I/O object. The guest, its transport and their
/// completion handlers run on the transport's executor; calls must not run
/// concurrently with them (one thread, or a strand).
///
/// Lifetime: the guest refers to the transport and does not own it; the
/// transport must outlive the guest. Destroying the guest ends a running
/// operation with `asio::error::operation_aborted` and cancels the receive it
/// left pending through that receive's own cancellation slot (other pending
/// operations on the transport are not touched).
///
/// Cancellation: each operation honours its token's cancellation slot
/// (terminal, partial, total): the operation ends with
/// `asio::error::operation_aborted` and the guest keeps receiving.

#include <netpasst/concepts.hpp>
#include <netpasst/error.hpp>
#include <netpasst/frame.hpp>
#include <netpasst/guest/packet.hpp>

#include <asio/async_result.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <vector>

namespace netpasst {

/// What a DHCP server (passt) handed out, from its DHCPACK.
struct dhcp_lease {
  packet::ipv4_address address;                    ///< yiaddr.
  int prefix_length = 32;                          ///< From the subnet mask (option 1); 32 if absent.
  packet::ipv4_address gateway;                    ///< First router (option 3); 0.0.0.0 if none.
  std::vector<packet::ipv4_address> dns_servers;   ///< Option 6.
  std::vector<std::string> search_domains;         ///< Option 119, one entry per name.
  std::string domain_name;                         ///< Option 15.
  std::uint16_t mtu = 0;                           ///< Option 26; 0 if not advertised.
  packet::ipv4_address server_id;                  ///< Option 54 (the IPv4 source if absent).
  std::chrono::seconds lease_time{0};              ///< Option 51; 0 if absent, 0xffffffff s infinite.
  packet::mac_address server_mac;                  ///< passt's MAC: the Ethernet source of the ACK.
};

/// The answer to `async_udp_exchange`.
struct udp_reply {
  std::vector<std::byte> payload;           ///< The reply datagram's payload, copied.
  std::chrono::steady_clock::duration rtt{}; ///< From the (last) send to the reply's arrival.
};

/// A locally administered unicast MAC, the guest's default: 02:6e:70:00:00:01.
inline constexpr packet::mac_address mini_guest_default_mac{{0x02, 0x6e, 0x70, 0x00, 0x00, 0x01}};

/// Settings of a mini_guest. Every field has a usable default.
struct mini_guest_config {
  packet::mac_address mac = mini_guest_default_mac;             ///< The guest's own MAC.
  std::chrono::milliseconds dhcp_timeout{10000};                ///< Deadline of a whole DISCOVER..ACK.
  std::chrono::milliseconds arp_timeout{3000};                  ///< Deadline of `async_arp`.
  std::chrono::milliseconds udp_timeout{3000};                  ///< Deadline of `async_udp_exchange`.
  std::chrono::milliseconds ping_timeout{3000};                 ///< Deadline of `async_ping`.
  std::chrono::milliseconds retransmit_interval{500};           ///< Between DHCP/ARP retransmissions.
  /// Source port of UDP exchanges; 0 picks a new one in 49152..65535 for
  /// each exchange, so a late reply to an earlier one is not taken.
  std::uint16_t udp_source_port = 0;
  std::uint16_t icmp_identifier = 0x6e70;                       ///< ICMP echo identifier.
  /// DHCP transaction id of the next `async_dhcp`; 0 picks a random one.
  std::uint32_t dhcp_xid = 0;
};

/// What a mini_guest saw and did. Monotonic.
struct mini_guest_counters {
  std::uint64_t frames_received = 0;       ///< Every frame the transport delivered.
  std::uint64_t frames_ignored = 0;        ///< Well formed, but not for us or not awaited.
  std::uint64_t frames_malformed = 0;      ///< Refused by a packet parser (see packet.hpp).
  std::uint64_t arp_requests_answered = 0; ///< ARP requests for our address we replied to.
  std::uint64_t frames_sent = 0;           ///< Frames the transport took.
  std::uint64_t sends_refused = 0;         ///< Frames it refused with `errc::would_block`.
};

namespace detail {
template <class Transport> class guest_state;
}

/// A tiny IPv4 guest over the FrameTransport `Transport` (see the file comment).
/// Not copyable, not movable (pending operations refer to it).
template <FrameTransport Transport>
class mini_guest {
public:
  using transport_type = Transport;
  using executor_type = typename Transport::executor_type;

  /// A guest on `transport` (not owned; must outlive the guest). Allocates
  /// its buffers; sends and receives nothing until `start()` or an operation.
  explicit mini_guest(Transport& transport, const mini_guest_config& config = {});

  mini_guest(const mini_guest&) = delete;
  mini_guest& operator=(const mini_guest&) = delete;

  /// Ends a running operation with `asio::error::operation_aborted` and lets
  /// go of the transport (see the file comment).
  ~mini_guest();

  /// The transport's executor.
  executor_type get_executor() const;

  /// The transport the guest runs on.
  Transport& next_layer() noexcept;

  const mini_guest_config& config() const noexcept;

  /// The guest's MAC (`config().mac`).
  const packet::mac_address& mac() const noexcept;

  /// The lease from the last successful `async_dhcp` (or `set_lease`).
  const std::optional<dhcp_lease>& lease() const noexcept;

  /// Configures the address statically, as if `lease` had been received.
  /// Its `server_mac` is where frames go when ARP has not said otherwise.
  void set_lease(const dhcp_lease& lease);

  /// What the guest saw and did so far.
  mini_guest_counters counters() const noexcept;

  /// True while an operation runs.
  bool busy() const noexcept;

  /// Starts receiving (and answering ARP for our address) without running an
  /// operation. Every operation calls it; calling it again does nothing.
  void start();

  /// Ends the running operation, if any, with `asio::error::operation_aborted`.
  /// The guest keeps receiving.
  void cancel();

  /// Gets a lease: DISCOVER, OFFER, REQUEST, ACK, with retransmission every
  /// `retransmit_interval` and `dhcp_timeout` overall. On success the lease
  /// becomes `lease()`. Completion: `void(std::error_code, dhcp_lease)`.
  /// Errors: `guest_errc::dhcp_nak`, `guest_errc::guest_timeout`,
  /// `errc::operation_in_progress`, `asio::error::operation_aborted`, a
  /// transport error, or `guest_errc::malformed_packet` for an ACK whose subnet
  /// mask is not contiguous.
  template <asio::completion_token_for<void(std::error_code, dhcp_lease)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_dhcp(Token&& token = asio::default_completion_token_t<executor_type>{});

  /// Resolves `address` to a MAC with ARP requests (from our address, or
  /// 0.0.0.0 without one), retransmitted every `retransmit_interval` until
  /// `arp_timeout`. The answer is cached for later sends.
  /// Completion: `void(std::error_code, packet::mac_address)`. Errors:
  /// `guest_errc::guest_timeout`, `errc::operation_in_progress`,
  /// `asio::error::operation_aborted`, a transport error.
  template <asio::completion_token_for<void(std::error_code, packet::mac_address)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_arp(packet::ipv4_address address,
                 Token&& token = asio::default_completion_token_t<executor_type>{});

  /// Sends `payload` (copied at once) in one UDP datagram from our address to
  /// `destination`:`port` and waits until `udp_timeout` for a datagram from
  /// that endpoint to our source port. Completion:
  /// `void(std::error_code, udp_reply)`. Errors: `guest_errc::no_address` (no
  /// lease), `std::errc::message_size` (payload over `packet::max_udp_payload`),
  /// `guest_errc::guest_timeout`, `errc::operation_in_progress`,
  /// `asio::error::operation_aborted`, a transport error.
  template <asio::completion_token_for<void(std::error_code, udp_reply)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_udp_exchange(packet::ipv4_address destination, std::uint16_t port, std::span<const std::byte> payload,
                          Token&& token = asio::default_completion_token_t<executor_type>{});

  /// Sends one ICMP echo request (identifier `icmp_identifier`, a new
  /// sequence number) to `destination` and waits until `ping_timeout` for
  /// the matching reply. Completion:
  /// `void(std::error_code, std::chrono::steady_clock::duration rtt)`.
  /// Errors as `async_udp_exchange`.
  template <asio::completion_token_for<void(std::error_code, std::chrono::steady_clock::duration)> Token =
                asio::default_completion_token_t<executor_type>>
  auto async_ping(packet::ipv4_address destination,
                  Token&& token = asio::default_completion_token_t<executor_type>{});

private:
  std::shared_ptr<detail::guest_state<Transport>> state_;
};

} // namespace netpasst

#include <netpasst/guest/impl/mini_guest.hpp>
