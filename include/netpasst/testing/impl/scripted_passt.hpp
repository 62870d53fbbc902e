#pragma once
// Implementation of netpasst/testing/scripted_passt.hpp.

#include <netpasst/testing/scripted_passt.hpp>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>

#include <array>
#include <utility>

namespace netpasst::testing::detail {

template <class Transport> struct scripted_passt_state : std::enable_shared_from_this<scripted_passt_state<Transport>> {
  scripted_passt_state(Transport& t, const scripted_passt_config& c) : transport(&t), config(c) {}
  Transport* transport;
  scripted_passt_config config;
  scripted_passt_counters counters;
  std::vector<std::vector<std::byte>> other_frames;
  std::error_code receive_error;
  bool receiving = false, stopped = false;
  asio::cancellation_signal cancel_receive;
  std::vector<std::byte> out = std::vector<std::byte>(max_frame_size);

  void run() {
    if (receiving || stopped) return;
    receiving = true;
    transport->async_receive(asio::bind_cancellation_slot(
        cancel_receive.slot(), [self = this->shared_from_this()](std::error_code ec, frame_batch batch) {
          self->receiving = false;
          if (self->stopped) return;
          if (ec) return void(self->receive_error = ec);
          for (frame f : batch) self->handle(f);
          self->run();
        }));
  }

  void send(std::size_t n) {
    if (n == 0) return;
    std::error_code ec;
    if (transport->try_send(frame(out.data(), n), ec)) ++counters.frames_sent;
    else ++counters.sends_refused;
  }

  void keep(frame f) { other_frames.emplace_back(f.begin(), f.end()); }

  void handle(frame f) {
    ++counters.frames_received;
    std::error_code ec;
    const auto eth = packet::parse_ethernet(f, ec);
    if (ec) return keep(f);
    if (eth.ether_type == packet::ethertype_arp) {
      const auto arp = packet::parse_arp(eth.payload, ec);
      if (!ec && config.arp && arp.operation == packet::arp_operation::request &&
          arp.target_ip != config.guest_address) {
        ++counters.arp_requests;
        return send(packet::build_arp_frame(
            out, {packet::arp_operation::reply, config.passt_mac, arp.target_ip, arp.sender_mac, arp.sender_ip},
            arp.sender_mac));
      }
      return keep(f);
    }
    const auto ip = packet::parse_ipv4(eth.payload, ec);
    if (ec) return keep(f);
    if (ip.protocol == packet::ip_protocol_udp) {
      const auto udp = packet::parse_udp(ip, ec);
      if (ec) return keep(f);
      if (udp.destination_port == packet::dhcp_server_port) {
        const auto dhcp = packet::parse_dhcp(udp.payload, ec);
        if (!ec) return handle_dhcp(dhcp);
        return keep(f);
      }
      if (config.udp && ip.destination == config.gateway && udp.destination_port == config.echo_port) {
        ++counters.udp_datagrams;
        return send(packet::build_udp_frame(out, {config.passt_mac, eth.source, config.gateway, ip.source},
                                            config.echo_port, udp.source_port, udp.payload));
      }
    }
    if (ip.protocol == packet::ip_protocol_icmp && config.icmp) {
      const auto echo = packet::parse_icmp_echo(ip, ec);
      if (!ec && echo.type == packet::icmp_type::echo_request) {
        ++counters.echo_requests;
        return send(packet::build_icmp_echo_frame(out, {config.passt_mac, eth.source, ip.destination, ip.source},
                                                  packet::icmp_type::echo_reply, echo.identifier, echo.sequence,
                                                  echo.payload));
      }
    }
    keep(f);
  }

  void handle_dhcp(const packet::dhcp_message& in) {
    using type = packet::dhcp_message_type;
    if (!config.dhcp) return;
    if (in.message_type == type::discover && ++counters.discovers <= config.drop_discovers) return;
    if (in.message_type == type::request) ++counters.requests;
    packet::dhcp_message reply;
    reply.op = 2;
    reply.xid = in.xid;
    reply.client_mac = in.client_mac;
    reply.yiaddr = config.guest_address;
    reply.server_id = config.gateway;
    const std::uint32_t mask = config.prefix_length <= 0 ? 0 : ~0u << (32 - config.prefix_length);
    reply.subnet_mask = asio::ip::address_v4(mask);
    reply.routers = {config.gateway};
    reply.dns_servers = {config.dns};
    reply.mtu = config.mtu;
    reply.lease_time = 0xffffffff;
    reply.search_domains = config.search_domains;
    if (in.message_type == type::discover) {
      reply.message_type = type::offer;
      if (config.wrong_xid_first) {
        packet::dhcp_message stray = reply;
        stray.xid = in.xid + 1;
        send_dhcp(stray);
      }
    } else {
      reply.message_type = config.nak ? type::nak : type::ack;
    }
    send_dhcp(reply);
  }

  void send_dhcp(const packet::dhcp_message& m) {
    std::array<std::byte, 1500> payload;
    const std::size_t n = packet::build_dhcp(payload, m);
    send(packet::build_udp_frame(out, {config.passt_mac, m.client_mac, config.gateway, config.guest_address},
                                 packet::dhcp_server_port, packet::dhcp_client_port, std::span(payload).first(n)));
  }
};

} // namespace netpasst::testing::detail

namespace netpasst::testing {

template <FrameTransport T>
scripted_passt<T>::scripted_passt(T& transport, const scripted_passt_config& config)
    : state_(std::make_shared<detail::scripted_passt_state<T>>(transport, config)) {}

template <FrameTransport T> scripted_passt<T>::~scripted_passt() { stop(); }

template <FrameTransport T> void scripted_passt<T>::run() { state_->run(); }

template <FrameTransport T> void scripted_passt<T>::stop() {
  if (state_->stopped) return;
  state_->stopped = true;
  if (state_->receiving) state_->cancel_receive.emit(asio::cancellation_type::terminal);
}

template <FrameTransport T> scripted_passt_config& scripted_passt<T>::config() noexcept { return state_->config; }
template <FrameTransport T> const scripted_passt_counters& scripted_passt<T>::counters() const noexcept {
  return state_->counters;
}
template <FrameTransport T>
const std::vector<std::vector<std::byte>>& scripted_passt<T>::other_frames() const noexcept {
  return state_->other_frames;
}
template <FrameTransport T> std::error_code scripted_passt<T>::receive_error() const noexcept {
  return state_->receive_error;
}

} // namespace netpasst::testing
