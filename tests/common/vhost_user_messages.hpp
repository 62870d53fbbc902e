#pragma once
// Reading a vhost-user frontend's messages, as the tests' backends do.
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

namespace netpasst::test {

/// One message from the frontend, with the descriptors it carried (the
/// reader owns them: take one by setting its entry to -1, close the rest).
struct vhost_user_message {
  std::uint32_t request = 0, flags = 0;
  std::vector<std::byte> payload;
  std::vector<int> fds;

  /// Closes the descriptors not taken; `fds.size()` still counts them all.
  void close_fds() {
    for (int& fd : fds)
      if (fd >= 0) ::close(fd), fd = -1;
  }
};

/// Reads one message from `fd`; nullopt at the end of the stream or on a
/// cut message (whose descriptors are closed).
inline std::optional<vhost_user_message> read_vhost_user_message(int fd) {
  std::uint32_t header[3];
  iovec part{header, sizeof header};
  alignas(cmsghdr) char control[CMSG_SPACE(8 * sizeof(int))];
  msghdr m{};
  m.msg_iov = &part;
  m.msg_iovlen = 1;
  m.msg_control = control;
  m.msg_controllen = sizeof control;
  if (::recvmsg(fd, &m, MSG_WAITALL | MSG_CMSG_CLOEXEC) != sizeof header) return std::nullopt;
  vhost_user_message result{header[0], header[1], std::vector<std::byte>(header[2]), {}};
  for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
    for (std::size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); ++i) {
      int received;
      std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof received);
      result.fds.push_back(received);
    }
  if (header[2] && ::recv(fd, result.payload.data(), header[2], MSG_WAITALL) != ssize_t(header[2])) {
    result.close_fds();
    return std::nullopt;
  }
  return result;
}

} // namespace netpasst::test
