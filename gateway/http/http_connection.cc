#include "gateway/http/http_connection.h"

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <sstream>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "boost/asio/dispatch.hpp"
#include "boost/asio/post.hpp"
#include "boost/asio/write.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "boost/beast/ssl.hpp"
#include "gateway/http/openai_response.h"

namespace moe {
namespace {

namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

constexpr size_t kHeaderLimit = 64 << 10;
// Bytes a client may send ahead (pipelining) while its request streams.
constexpr size_t kMaxReadAhead = 1 << 20;
// After a 413, how long the rest of an unwanted body is read and dropped
// so that the client sees the response rather than a reset.
constexpr auto kLingerTime = std::chrono::seconds(5);
constexpr auto kTlsHandshakeTime = std::chrono::seconds(30);

std::string HeaderText(int status, const HttpResponse* response,
                       bool keep_alive, std::optional<size_t> content_length,
                       absl::string_view content_type) {
  http::response<http::empty_body> header;
  header.version(11);
  header.result(static_cast<unsigned>(status));
  header.set(http::field::server, "moe-gateway");
  header.set(http::field::content_type,
             beast::string_view(content_type.data(), content_type.size()));
  if (response != nullptr) {
    for (const auto& [name, value] : response->headers) {
      header.set(name, value);
    }
  }
  if (content_length.has_value()) {
    header.content_length(*content_length);
  } else {
    header.chunked(true);
    header.set(http::field::cache_control, "no-cache");
  }
  header.keep_alive(keep_alive);
  std::ostringstream out;
  out << header.base();
  return out.str();
}

std::string Chunk(absl::string_view data) {
  return absl::StrCat(absl::Hex(data.size()), "\r\n", data, "\r\n");
}

template <class Stream>
class Connection : public HttpConnection,
                   public std::enable_shared_from_this<Connection<Stream>> {
 public:
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

  Connection(Stream stream, const HttpConnectionOptions& options,
             HttpHandler handler)
      : stream_(std::move(stream)),
        options_(options),
        handler_(std::move(handler)) {}

  void Run() {
    if constexpr (kTls) {
      beast::get_lowest_layer(stream_).expires_after(kTlsHandshakeTime);
      stream_.async_handshake(
          net::ssl::stream_base::server,
          [self = this->shared_from_this()](beast::error_code ec) {
            if (ec) return self->Gone();
            self->ReadRequest();
          });
    } else {
      ReadRequest();
    }
  }

  void Close() override {
    net::post(stream_.get_executor(),
              [self = this->shared_from_this()] { self->Gone(); });
  }

  // The exchange's operations, on the strand; `seq` names the exchange.
  void DoSend(uint64_t seq, HttpResponse response) {
    if (!Current(seq) || started_) return;
    Write(HeaderText(response.status, &response, keep_alive_,
                     response.body.size(), response.content_type));
    Write(std::move(response.body));
    EndExchange();
  }
  void DoStartEvents(uint64_t seq) {
    if (!Current(seq) || started_) return;
    started_ = true;
    Write(HeaderText(200, nullptr, keep_alive_, std::nullopt,
                     "text/event-stream"));
  }
  void DoSendEvent(uint64_t seq, const std::string& data) {
    if (!Current(seq) || !started_) return;
    Write(Chunk(absl::StrCat("data: ", data, "\n\n")));
  }
  void DoEndEvents(uint64_t seq) {
    if (!Current(seq) || !started_) return;
    Write("0\r\n\r\n");
    EndExchange();
  }
  void DoOnGone(uint64_t seq, std::function<void()> on_gone) {
    if (Current(seq)) {
      on_gone_ = std::move(on_gone);
    } else if (seq == seq_ && closed_ && on_gone != nullptr) {
      on_gone();  // the client left before the callback came
    }
  }

  net::any_io_executor executor() { return stream_.get_executor(); }

 private:
  bool Current(uint64_t seq) const {
    return !closed_ && in_exchange_ && !ending_ && seq == seq_;
  }

  void ReadRequest() {
    if (closed_) return;
    parser_.emplace();
    parser_->header_limit(kHeaderLimit);
    parser_->body_limit(options_.max_body_bytes);
    beast::get_lowest_layer(stream_).expires_after(std::chrono::milliseconds(
        static_cast<int64_t>(options_.request_timeout_seconds * 1e3)));
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this()](beast::error_code ec, size_t) {
          self->OnHeader(ec);
        });
  }

