#pragma once
// Implementation of netpasst/guest/mini_guest.hpp; include that header instead.

#include <netpasst/guest/mini_guest.hpp>

#include <asio/basic_waitable_timer.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/compose.hpp>
#include <asio/error.hpp>
#include <asio/post.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <random>
#include <utility>

namespace netpasst::detail {

enum class guest_op_kind { none, dhcp, arp, udp, ping };

/// The arguments of one operation, fixed when it starts.
struct guest_request {
  guest_op_kind kind = guest_op_kind::none;
  packet::ipv4_address target;
  std::uint16_t port = 0;
  std::vector<std::byte> payload;
};

/// Everything a guest owns, shared with its pending handlers. All members
/// are used on the transport's executor only.
template <class Transport>
class guest_state : public std::enable_shared_from_this<guest_state<Transport>> {
public:
  using executor_type = typename Transport::executor_type;
  using clock = std::chrono::steady_clock;
  using timer_type = asio::basic_waitable_timer<clock, asio::wait_traits<clock>, executor_type>;

  guest_state(Transport& transport, const mini_guest_config& config)
      : transport(&transport), config(config), wake(transport.get_executor()), tx_(max_frame_size),
        random_(std::random_device{}()) {
    next_port_ = std::uint16_t(49152 + random_() % 16384);
  }

  Transport* transport;
  mini_guest_config config;
  timer_type wake; ///< The running operation waits on it; finish() cancels it.
  std::optional<dhcp_lease> lease;
  mini_guest_counters counters;
  bool receiving = false, detached = false;
  asio::cancellation_signal receive_cancel;  ///< Ends the guest's own pending receive, nothing else.

  // The running operation and its results.
  guest_op_kind kind = guest_op_kind::none;
  bool done = false;
  std::error_code result;
  dhcp_lease result_lease;
  packet::mac_address result_mac;
  udp_reply result_reply;
  clock::duration rtt{};

  /// Keeps one async_receive pending on the transport.
  void start_receiving() {
    if (receiving || detached) return;
    receiving = true;
    transport->async_receive(asio::bind_cancellation_slot(
        receive_cancel.slot(), [self = this->shared_from_this()](std::error_code ec, frame_batch batch) {
          self->receiving = false;
          if (self->detached) return;  // the transport may be gone: touch nothing
          if (ec) return self->finish(ec);
          for (frame f : batch) self->handle(f);
          self->start_receiving();
        }));
  }

  /// Starts `request` (the caller checked that none runs): sends the first
  /// frame. An error means the operation did not start.
  std::error_code begin(guest_request&& request) {
    const auto now = clock::now();
    request_ = std::move(request);
    std::chrono::milliseconds timeout{};
    switch (request_.kind) {
      case guest_op_kind::dhcp:
        timeout = config.dhcp_timeout;
        xid_ = config.dhcp_xid ? config.dhcp_xid : std::uint32_t(random_());
        requesting_ = false;
        break;
      case guest_op_kind::arp: timeout = config.arp_timeout; break;
      case guest_op_kind::udp:
        timeout = config.udp_timeout;
        if (!lease) return guest_errc::no_address;
        if (request_.payload.size() > packet::max_udp_payload) return std::make_error_code(std::errc::message_size);
        source_port_ = config.udp_source_port;
        if (source_port_ == 0) {
          source_port_ = next_port_;
          next_port_ = next_port_ == 65535 ? 49152 : std::uint16_t(next_port_ + 1);
        }
        break;
      case guest_op_kind::ping:
        timeout = config.ping_timeout;
        if (!lease) return guest_errc::no_address;
        ++sequence_;
        break;
      case guest_op_kind::none: break;
    }
    kind = request_.kind;
    done = false;
    result.clear();
    deadline_ = now + timeout;
    next_tick_ = now + config.retransmit_interval;
    start_receiving();
    if (std::error_code ec = transmit()) return kind = guest_op_kind::none, ec;
    return {};
  }

  /// When the running operation's timer should fire next.
  clock::time_point wake_time() const { return std::min(next_tick_, deadline_); }

