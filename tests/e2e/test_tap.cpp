// netpasst_tap (examples/tap) against the real passt: a network namespace as
// the guest, traffic through the tap, the bridge and passt, in the private
// network namespace of e2e_main (the host) and a private mount namespace
// (e2e_mounts.hpp). Peers: curl, iperf3 and netpasst_net_tool.
#include "e2e_env.hpp"
#include "e2e_mounts.hpp"

#include <nlohmann/json.hpp>
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#ifndef NETPASST_TAP
#error "NETPASST_TAP (the netpasst_tap binary) must be defined by the build"
#endif
#ifndef NETPASST_NET_TOOL
#error "NETPASST_NET_TOOL (the netpasst_net_tool binary) must be defined by the build"
#endif

extern char** environ;

using namespace std::chrono_literals;
using json = nlohmann::json;
namespace fs = std::filesystem;

static const bool private_mounts = netpasst::e2e::enter_private_mounts();

namespace {

bool usable() {
  if (netpasst::e2e::in_private_netns && private_mounts) return true;
  WARN("not root: skipped (needs a private network and mount namespace)");
  return false;
}

/// A scratch directory for one test, removed at the end; mode 0777 so that
/// passt, running as nobody, can write its capture there.
struct scratch {
  fs::path path;
  scratch() {
    static int n = 0;
    path = fs::temp_directory_path() / ("netpasst-tap-e2e-" + std::to_string(::getpid()) + "-" + std::to_string(++n));
    fs::create_directories(path);
    fs::permissions(path, fs::perms::all);
  }
  ~scratch() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

int sh(const std::string& command) {
  const int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string capture(const std::string& command) {
  std::string out;
  if (FILE* pipe = ::popen(command.c_str(), "r")) {
    char buffer[4096];
    while (std::size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) out.append(buffer, n);
    ::pclose(pipe);
  }
  return out;
}

/// Waits (up to 30 s) until a TCP socket listens on `port`, as `ss` run
/// through `prefix` ("" or "ip netns exec NAME ") sees it: a probe connection
/// would use up a one-off iperf3 server.
bool wait_listening(int port, const std::string& prefix = "") {
  const std::string command = prefix + "ss -Hltn 'sport = :" + std::to_string(port) + "'";
  for (int i = 0; i < 3000; ++i) {
    if (!capture(command).empty()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

/// `size` random bytes written to `path`.
std::string make_blob(const std::string& path, std::size_t size) {
  std::mt19937_64 random(size);
  std::string data(size, '\0');
  for (auto& c : data) c = char(random());
  std::ofstream(path, std::ios::binary) << data;
  return data;
}

/// FNV-1a 64 of the bytes, printed in messages.
std::uint64_t checksum(const std::string& data) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : data) h = (h ^ c) * 1099511628211ull;
  return h;
}

/// True once `pid` has exited (or is a zombie no one reaped yet).
bool gone(pid_t pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const auto paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z';
}

bool wait_gone(pid_t pid) {
  for (int i = 0; i < 300 && !gone(pid); ++i) std::this_thread::sleep_for(10ms);
  return gone(pid);
}

bool netns_exists(const std::string& name) { return fs::exists("/run/netns/" + name); }

/// A child process with its stdout read line by line; killed and reaped at
/// the end if still running.
class child {
public:
  explicit child(const std::vector<std::string>& argv, const std::string& stderr_path = "/dev/null") {
    int out[2];
    REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_addopen(&actions, 2, stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const int spawned = ::posix_spawnp(&pid_, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(out[1]);
    out_ = out[0];
    REQUIRE(spawned == 0);
  }
  child(const child&) = delete;
  child& operator=(const child&) = delete;
  ~child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::close(out_);
  }

  pid_t pid() const { return pid_; }
  void signal(int sig) { ::kill(pid_, sig); }

  /// The next line of output, or nothing at EOF or after `limit`.
  std::optional<std::string> line(std::chrono::milliseconds limit = 30s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    for (;;) {
      if (auto end = buffer_.find('\n'); end != std::string::npos) {
        std::string l = buffer_.substr(0, end);
        buffer_.erase(0, end + 1);
        return l;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      pollfd p{out_, POLLIN, 0};
      if (left.count() <= 0 || ::poll(&p, 1, int(left.count())) != 1) return std::nullopt;
      char chunk[4096];
      const ssize_t n = ::read(out_, chunk, sizeof chunk);
      if (n <= 0) return std::nullopt;
      buffer_.append(chunk, std::size_t(n));
    }
  }

  /// Waits for the exit (killing after `limit`) and returns the status.
  int wait(std::chrono::milliseconds limit = 30s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        pid_ = -1;
        return -1;
      }
      std::this_thread::sleep_for(10ms);
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

private:
  pid_t pid_ = -1;
  int out_ = -1;
  std::string buffer_;
};

/// A running netpasst_tap and the JSON lines it printed.
class tap_program {
public:
  tap_program(const scratch& dir, const std::string& netns, const json& config, const std::string& launcher = "daemon",
              const std::vector<std::string>& extra_arguments = {})
      : netns_(netns), stderr_path_(dir / ("netpasst_tap-" + netns + ".err")) {
    const std::string config_path = dir / ("config-" + netns + ".json");
    std::ofstream(config_path) << config.dump();
    std::vector<std::string> argv{NETPASST_TAP, "--netns", netns, "--config", config_path, "--passt",
                                  netpasst::e2e::passt_binary(), "--launcher", launcher};
    argv.insert(argv.end(), extra_arguments.begin(), extra_arguments.end());
    process_.emplace(argv, stderr_path_);
  }

  /// The next line whose "event" is `event` (every line is kept in `lines`).
  json wait_for(const std::string& event, std::chrono::milliseconds limit = 30s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      auto l = process_->line(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()));
      if (!l) break;
      INFO(*l);
      json j = json::parse(*l);
      lines.push_back(j);
      if (j.value("event", "") == event) return j;
    }
    FAIL("no '" << event << "' line from netpasst_tap; stderr: " << read_file(stderr_path_) << "; lines: "
                << json(lines).dump());
    return {};
  }

  /// SIGTERM, then the exit status; the rest of the lines are read first.
  int stop(int sig = SIGTERM) {
    process_->signal(sig);
    while (auto l = process_->line(20s)) lines.push_back(json::parse(*l));
    return process_->wait();
  }

  /// The `exit` line, after stop().
  json exit_line() const {
    for (const auto& l : lines)
      if (l.value("event", "") == "exit") return l;
    return {};
  }

  std::string errors() const { return read_file(stderr_path_); }
  std::string ns_exec(const std::string& command) const { return "ip netns exec " + netns_ + " " + command; }
  pid_t pid() const { return process_->pid(); }
  std::vector<json> lines;

private:
  std::string netns_, stderr_path_;
  std::optional<child> process_;
};

std::string unique_netns(const char* what) { return std::string("np-") + what + "-" + std::to_string(::getpid()); }

/// Frames in a pcap file, split by whether their Ethernet source is `mac`.
struct pcap_summary {
  std::uint64_t from_mac_frames = 0, from_mac_bytes = 0, other_frames = 0, other_bytes = 0;
};

pcap_summary read_pcap(const std::string& path, const std::string& mac_text) {
  unsigned char mac[6];
  REQUIRE(std::sscanf(mac_text.c_str(), "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1], &mac[2], &mac[3], &mac[4],
                      &mac[5]) == 6);
  const std::string data = read_file(path);
  REQUIRE(data.size() >= 24);
  pcap_summary s;
  std::size_t at = 24;
  while (at + 16 <= data.size()) {
    std::uint32_t captured, length;
    std::memcpy(&captured, data.data() + at + 8, 4);
    std::memcpy(&length, data.data() + at + 12, 4);
    at += 16;
    REQUIRE(at + captured <= data.size());
    const bool ours = captured >= 12 && std::memcmp(data.data() + at + 6, mac, 6) == 0;
    (ours ? s.from_mac_frames : s.other_frames) += 1;
    (ours ? s.from_mac_bytes : s.other_bytes) += length;
    at += captured;
  }
  return s;
}

/// The TCP and UDP frames from `mac` in a pcap file, by whether their
/// checksum verifies (summed word by word here, with the pseudo-header).
struct pcap_checksums {
  std::uint64_t valid = 0, invalid = 0, truncated = 0;
};

std::uint32_t sum_words(const unsigned char* p, std::size_t n, std::uint32_t sum = 0) {
  for (std::size_t i = 0; i < n; i += 2) sum += (unsigned(p[i]) << 8) | (i + 1 < n ? p[i + 1] : 0u);
  return sum;
}

pcap_checksums check_pcap_checksums(const std::string& path, const std::string& mac_text) {
  unsigned char mac[6];
  REQUIRE(std::sscanf(mac_text.c_str(), "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1], &mac[2], &mac[3], &mac[4],
                      &mac[5]) == 6);
  const std::string data = read_file(path);
  REQUIRE(data.size() >= 24);
  pcap_checksums c;
  for (std::size_t at = 24; at + 16 <= data.size();) {
    std::uint32_t captured, length;
    std::memcpy(&captured, data.data() + at + 8, 4);
    std::memcpy(&length, data.data() + at + 12, 4);
    at += 16;
    REQUIRE(at + captured <= data.size());
    const auto* f = reinterpret_cast<const unsigned char*>(data.data() + at);
    at += captured;
    if (captured < 34 || std::memcmp(f + 6, mac, 6) != 0) continue;
    const unsigned ether_type = (unsigned(f[12]) << 8) | f[13];
    const unsigned char* ip = f + 14;
    std::size_t header = 0, segment = 0;
    unsigned protocol = 0;
    std::uint32_t sum = 0;
    if (ether_type == 0x0800) {
      header = (ip[0] & 0x0f) * 4u;
      segment = ((unsigned(ip[2]) << 8) | ip[3]) - header;
      protocol = ip[9];
      sum = sum_words(ip + 12, 8);
    } else if (ether_type == 0x86dd && captured >= 54) {
      header = 40;
      segment = (unsigned(ip[4]) << 8) | ip[5];
      protocol = ip[6];
      sum = sum_words(ip + 8, 32);
    }
    if (protocol != 6 && protocol != 17) continue;
    if (captured != length || 14 + header + segment > captured) {
      ++c.truncated;
      continue;
    }
    sum = sum_words(ip + header, segment, sum + protocol + std::uint32_t(segment));
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    (sum == 0xffff ? c.valid : c.invalid) += 1;
  }
  return c;
}

} // namespace

TEST_CASE("netpasst_tap: HTTP download from the host's loopback and upload through a forwarded port", "[tap]") {
  if (!usable()) return;
  const std::string launcher = GENERATE("daemon", "foreground");
  INFO("launcher " << launcher);
  scratch dir;
  fs::create_directories(dir / "host"), fs::create_directories(dir / "guest");
  const std::string blob = make_blob(dir / "host/blob", 4 << 20);
  const std::string netns = unique_netns("http");
  REQUIRE_FALSE(netns_exists(netns));

  pid_t passt_pid = 0;
  {
    tap_program tap(dir, netns, {{"tcp-ports", {"18080"}}}, launcher);
    const json lease = tap.wait_for("lease");
    CHECK(lease["address"] == netpasst::e2e::template_address);
    CHECK(lease["gateway"] == netpasst::e2e::template_gateway);
    CHECK(lease["prefix_length"] == netpasst::e2e::template_prefix_length);
    CHECK(lease["mtu"] == 65520);
    CHECK(lease["configured"] == true);
    passt_pid = lease["passt_pid"];
    CHECK(netns_exists(netns));
    const std::string resolv = capture(tap.ns_exec("cat /etc/resolv.conf"));
    for (const auto& server : lease["dns"]) CHECK_THAT(resolv, Catch::Contains("nameserver " + server.get<std::string>()));
    CHECK_THAT(capture(tap.ns_exec("ip -4 route show default")), Catch::Contains("via 192.0.2.1 dev tap0"));
    CHECK_THAT(capture(tap.ns_exec("ip link show dev tap0")), Catch::Contains("mtu 65520"));

    // Download: a server on the host's 127.0.0.1, reached from the guest through the gateway address.
    child host_server({NETPASST_NET_TOOL, "http", "127.0.0.1", "18081", dir / "host"});
    REQUIRE(host_server.line() == "listening");
    REQUIRE(sh(tap.ns_exec("curl -sf --max-time 120 -o " + (dir / "download") + " http://192.0.2.1:18081/blob")) == 0);
    const std::string downloaded = read_file(dir / "download");
    INFO("sent " << std::hex << checksum(blob) << ", got " << checksum(downloaded));
    CHECK(downloaded.size() == blob.size());
    CHECK(checksum(downloaded) == checksum(blob));
    CHECK(downloaded == blob);

    // Upload: a server in the guest, reached from the host through passt's forwarded port.
    child guest_server({"ip", "netns", "exec", netns, NETPASST_NET_TOOL, "http", "0.0.0.0", "18080", dir / "guest"});
    REQUIRE(guest_server.line() == "listening");
    REQUIRE(sh("curl -sf --max-time 120 -T " + (dir / "host/blob") + " http://127.0.0.1:18080/upload -o /dev/null") == 0);
    const std::string uploaded = read_file(dir / "guest/upload");
    CHECK(uploaded.size() == blob.size());
    CHECK(checksum(uploaded) == checksum(blob));
    CHECK(uploaded == blob);
    guest_server.signal(SIGKILL);
    guest_server.wait();

    INFO(tap.errors());
    REQUIRE(tap.stop() == 0);
    const json exit = tap.exit_line();
    REQUIRE(exit.is_object());
    // Both transfers carry their data passt -> guest: at least its frames
    // (64 KiB at most each). The guest sends the ACKs: about one per two
    // full segments, fewer when its receive window does not grow (a bound of
    // exactly one per two segments was missed by a frame now and then).
    CHECK(exit["guest_to_passt"]["frames"].get<std::uint64_t>() >= blob.size() / 65536 / 4);
    CHECK(exit["passt_to_guest"]["frames"].get<std::uint64_t>() >= blob.size() / 65536);
    CHECK(exit["guest_to_passt"]["dropped_at_end"] == 0);
    CHECK(exit["passt"]["restarts"] == 0);
  }
  // Everything it made is gone: the namespace (and the tap in it), passt,
  // the namespace's resolv.conf.
  CHECK_FALSE(netns_exists(netns));
  CHECK(wait_gone(passt_pid));
  CHECK_FALSE(fs::exists("/etc/netns/" + netns));
}

TEST_CASE("netpasst_tap: bulk TCP both ways with the default settings; passt's stream stays in sync", "[tap]") {
  if (!usable()) return;
  scratch dir;
  const std::string netns = unique_netns("bulk");
  const std::string pcap = dir / "passt.pcap";
  tap_program tap(dir, netns, {{"tcp-ports", {"15202"}}, {"pcap", pcap}});
  const json up = tap.wait_for("netns");
  const std::string mac = up["mac"];
  tap.wait_for("lease");

  // guest -> host: an iperf3 client in the namespace, the server on the host's loopback.
  child host_server({"iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", "15201"});
  REQUIRE(wait_listening(15201));
  const json to_host = json::parse(capture(tap.ns_exec("timeout 120 iperf3 -J -c 192.0.2.1 -p 15201 -n 128M")));
  INFO(to_host.dump());
  CHECK_FALSE(to_host.contains("error"));
  CHECK(to_host["end"]["sum_sent"]["bytes"].get<std::uint64_t>() >= 128u << 20);
  CHECK(host_server.wait() == 0);

  // host -> guest: the server in the namespace behind a forwarded port.
  child guest_server({"ip", "netns", "exec", netns, "iperf3", "-s", "-1", "-p", "15202"});
  REQUIRE(wait_listening(15202, tap.ns_exec("")));
  const json to_guest = json::parse(capture("timeout 120 iperf3 -J -c 127.0.0.1 -p 15202 -n 128M"));
  INFO(to_guest.dump());
  CHECK_FALSE(to_guest.contains("error"));
  CHECK(to_guest["end"]["sum_sent"]["bytes"].get<std::uint64_t>() >= 128u << 20);
  CHECK(guest_server.wait() == 0);

  INFO(tap.errors());
  REQUIRE(tap.stop() == 0);
  const json exit = tap.exit_line();
  REQUIRE(exit.is_object());
  INFO(exit.dump());
  // Both sides of the bridge agree: every frame read from the tap went to
  // passt's stream, every frame from passt went to the tap.
  CHECK(exit["tap"]["frames_received"] == exit["guest_to_passt"]["frames"]);
  CHECK(exit["passt"]["frames_received"].get<std::uint64_t>() >= exit["passt_to_guest"]["frames"].get<std::uint64_t>());
  CHECK(exit["tap"]["frames_sent"] == exit["passt_to_guest"]["frames"]);
  CHECK(exit["guest_to_passt"]["dropped_invalid"] == 0);
  CHECK(exit["passt_to_guest"]["dropped_invalid"] == 0);
  CHECK(exit["passt"]["restarts"] == 0);
  // And passt saw those frames: its capture holds every frame we wrote to
  // its stream (the guest's MAC as source), no more, with the same bytes. A
  // stream out of sync would show as missing data frames or as frames made
  // of payload bytes. The one allowance: the namespace's stack may still
  // send a control frame or two (an ACK, a FIN) after iperf3 is done, which
  // can be written to the stream just before passt is stopped and never
  // read by it; such frames are small.
  const pcap_summary seen = read_pcap(pcap, mac);
  const auto frames_sent = exit["passt"]["frames_sent"].get<std::uint64_t>();
  const auto bytes_sent = exit["passt"]["bytes_sent"].get<std::uint64_t>();
  CHECK(seen.from_mac_frames <= frames_sent);
  CHECK(seen.from_mac_frames + 2 >= frames_sent);
  CHECK(seen.from_mac_bytes <= bytes_sent);
  CHECK(seen.from_mac_bytes + (frames_sent - std::min(frames_sent, seen.from_mac_frames)) * 1514 >= bytes_sent);
  // The other way, passt writes its capture of a batch only after the batch
  // went out on the stream: a frame we received just as passt was stopped
  // (an ACK or FIN, as above) can be missing from the capture.
  CHECK(seen.other_frames + 2 >= exit["passt"]["frames_received"].get<std::uint64_t>());
}

TEST_CASE("netpasst_tap: passt SIGKILLed during a transfer is restarted; the namespace keeps its configuration",
          "[tap]") {
  if (!usable()) return;
  scratch dir;
  fs::create_directories(dir / "host");
  const std::string blob = make_blob(dir / "host/blob", 16 << 20);
  const std::string netns = unique_netns("kill");
  pid_t first = 0, second = 0;
  {
    tap_program tap(dir, netns, json::object());
    const json lease = tap.wait_for("lease");
    first = lease["passt_pid"];
    child host_server({NETPASST_NET_TOOL, "http", "127.0.0.1", "18083", dir / "host"});
    REQUIRE(host_server.line() == "listening");

    // A slow download is under way when passt is killed.
    child transfer({"ip", "netns", "exec", netns, "curl", "-s", "--max-time", "30", "--limit-rate", "2M", "-o",
                    dir / "partial", "http://192.0.2.1:18083/blob"});
    for (int i = 0; i < 300 && (!fs::exists(dir / "partial") || fs::file_size(dir / "partial") < (1 << 20)); ++i)
      std::this_thread::sleep_for(10ms);
    REQUIRE(fs::file_size(dir / "partial") >= (1 << 20));
    REQUIRE(::kill(first, SIGKILL) == 0);

    const json down = tap.wait_for("link_down");
    CHECK(down["pid"] == first);
    const json up = tap.wait_for("link_up");
    CHECK(up["restart"] == true);
    const json again = tap.wait_for("lease");
    second = again["passt_pid"];
    CHECK(second != first);
    CHECK(again["address"] == lease["address"]);
    CHECK(again["configured"] == false); // the namespace kept its configuration
    CHECK_THAT(capture(tap.ns_exec("ip -4 address show dev tap0")),
               Catch::Contains(lease["address"].get<std::string>() + "/24"));
    CHECK_THAT(capture(tap.ns_exec("ip -4 route show default")), Catch::Contains("via 192.0.2.1 dev tap0"));
    transfer.signal(SIGKILL);
    transfer.wait();

    // A new transfer goes through the new passt.
    REQUIRE(sh(tap.ns_exec("curl -sf --max-time 120 -o " + (dir / "download") + " http://192.0.2.1:18083/blob")) == 0);
    const std::string downloaded = read_file(dir / "download");
    CHECK(checksum(downloaded) == checksum(blob));
    CHECK(downloaded == blob);

    INFO(tap.errors());
    REQUIRE(tap.stop() == 0);
    CHECK(tap.exit_line()["passt"]["restarts"] == 1);
  }
  CHECK_FALSE(netns_exists(netns));
  CHECK(wait_gone(first));
  CHECK(wait_gone(second));
  CHECK(capture("ip -o link show | grep -c tap0 || true") == "0\n");
}

TEST_CASE("netpasst_tap: an existing namespace is used and kept; only what was added goes away", "[tap]") {
  if (!usable()) return;
  scratch dir;
  const std::string netns = unique_netns("keep");
  REQUIRE(sh("ip netns add " + netns) == 0);
  // A resolv.conf the namespace already had comes back afterwards (only
  // where /etc/netns is private to this test: the host's is never touched).
  const bool with_resolv = netpasst::e2e::etc_netns_private;
  if (with_resolv) {
    fs::create_directories("/etc/netns/" + netns);
    std::ofstream("/etc/netns/" + netns + "/resolv.conf") << "nameserver 198.51.100.53\n";
  }
  {
    tap_program tap(dir, netns, json::object());
    const json up = tap.wait_for("netns");
    CHECK(up["created"] == false);
    const json lease = tap.wait_for("lease");
    CHECK_THAT(capture(tap.ns_exec("cat /etc/resolv.conf")), !Catch::Contains("198.51.100.53"));
    REQUIRE(tap.stop() == 0);
  }
  CHECK(netns_exists(netns));
  CHECK(sh("ip -n " + netns + " link show dev tap0 >/dev/null 2>&1") != 0);
  if (with_resolv) CHECK(read_file("/etc/netns/" + netns + "/resolv.conf") == "nameserver 198.51.100.53\n");
  else CHECK_FALSE(fs::exists("/etc/netns"));
  sh("ip netns delete " + netns);
}

/// Whether the passt the tests run knows --vhost-user (Debian 12's does not).
bool passt_supports_vhost_user() {
  return sh("passt --help 2>&1 | grep -q -- --vhost-user") == 0; // netpasst_tap runs the passt on PATH
}

TEST_CASE("netpasst_tap: bad arguments and a passt that cannot start end cleanly with a clear message", "[tap]") {
  if (!usable()) return;
  scratch dir;
  auto run = [&](const std::string& args) {
    const int status = sh(std::string(NETPASST_TAP) + " " + args + " >" + (dir / "out") + " 2>" + (dir / "err"));
    return std::pair{status, read_file(dir / "err")};
  };
  CHECK(run("").first == 2);
  CHECK_THAT(run("").second, Catch::Contains("--netns NAME is required"));
  CHECK_THAT(run("--netns a/b").second, Catch::Contains("not a path"));
  CHECK(run("--netns x --launcher other").first == 2);
  CHECK(run("--netns x --tap seventeen-bytes-x").first == 2);
  CHECK(run("--netns x --bogus").first == 2);
  CHECK_THAT(run("--netns x --transport carrier-pigeon").second, Catch::Contains("--transport takes"));
  std::ofstream(dir / "bad.json") << R"({"mtu": "big", "tcp-portz": []})";
  const auto [status, message] = run("--netns x --config " + (dir / "bad.json"));
  CHECK(status == 2);
  CHECK_THAT(message, Catch::Contains("/mtu"));
  CHECK_THAT(message, Catch::Contains("/tcp-portz"));
  CHECK_FALSE(netns_exists("x"));

  // passt is missing: the start fails, and the namespace made for it goes.
  const std::string netns = unique_netns("nopasst");
  const auto [failed, why] = run("--netns " + netns + " --passt /nonexistent/passt");
  CHECK(failed == 1);
  CHECK_THAT(why, Catch::Contains("passt"));
  CHECK_FALSE(netns_exists(netns));
  const std::string out = read_file(dir / "out");
  CHECK_THAT(out, Catch::Contains("\"event\":\"shutdown\""));
  CHECK_THAT(out, Catch::Contains("\"event\":\"exit\""));

  // A passt without vhost-user support: its own complaint is the message.
  if (!passt_supports_vhost_user()) {
    const std::string vhost_netns = unique_netns("novhost");
    const auto [vhost_failed, vhost_why] = run("--netns " + vhost_netns + " --transport vhost-user");
    CHECK(vhost_failed == 1);
    CHECK_THAT(vhost_why, Catch::Contains("--vhost-user"));
    CHECK_FALSE(netns_exists(vhost_netns));
  }
}

TEST_CASE("netpasst_tap: UDP datagrams of every size up to 65535-byte frames, guest to host and back", "[tap]") {
  if (!usable()) return;
  scratch dir;
  const std::string netns = unique_netns("sizes");
  tap_program tap(dir, netns, json::object());
  tap.wait_for("lease");
  // The largest frame a tap carries: MTU 65521 + 14 = 65535 bytes, as much
  // as passt's stream allows.
  REQUIRE(sh(tap.ns_exec("ip link set dev tap0 mtu 65521")) == 0);
  child echo({NETPASST_NET_TOOL, "udp-echo", "127.0.0.1", "17007"});
  REQUIRE(echo.line() == "listening");
  const std::string result = capture(tap.ns_exec(std::string(NETPASST_NET_TOOL) + " udp-sweep 192.0.2.1 17007 65493"));
  INFO(result);
  const json sweep = json::parse(result);
  CHECK(sweep["failed"].empty());
  CHECK(sweep["echoed"] == sweep["sent"]);
  REQUIRE(tap.stop() == 0);
  const json exit = tap.exit_line();
  CHECK(exit["passt"]["restarts"] == 0);
  CHECK(exit["guest_to_passt"]["dropped_invalid"] == 0);
  CHECK(exit["passt_to_guest"]["dropped_invalid"] == 0);
}

TEST_CASE("netpasst_tap: guest->host TCP with and without checksum offload: data intact, passt gets full checksums",
          "[tap]") {
  if (!usable()) return;
  const bool offload = GENERATE(true, false);
  INFO("checksum offload " << offload);
  scratch dir;
  fs::create_directories(dir / "host");
  const std::string blob = make_blob(dir / "blob", 24 << 20);
  const std::string netns = unique_netns(offload ? "csum" : "plain");
  const std::string pcap = dir / "passt.pcap";
  tap_program tap(dir, netns, {{"pcap", pcap}}, "daemon", offload ? std::vector<std::string>{}
                                                                   : std::vector<std::string>{"--no-checksum-offload"});
  const json up = tap.wait_for("netns");
  CHECK(up["checksum_offload"] == offload);
  CHECK(up["trust_checksums"] == offload);
  tap.wait_for("lease");

  // Upload from the guest to a server on the host's loopback: the bulk of
  // the data goes guest -> host, in segments the namespace left partial.
  child host_server({NETPASST_NET_TOOL, "http", "127.0.0.1", "18084", dir / "host"});
  REQUIRE(host_server.line() == "listening");
  REQUIRE(sh(tap.ns_exec("curl -sf --max-time 120 -T " + (dir / "blob") + " http://192.0.2.1:18084/upload -o " +
                         "/dev/null")) == 0);
  const std::string uploaded = read_file(dir / "host/upload");
  INFO("sent " << std::hex << checksum(blob) << ", got " << checksum(uploaded));
  CHECK(uploaded.size() == blob.size());
  CHECK(checksum(uploaded) == checksum(blob));
  CHECK(uploaded == blob);

  INFO(tap.errors());
  REQUIRE(tap.stop() == 0);
  const json exit = tap.exit_line();
  REQUIRE(exit.is_object());
  INFO(exit.dump());
  const auto completed = exit["tap"]["checksums_completed"].get<std::uint64_t>();
  if (offload) CHECK(completed >= blob.size() / 65536); // every data segment came partial
  else CHECK(completed == 0);
  CHECK(exit["tap"]["frames_dropped_received"] == 0);
  // passt's capture (frames as it took them from its stream): every TCP and
  // UDP frame from the guest carries a full, valid checksum.
  const pcap_checksums seen = check_pcap_checksums(pcap, up["mac"]);
  CHECK(seen.invalid == 0);
  CHECK(seen.truncated == 0);
  CHECK(seen.valid >= blob.size() / 65536);
}
