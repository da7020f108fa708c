// One HTTP/1.1 connection (plain TCP or TLS) served with Boost.Beast:
// keep-alive, a body size limit (413), "Expect: 100-continue", whole
// responses and Server-Sent Event streams (chunked), and noticing a client
// that goes away while its request runs.
//
// Threads: each connection runs on its own strand of the server's
// io_context. The handler is called on that strand and must not block; it
// answers through the HttpExchange it is given, from any thread.
#ifndef MOE_GATEWAY_HTTP_HTTP_CONNECTION_H_
#define MOE_GATEWAY_HTTP_HTTP_CONNECTION_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/ssl/context.hpp"

namespace moe {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // the path, query string included
  std::string authorization;  // the Authorization header; "" when absent
  std::string body;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra ones
};

// The answer to one request: either Send, or StartEvents, SendEvent...,
// EndEvents. Thread-safe: every method may be called from any thread; the
// calls take effect on the connection's strand in the order they were
// made. Calls after the exchange ended (answered, or the client gone) do
// nothing. The object may outlive its connection.
class HttpExchange {
 public:
  virtual ~HttpExchange() = default;
  virtual void Send(HttpResponse response) = 0;
  // A 200 text/event-stream response whose body follows in events.
  virtual void StartEvents() = 0;
  // Writes "data: <data>\n\n" (`data` has no newline: it is one JSON line).
  virtual void SendEvent(std::string data) = 0;
  virtual void EndEvents() = 0;
  // `on_gone` runs once, on the connection's strand, if the client goes
  // away (or the server closes the connection) before the exchange ended;
  // at once (posted) when that already happened. A later call replaces an
  // earlier callback.
  virtual void OnGone(std::function<void()> on_gone) = 0;
};

// Called on the connection's strand for each complete request.
using HttpHandler =
    std::function<void(HttpRequest, std::shared_ptr<HttpExchange>)>;

struct HttpConnectionOptions {
  size_t max_body_bytes = 8 << 20;  // larger bodies get 413
  // How long a connection may wait for (the rest of) a request.
  double request_timeout_seconds = 120;
};

// A served connection, for the server to close at shutdown.
class HttpConnection {
 public:
  virtual ~HttpConnection() = default;
  // Closes the socket: a running exchange sees its client gone.
  // Thread-safe; idempotent.
  virtual void Close() = 0;
};

// Serves `socket` (TLS when `tls` is not null; it must outlive the
// connection) until the client or Close ends it. `handler` is copied; the
// connection keeps itself alive while it has I/O pending.
std::shared_ptr<HttpConnection> StartHttpConnection(
    boost::asio::ip::tcp::socket socket, boost::asio::ssl::context* tls,
    const HttpConnectionOptions& options, HttpHandler handler);

}  // namespace moe

#endif  // MOE_GATEWAY_HTTP_HTTP_CONNECTION_H_