  /// The timer fired: time out, or retransmit.
  void tick() {
    const auto now = clock::now();
    if (now >= deadline_) return finish(guest_errc::guest_timeout);
    if (now < next_tick_) return;
    next_tick_ = now + config.retransmit_interval;
    const bool retransmits = kind == guest_op_kind::dhcp || kind == guest_op_kind::arp;
    if (retransmits || !sent_)
      if (std::error_code ec = transmit()) finish(ec);
  }

  /// Ends the running operation with `ec` (first result wins).
  void finish(std::error_code ec) {
    if (kind == guest_op_kind::none || done) return;
    done = true;
    result = ec;
    wake.cancel();
  }

private:
  // --- sending ----------------------------------------------------------------

  /// Sends the running operation's request (again).
  std::error_code transmit() {
    const std::span<std::byte> out(tx_);
    std::size_t n = 0;
    switch (kind) {
      case guest_op_kind::dhcp: {
        packet::dhcp_message m;
        m.xid = xid_;
        m.client_mac = config.mac;
        m.message_type = requesting_ ? packet::dhcp_message_type::request : packet::dhcp_message_type::discover;
        if (requesting_) m.requested_address = offered_, m.server_id = offer_server_;
        m.parameter_request_list.assign(packet::default_parameter_request_list.begin(),
                                        packet::default_parameter_request_list.end());
        n = packet::build_dhcp_client_frame(out, m);
        break;
      }
      case guest_op_kind::arp:
        n = packet::build_arp_frame(
            out, {packet::arp_operation::request, config.mac, my_address(), {}, request_.target},
            packet::mac_address::broadcast());
        break;
      case guest_op_kind::udp:
        n = packet::build_udp_frame(out, addresses_to(request_.target), source_port_, request_.port,
                                    request_.payload);
        break;
      case guest_op_kind::ping: {
        static constexpr char text[] = "netpasst mini_guest echo request";
        n = packet::build_icmp_echo_frame(out, addresses_to(request_.target), packet::icmp_type::echo_request,
                                          config.icmp_identifier, sequence_,
                                          std::as_bytes(std::span(text, sizeof text - 1)));
        break;
      }
      case guest_op_kind::none: return {};
    }
    return send({tx_.data(), n}, true);
  }

  /// try_send; would_block is not an error (the request is sent again later).
  std::error_code send(frame f, bool request) {
    std::error_code ec;
    if (transport->try_send(f, ec)) {
      ++counters.frames_sent;
      if (request) sent_ = true, sent_at_ = clock::now();
      return {};
    }
    if (ec != errc::would_block) return ec;
    ++counters.sends_refused;
    if (request) sent_ = false;
    return {};
  }

  packet::ipv4_address my_address() const { return lease ? lease->address : packet::ipv4_address(); }

  bool on_link(const packet::ipv4_address& a) const {
    if (!lease || lease->prefix_length <= 0) return false;
    const std::uint32_t mask = lease->prefix_length >= 32 ? ~0u : ~(~0u >> lease->prefix_length);
    return (a.to_uint() & mask) == (lease->address.to_uint() & mask);
  }

  packet::frame_addresses addresses_to(const packet::ipv4_address& destination) const {
    packet::ipv4_address hop = destination;
    if (!on_link(destination) && !lease->gateway.is_unspecified()) hop = lease->gateway;
    packet::mac_address mac = lease->server_mac;
    if (auto cached = arp_lookup(hop)) mac = *cached;
    if (mac == packet::mac_address{}) mac = packet::mac_address::broadcast();
    return {config.mac, mac, lease->address, destination};
  }

  // --- ARP cache ------------------------------------------------------------------

  std::optional<packet::mac_address> arp_lookup(const packet::ipv4_address& a) const {
    for (std::size_t i = 0; i < arp_count_; ++i)
      if (arp_cache_[i].first == a) return arp_cache_[i].second;
    return std::nullopt;
  }

