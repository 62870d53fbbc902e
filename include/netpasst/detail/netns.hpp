#pragma once
/// @file detail/netns.hpp
/// Private helpers to do something inside another network namespace without
/// moving the calling thread: open a namespace by name or path, and run a
/// function on a short-lived thread that joined it.
///
/// The network namespace is a per-thread attribute in Linux (`setns` with
/// CLONE_NEWNET changes only the calling thread), and a socket or a tap
/// belongs to the namespace of the thread that created it for the rest of
/// its life. So a thread that joins the namespace, creates the descriptor and
/// ends leaves the descriptor in that namespace and the rest of the process
/// where it was.

#include <netpasst/unique_fd.hpp>

#include <fcntl.h>
#include <sched.h>

#include <cerrno>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>

namespace netpasst::detail {

/// Where `ip netns add NAME` puts the namespace file.
inline constexpr std::string_view netns_run_directory = "/run/netns/";

/// The file of namespace `netns`: itself if it contains a '/', else
/// /run/netns/`netns`.
inline std::string netns_path(std::string_view netns) {
  if (netns.find('/') != std::string_view::npos) return std::string(netns);
  return std::string(netns_run_directory) + std::string(netns);
}

/// True for a name `ip netns` accepts: not empty, not "." or "..", no '/',
/// no NUL, at most 255 bytes.
inline bool valid_netns_name(std::string_view name) noexcept {
  return !name.empty() && name.size() <= 255 && name != "." && name != ".." &&
         name.find('/') == std::string_view::npos && name.find('\0') == std::string_view::npos;
}

/// Opens the namespace file of `netns` (see `netns_path`), close-on-exec.
inline unique_fd open_netns(std::string_view netns, std::error_code& ec) {
  ec.clear();
  if (netns.empty() || (netns.find('/') == std::string_view::npos && !valid_netns_name(netns))) {
    ec = std::make_error_code(std::errc::invalid_argument);
    return {};
  }
  unique_fd fd(::open(netns_path(netns).c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) ec = {errno, std::system_category()};
  return fd;
}

/// Runs `fn()` on a new thread that first joined the network namespace
/// `netns_fd` and returns its result; the calling thread is not moved.
/// When `setns` fails, `fn` is not run, `ec` is set (EINVAL: not a network
/// namespace; EPERM: no CAP_SYS_ADMIN) and an empty optional is returned.
/// `fn` must not throw (it runs on the other thread).
template <class Fn>
auto call_in_netns(int netns_fd, Fn&& fn, std::error_code& ec) -> std::optional<std::invoke_result_t<Fn&>> {
  ec.clear();
  std::optional<std::invoke_result_t<Fn&>> result;
  int setns_errno = 0;
  std::thread([&] {
    if (::setns(netns_fd, CLONE_NEWNET) != 0) {
      setns_errno = errno;
      return;
    }
    result.emplace(fn());
  }).join();
  if (setns_errno != 0) ec = {setns_errno, std::system_category()};
  return result;
}

} // namespace netpasst::detail
