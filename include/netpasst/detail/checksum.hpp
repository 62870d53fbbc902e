#pragma once
/// @file detail/checksum.hpp
/// The Internet checksum (RFC 1071): the ones' complement sum of 16-bit
/// big-endian words, as IPv4, TCP, UDP and ICMP use it.
///
/// Sums are handed around as 16-bit values in host order that stand for the
/// big-endian word sum (0x1234 is the bytes 12 34), folded, never
/// complemented; `internet_checksum` complements. Data of any length and
/// alignment is summed; an odd last byte counts as the high byte of a word
/// whose low byte is zero. Summing a span in pieces gives the same result
/// only when every piece but the last has an even length.

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>

namespace netpasst::detail {

/// Folds a 64-bit ones' complement accumulator to 16 bits.
constexpr std::uint16_t fold_checksum(std::uint64_t sum) noexcept {
  sum = (sum & 0xffffffff) + (sum >> 32);
  sum = (sum & 0xffffffff) + (sum >> 32);
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(sum);
}

/// The ones' complement sum of `data` plus `initial` (both as described in
/// the file comment), folded to 16 bits.
///
/// 32-bit words in native byte order go into four 64-bit accumulators: no
/// carry to track within a chunk of 1 GiB, and a loop compilers vectorize.
/// Folding keeps the sum modulo 0xffff, and the ones' complement sum commutes
/// with swapping the bytes of every word, so one swap of the folded result
/// gives the big-endian sum.
inline std::uint16_t ones_complement_sum(std::span<const std::byte> data, std::uint16_t initial = 0) noexcept {
  const std::byte* p = data.data();
  std::size_t n = data.size();
  std::uint64_t sum = 0;
  while (n >= 16) {
    const std::size_t chunk = (n < (std::size_t{1} << 30) ? n : std::size_t{1} << 30) & ~std::size_t{15};
    std::uint64_t a = 0, b = 0, c = 0, d = 0;
    for (std::size_t i = 0; i < chunk; i += 16) {
      std::uint32_t words[4];
      std::memcpy(words, p + i, 16);
      a += words[0], b += words[1], c += words[2], d += words[3];
    }
    p += chunk, n -= chunk;
    sum += fold_checksum(a) + fold_checksum(b) + fold_checksum(c) + fold_checksum(d);
  }
  for (; n >= 4; p += 4, n -= 4) {
    std::uint32_t word;
    std::memcpy(&word, p, 4);
    sum += word;
  }
  if (n > 0) {
    std::uint32_t tail = 0; // zero padding keeps an odd last byte the high byte of its word
    std::memcpy(&tail, p, n);
    sum += tail;
  }
  std::uint16_t folded = fold_checksum(sum);
  if constexpr (std::endian::native == std::endian::little)
    folded = static_cast<std::uint16_t>((folded << 8) | (folded >> 8));
  return fold_checksum(std::uint64_t{folded} + initial);
}

/// The checksum to store: the complement of `ones_complement_sum`.
inline std::uint16_t internet_checksum(std::span<const std::byte> data, std::uint16_t initial = 0) noexcept {
  return static_cast<std::uint16_t>(~ones_complement_sum(data, initial));
}

/// Reads the big-endian 16-bit word at `at`.
inline std::uint16_t load_be16(const std::byte* at) noexcept {
  return static_cast<std::uint16_t>((std::to_integer<unsigned>(at[0]) << 8) | std::to_integer<unsigned>(at[1]));
}

/// Writes `value` as a big-endian 16-bit word at `at`.
inline void store_be16(std::byte* at, std::uint16_t value) noexcept {
  at[0] = std::byte(value >> 8);
  at[1] = std::byte(value & 0xff);
}

/// Completes a partial checksum, as a NIC offloading it would: sums
/// `data[start..]` (the checksum field there holds the pseudo-header sum)
/// and stores the complement at `start + offset`, 0 written as 0xffff (the
/// same in ones' complement, and what UDP requires). Returns false, changing
/// nothing, if the field does not lie within `data` after `start`.
inline bool complete_partial_checksum(std::span<std::byte> data, std::size_t start, std::size_t offset) noexcept {
  if (start > data.size() || offset > data.size() - start || data.size() - start - offset < 2) return false;
  const std::uint16_t sum = internet_checksum(data.subspan(start));
  store_be16(data.data() + start + offset, sum == 0 ? std::uint16_t{0xffff} : sum);
  return true;
}

/// Where the TCP or UDP checksum of an Ethernet frame lies, as a virtio-net
/// header gives it (`start`: first byte of the TCP/UDP header, `offset`: the
/// field within it), the pseudo-header sum that field holds while the
/// checksum is partial, and the segment's length as the IP header states it
/// (the frame may end later, in Ethernet padding).
struct transport_checksum_location {
  std::size_t start = 0;
  std::size_t offset = 0;
  std::uint16_t pseudo_header_sum = 0;
  std::size_t length = 0;
};

/// Finds the TCP or UDP checksum of `frame`: IPv4 that is not a fragment,
/// or IPv6 with TCP or UDP as the first next header; lengths as the IP
/// header states them, within the frame (Ethernet padding may follow).
/// Nothing for anything else, and for UDP over IPv4 without a checksum (0).
/// Each byte of `frame` is read once (the headers are copied first), so a
/// frame in memory another process may write (vhost-user) cannot make the
/// result disagree with the checks made on it.
inline std::optional<transport_checksum_location> locate_transport_checksum(std::span<const std::byte> frame) noexcept {
  constexpr std::size_t ethernet_header = 14;
  if (frame.size() < ethernet_header + 20) return std::nullopt;
  std::array<std::byte, ethernet_header + 60> headers; // Ethernet, then the longest IPv4 or IPv6 header
  std::memcpy(headers.data(), frame.data(), std::min(frame.size(), headers.size()));
  const std::byte* ip = headers.data() + ethernet_header;
  const std::size_t available = frame.size() - ethernet_header;
  const std::uint16_t ether_type = load_be16(headers.data() + 12);
  std::uint64_t sum = 0;
  std::size_t header = 0, length = 0;
  unsigned protocol = 0;
  if (ether_type == 0x0800) {
    header = (std::to_integer<std::size_t>(ip[0]) & 0x0f) * 4;
    const std::size_t total = load_be16(ip + 2);
    if ((std::to_integer<unsigned>(ip[0]) >> 4) != 4 || header < 20 || total < header || total > available ||
        (load_be16(ip + 6) & 0x3fff) != 0) // more fragments, or a fragment offset
      return std::nullopt;
    protocol = std::to_integer<unsigned>(ip[9]);
    length = total - header;
    sum = std::uint64_t{load_be16(ip + 12)} + load_be16(ip + 14) + load_be16(ip + 16) + load_be16(ip + 18);
  } else if (ether_type == 0x86dd) {
    header = 40;
    if (available < header || (std::to_integer<unsigned>(ip[0]) >> 4) != 6) return std::nullopt;
    protocol = std::to_integer<unsigned>(ip[6]);
    length = load_be16(ip + 4);
    if (length > available - header) return std::nullopt;
    for (std::size_t i = 8; i < 40; i += 2) sum += load_be16(ip + i);
  } else {
    return std::nullopt;
  }
  const std::size_t offset = protocol == 6 ? 16 : protocol == 17 ? 6 : 0;
  if (offset == 0 || length < offset + 2 || (protocol == 6 && length < 20) || (protocol == 17 && length < 8))
    return std::nullopt;
  const std::size_t start = ethernet_header + header;
  if (protocol == 17 && ether_type == 0x0800) {
    std::byte field[2];
    std::memcpy(field, frame.data() + start + offset, 2);
    if (load_be16(field) == 0) return std::nullopt;
  }
  return transport_checksum_location{start, offset, fold_checksum(sum + protocol + length), length};
}

} // namespace netpasst::detail