  void arp_learn(const packet::ipv4_address& a, const packet::mac_address& mac) {
    for (std::size_t i = 0; i < arp_count_; ++i)
      if (arp_cache_[i].first == a) return void(arp_cache_[i].second = mac);
    if (arp_count_ < arp_cache_.size()) return void(arp_cache_[arp_count_++] = {a, mac});
    arp_cache_[arp_next_++ % arp_cache_.size()] = {a, mac};
  }

  // --- receiving ---------------------------------------------------------------------

  void handle(frame f) {
    ++counters.frames_received;
    std::error_code ec;
    const packet::ethernet_view eth = packet::parse_ethernet(f, ec);
    if (ec) return void(++counters.frames_malformed);
    if (eth.destination != config.mac && !eth.destination.is_broadcast()) return void(++counters.frames_ignored);
    if (eth.ether_type == packet::ethertype_arp) return handle_arp(eth, ec);
    if (eth.ether_type != packet::ethertype_ipv4) return void(++counters.frames_ignored);
    const packet::ipv4_view ip = packet::parse_ipv4(eth.payload, ec);
    if (ec) return void(++counters.frames_malformed);
    const bool for_us = ip.destination == my_address() || ip.destination == packet::ipv4_address::broadcast();
    if (ip.protocol == packet::ip_protocol_udp && (for_us || kind == guest_op_kind::dhcp)) {
      const packet::udp_view udp = packet::parse_udp(ip, ec);
      if (ec) return void(++counters.frames_malformed);
      if (kind == guest_op_kind::dhcp && !done && udp.source_port == packet::dhcp_server_port &&
          udp.destination_port == packet::dhcp_client_port)
        return handle_dhcp(eth, ip, udp);
      if (kind == guest_op_kind::udp && !done && ip.source == request_.target && udp.source_port == request_.port &&
          udp.destination_port == source_port_) {
        result_reply.payload.assign(udp.payload.begin(), udp.payload.end());
        result_reply.rtt = clock::now() - sent_at_;
        return finish({});
      }
    } else if (ip.protocol == packet::ip_protocol_icmp && for_us) {
      const packet::icmp_echo_view echo = packet::parse_icmp_echo(ip, ec);
      if (ec == guest_errc::bad_checksum || ec == guest_errc::packet_truncated) return void(++counters.frames_malformed);
      if (!ec && kind == guest_op_kind::ping && !done && echo.type == packet::icmp_type::echo_reply &&
          ip.source == request_.target && echo.identifier == config.icmp_identifier && echo.sequence == sequence_) {
        rtt = clock::now() - sent_at_;
        return finish({});
      }
    }
    ++counters.frames_ignored;
  }

  void handle_arp(const packet::ethernet_view& eth, std::error_code& ec) {
    const packet::arp_packet arp = packet::parse_arp(eth.payload, ec);
    if (ec) return void(++counters.frames_malformed);
    if (arp.operation == packet::arp_operation::request) {
      if (!lease || arp.target_ip != lease->address) return void(++counters.frames_ignored);
      std::array<std::byte, packet::arp_frame_size> reply;
      packet::build_arp_frame(reply, {packet::arp_operation::reply, config.mac, lease->address, arp.sender_mac,
                                      arp.sender_ip},
                              arp.sender_mac);
      if (std::error_code e = send(reply, false)) return finish(e);
      ++counters.arp_requests_answered;
      return;
    }
    if (!arp.sender_ip.is_unspecified()) arp_learn(arp.sender_ip, arp.sender_mac);
    if (kind == guest_op_kind::arp && !done && arp.sender_ip == request_.target) {
      result_mac = arp.sender_mac;
      return finish({});
    }
    ++counters.frames_ignored;
  }

