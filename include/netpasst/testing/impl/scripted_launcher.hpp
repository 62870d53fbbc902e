#pragma once
// Implementation of netpasst/testing/scripted_launcher.hpp.

#include <netpasst/testing/scripted_launcher.hpp>

#include <asio/basic_waitable_timer.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/compose.hpp>
#include <asio/error.hpp>
#include <asio/post.hpp>

#include <sys/socket.h>

#include <cerrno>
#include <csignal>
#include <cstring>

namespace netpasst::testing {

inline void scripted_exit::exit(int status) {
  if (status_) return;
  status_ = status;
  for (auto& wake : std::exchange(waiters_, {})) wake();
}

inline bool scripted_exit::deliver(int sig) {
  if (status_) return true;
  signals_.push_back(sig);
  if (sig == SIGKILL || (sig == SIGTERM && exits_on_sigterm_)) exit(128 + sig);
  return status_.has_value();
}

inline void scripted_exit::on_exit(std::function<void()> wake) {
  if (status_) return wake();
  waiters_.push_back(std::move(wake));
}

} // namespace netpasst::testing

namespace netpasst::testing::detail {

using clock = std::chrono::steady_clock;
template <class Executor>
using scripted_timer = asio::basic_waitable_timer<clock, asio::wait_traits<clock>, Executor>;

template <class Executor> struct scripted_launcher_state {
  explicit scripted_launcher_state(const Executor& e) : executor(e) {}
  Executor executor;
  std::deque<launch_script> script;
  std::function<void(scripted_launch)> on_launch;
  std::size_t launches = 0;
  std::vector<std::string> last_argv;
  std::vector<std::shared_ptr<scripted_exit>> processes;
};

/// Waits on a never-expiring timer that `exit()` cancels; returns false
/// (and waits) while the process runs.
template <class Executor, class Self>
bool wait_for_exit(const std::shared_ptr<scripted_exit>& process, std::shared_ptr<scripted_timer<Executor>>& timer,
                   const Executor& executor, Self& self) {
  if (!process || process->status()) return true;
  if (!timer) {
    timer = std::make_shared<scripted_timer<Executor>>(executor, clock::time_point::max());
  }
  process->on_exit([weak = std::weak_ptr(timer)] {
    if (auto t = weak.lock()) t->cancel();
  });
  timer->async_wait(std::move(self));
  return false;
}

template <class Executor> struct scripted_wait_exit_op {
  std::shared_ptr<scripted_exit> process;
  Executor executor;
  std::shared_ptr<scripted_timer<Executor>> timer;
  bool started = false;

  template <class Self> void operator()(Self& self, std::error_code = {}) {
    if (!started) {
      started = true;
      self.reset_cancellation_state(asio::enable_total_cancellation());
      if (!process || process->status()) return asio::post(executor, std::move(self));
    } else if (self.get_cancellation_state().cancelled() != asio::cancellation_type::none) {
      return self.complete(asio::error::operation_aborted, -1);
    }
    if (wait_for_exit(process, timer, executor, self)) self.complete({}, process ? *process->status() : -1);
  }
};

template <class Executor> struct scripted_terminate_op {
  std::shared_ptr<scripted_exit> process;
  Executor executor;
  std::chrono::milliseconds grace;
  std::shared_ptr<scripted_timer<Executor>> timer;
  int step = 0;

  template <class Self> void operator()(Self& self, std::error_code = {}) {
    switch (step) {
      case 0:
        step = 1;
        self.reset_cancellation_state(asio::enable_total_cancellation());
        if (process && !process->deliver(SIGTERM)) {
          {
            step = 2;
            timer = std::make_shared<scripted_timer<Executor>>(executor, grace);
            return timer->async_wait(std::move(self));
          }
        }
        return asio::post(executor, std::move(self));
      case 2:
        if (self.get_cancellation_state().cancelled() != asio::cancellation_type::none)
          return self.complete(asio::error::operation_aborted);
        process->deliver(SIGKILL);
        return self.complete({});
      default: return self.complete({});
    }
  }
};

template <class Executor> struct scripted_launch_op {
  std::shared_ptr<scripted_launcher_state<Executor>> state;
  std::vector<std::string> argv;
  launch_script script;
  std::shared_ptr<scripted_timer<Executor>> never;
  bool started = false;

  template <class Self> void operator()(Self& self, std::error_code = {}) {
    using outcome = launch_script::outcome;
    auto& s = *state;
    if (!started) {
      started = true;
      ++s.launches;
      s.last_argv = argv;
      if (!s.script.empty()) script = std::move(s.script.front()), s.script.pop_front();
      if (script.result == outcome::never_ready) {
        never = std::make_shared<scripted_timer<Executor>>(s.executor, clock::time_point::max());
        return never->async_wait(std::move(self));  // ends only by cancellation
      }
      return asio::post(s.executor, std::move(self));
    }
    basic_scripted_process<Executor> process;
    process.executor_ = s.executor;
    if (script.result == outcome::never_ready) return self.complete(asio::error::operation_aborted, std::move(process));
    if (script.result == outcome::fail) {
      process.failure_ = script.message;
      return self.complete(script.error, std::move(process));
    }
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
      process.failure_ = std::string("socketpair: ") + std::strerror(errno);
      return self.complete(std::error_code(errno, std::system_category()), std::move(process));
    }
    process.socket_.reset(pair[0]);
    process.exit_ = std::make_shared<scripted_exit>();
    process.exit_->pid_ = pid_t(4194304 + s.processes.size() + 1);  // above any kernel's pid_max
    process.exit_->exits_on_sigterm_ = script.exits_on_sigterm;
    s.processes.push_back(process.exit_);
    if (s.on_launch) s.on_launch(scripted_launch{argv, unique_fd(pair[1]), process.exit_});
    self.complete({}, std::move(process));
  }
};

} // namespace netpasst::testing::detail

