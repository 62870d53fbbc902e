#pragma once
/// @file detail/wait_again.hpp
/// For a transport operation that waits for readiness, finds nothing to do,
/// and would wait again: was it cancelled in between? A cancellation that
/// arrives after the wait completed but before the operation resumed finds
/// no wait to cancel, so the operation must check for it itself, or it
/// waits on (possibly forever on a quiet descriptor) and whoever cancelled
/// waits with it.

#include <asio/cancellation_type.hpp>

#include <cstdint>

namespace netpasst::detail {

/// Counts a transport's `cancel()` calls; an operation notes the count when
/// it starts and compares it before waiting again.
class cancel_count {
public:
  void bump() noexcept { ++count_; }
  std::uint64_t value() const noexcept { return count_; }

private:
  std::uint64_t count_ = 0;
};

/// True when the composed operation `self` was cancelled since it noted
/// `noted` from `count`: through its cancellation slot, or by `cancel()`.
template <class Self>
bool cancelled_since(Self& self, const cancel_count& count, std::uint64_t noted) noexcept {
  return self.get_cancellation_state().cancelled() != asio::cancellation_type::none || count.value() != noted;
}

} // namespace netpasst::detail