  void handle_dhcp(const packet::ethernet_view& eth, const packet::ipv4_view& ip, const packet::udp_view& udp) {
    std::error_code ec;
    const packet::dhcp_message m = packet::parse_dhcp(udp.payload, ec);
    if (ec) return void(++counters.frames_malformed);
    if (m.op != 2 || m.xid != xid_ || m.client_mac != config.mac || !m.message_type)
      return void(++counters.frames_ignored);
    using type = packet::dhcp_message_type;
    if (*m.message_type == type::nak) return finish(guest_errc::dhcp_nak);
    if (*m.message_type == type::offer && !requesting_) {
      requesting_ = true;
      offered_ = m.yiaddr;
      offer_server_ = m.server_id.value_or(ip.source);
      next_tick_ = clock::now() + config.retransmit_interval;
      if (std::error_code e = transmit()) finish(e);
      return;
    }
    if (*m.message_type != type::ack || !requesting_) return void(++counters.frames_ignored);
    dhcp_lease l;
    l.address = m.yiaddr;
    if (m.subnet_mask) {
      const std::uint32_t mask = m.subnet_mask->to_uint();
      l.prefix_length = std::countl_one(mask);
      if (l.prefix_length + std::countr_zero(mask) != 32) return finish(guest_errc::malformed_packet);
    }
    if (!m.routers.empty()) l.gateway = m.routers.front();
    l.dns_servers = m.dns_servers;
    l.search_domains = m.search_domains;
    l.domain_name = m.domain_name;
    l.mtu = m.mtu.value_or(0);
    l.server_id = m.server_id.value_or(ip.source);
    l.lease_time = std::chrono::seconds(m.lease_time.value_or(0));
    l.server_mac = eth.source;
    lease = l;
    result_lease = std::move(l);
    finish({});
  }

  std::vector<std::byte> tx_;
  std::mt19937 random_;
  guest_request request_;
  clock::time_point deadline_, next_tick_, sent_at_;
  bool sent_ = false;
  std::uint32_t xid_ = 0;
  bool requesting_ = false;
  packet::ipv4_address offered_, offer_server_;
  std::uint16_t source_port_ = 0, next_port_ = 49152, sequence_ = 0;
  std::array<std::pair<packet::ipv4_address, packet::mac_address>, 16> arp_cache_{};
  std::size_t arp_count_ = 0, arp_next_ = 0;
};

/// One operation: start it (or refuse it), then wait on the state's timer
/// until the receive side or the deadline finishes it.
template <class Transport, guest_op_kind Kind>
struct guest_op {
  guest_op(std::shared_ptr<guest_state<Transport>> s, guest_request r) : state(std::move(s)), request(std::move(r)) {}
  std::shared_ptr<guest_state<Transport>> state;
  guest_request request;
  enum class step { start, refused, running } at = step::start;
  std::error_code refusal;

  template <class Self> void operator()(Self& self, std::error_code ec = {}) {
    guest_state<Transport>& s = *state;
    switch (at) {
      case step::start:
        self.reset_cancellation_state(asio::enable_total_cancellation());
        request.kind = Kind;
        refusal = s.kind != guest_op_kind::none ? make_error_code(errc::operation_in_progress)
                  : s.detached                  ? make_error_code(asio::error::operation_aborted)
                                                : s.begin(std::move(request));
        if (refusal) {
          at = step::refused;
          return asio::post(s.transport->get_executor(), std::move(self));
        }
        at = step::running;
        return wait(self);
      case step::refused: return complete(self, refusal);
      case step::running:
        if (self.get_cancellation_state().cancelled() != asio::cancellation_type::none)
          s.finish(asio::error::operation_aborted);
        if (!s.done && !ec) s.tick();
        if (!s.done) return wait(self);
        s.kind = guest_op_kind::none;
        return complete(self, s.result);
    }
  }

  template <class Self> void wait(Self& self) {
    state->wake.expires_at(state->wake_time());
    state->wake.async_wait(std::move(self));
  }

  template <class Self> void complete(Self& self, std::error_code ec) {
    guest_state<Transport>& s = *state;
    if constexpr (Kind == guest_op_kind::dhcp)
      self.complete(ec, ec ? dhcp_lease{} : std::move(s.result_lease));
    else if constexpr (Kind == guest_op_kind::arp)
      self.complete(ec, ec ? packet::mac_address{} : s.result_mac);
    else if constexpr (Kind == guest_op_kind::udp)
      self.complete(ec, ec ? udp_reply{} : std::move(s.result_reply));
    else
      self.complete(ec, ec ? std::chrono::steady_clock::duration{} : s.rtt);
  }
};

} // namespace netpasst::detail

