#pragma once
// What the end-to-end main set up; see e2e_main.cpp.
#include <string>

namespace netpasst::e2e {

/// True when this process runs in the private namespace with the template
/// interface below; false in the host's namespace.
extern bool in_private_netns;

/// The template interface passt copies (valid when in_private_netns).
inline constexpr const char* template_address = "192.0.2.10";
inline constexpr const char* template_gateway = "192.0.2.1";
inline constexpr int template_prefix_length = 24;

/// The passt binary under test (CMake cache NETPASST_TEST_PASST).
inline std::string passt_binary() {
#ifdef NETPASST_TEST_PASST
  return NETPASST_TEST_PASST;
#else
  return "passt";
#endif
}

} // namespace netpasst::e2e
