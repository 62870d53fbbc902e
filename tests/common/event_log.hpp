#pragma once
// A lifecycle's events as the tests record them.
#include <netpasst/lifecycle.hpp>

#include <algorithm>
#include <vector>

namespace netpasst::test {

/// Subscribes to `life` and keeps every event in order.
struct event_log {
  std::vector<netpasst::lifecycle_event> events;
  template <class Lifecycle> explicit event_log(Lifecycle& life) {
    life.subscribe([this](const netpasst::lifecycle_event& e) { events.push_back(e); });
  }
  event_log(const event_log&) = delete;
  /// How many events of `kind` came.
  std::size_t count(netpasst::lifecycle_event_kind kind) const {
    return std::size_t(std::count_if(events.begin(), events.end(), [kind](const auto& e) { return e.kind == kind; }));
  }
  std::size_t link_ups() const { return count(netpasst::lifecycle_event_kind::link_up); }
};

} // namespace netpasst::test
