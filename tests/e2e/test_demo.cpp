// The README's demo program against real passt, in the private namespace of
// e2e_main: its JSON report, --watch across a SIGKILL of passt, bad config.
#include "e2e_env.hpp"

#include <nlohmann/json.hpp>
#include <catch2/catch.hpp>

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#ifndef NETPASST_DEMO
#error "NETPASST_DEMO (the netpasst_demo binary) must be defined by the build"
#endif

namespace {

struct command_result {
  int status = -1;
  std::string out;
};

// Runs `command` with sh, stdout captured (stderr merged when asked).
command_result run(const std::string& command) {
  command_result r;
  FILE* pipe = ::popen(command.c_str(), "r");
  REQUIRE(pipe);
  char buffer[4096];
  while (std::size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) r.out.append(buffer, n);
  const int status = ::pclose(pipe);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string demo() { return std::string(NETPASST_DEMO) + " --passt " + netpasst::e2e::passt_binary(); }

bool gone(pid_t pid) {
  if (::kill(pid, 0) != 0) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const auto paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z';
}

} // namespace

TEST_CASE("netpasst_demo --json reports a lease, UDP and ICMP round trips through real passt", "[demo]") {
  if (!netpasst::e2e::in_private_netns) {
    WARN("not root: skipped (needs the private network namespace)");
    return;
  }
  const std::string launcher = GENERATE("daemon", "foreground");
  auto r = run(demo() + " --json --launcher " + launcher);
  INFO(r.out);
  REQUIRE(r.status == 0);
  const auto report = nlohmann::json::parse(r.out);
  CHECK(report["address"] == netpasst::e2e::template_address);
  CHECK(report["prefix_length"] == netpasst::e2e::template_prefix_length);
  CHECK(report["gateway"] == netpasst::e2e::template_gateway);
  CHECK(report["dns"].is_array());
  CHECK(report["mtu"] == 65520);
  CHECK(report["transport"] == "stream");
  CHECK(report["launcher"] == launcher);
  CHECK(report["startup_ms"].get<double>() > 0);
  CHECK(report["udp_rtt_ms"].get<double>() > 0);
  CHECK(report["ping_ms"].is_number());  // the namespace allows ping sockets
  const pid_t pid = report["passt_pid"].get<pid_t>();
  CHECK(pid > 1);
  CHECK(gone(pid));  // stopped cleanly before exit
}

TEST_CASE("netpasst_demo --watch prints events and a new lease after passt is killed", "[demo]") {
  if (!netpasst::e2e::in_private_netns) {
    WARN("not root: skipped (needs the private network namespace)");
    return;
  }
  // The shell prints the demo's pid first, then becomes the demo.
  FILE* pipe = ::popen(("echo $$; exec " + demo() + " --json --watch").c_str(), "r");
  REQUIRE(pipe);
  auto line = [&] {
    char buffer[8192];
    return std::fgets(buffer, sizeof buffer, pipe) ? std::string(buffer) : std::string();
  };
  const pid_t demo_pid = std::stoi(line());
  auto first = nlohmann::json::parse(line());
  REQUIRE(first["event"] == "lease");
  const pid_t first_passt = first["passt_pid"].get<pid_t>();
  REQUIRE(::kill(first_passt, SIGKILL) == 0);

  std::vector<std::string> events;
  pid_t second_passt = 0;
  while (second_passt == 0) {
    auto text = line();
    REQUIRE(!text.empty());
    auto j = nlohmann::json::parse(text);
    events.push_back(j["event"].get<std::string>());
    if (j["event"] == "lease") {
      CHECK(j["address"] == netpasst::e2e::template_address);
      second_passt = j["passt_pid"].get<pid_t>();
    }
  }
  CHECK(events == std::vector<std::string>{"link_down", "restarting", "link_up", "lease"});
  CHECK(second_passt != first_passt);

  REQUIRE(::kill(demo_pid, SIGTERM) == 0);
  std::vector<std::string> tail;
  for (auto text = line(); !text.empty(); text = line()) tail.push_back(nlohmann::json::parse(text)["event"]);
  CHECK(tail == std::vector<std::string>{"link_down", "stopped"});
  const int status = ::pclose(pipe);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(gone(second_passt));
}

TEST_CASE("SIGTERM during a restart whose passt hangs before exec ends the demo at once, wrapper's child and all",
          "[demo]") {
  if (!netpasst::e2e::in_private_netns) {
    WARN("not root: skipped (needs the private network namespace)");
    return;
  }
  const std::string launcher = GENERATE("daemon", "foreground");
  // A passt wrapper: the first start is passt itself; later ones start a
  // child of their own and hang, as a wrapper stuck before its exec would.
  const auto dir = std::filesystem::temp_directory_path() / ("netpasst-demo-hang-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto wrapper = dir / "passt-wrapper", marker = dir / "started", child = dir / "child";
  std::ofstream(wrapper) << "#!/bin/sh\n"
                            "if [ -e " << marker << " ]; then sleep 1000 & echo $! > " << child << "; wait; fi\n"
                            "touch " << marker << "\nexec " << netpasst::e2e::passt_binary() << " \"$@\"\n";
  std::filesystem::permissions(wrapper, std::filesystem::perms::owner_all);
  FILE* pipe = ::popen(("echo $$; exec " + std::string(NETPASST_DEMO) + " --passt " + wrapper.string() +
                        " --json --watch --launcher " + launcher)
                           .c_str(),
                       "r");
  REQUIRE(pipe);
  auto line = [&] {
    char buffer[8192];
    return std::fgets(buffer, sizeof buffer, pipe) ? std::string(buffer) : std::string();
  };
  const pid_t demo_pid = std::stoi(line());
  auto first = nlohmann::json::parse(line());
  REQUIRE(first["event"] == "lease");
  REQUIRE(::kill(first["passt_pid"].get<pid_t>(), SIGKILL) == 0);
  for (std::string text = line(); !text.empty(); text = line())
    if (nlohmann::json::parse(text)["event"] == "restarting") break;
  pid_t hanging = 0;
  for (int i = 0; i < 500 && hanging == 0; ++i) {
    std::ifstream(child) >> hanging;
    if (hanging == 0) ::usleep(10000);
  }
  REQUIRE(hanging > 1);
  const auto began = std::chrono::steady_clock::now();
  REQUIRE(::kill(demo_pid, SIGTERM) == 0);
  while (!line().empty()) {}
  const int status = ::pclose(pipe);
  const auto took = std::chrono::steady_clock::now() - began;
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  // A hang guard, far above the stop's own bound: the launch's 10 s start
  // timeout must not be what ended it.
  CHECK(took < std::chrono::seconds(8));
  for (int i = 0; i < 500 && !gone(hanging); ++i) ::usleep(10000);
  CHECK(gone(hanging));
  std::filesystem::remove_all(dir);
}

TEST_CASE("netpasst_demo refuses a bad config with the JSON pointer and exit status 2", "[demo]") {
  auto path = std::filesystem::temp_directory_path() / ("netpasst-demo-bad-" + std::to_string(::getpid()) + ".json");
  std::ofstream(path) << R"({"mtu": "big", "search": ["ok.example", 7]})";
  auto r = run(std::string(NETPASST_DEMO) + " --config " + path.string() + " 2>&1");
  std::filesystem::remove(path);
  INFO(r.out);
  CHECK(r.status == 2);
  CHECK_THAT(r.out, Catch::Contains("/mtu"));
  CHECK_THAT(r.out, Catch::Contains("/search/1"));
}