  void OnHeader(beast::error_code ec) {
    if (ec) return OnReadError(ec);
    const auto& request = parser_->get();
    if (beast::iequals(request[http::field::expect], "100-continue")) {
      Write("HTTP/1.1 100 Continue\r\n\r\n");
    }
    http::async_read(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this()](beast::error_code ec, size_t) {
          if (ec) return self->OnReadError(ec);
          self->OnRequest();
        });
  }

  void OnReadError(beast::error_code ec) {
    if (ec == http::error::body_limit) {
      // Answer, then drop what the client still sends until it closes.
      keep_alive_ = false;
      Refuse(413, absl::StrCat("request body: larger than the limit of ",
                               options_.max_body_bytes, " bytes"),
             "request_too_large");
      return;
    }
    if (ec == http::error::end_of_stream || ec == net::error::eof ||
        ec == net::error::operation_aborted || ec == beast::error::timeout ||
        ec == net::ssl::error::stream_truncated ||
        ec == net::error::connection_reset) {
      return Gone();
    }
    keep_alive_ = false;
    Refuse(ec == http::error::header_limit ? 431 : 400,
           absl::StrCat("malformed HTTP request: ", ec.message()), "");
  }

  // An error answer before the request was complete; the connection
  // closes after it.
  void Refuse(int status, const std::string& message, const std::string& code) {
    in_exchange_ = true;
    ++seq_;
    ending_ = false;
    started_ = false;
    linger_ = true;
    HttpResponse response;
    response.status = status;
    response.body = OpenAiErrorBody(MakeOpenAiError(status, message, "", code));
    DoSend(seq_, std::move(response));
  }

  void OnRequest() {
    auto& message = parser_->get();
    HttpRequest request;
    request.method = std::string(message.method_string());
    request.target = std::string(message.target());
    request.authorization =
        std::string(message[http::field::authorization]);
    request.body = std::move(message.body());
    keep_alive_ = message.keep_alive();
    parser_.reset();
    in_exchange_ = true;
    ending_ = false;
    started_ = false;
    ++seq_;
    // While the request runs, a pending read notices the client leaving.
    beast::get_lowest_layer(stream_).expires_never();
    Watch();
    handler_(std::move(request), MakeExchange());
  }

  std::shared_ptr<HttpExchange> MakeExchange();

  void Watch() {
    if (watching_ || closed_ || buffer_.size() >= kMaxReadAhead) return;
    watching_ = true;
    stream_.async_read_some(
        buffer_.prepare(16 << 10),
        [self = this->shared_from_this()](beast::error_code ec, size_t n) {
          self->watching_ = false;
          if (ec) return self->Gone();
          self->buffer_.commit(n);
          if (self->in_exchange_) {
            self->Watch();
          } else {
            self->ReadRequest();  // the next request has begun
          }
        });
  }

  void Write(std::string data) {
    if (closed_) return;
    out_.push_back(std::move(data));
    if (!writing_) WriteNext();
  }

  void WriteNext() {
    writing_ = true;
    net::async_write(
        stream_, net::buffer(out_.front()),
        [self = this->shared_from_this()](beast::error_code ec, size_t) {
          self->writing_ = false;
          if (self->closed_) {
            self->out_.clear();  // what Gone kept for this write
            return;
          }
          if (ec) return self->Gone();
          self->out_.pop_front();
          if (!self->out_.empty()) return self->WriteNext();
          if (self->ending_) self->ExchangeDone();
        });
  }

  void EndExchange() {
    ending_ = true;
    if (!writing_ && out_.empty()) ExchangeDone();
  }

  // The answer is written.
  void ExchangeDone() {
    in_exchange_ = false;
    ending_ = false;
    on_gone_ = nullptr;
    if (linger_) return Linger();
    if (!keep_alive_) return Shutdown();
    if (!watching_) ReadRequest();  // else the watch's bytes start it
  }

  // Half-closes, then reads and drops until the client closes (or a
  // time limit), so that it gets the answer before the connection ends.
  void Linger() {
    beast::error_code ignored;
    if constexpr (!kTls) {
      beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_send,
                                                         ignored);
    }
    beast::get_lowest_layer(stream_).expires_after(kLingerTime);
    if (watching_) return;  // its end (an error) closes
    DrainNext();
  }
  void DrainNext() {
    if (closed_) return;
    buffer_.clear();
    watching_ = true;
    stream_.async_read_some(
        buffer_.prepare(64 << 10),
        [self = this->shared_from_this()](beast::error_code ec, size_t n) {
          self->watching_ = false;
          if (ec) return self->Gone();
          self->DrainNext();
        });
  }

  void Shutdown() {
    if constexpr (kTls) {
      beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(2));
      stream_.async_shutdown(
          [self = this->shared_from_this()](beast::error_code) { self->Gone(); });
    } else {
      beast::error_code ignored;
      beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_send,
                                                         ignored);
      Gone();
    }
  }

  // The end of the connection, whichever way it came.
  void Gone() {
    if (closed_) return;
    closed_ = true;
    // A write in flight still reads the front string: it goes when that
    // write completes (WriteNext's handler), the rest now.
    if (writing_) {
      out_.resize(1);
    } else {
      out_.clear();
    }
    beast::get_lowest_layer(stream_).close();
    if (std::function<void()> on_gone = std::move(on_gone_); on_gone) on_gone();
  }

  Stream stream_;
  const HttpConnectionOptions options_;
  HttpHandler handler_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::deque<std::string> out_;
  std::function<void()> on_gone_;
  uint64_t seq_ = 0;         // the current (or last) exchange
  bool in_exchange_ = false;  // a request is being answered
  bool ending_ = false;       // its answer is complete, being written
  bool started_ = false;      // its event stream has begun
  bool keep_alive_ = true;
  bool linger_ = false;
  bool writing_ = false;
  bool watching_ = false;
  bool closed_ = false;
};

