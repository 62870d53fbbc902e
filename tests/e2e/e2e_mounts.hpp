#pragma once
// For end-to-end tests that make named network namespaces (`ip netns add`):
// moves the test program into a private mount namespace whose /run/netns (and
// /etc/netns, if the host has one) are empty tmpfs, so that every namespace
// name and resolv.conf the test or a program it runs makes is invisible to
// the host and vanishes with the program, however it ends. (Without an
// /etc/netns on the host, none is made: programs under test that write one
// must remove it, and the tests check that they do.) Call it from a static
// initializer: unshare(CLONE_NEWNS) needs a process with a single thread.
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

namespace netpasst::e2e {

/// True when the program now runs in such a mount namespace (as root).
/// `etc_netns_private` tells whether /etc/netns is one of the tmpfs.
inline bool etc_netns_private = false;
inline bool enter_private_mounts() {
  if (::geteuid() != 0) return false;
  if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    std::perror("e2e setup: private mount namespace");
    return false;
  }
  ::mkdir("/run/netns", 0755); // as `ip netns add` would
  if (::mount("netpasst-e2e", "/run/netns", "tmpfs", 0, "mode=0755") != 0) {
    std::perror("e2e setup: tmpfs on /run/netns");
    return false;
  }
  struct stat st {};
  if (::stat("/etc/netns", &st) == 0) {
    if (::mount("netpasst-e2e", "/etc/netns", "tmpfs", 0, "mode=0755") != 0) {
      std::perror("e2e setup: tmpfs on /etc/netns");
      return false;
    }
    etc_netns_private = true;
  }
  return true;
}

} // namespace netpasst::e2e
