// TCP throughput between a host and a guest network namespace, both ways,
// through netpasst_tap (tap -> bridge -> lifecycle -> passt) beside pasta
// (passt's own tap mode) on the same machine, in one run. netpasst_tap runs
// with checksum offload on (its default: the tap completes the namespace's
// partial checksums, the namespace trusts passt's) and/or off (a plain tap),
// each in its own namespace. Rounds are interleaved (each netpasst_tap, then
// pasta, each direction in turn) so that noise from other load hits all
// alike; medians are reported.
//
//   guest->host  iperf3 client in the namespace, server on the host's
//                127.0.0.1, reached through the gateway address (passt and
//                pasta map it to the host's loopback)
//   host->guest  iperf3 client on the host, server in the namespace, reached
//                through a forwarded port: once to 127.0.0.1 (pasta splices
//                such connections from socket to socket inside the namespace,
//                without its tap: not a tap path) and once to the host's
//                address 192.0.2.10 (both through their taps)
//
// Targets (issue 6): guest->host >= host->guest through netpasst, and
// netpasst >= 1x pasta in each direction. Also printed: TCP retransmissions
// seen by the sender, the tap's dropped counts, the checksums the tap
// completed and trusted, the bridge's counters (frames refused by passt's
// stream, waits), the retransmission timeouts the sender's namespace took
// during the runs (TcpExt TCPTimeouts), how long the sender stalled (the
// 0.1 s intervals in which it moved under 0.1 Gbit/s), the CPU seconds netpasst_tap and
// passt (or pasta) spend per GB moved in each run, how many of the machine's
// cores were busy during each direction's runs (iperf3's start and end
// included; well below the core count, that direction was not short of
// CPU), and the machine's load, since 2-core machines shared with
// other work give noisy figures.
//
// Runs as root, in a private network namespace (and mount namespace) shaped
// like the e2e tests' host: template interface np0 192.0.2.10/24, gateway
// 192.0.2.1; nothing outside it is touched.
//
// Usage: bench_tap [--quick] [--rounds N] [--seconds S] [--passt PATH]
//                  [--pasta PATH] [--runas-root] [--checksums on|off|both]
//                  [--guest-tcp-rmem "MIN DEFAULT MAX"] [--congestion-control NAME]
//                  [--socket-buffers BYTES[,BYTES...]] [--vhost-user-passt PATH]
//   --runas-root      passes runas 0 to passt (an upstream passt needs it to
//                     write its pidfile when started as root)
//   --checksums       netpasst_tap with checksum offload, without, or both
//                     side by side (the default)
//   --guest-tcp-rmem  sets net.ipv4.tcp_rmem in every guest namespace
//                     (netpasst's and pasta's) before the rounds
//   --congestion-control
//                     sets net.ipv4.tcp_congestion_control in the private
//                     host namespace (before anything starts) and in every
//                     guest namespace (before the rounds). Outside the
//                     initial namespace Linux lets root pick only the
//                     algorithms listed in the initial namespace's
//                     net.ipv4.tcp_allowed_congestion_control; the bench
//                     does not change that list, it says what to add.
//   --socket-buffers  one more netpasst_tap (checksum offload on) per size,
//                     run with --socket-buffer BYTES (its stream socket's
//                     send buffer towards passt), labelled netpasst-sbBYTES
//   --vhost-user-passt a passt build that knows --vhost-user: three more
//                     netpasst_tap on it, the stream transport
//                     (netpasst-upstream), the vhost-user transport as
//                     netpasst_tap runs it (netpasst-vhost-user: passt
//                     leaves the checksums it sends to the tap) and with
//                     --no-guest-checksum-offload (netpasst-vhost-user-csum)
//
// The congestion control in use is printed: it moves the figures. With BBR
// (whose pacing, without the fq qdisc, arms a timer per paced packet) a
// paced TCP sender costs a timer interrupt per frame; guest->host has two
// paced senders on its path (the namespace's iperf3 and passt's socket to
// the host's server), host->guest one (the host's iperf3).
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#ifndef NETPASST_TAP
#error "NETPASST_TAP (the netpasst_tap binary) must be defined by the build"
#endif

