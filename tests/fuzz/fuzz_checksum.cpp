// libFuzzer target: the checksum routines the tap and vhost-user paths run
// on frames a guest or a backend wrote (detail/checksum.hpp).
//
// The first input byte is a shift (0..15) that misaligns the data, the next
// four are a checksum start and offset (16 bits each), the rest is a frame.
// Invariants:
// - `ones_complement_sum` at any alignment and length, with any initial sum,
//   equals a word-at-a-time sum written here.
// - `complete_partial_checksum` refuses exactly the fields that do not lie in
//   the frame after `start`, changing nothing then; otherwise it changes only
//   the field, and (for a field at an even offset, as TCP's and UDP's are)
//   the checksum it wrote verifies against the pseudo-header sum the field
//   held.
// - `locate_transport_checksum` finds what an independent reading of the
//   IPv4/IPv6 and TCP/UDP headers finds, and its pseudo-header sum is the one
//   computed here from the addresses, protocol and length; the segment it
//   reports lies in the frame.
#include <netpasst/detail/checksum.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <span>
#include <vector>

namespace nd = netpasst::detail;

namespace {

void require(bool condition, const char* what) {
  if (condition) return;
  std::fprintf(stderr, "invariant violated: %s\n", what);
  std::abort();
}

unsigned u8(std::span<const std::byte> b, std::size_t i) { return unsigned(b[i]); }
unsigned u16(std::span<const std::byte> b, std::size_t i) { return u8(b, i) << 8 | u8(b, i + 1); }

std::uint16_t fold(std::uint64_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return std::uint16_t(sum);
}

std::uint16_t word_sum(std::span<const std::byte> b, std::uint16_t initial) {
  std::uint64_t sum = initial;
  for (std::size_t i = 0; i + 1 < b.size(); i += 2) sum += u16(b, i);
  if (b.size() % 2) sum += u8(b, b.size() - 1) << 8;
  return fold(sum);
}

/// Ones' complement equality: 0 and 0xffff are both zero.
bool same_sum(std::uint16_t a, std::uint16_t b) { return a == b || (a % 0xffff == 0 && b % 0xffff == 0); }

std::optional<nd::transport_checksum_location> reference_locate(std::span<const std::byte> f) {
  if (f.size() < 34) return std::nullopt;
  const auto ip = f.subspan(14);
  std::size_t header = 0, length = 0;
  unsigned protocol = 0;
  std::uint64_t sum = 0;
  if (u16(f, 12) == 0x0800) {
    header = (u8(ip, 0) & 15) * 4;
    const std::size_t total = u16(ip, 2);
    if (u8(ip, 0) >> 4 != 4 || header < 20 || total < header || total > ip.size() || (u16(ip, 6) & 0x3fff)) return std::nullopt;
    protocol = u8(ip, 9);
    length = total - header;
    for (std::size_t i = 12; i < 20; i += 2) sum += u16(ip, i);
  } else if (u16(f, 12) == 0x86dd) {
    header = 40;
    if (ip.size() < 40 || u8(ip, 0) >> 4 != 6) return std::nullopt;
    protocol = u8(ip, 6);
    length = u16(ip, 4);
    if (length > ip.size() - 40) return std::nullopt;
    for (std::size_t i = 8; i < 40; i += 2) sum += u16(ip, i);
  } else {
    return std::nullopt;
  }
  if (protocol == 6 && length >= 20) {
    // TCP: the checksum field is at 16 in its header.
  } else if (protocol == 17 && length >= 8) {
    if (u16(f, 14 + header + 6) == 0 && u16(f, 12) == 0x0800) return std::nullopt; // IPv4 UDP without a checksum
  } else {
    return std::nullopt;
  }
  return nd::transport_checksum_location{14 + header, protocol == 6 ? 16u : 6u, fold(sum + protocol + length), length};
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 5) return 0;
  const std::size_t shift = data[0] % 16;
  const std::size_t start = std::size_t(data[1]) << 8 | data[2], offset = std::size_t(data[3]) << 8 | data[4];
  std::vector<std::byte> storage(shift + size - 5);
  std::copy(reinterpret_cast<const std::byte*>(data) + 5, reinterpret_cast<const std::byte*>(data) + size, storage.begin() + std::ptrdiff_t(shift));
  const std::span<std::byte> frame = std::span(storage).subspan(shift);

  const auto initial = std::uint16_t(start ^ offset);
  require(same_sum(nd::ones_complement_sum(frame, initial), word_sum(frame, initial)),
          "ones_complement_sum equals a word-at-a-time sum");

  const std::vector<std::byte> before(frame.begin(), frame.end());
  const bool fits = start <= frame.size() && offset + 2 <= frame.size() - start;
  const bool completed = nd::complete_partial_checksum(frame, start, offset);
  require(completed == fits, "complete_partial_checksum refuses exactly the fields outside the frame");
  for (std::size_t i = 0; i < frame.size(); ++i)
    require(frame[i] == before[i] || (completed && i >= start + offset && i < start + offset + 2),
            "complete_partial_checksum changes only the field");
  if (completed && offset % 2 == 0) {
    const std::uint16_t pseudo = std::uint16_t(u16(before, start + offset));
    require(same_sum(word_sum(frame.subspan(start), pseudo), 0xffff), "the completed checksum verifies");
    require(u16(frame, start + offset) != 0, "a completed checksum is never written as 0");
  }
  std::copy(before.begin(), before.end(), frame.begin());

  const auto found = nd::locate_transport_checksum(frame);
  const auto expected = reference_locate(frame);
  require(found.has_value() == expected.has_value(), "locate_transport_checksum finds what the headers say");
  if (found)
    require(found->start == expected->start && found->offset == expected->offset &&
                found->pseudo_header_sum == expected->pseudo_header_sum && found->length == expected->length &&
                found->start + found->length <= frame.size(),
            "the checksum's location and pseudo-header sum");
  return 0;
}