namespace netpasst::testing {

template <class Executor> std::string basic_scripted_process<Executor>::exit_description() const {
  if (!exit_ || !exit_->status()) return {};
  const int status = *exit_->status();
  const std::string who = "passt (pid " + std::to_string(exit_->pid()) + ")";
  if (status > 128) return who + " was killed by signal " + std::to_string(status - 128);
  return who + " exited with status " + std::to_string(status);
}

template <class Executor>
template <asio::completion_token_for<void(std::error_code, int)> Token>
auto basic_scripted_process<Executor>::async_wait_exit(Token&& token) {
  return asio::async_compose<Token, void(std::error_code, int)>(
      detail::scripted_wait_exit_op<Executor>{exit_, executor_, nullptr}, token, executor_);
}

template <class Executor>
template <asio::completion_token_for<void(std::error_code)> Token>
auto basic_scripted_process<Executor>::async_terminate(std::chrono::milliseconds grace, Token&& token) {
  socket_.reset();
  return asio::async_compose<Token, void(std::error_code)>(
      detail::scripted_terminate_op<Executor>{exit_, executor_, grace, nullptr}, token, executor_);
}

template <class Executor>
void basic_scripted_process<Executor>::terminate(std::chrono::milliseconds, std::error_code& ec) noexcept {
  ec.clear();
  socket_.reset();
  if (exit_ && !exit_->deliver(SIGTERM)) exit_->deliver(SIGKILL);
}

template <class Executor>
basic_scripted_launcher<Executor>::basic_scripted_launcher(const executor_type& executor)
    : state_(std::make_shared<detail::scripted_launcher_state<Executor>>(executor)) {}

template <class Executor> auto basic_scripted_launcher<Executor>::get_executor() const noexcept -> executor_type {
  return state_->executor;
}
template <class Executor> void basic_scripted_launcher<Executor>::script(launch_script next) {
  state_->script.push_back(std::move(next));
}
template <class Executor>
void basic_scripted_launcher<Executor>::on_launch(std::function<void(scripted_launch)> handler) {
  state_->on_launch = std::move(handler);
}
template <class Executor> std::size_t basic_scripted_launcher<Executor>::launches() const noexcept {
  return state_->launches;
}
template <class Executor>
const std::vector<std::string>& basic_scripted_launcher<Executor>::last_argv() const noexcept {
  return state_->last_argv;
}
template <class Executor>
const std::vector<std::shared_ptr<scripted_exit>>& basic_scripted_launcher<Executor>::processes() const noexcept {
  return state_->processes;
}

template <class Executor>
template <asio::completion_token_for<void(std::error_code, basic_scripted_process<Executor>)> Token>
auto basic_scripted_launcher<Executor>::async_launch(const std::vector<std::string>& argv, Token&& token) {
  return asio::async_compose<Token, void(std::error_code, process_type)>(
      detail::scripted_launch_op<Executor>{state_, argv, {}, nullptr}, token, state_->executor);
}

} // namespace netpasst::testing
