// Includes the umbrella header and uses one piece of every component that exists,
// so a broken install (missing header, missing dependency) fails to build.
#include <netpasst/netpasst.hpp>

#include <cstdio>

int main() {
  std::error_code ec = netpasst::errc::connection_closed;
  if (ec != netpasst::condition::connection_lost) return 1;
  std::puts(ec.message().c_str());
  return 0;
}
