#pragma once
// A move-only, type-erased completion handler that keeps its associated
// executor busy (work guard) and is completed through it: lets an object park
// handlers of any token type and complete them later.

#include <asio/associated_executor.hpp>
#include <asio/dispatch.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>

#include <memory>
#include <tuple>
#include <utility>

namespace netpasst::detail {

template <class Signature> class erased_handler;

template <class... Args> class erased_handler<void(Args...)> {
  struct holder {
    virtual ~holder() = default;
    virtual void complete(bool defer, Args... args) = 0;
  };

  template <class Handler, class Executor> struct holder_for final : holder {
    Handler handler;
    asio::executor_work_guard<asio::associated_executor_t<Handler, Executor>> work;

    holder_for(Handler&& h, const Executor& fallback)
        : handler(std::move(h)), work(asio::get_associated_executor(handler, fallback)) {}

    void complete(bool defer, Args... args) override {
      auto executor = work.get_executor();
      auto call = [h = std::move(handler), tuple = std::make_tuple(std::move(args)...)]() mutable {
        std::apply(std::move(h), std::move(tuple));
      };
      if (defer) asio::post(executor, std::move(call));
      else asio::dispatch(executor, std::move(call));
      work.reset();
    }
  };

  std::unique_ptr<holder> holder_;

public:
  erased_handler() = default;

  /// Takes `handler`; `fallback` is the executor used when the handler has
  /// no associated one.
  template <class Handler, class Executor>
  erased_handler(Handler&& handler, const Executor& fallback)
      : holder_(std::make_unique<holder_for<std::decay_t<Handler>, Executor>>(std::forward<Handler>(handler),
                                                                               fallback)) {}

  explicit operator bool() const noexcept { return holder_ != nullptr; }

  /// Completes on the handler's executor, inline if already there.
  void operator()(Args... args) { std::exchange(holder_, nullptr)->complete(false, std::move(args)...); }

  /// Completes later, never inside this call.
  void post(Args... args) { std::exchange(holder_, nullptr)->complete(true, std::move(args)...); }
};

} // namespace netpasst::detail
