// Main of every end-to-end test program. As root, it first moves the process
// into a private network namespace shaped like a small host, so that passt
// sees the same template interface on every machine:
//   np0 (one end of a veth pair; the kernel here has no dummy driver): 192.0.2.10/24, 2001:db8::10/64; default routes via
//   192.0.2.1 and 2001:db8::1 (192.0.2.1/32 on np0peer answers pings); lo up; ping sockets allowed for every group.
// Not as root (or with NETPASST_E2E_NETNS=0) the tests run in the host's
// namespace and checks that need the template addresses are skipped.
#include "../catch_impl.hpp"
#include "e2e_env.hpp"

#include <sched.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string_view>

namespace netpasst::e2e {
bool in_private_netns = false;
}

static bool run(const char* command) {
  if (std::system(command) == 0) return true;
  std::fprintf(stderr, "e2e setup: '%s' failed\n", command);
  return false;
}

static bool enter_private_netns() {
  const char* wanted = std::getenv("NETPASST_E2E_NETNS");
  if ((wanted && std::string_view(wanted) == "0") || ::geteuid() != 0) return false;
  if (::unshare(CLONE_NEWNET) != 0) {
    std::perror("e2e setup: unshare(CLONE_NEWNET)");
    return false;
  }
  bool ok = run("ip link set lo up") && run("ip link add np0 type veth peer name np0peer") &&
            run("ip link set np0peer up") &&
            run("ip addr add 192.0.2.10/24 dev np0") &&
            run("ip -6 addr add 2001:db8::10/64 dev np0 nodad") && run("ip link set np0 up") &&
            run("ip route add default via 192.0.2.1 dev np0") &&
            run("ip -6 route add default via 2001:db8::1 dev np0") &&
            // passt relays the guest's pings to the gateway with a ping socket: give the
            // gateway address to the peer so they are answered inside the namespace.
            run("ip addr add 192.0.2.1/32 dev np0peer");
  std::ofstream("/proc/sys/net/ipv4/ping_group_range") << "0 2147483647\n";
  if (!ok) {
    // Half a namespace would make every test fail in confusing ways.
    std::fprintf(stderr, "e2e setup: could not build the private network namespace\n");
    std::exit(2);
  }
  return true;
}

int main(int argc, char* argv[]) {
  netpasst::e2e::in_private_netns = enter_private_netns();
  if (!netpasst::e2e::in_private_netns)
    std::fprintf(stderr, "e2e: running in the host's network namespace\n");
  return netpasst::test::run_catch(argc, argv);
}