template <class Stream>
class Exchange : public HttpExchange {
 public:
  Exchange(std::shared_ptr<Connection<Stream>> connection, uint64_t seq)
      : connection_(std::move(connection)), seq_(seq) {}

  void Send(HttpResponse response) override {
    Post([response = std::move(response)](Connection<Stream>& c,
                                          uint64_t seq) mutable {
      c.DoSend(seq, std::move(response));
    });
  }
  void StartEvents() override {
    Post([](Connection<Stream>& c, uint64_t seq) { c.DoStartEvents(seq); });
  }
  void SendEvent(std::string data) override {
    Post([data = std::move(data)](Connection<Stream>& c, uint64_t seq) {
      c.DoSendEvent(seq, data);
    });
  }
  void EndEvents() override {
    Post([](Connection<Stream>& c, uint64_t seq) { c.DoEndEvents(seq); });
  }
  void OnGone(std::function<void()> on_gone) override {
    Post([on_gone = std::move(on_gone)](Connection<Stream>& c,
                                        uint64_t seq) mutable {
      c.DoOnGone(seq, std::move(on_gone));
    });
  }

 private:
  template <class F>
  void Post(F f) {
    net::post(connection_->executor(),
              [connection = connection_, seq = seq_, f = std::move(f)]() mutable {
                f(*connection, seq);
              });
  }

  const std::shared_ptr<Connection<Stream>> connection_;
  const uint64_t seq_;
};

template <class Stream>
std::shared_ptr<HttpExchange> Connection<Stream>::MakeExchange() {
  return std::make_shared<Exchange<Stream>>(this->shared_from_this(), seq_);
}

}  // namespace

std::shared_ptr<HttpConnection> StartHttpConnection(
    tcp::socket socket, net::ssl::context* tls,
    const HttpConnectionOptions& options, HttpHandler handler) {
  beast::error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  if (tls != nullptr) {
    using TlsStream = beast::ssl_stream<beast::tcp_stream>;
    auto connection = std::make_shared<Connection<TlsStream>>(
        TlsStream(beast::tcp_stream(std::move(socket)), *tls), options,
        std::move(handler));
    net::dispatch(connection->executor(), [connection] { connection->Run(); });
    return connection;
  }
  auto connection = std::make_shared<Connection<beast::tcp_stream>>(
      beast::tcp_stream(std::move(socket)), options, std::move(handler));
  net::dispatch(connection->executor(), [connection] { connection->Run(); });
  return connection;
}

}  // namespace moe
