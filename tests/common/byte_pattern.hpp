#pragma once
// Test payloads that reveal a lost, cut, shifted or swapped byte and cost a
// sanitizer one check per copy instead of one per byte: payload `seq` is a
// window of one pseudo-random pattern that starts at a place of its own.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace netpasst::test {

/// The longest payload a window covers.
inline constexpr std::size_t pattern_window = 65536;

/// `pattern_window` bytes of pattern for payload `seq`.
inline const std::byte* pattern_for(std::uint32_t seq) {
  static const std::vector<std::byte> pattern = [] {
    std::vector<std::byte> bytes(2 * pattern_window);
    std::uint32_t x = 0x9e3779b9u;
    for (auto& b : bytes) x = x * 1664525u + 1013904223u, b = std::byte(x >> 24);
    return bytes;
  }();
  return pattern.data() + (seq * 7919u) % pattern_window;
}

/// Fills `out` with payload `seq`'s window, from its offset `from` on.
inline void fill_pattern(std::span<std::byte> out, std::uint32_t seq, std::size_t from = 0) {
  if (out.size() > from) std::memcpy(out.data() + from, pattern_for(seq) + from, out.size() - from);
}

/// Whether `in`, from offset `from` on, is payload `seq`'s window.
inline bool matches_pattern(std::span<const std::byte> in, std::uint32_t seq, std::size_t from = 0) {
  return in.size() <= from || std::memcmp(in.data() + from, pattern_for(seq) + from, in.size() - from) == 0;
}

} // namespace netpasst::test