namespace netpasst {

template <FrameTransport Transport>
mini_guest<Transport>::mini_guest(Transport& transport, const mini_guest_config& config)
    : state_(std::make_shared<detail::guest_state<Transport>>(transport, config)) {}

template <FrameTransport Transport> mini_guest<Transport>::~mini_guest() {
  state_->finish(asio::error::operation_aborted);
  state_->detached = true;
  if (state_->receiving) state_->receive_cancel.emit(asio::cancellation_type::terminal);
}

template <FrameTransport Transport> auto mini_guest<Transport>::get_executor() const -> executor_type {
  return state_->transport->get_executor();
}

template <FrameTransport Transport> Transport& mini_guest<Transport>::next_layer() noexcept {
  return *state_->transport;
}

template <FrameTransport Transport> const mini_guest_config& mini_guest<Transport>::config() const noexcept {
  return state_->config;
}

template <FrameTransport Transport> const packet::mac_address& mini_guest<Transport>::mac() const noexcept {
  return state_->config.mac;
}

template <FrameTransport Transport>
const std::optional<dhcp_lease>& mini_guest<Transport>::lease() const noexcept {
  return state_->lease;
}

template <FrameTransport Transport> void mini_guest<Transport>::set_lease(const dhcp_lease& lease) {
  state_->lease = lease;
}

template <FrameTransport Transport> mini_guest_counters mini_guest<Transport>::counters() const noexcept {
  return state_->counters;
}

template <FrameTransport Transport> bool mini_guest<Transport>::busy() const noexcept {
  return state_->kind != detail::guest_op_kind::none;
}

template <FrameTransport Transport> void mini_guest<Transport>::start() { state_->start_receiving(); }

template <FrameTransport Transport> void mini_guest<Transport>::cancel() {
  state_->finish(asio::error::operation_aborted);
}

template <FrameTransport Transport>
template <asio::completion_token_for<void(std::error_code, dhcp_lease)> Token>
auto mini_guest<Transport>::async_dhcp(Token&& token) {
  using op = detail::guest_op<Transport, detail::guest_op_kind::dhcp>;
  return asio::async_compose<Token, void(std::error_code, dhcp_lease)>(op(state_, {}), token, state_->wake);
}

template <FrameTransport Transport>
template <asio::completion_token_for<void(std::error_code, packet::mac_address)> Token>
auto mini_guest<Transport>::async_arp(packet::ipv4_address address, Token&& token) {
  using op = detail::guest_op<Transport, detail::guest_op_kind::arp>;
  return asio::async_compose<Token, void(std::error_code, packet::mac_address)>(
      op(state_, {detail::guest_op_kind::arp, address, 0, {}}), token, state_->wake);
}

template <FrameTransport Transport>
template <asio::completion_token_for<void(std::error_code, udp_reply)> Token>
auto mini_guest<Transport>::async_udp_exchange(packet::ipv4_address destination, std::uint16_t port,
                                               std::span<const std::byte> payload, Token&& token) {
  using op = detail::guest_op<Transport, detail::guest_op_kind::udp>;
  return asio::async_compose<Token, void(std::error_code, udp_reply)>(
      op(state_, {detail::guest_op_kind::udp, destination, port, {payload.begin(), payload.end()}}), token,
      state_->wake);
}

template <FrameTransport Transport>
template <asio::completion_token_for<void(std::error_code, std::chrono::steady_clock::duration)> Token>
auto mini_guest<Transport>::async_ping(packet::ipv4_address destination, Token&& token) {
  using op = detail::guest_op<Transport, detail::guest_op_kind::ping>;
  return asio::async_compose<Token, void(std::error_code, std::chrono::steady_clock::duration)>(
      op(state_, {detail::guest_op_kind::ping, destination, 0, {}}), token, state_->wake);
}

} // namespace netpasst
