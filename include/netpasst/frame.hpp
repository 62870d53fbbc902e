#pragma once
/// @file frame.hpp
/// The vocabulary every FrameTransport speaks: a frame is a view of one whole
/// Ethernet frame (destination MAC first, no length prefix, no virtio-net header).

#include <cstddef>
#include <cstdint>
#include <span>

namespace netpasst {

/// One Ethernet frame, viewed. Valid as long as whoever handed it out says.
using frame = std::span<const std::byte>;

/// Frames received in one go. The views point into the transport's own
/// receive buffer and stay valid until the next receive on that transport.
using frame_batch = std::span<const frame>;

/// Smallest frame passt accepts: an Ethernet header.
inline constexpr std::size_t min_frame_size = 14;
/// Largest frame the stream protocol carries (passt refuses longer ones).
inline constexpr std::size_t max_frame_size = 65535;

/// What a transport has moved so far. Monotonic; never reset while open.
struct transport_counters {
  std::uint64_t frames_sent = 0;     ///< Frames accepted by send and written (or queued).
  std::uint64_t bytes_sent = 0;      ///< Their Ethernet bytes, framing excluded.
  std::uint64_t frames_received = 0; ///< Whole frames handed to the receiver.
  std::uint64_t bytes_received = 0;  ///< Their Ethernet bytes, framing excluded.
  std::uint64_t frames_refused = 0;  ///< Frames refused locally (size outside 14..65535).
};

} // namespace netpasst
