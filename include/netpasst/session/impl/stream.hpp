#pragma once
// Implementation of netpasst/session/stream.hpp.

#include <netpasst/session/stream.hpp>

#include <asio/compose.hpp>
#include <asio/post.hpp>

namespace netpasst::detail {

template <class Session> struct stream_attach_op {
  stream_attach_op(Session* s, unique_fd fd) : session(s), socket(std::move(fd)) {}
  Session* session;
  unique_fd socket;
  bool attached = false;
  std::error_code result;

  template <class Self> void operator()(Self& self) {
    if (attached) return self.complete(result);
    attached = true;
    try {
      session->attach(typename Session::transport_type(session->get_executor(), std::move(socket), session->config()));
    } catch (const std::system_error& e) {
      result = e.code();
    }
    asio::post(session->get_executor(), std::move(self));
  }
};

} // namespace netpasst::detail

namespace netpasst {

template <class Executor>
template <asio::completion_token_for<void(std::error_code)> Token>
auto basic_stream_session<Executor>::async_attach(unique_fd socket, Token&& token) {
  return asio::async_compose<Token, void(std::error_code)>(
      detail::stream_attach_op<basic_stream_session>(this, std::move(socket)), token, this->get_executor());
}

} // namespace netpasst
