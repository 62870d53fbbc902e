// netpasst_net_tool: small network peers for the end-to-end tests, run on the
// host side or inside a guest namespace (with `ip netns exec`).
//
//   netpasst_net_tool http ADDRESS PORT DIRECTORY
//       A minimal HTTP/1.0 file server: GET /NAME sends DIRECTORY/NAME,
//       PUT /NAME stores the body as DIRECTORY/NAME. One connection at a
//       time, until killed. Prints "listening" once bound.
//   netpasst_net_tool udp-echo ADDRESS PORT
//       Sends every datagram back to where it came from, until killed.
//       Prints "listening" once bound.
//   netpasst_net_tool udp-sweep ADDRESS PORT MAX_PAYLOAD
//       Sends one datagram of each size 0..1600, then every 127 bytes, then
//       MAX_PAYLOAD, each with a size-dependent pattern, and waits for the
//       same bytes to come back (3 tries of 2 s each). Prints one JSON line:
//       {"sent": N, "echoed": N, "failed": [sizes...]}; exit 0 when all came
//       back.
// Exit status 2 for bad arguments, 1 for failures.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "netpasst_net_tool: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

sockaddr_in endpoint(const char* address, const char* port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(std::uint16_t(std::atoi(port)));
  if (::inet_pton(AF_INET, address, &a.sin_addr) != 1) {
    std::fprintf(stderr, "netpasst_net_tool: bad IPv4 address %s\n", address);
    std::exit(2);
  }
  return a;
}

int bound_socket(int type, const sockaddr_in& at) {
  const int fd = ::socket(AF_INET, type | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&at), sizeof at) != 0) die("bind");
  return fd;
}

bool write_all(int fd, const char* data, std::size_t size) {
  while (size) {
    const ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n, size -= std::size_t(n);
  }
  return true;
}

void reply(int fd, const std::string& status, const std::string& body = {}) {
  const std::string head = "HTTP/1.0 " + status + "\r\nContent-Length: " + std::to_string(body.size()) +
                           "\r\nConnection: close\r\n\r\n";
  write_all(fd, head.data(), head.size()) && write_all(fd, body.data(), body.size());
}

/// One request on `fd`: GET or PUT of a file in `directory`.
void serve_one(int fd, const std::string& directory) {
  std::string request;
  char buffer[65536];
  std::size_t header_end;
  while ((header_end = request.find("\r\n\r\n")) == std::string::npos) {
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) return;
    request.append(buffer, std::size_t(n));
  }
  std::istringstream head(request.substr(0, header_end));
  std::string method, target;
  head >> method >> target;
  if (target.size() < 2 || target[0] != '/' || target.find("..") != std::string::npos)
    return reply(fd, "400 Bad Request");
  const std::string path = directory + target;
  if (method == "GET") {
    std::ifstream in(path, std::ios::binary);
    if (!in) return reply(fd, "404 Not Found");
    std::ostringstream content;
    content << in.rdbuf();
    return reply(fd, "200 OK", content.str());
  }
  if (method != "PUT") return reply(fd, "405 Method Not Allowed");
  std::size_t length = 0;
  for (std::string line; std::getline(head, line);) {
    for (auto& c : line) c = char(std::tolower(static_cast<unsigned char>(c)));
    if (line.rfind("content-length:", 0) == 0) length = std::stoull(line.substr(15));
  }
  std::string body = request.substr(header_end + 4);
  if (request.find("Expect: 100-continue") != std::string::npos ||
      request.find("expect: 100-continue") != std::string::npos) {
    const char go_on[] = "HTTP/1.1 100 Continue\r\n\r\n";
    write_all(fd, go_on, sizeof go_on - 1);
  }
  while (body.size() < length) {
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) return;
    body.append(buffer, std::size_t(n));
  }
  std::ofstream(path, std::ios::binary | std::ios::trunc) << body;
  reply(fd, "201 Created", std::to_string(body.size()) + "\n");
}

int http(const char* address, const char* port, const std::string& directory) {
  const int listener = bound_socket(SOCK_STREAM, endpoint(address, port));
  if (::listen(listener, 16) != 0) die("listen");
  std::cout << "listening" << std::endl;
  for (;;) {
    const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      die("accept");
    }
    serve_one(fd, directory);
    ::shutdown(fd, SHUT_WR);
    char drain[4096];
    while (::recv(fd, drain, sizeof drain, 0) > 0) {}
    ::close(fd);
  }
}

int udp_echo(const char* address, const char* port) {
  const int fd = bound_socket(SOCK_DGRAM, endpoint(address, port));
  std::cout << "listening" << std::endl;
  std::vector<char> buffer(65536);
  for (;;) {
    sockaddr_in from{};
    socklen_t length = sizeof from;
    const ssize_t n = ::recvfrom(fd, buffer.data(), buffer.size(), 0, reinterpret_cast<sockaddr*>(&from), &length);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("recvfrom");
    }
    ::sendto(fd, buffer.data(), std::size_t(n), 0, reinterpret_cast<sockaddr*>(&from), length);
  }
}

int udp_sweep(const char* address, const char* port, std::size_t max_payload) {
  const sockaddr_in to = endpoint(address, port);
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || ::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0) die("connect");
  std::vector<std::size_t> sizes;
  for (std::size_t s = 0; s <= 1600 && s <= max_payload; ++s) sizes.push_back(s);
  for (std::size_t s = 1601; s < max_payload; s += 127) sizes.push_back(s);
  if (max_payload > 1600) sizes.push_back(max_payload);
  std::vector<char> out(max_payload + 1), in(65536);
  std::size_t echoed = 0;
  std::vector<std::size_t> failed;
  for (const std::size_t size : sizes) {
    for (std::size_t i = 0; i < size; ++i) out[i] = char((i * 31 + size) & 0xff);
    bool ok = false;
    for (int attempt = 0; attempt < 3 && !ok; ++attempt) {
      if (::send(fd, out.data(), size, 0) != ssize_t(size)) break;
      pollfd p{fd, POLLIN, 0};
      while (!ok && ::poll(&p, 1, 2000) == 1) {
        const ssize_t n = ::recv(fd, in.data(), in.size(), 0);
        ok = n == ssize_t(size) && std::memcmp(in.data(), out.data(), size) == 0;
      }
    }
    if (ok) ++echoed;
    else failed.push_back(size);
  }
  std::cout << "{\"sent\": " << sizes.size() << ", \"echoed\": " << echoed << ", \"failed\": [";
  for (std::size_t i = 0; i < failed.size(); ++i) std::cout << (i ? ", " : "") << failed[i];
  std::cout << "]}" << std::endl;
  return failed.empty() ? 0 : 1;
}

int usage() {
  std::fprintf(stderr, "usage: netpasst_net_tool http ADDRESS PORT DIRECTORY | udp-echo ADDRESS PORT | "
                       "udp-sweep ADDRESS PORT MAX_PAYLOAD\n");
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "http" && argc == 5) return http(argv[2], argv[3], argv[4]);
  if (mode == "udp-echo" && argc == 4) return udp_echo(argv[2], argv[3]);
  if (mode == "udp-sweep" && argc == 5) return udp_sweep(argv[2], argv[3], std::size_t(std::atol(argv[4])));
  return usage();
}