extern char** environ;

namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;

/// The prefix that runs a command in namespace `ns` ("" for the current one).
std::string in_netns(const std::string& ns) { return ns.empty() ? "" : "ip netns exec " + ns + " "; }

bool sh(const std::string& command) { return std::system((command + " >/dev/null 2>&1").c_str()) == 0; }

std::string capture(const std::string& command) {
  std::string out;
  if (FILE* pipe = ::popen(command.c_str(), "r")) {
    char buffer[4096];
    while (std::size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) out.append(buffer, n);
    ::pclose(pipe);
  }
  return out;
}

/// The private host: network and mount namespaces with the template interface.
bool enter_private_host() {
  if (::unshare(CLONE_NEWNET | CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    std::perror("bench_tap: private namespaces");
    return false;
  }
  ::mkdir("/run/netns", 0755);
  if (::mount("bench_tap", "/run/netns", "tmpfs", 0, "mode=0755") != 0) return false;
  struct stat st {};
  if (::stat("/etc/netns", &st) == 0) ::mount("bench_tap", "/etc/netns", "tmpfs", 0, "mode=0755");
  for (const char* command :
       {"ip link set lo up", "ip link add np0 type veth peer name np0peer", "ip link set np0peer up",
        "ip addr add 192.0.2.10/24 dev np0", "ip link set np0 up", "ip route add default via 192.0.2.1 dev np0",
        "ip addr add 192.0.2.1/32 dev np0peer"})
    if (!sh(command)) {
      std::fprintf(stderr, "bench_tap: '%s' failed\n", command);
      return false;
    }
  return true;
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

/// Sets the default TCP congestion control in namespace `ns` ("": the
/// private host). Linux refuses, outside the initial namespace, an algorithm
/// that the initial namespace does not allow: say which list to extend.
bool set_congestion_control(const std::string& ns, const std::string& name) {
  const std::string prefix = in_netns(ns);
  if (sh(prefix + "sysctl -qw net.ipv4.tcp_congestion_control=" + name)) return true;
  const std::string allowed = trimmed(capture("sysctl -n net.ipv4.tcp_allowed_congestion_control"));
  std::fprintf(stderr,
               "bench_tap: cannot set net.ipv4.tcp_congestion_control to '%s' in %s. Available: %s. Outside the "
               "initial network namespace only the initial namespace's net.ipv4.tcp_allowed_congestion_control "
               "('%s') may be set; to allow it: sysctl -w net.ipv4.tcp_allowed_congestion_control='%s %s'\n",
               name.c_str(), ns.empty() ? "the private host namespace" : ns.c_str(),
               trimmed(capture("sysctl -n net.ipv4.tcp_available_congestion_control")).c_str(), allowed.c_str(),
               allowed.c_str(), name.c_str());
  return false;
}

/// A background process, killed and reaped at the end.
class process {
public:
  explicit process(const std::vector<std::string>& argv, const std::string& out = "/dev/null") {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    if (::posix_spawnp(&pid_, args[0], &actions, nullptr, args.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
  }
  process(const process&) = delete;
  process& operator=(const process&) = delete;
  ~process() { stop(SIGKILL); }
  pid_t pid() const { return pid_; }
  void signal(int sig) const {
    if (pid_ > 0) ::kill(pid_, sig);
  }
  void stop(int sig = SIGTERM) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

private:
  pid_t pid_ = -1;
};

struct measurement {
  double gbits = 0;
  long retransmits = 0;
  /// Seconds of the run's 0.1 s intervals in which the sender moved less
  /// than `stall_gbits`: where a collapsed run's time went.
  double stalled_seconds = 0;
  bool ok = false;
};

/// An interval slower than this counts as a stall (1.25 MB in 0.1 s).
constexpr double stall_gbits = 0.1;

/// One iperf3 run; `client` is the command prefix ("" or "ip netns exec NS ").
measurement iperf(const std::string& client, const std::string& host, int port, int seconds) {
  measurement m;
  const std::string out = capture(client + "timeout " + std::to_string(seconds + 30) + " iperf3 -J -c " + host +
                                  " -p " + std::to_string(port) + " -t " + std::to_string(seconds) + " -i 0.1");
  try {
    const json j = json::parse(out);
    if (j.contains("error")) return m;
    m.gbits = j["end"]["sum_received"]["bits_per_second"].get<double>() / 1e9;
    m.retransmits = j["end"]["sum_sent"].value("retransmits", 0L);
    for (const auto& interval : j["intervals"])
      if (interval["sum"]["bits_per_second"].get<double>() / 1e9 < stall_gbits)
        m.stalled_seconds += interval["sum"]["seconds"].get<double>();
    m.ok = true;
  } catch (const std::exception&) {
  }
  return m;
}

/// TX and RX dropped counts of `dev` in namespace `ns`.
std::pair<long, long> tap_drops(const std::string& ns, const std::string& dev) {
  try {
    const json j = json::parse(capture("ip -n " + ns + " -s -j link show dev " + dev));
    const auto& stats = j.at(0).at("stats64");
    return {stats["tx"]["dropped"].get<long>(), stats["rx"]["dropped"].get<long>()};
  } catch (const std::exception&) {
    return {-1, -1};
  }
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

std::string loadavg() {
  std::ifstream in("/proc/loadavg");
  std::string one;
  in >> one;
  return one;
}

bool wait_for_file_line(const std::string& path, const std::string& needle, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    if (s.str().find(needle) != std::string::npos) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

/// One netpasst_tap under test: its namespace, forwarded port and output.
struct netpasst_guest {
  std::string label; // "netpasst" (offload on), "netpasst-plain", "netpasst-sb<BYTES>", "netpasst-vhost-user"...
  std::string ns, out;
  int port;
  std::unique_ptr<process> vmm, server;
  pid_t passt = 0;
  std::string socket_buffer; // netpasst_tap's --socket-buffer, empty: its default
  std::string passt_path;    // netpasst_tap's --passt, empty: bench_tap's --passt
  std::string transport;     // netpasst_tap's --transport, empty: its default (stream)
};

/// The retransmission timeouts TCP has taken so far in namespace `ns`
/// (TcpExt TCPTimeouts; "" for the current one), -1 if unreadable.
long tcp_timeouts(const std::string& ns) {
  std::istringstream in(capture(in_netns(ns) + "cat /proc/net/netstat"));
  std::string names, values;
  while (std::getline(in, names) && std::getline(in, values)) {
    if (names.rfind("TcpExt:", 0) != 0) continue;
    std::istringstream n(names), v(values);
    std::string name, value;
    while (n >> name && v >> value)
      if (name == "TCPTimeouts") return std::stol(value);
  }
  return -1;
}

/// The machine's CPU time so far, all cores together, in clock ticks: busy
/// (user, nice, system, irq, softirq) and in all (those, idle, iowait and
/// steal), from /proc/stat.
struct machine_ticks {
  double busy = 0, all = 0;
};
machine_ticks machine_cpu() {
  std::ifstream in("/proc/stat");
  std::string label;
  in >> label;
  machine_ticks t;
  double value = 0;
  for (int i = 0; i < 8 && in >> value; ++i) { // guest time is counted in user and nice already
    t.all += value;
    if (i != 3 && i != 4 && i != 7) t.busy += value;
  }
  return t;
}

/// User plus system CPU seconds `pid` has used so far (0 once it is gone).
double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(in, line);
  const auto paren = line.rfind(')');
  if (paren == std::string::npos) return 0;
  std::istringstream fields(line.substr(paren + 2));
  std::string field;
  double user = 0, system = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) { // fields 14 and 15: utime, stime
    if (i == 14) user = std::stod(field);
    if (i == 15) system = std::stod(field);
  }
  return (user + system) / double(::sysconf(_SC_CLK_TCK));
}

/// The passt pid of the last lease line in `path`.
pid_t leased_passt(const std::string& path) {
  pid_t pid = 0;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (line.find("\"lease\"") != std::string::npos) pid = json::parse(line).value("passt_pid", 0);
  return pid;
}

json last_counters(const std::string& path) {
  json counters;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (line.find("\"counters\"") != std::string::npos) counters = json::parse(line);
  return counters;
}

void print_counters(const netpasst_guest& g, const json& counters, std::pair<long, long> drops) {
  std::printf("\n%s: tap tx dropped (guest frames the bridge could not take in time) %ld, tap rx dropped %ld\n",
              g.label.c_str(), drops.first, drops.second);
  if (!counters.is_object()) return;
  const auto& tap = counters["tap"];
  std::printf("  tap checksums completed %llu, trusted %llu, frames dropped on receipt %llu, sends would block %llu\n",
              tap.value("checksums_completed", 0ull), tap.value("checksums_trusted", 0ull),
              tap.value("frames_dropped_received", 0ull), tap.value("sends_would_block", 0ull));
  for (const char* direction : {"guest_to_passt", "passt_to_guest"}) {
    const auto& c = counters[direction];
    std::printf("  bridge %-15s frames %llu, batches %llu, refused %llu, waits %llu, dropped %llu\n", direction,
                c["frames"].get<unsigned long long>(), c["batches"].get<unsigned long long>(),
                c["refused"].get<unsigned long long>(), c["waits"].get<unsigned long long>(),
                c["dropped_invalid"].get<unsigned long long>() + c["dropped_at_end"].get<unsigned long long>());
  }
  std::printf("  passt restarts %llu\n", counters["passt"]["restarts"].get<unsigned long long>());
}

} // namespace

int main(int argc, char** argv) {
  int rounds = 5, seconds = 4;
  std::string passt = "/usr/bin/passt", pasta = "pasta", checksums = "both", guest_tcp_rmem, congestion_control,
              vhost_user_passt;
  std::vector<std::string> socket_buffers;
  bool runas_root = false, bad_usage = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--quick") rounds = 2, seconds = 2;
    else if (a == "--rounds") rounds = std::max(1, std::atoi(next().c_str()));
    else if (a == "--seconds") seconds = std::max(1, std::atoi(next().c_str()));
    else if (a == "--passt") passt = next();
    else if (a == "--pasta") pasta = next();
    else if (a == "--runas-root") runas_root = true;
    else if (a == "--checksums") checksums = next();
    else if (a == "--guest-tcp-rmem") guest_tcp_rmem = next();
    else if (a == "--congestion-control") congestion_control = next();
    else if (a == "--vhost-user-passt") bad_usage |= (vhost_user_passt = next()).empty();
    else if (a == "--socket-buffers") {
      std::istringstream list(next());
      for (std::string size; std::getline(list, size, ',');)
        if (size.empty() || size.find_first_not_of("0123456789") != std::string::npos) bad_usage = true;
        else socket_buffers.push_back(size);
      bad_usage |= socket_buffers.empty();
    }
    else bad_usage = true;
    if (bad_usage || (checksums != "on" && checksums != "off" && checksums != "both")) {
      std::fprintf(stderr, "usage: bench_tap [--quick] [--rounds N] [--seconds S] [--passt PATH] [--pasta PATH] "
                           "[--runas-root] [--checksums on|off|both] [--guest-tcp-rmem \"MIN DEFAULT MAX\"] "
                           "[--congestion-control NAME] [--socket-buffers BYTES[,BYTES...]] "
                           "[--vhost-user-passt PATH]\n");
      return 2;
    }
  }
  if (::geteuid() != 0) {
    std::fprintf(stderr, "bench_tap: needs root (namespaces, taps)\n");
    return 2;
  }
  if (!sh("iperf3 --version")) {
    std::fprintf(stderr, "bench_tap: iperf3 is not installed\n");
    return 2;
  }
  if (!enter_private_host()) return 1;
  if (!congestion_control.empty() && !set_congestion_control("", congestion_control)) return 1;

  char dir_template[] = "/tmp/netpasst-bench-tap-XXXXXX";
  if (!::mkdtemp(dir_template)) return 1;
  const std::string dir = dir_template;
  const std::string pasta_ns = "bench-pasta";
  const int pasta_port = 5203, host_port = 5202;

  // netpasst_tap per checksum mode, each with its own namespace and forwarded port.
  std::vector<netpasst_guest> guests;
  if (checksums != "off") guests.push_back({"netpasst", "bench-netpasst", dir + "/tap.out", 5201, {}, {}, 0, {}, {}, {}});
  if (checksums != "on") guests.push_back({"netpasst-plain", "bench-netpasst-plain", dir + "/tap-plain.out", 5204, {}, {}, 0, {}, {}, {}});
  for (std::size_t i = 0; i < socket_buffers.size(); ++i) {
    const std::string label = "netpasst-sb" + socket_buffers[i];
    guests.push_back({label, "bench-" + label, dir + "/tap-" + label + ".out", 5210 + int(i), {}, {}, 0,
                      socket_buffers[i], {}, {}});
  }
  // A passt built with --vhost-user: the stream transport and the vhost-user
  // transport over that same build, side by side; the vhost-user one also
  // with passt computing the checksums it sends (no GUEST_CSUM).
  if (!vhost_user_passt.empty()) {
    guests.push_back({"netpasst-upstream", "bench-netpasst-upstream", dir + "/tap-upstream.out", 5220, {}, {}, 0, {},
                      vhost_user_passt, {}});
    guests.push_back({"netpasst-vhost-user", "bench-netpasst-vhost-user", dir + "/tap-vhost-user.out", 5221, {}, {},
                      0, {}, vhost_user_passt, "vhost-user"});
    guests.push_back({"netpasst-vhost-user-csum", "bench-netpasst-vhost-user-csum", dir + "/tap-vhost-user-csum.out",
                      5222, {}, {}, 0, {}, vhost_user_passt, "vhost-user"});
  }
  for (auto& g : guests) {
    json config{{"tcp-ports", {std::to_string(g.port)}}};
    if (runas_root) config["runas"] = "0";
    const std::string config_path = dir + "/config-" + g.label + ".json";
    std::ofstream(config_path) << config.dump();
    std::vector<std::string> argv{NETPASST_TAP, "--netns", g.ns, "--config", config_path,
                                  "--passt", g.passt_path.empty() ? passt : g.passt_path};
    if (!g.transport.empty()) argv.insert(argv.end(), {"--transport", g.transport});
    if (g.label == "netpasst-plain") argv.push_back("--no-checksum-offload");
    if (g.label == "netpasst-vhost-user-csum") argv.push_back("--no-guest-checksum-offload");
    if (!g.socket_buffer.empty()) argv.insert(argv.end(), {"--socket-buffer", g.socket_buffer});
    g.vmm = std::make_unique<process>(argv, g.out);
    if (!wait_for_file_line(g.out, "\"lease\"", 20s)) {
      std::fprintf(stderr, "bench_tap: netpasst_tap did not get a lease:\n%s\n", capture("cat " + g.out).c_str());
      return 1;
    }
    g.passt = leased_passt(g.out);
  }

  // pasta in its own namespace, configured by itself; port pasta_port forwarded.
  sh("ip netns add " + pasta_ns);
  process pasta_process({pasta, "--runas", "0", "-f", "-q", "--config-net", "-t", std::to_string(pasta_port), "-u",
                         "none", "-T", "none", "-U", "none", "--netns", pasta_ns});
  for (int i = 0; i < 100 && !sh("ip -n " + pasta_ns + " -4 route show default | grep -q via"); ++i)
    std::this_thread::sleep_for(50ms);

  std::vector<std::string> guest_namespaces{pasta_ns};
  for (const auto& g : guests) guest_namespaces.push_back(g.ns);
  for (const auto& ns : guest_namespaces) {
    if (!guest_tcp_rmem.empty() &&
        !sh("ip netns exec " + ns + " sysctl -qw net.ipv4.tcp_rmem='" + guest_tcp_rmem + "'")) {
      std::fprintf(stderr, "bench_tap: cannot set net.ipv4.tcp_rmem to '%s' in %s\n", guest_tcp_rmem.c_str(),
                   ns.c_str());
      return 1;
    }
    if (!congestion_control.empty() && !set_congestion_control(ns, congestion_control)) return 1;
  }
  const std::string rmem = capture("ip netns exec " + pasta_ns + " sysctl -n net.ipv4.tcp_rmem");
  const std::string host_cc = capture("sysctl -n net.ipv4.tcp_congestion_control");
  const std::string guest_cc = capture("ip netns exec " + pasta_ns + " sysctl -n net.ipv4.tcp_congestion_control");

  process host_server({"iperf3", "-s", "-B", "127.0.0.1", "-p", std::to_string(host_port)});
  for (auto& g : guests)
    g.server = std::make_unique<process>(
        std::vector<std::string>{"ip", "netns", "exec", g.ns, "iperf3", "-s", "-p", std::to_string(g.port)});
  process pasta_server({"ip", "netns", "exec", pasta_ns, "iperf3", "-s", "-p", std::to_string(pasta_port)});
  std::this_thread::sleep_for(500ms);

  struct run {
    std::string name, client_ns, host; // client_ns: where iperf3's client runs ("" the host)
    int port;
    pid_t vmm, passt; // whose CPU time the run costs (vmm 0 for pasta)
  };
  std::vector<run> runs;
  for (const auto& g : guests) {
    const pid_t vmm = g.vmm->pid();
    runs.push_back({g.label + " guest->host", g.ns, "192.0.2.1", host_port, vmm, g.passt});
    runs.push_back({g.label + " host->guest", "", "192.0.2.10", g.port, vmm, g.passt});
    runs.push_back({g.label + " host(lo)->guest", "", "127.0.0.1", g.port, vmm, g.passt});
  }
  const pid_t pasta_pid = pasta_process.pid();
  runs.push_back({"pasta guest->host", pasta_ns, "192.0.2.1", host_port, 0, pasta_pid});
  runs.push_back({"pasta host->guest", "", "192.0.2.10", pasta_port, 0, pasta_pid});
  runs.push_back({"pasta host(lo)->guest", "", "127.0.0.1", pasta_port, 0, pasta_pid});
  std::map<std::string, double> vmm_cpu, passt_cpu, gigabytes, machine_busy, machine_all;

  const std::string load_before = loadavg();
  std::map<std::string, std::vector<double>> gbits;
  std::map<std::string, long> retransmits, timeouts;
  std::map<std::string, double> stalled;
  std::map<std::string, int> failures;
  std::vector<std::pair<long, long>> drops_before;
  for (const auto& g : guests) drops_before.push_back(tap_drops(g.ns, "tap0"));
  std::printf("bench_tap: %d rounds of %d s per direction, passt %s, pasta %s, checksum offload %s, guest "
              "net.ipv4.tcp_rmem %s\n  TCP congestion control: host %s, guests %s\n",
              rounds, seconds, passt.c_str(), pasta.c_str(),
              checksums == "both" ? "on (netpasst) and off (netpasst-plain)" : checksums.c_str(),
              trimmed(rmem).c_str(), trimmed(host_cc).c_str(), trimmed(guest_cc).c_str());
  for (int round = 1; round <= rounds; ++round) {
    std::printf("round %d:", round);
    for (const auto& r : runs) {
      const double vmm_before = r.vmm ? cpu_seconds(r.vmm) : 0, passt_before = cpu_seconds(r.passt);
      const machine_ticks machine_before = machine_cpu();
      const long timeouts_before = tcp_timeouts(r.client_ns);
      const measurement m = iperf(in_netns(r.client_ns), r.host, r.port, seconds);
      if (const long after = tcp_timeouts(r.client_ns); timeouts_before >= 0 && after >= 0)
        timeouts[r.name] += after - timeouts_before;
      if (!m.ok) ++failures[r.name];
      else gbits[r.name].push_back(m.gbits), retransmits[r.name] += m.retransmits, stalled[r.name] += m.stalled_seconds;
      if (m.ok) {
        vmm_cpu[r.name] += r.vmm ? cpu_seconds(r.vmm) - vmm_before : 0;
        passt_cpu[r.name] += cpu_seconds(r.passt) - passt_before;
        const machine_ticks machine_after = machine_cpu();
        machine_busy[r.name] += machine_after.busy - machine_before.busy;
        machine_all[r.name] += machine_after.all - machine_before.all;
        gigabytes[r.name] += m.gbits * seconds / 8;
      }
      std::printf("  %s %.2f", r.name.c_str(), m.ok ? m.gbits : -1.0);
      std::fflush(stdout);
    }
    std::printf("\n");
  }
  std::vector<std::pair<long, long>> drops;
  for (std::size_t i = 0; i < guests.size(); ++i) {
    const auto after = tap_drops(guests[i].ns, "tap0");
    drops.push_back({after.first - drops_before[i].first, after.second - drops_before[i].second});
    guests[i].vmm->signal(SIGUSR1);
  }
  std::this_thread::sleep_for(300ms);

  std::printf("\n%-32s %8s %8s %8s %6s %12s %9s %9s\n", "Gbit/s", "median", "min", "max", "runs", "retransmits",
              "timeouts", "stalled");
  for (const auto& r : runs) {
    const auto& v = gbits[r.name];
    const int failed = failures.count(r.name) ? failures[r.name] : 0;
    std::printf("%-32s %8.2f %8.2f %8.2f %6zu %12ld %9ld %8.1fs%s\n", r.name.c_str(), median(v),
                v.empty() ? 0 : *std::min_element(v.begin(), v.end()),
                v.empty() ? 0 : *std::max_element(v.begin(), v.end()), v.size(), retransmits[r.name],
                timeouts[r.name], stalled[r.name], failed ? (" (" + std::to_string(failed) + " failed)").c_str() : "");
  }
  auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  std::printf("\nCPU seconds per GB moved     netpasst_tap   passt (pasta for pasta's runs)   machine busy (of %u "
              "cores)\n",
              cores);
  for (const auto& r : runs)
    std::printf("  %-30s %10.3f %10.3f %32.2f\n", r.name.c_str(), ratio(vmm_cpu[r.name], gigabytes[r.name]),
                ratio(passt_cpu[r.name], gigabytes[r.name]), cores * ratio(machine_busy[r.name], machine_all[r.name]));
  auto med = [&](const std::string& name) { return median(gbits[name]); };
  std::printf("\nratios (targets: >= 1.00)\n");
  for (const auto& g : guests) {
    const std::string& n = g.label;
    std::printf("  %-58s %.2f\n", (n + " guest->host / " + n + " host->guest").c_str(),
                ratio(med(n + " guest->host"), med(n + " host->guest")));
    std::printf("  %-58s %.2f\n", (n + " guest->host / pasta guest->host").c_str(),
                ratio(med(n + " guest->host"), med("pasta guest->host")));
    std::printf("  %-58s %.2f  (both through their taps)\n", (n + " host->guest / pasta host->guest").c_str(),
                ratio(med(n + " host->guest"), med("pasta host->guest")));
    std::printf("  %-58s %.2f  (pasta splices, no tap)\n", (n + " host(lo)->guest / pasta host(lo)->guest").c_str(),
                ratio(med(n + " host(lo)->guest"), med("pasta host(lo)->guest")));
  }
  for (std::size_t i = 0; i < guests.size(); ++i) print_counters(guests[i], last_counters(guests[i].out), drops[i]);
  std::printf("load average (1 min) before %s, after %s, on %u cores\n", load_before.c_str(), loadavg().c_str(),
              cores);

  host_server.stop(), pasta_server.stop();
  pasta_process.stop();
  for (auto& g : guests) g.server->stop(), g.vmm->stop(SIGTERM);
  sh("ip netns delete " + pasta_ns);
  std::filesystem::remove_all(dir);
  return failures.empty() ? 0 : 1;
}
