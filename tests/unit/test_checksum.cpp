#include <netpasst/detail/checksum.hpp>

#include <catch2/catch.hpp>

#include <cstdint>
#include <random>
#include <string_view>
#include <vector>

using netpasst::detail::complete_partial_checksum;
using netpasst::detail::internet_checksum;
using netpasst::detail::load_be16;
using netpasst::detail::locate_transport_checksum;
using netpasst::detail::ones_complement_sum;
using netpasst::detail::store_be16;
using bytes = std::vector<std::byte>;

namespace {

/// RFC 1071 word by word: the slow, obvious sum the fast one must equal.
std::uint16_t reference_sum(std::span<const std::byte> data, std::uint16_t initial = 0) {
  std::uint32_t sum = initial;
  for (std::size_t i = 0; i < data.size(); i += 2) {
    const unsigned high = std::to_integer<unsigned>(data[i]);
    const unsigned low = i + 1 < data.size() ? std::to_integer<unsigned>(data[i + 1]) : 0;
    sum += (high << 8) | low;
    sum = (sum & 0xffff) + (sum >> 16);
  }
  return static_cast<std::uint16_t>(sum);
}

bytes from_hex(std::string_view hex) {
  bytes out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(std::byte(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  return out;
}

// Frames the Linux kernel sent out of a tap without checksum offload (so with
// full checksums): a UDP datagram "hello" (odd length) and a TCP SYN with
// options, over IPv4 and over IPv6 ("netpasst!").
const bytes udp4 = from_hex("0200000000020200000000010800450000219ce34000401189d40a0900010a0900029c400009000d0ba4"
                            "68656c6c6f");
const bytes tcp4 = from_hex("02000000000202000000000108004500003cf9ce400040062cd90a0900010a0900029c410050e080a068"
                            "00000000a002faf0a2f20000020405b40402080aecd98bb0000000000103030a");
const bytes udp6 = from_hex("02000000000202000000000186dd60027b7b00111140fd000000000000000000000000000001fd000000"
                            "0000000000000000000000029c420009001190be6e6574706173737421");
const bytes tcp6 = from_hex("02000000000202000000000186dd600585d200280640fd000000000000000000000000000001fd000000"
                            "0000000000000000000000029c430050b7fa39f500000000a002fd203f240000020405a00402080ad531"
                            "ae12000000000103030a");

} // namespace

TEST_CASE("checksum: equals the word-by-word reference for every length 0..300 at every alignment") {
  std::mt19937 random(20240607);
  bytes data(300 + 16);
  for (auto& b : data) b = std::byte(random() & 0xff);
  for (std::size_t offset = 0; offset < 16; ++offset)
    for (std::size_t length = 0; offset + length <= data.size() && length <= 300; ++length) {
      const std::span<const std::byte> piece(data.data() + offset, length);
      INFO("offset " << offset << ", length " << length);
      REQUIRE(ones_complement_sum(piece) == reference_sum(piece));
    }
}

TEST_CASE("checksum: random data of large sizes, seeds, and carries (all 0xff)") {
  std::mt19937 random(7);
  for (std::size_t length : {1000u, 1499u, 9000u, 65535u, 65536u}) {
    bytes data(length);
    for (auto& b : data) b = std::byte(random() & 0xff);
    const auto seed = static_cast<std::uint16_t>(random());
    INFO("length " << length);
    CHECK(ones_complement_sum(data, seed) == reference_sum(data, seed));
    CHECK(internet_checksum(data, seed) == static_cast<std::uint16_t>(~reference_sum(data, seed)));
    const bytes ones(length, std::byte{0xff});
    CHECK(ones_complement_sum(ones) == reference_sum(ones));
  }
  CHECK(ones_complement_sum({}) == 0);
  CHECK(internet_checksum({}) == 0xffff);
}

TEST_CASE("checksum: pieces of even length sum to the whole") {
  std::mt19937 random(11);
  bytes data(4097);
  for (auto& b : data) b = std::byte(random() & 0xff);
  const std::span<const std::byte> all(data);
  const std::uint16_t head = ones_complement_sum(all.first(1000));
  CHECK(ones_complement_sum(all.subspan(1000), head) == ones_complement_sum(all));
}

TEST_CASE("checksum: the RFC 1071 example and an IPv4 header") {
  const bytes example = from_hex("0001f203f4f5f6f7");
  CHECK(ones_complement_sum(example) == 0xddf2);
  bytes header = from_hex("450000730000400040110000c0a80001c0a800c7");
  CHECK(internet_checksum(header) == 0xb861);
  store_be16(header.data() + 10, 0xb861);
  CHECK(internet_checksum(header) == 0); // a valid header sums to all ones
  CHECK(internet_checksum(std::span<const std::byte>(udp4).subspan(14, 20)) == 0);
}

TEST_CASE("checksum: kernel frames: the located field holds a checksum that a partial one completes to") {
  struct known {
    const char* name;
    const bytes* frame;
    std::size_t start, offset;
    std::uint16_t checksum;
  };
  const known cases[] = {{"UDP/IPv4", &udp4, 34, 6, 0x0ba4},
                         {"TCP/IPv4", &tcp4, 34, 16, 0xa2f2},
                         {"UDP/IPv6", &udp6, 54, 6, 0x90be},
                         {"TCP/IPv6", &tcp6, 54, 16, 0x3f24}};
  for (const auto& c : cases) {
    INFO(c.name);
    const auto location = locate_transport_checksum(*c.frame);
    REQUIRE(location);
    CHECK(location->start == c.start);
    CHECK(location->offset == c.offset);
    CHECK(load_be16(c.frame->data() + c.start + c.offset) == c.checksum);
    // Pseudo-header sum plus the segment: all ones for a valid checksum.
    CHECK(ones_complement_sum(std::span<const std::byte>(*c.frame).subspan(c.start), location->pseudo_header_sum) ==
          0xffff);
    // What the kernel hands out with offload: the field holds the pseudo-header sum.
    bytes partial = *c.frame;
    store_be16(partial.data() + c.start + c.offset, location->pseudo_header_sum);
    CHECK(partial != *c.frame);
    REQUIRE(complete_partial_checksum(partial, c.start, c.offset));
    CHECK(partial == *c.frame);
  }
}

TEST_CASE("checksum: completion refuses a field outside the data, 0 is written as 0xffff") {
  bytes data(20, std::byte{0});
  CHECK_FALSE(complete_partial_checksum(data, 21, 0));
  CHECK_FALSE(complete_partial_checksum(data, 10, 9));
  CHECK_FALSE(complete_partial_checksum(data, 0, std::size_t(-1)));
  CHECK(complete_partial_checksum(data, 10, 8));
  CHECK(load_be16(data.data() + 18) == 0xffff); // the sum of zeros complements to 0
  CHECK(ones_complement_sum(std::span<const std::byte>(data).subspan(10)) == 0xffff);
}

TEST_CASE("checksum: frames without a TCP/UDP checksum to locate") {
  CHECK_FALSE(locate_transport_checksum(bytes(60)));                      // ethertype 0
  CHECK_FALSE(locate_transport_checksum(std::span(udp4).first(40)));       // cut inside the UDP header
  bytes fragment = tcp4;
  fragment[14 + 6] = std::byte{0x20}; // more fragments
  CHECK_FALSE(locate_transport_checksum(fragment));
  bytes no_checksum = udp4;
  store_be16(no_checksum.data() + 40, 0); // UDP over IPv4 without a checksum
  CHECK_FALSE(locate_transport_checksum(no_checksum));
  bytes icmp = udp4;
  icmp[14 + 9] = std::byte{1};
  CHECK_FALSE(locate_transport_checksum(icmp));
  bytes extension = udp6;
  extension[14 + 6] = std::byte{0}; // a hop-by-hop header first
  CHECK_FALSE(locate_transport_checksum(extension));
  bytes padded = udp4;
  padded.resize(60); // Ethernet padding after the datagram
  CHECK(locate_transport_checksum(padded));
  bytes longer = udp4;
  store_be16(longer.data() + 16, 0x0100); // IPv4 total length past the frame
  CHECK_FALSE(locate_transport_checksum(longer));
}
