#include "gateway/http/openai_http_server.h"

#include <atomic>

#include <cstdio>
#include <ctime>
#include <list>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "boost/asio/io_context.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/post.hpp"
#include "boost/asio/ssl/context.hpp"
#include "boost/asio/strand.hpp"
#include "core/security/bearer_token.h"
#include "gateway/http/http_connection.h"
#include "gateway/http/openai_generation.h"
#include "gateway/http/openai_request.h"
#include "gateway/http/openai_response.h"

namespace moe {

namespace net = boost::asio;
using tcp = net::ip::tcp;

struct OpenAiHttpServer::Impl {
  explicit Impl(const OpenAiHttpOptions& o) : options(o), acceptor(io) {}

  void Accept();
  void Handle(HttpRequest request, std::shared_ptr<HttpExchange> exchange);
  void Generate(OpenAiEndpoint endpoint, const HttpRequest& request,
                const std::shared_ptr<HttpExchange>& exchange);
  bool Authorized(const HttpRequest& request) const;

  const OpenAiHttpOptions options;
  const int64_t created = static_cast<int64_t>(std::time(nullptr));
  // Declared before io, so that connections left in io's queue at
  // destruction go first.
  std::unique_ptr<net::ssl::context> tls;  // null: plain HTTP
  net::io_context io;
  tcp::acceptor acceptor;  // used on the io threads after Start
  std::shared_ptr<OpenAiBackend> backend;
  std::vector<std::thread> threads;
  int port = 0;
  // Set by StartDraining: /health answers 503 from then on.
  std::atomic<bool> draining{false};

  absl::Mutex mu;
  bool stopped ABSL_GUARDED_BY(mu) = false;
  std::list<std::weak_ptr<HttpConnection>> connections ABSL_GUARDED_BY(mu);
};

namespace {

void Reply(HttpExchange& exchange, const OpenAiError& error,
           std::vector<std::pair<std::string, std::string>> headers = {}) {
  HttpResponse response;
  response.status = error.http_status;
  response.body = OpenAiErrorBody(error);
  response.headers = std::move(headers);
  exchange.Send(std::move(response));
}

void ReplyJson(HttpExchange& exchange, std::string body) {
  HttpResponse response;
  response.body = std::move(body);
  exchange.Send(std::move(response));
}

}  // namespace

void OpenAiHttpServer::Impl::Accept() {
  acceptor.async_accept(
      net::make_strand(io),
      [this](boost::system::error_code ec, tcp::socket socket) {
        if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
        if (!ec) {
          HttpConnectionOptions connection_options;
          connection_options.max_body_bytes = options.max_body_bytes;
          std::shared_ptr<HttpConnection> connection = StartHttpConnection(
              std::move(socket), tls.get(), connection_options,
              [this](HttpRequest request, std::shared_ptr<HttpExchange> exchange) {
                Handle(std::move(request), std::move(exchange));
              });
          absl::MutexLock lock(&mu);
          if (stopped) {
            connection->Close();
            return;
          }
          connections.remove_if(
              [](const std::weak_ptr<HttpConnection>& c) { return c.expired(); });
          connections.push_back(connection);
        }
        Accept();
      });
}

bool OpenAiHttpServer::Impl::Authorized(const HttpRequest& request) const {
  if (options.bearer_token.empty()) return true;
  return security::ConstantTimeEquals(
      request.authorization,
      security::BearerAuthorizationValue(options.bearer_token));
}

void OpenAiHttpServer::Impl::Handle(HttpRequest request,
                                    std::shared_ptr<HttpExchange> exchange) {
  std::string path = request.target.substr(0, request.target.find('?'));
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const bool get = request.method == "GET";
  auto wrong_method = [&](const char* allowed) {
    Reply(*exchange,
          MakeOpenAiError(405, absl::StrCat("method ", request.method,
                                            " is not allowed on ", path,
                                            "; use ", allowed)),
          {{"Allow", allowed}});
  };
  if (path == "/health") {
    if (!get) return wrong_method("GET");
    if (draining.load()) {
      HttpResponse response;
      response.status = 503;
      response.body = R"({"status":"draining"})";
      return exchange->Send(std::move(response));
    }
    return ReplyJson(*exchange, R"({"status":"ok"})");
  }
  if (!Authorized(request)) {
    return Reply(*exchange,
                 MakeOpenAiError(401, security::kInvalidBearerToken, "",
                                 "invalid_api_key"),
                 {{"WWW-Authenticate", "Bearer"}});
  }
  if (path == "/v1/completions" || path == "/v1/chat/completions") {
    if (request.method != "POST") return wrong_method("POST");
    return Generate(path == "/v1/completions"
                        ? OpenAiEndpoint::kCompletions
                        : OpenAiEndpoint::kChatCompletions,
                    request, exchange);
  }
  if (path == "/v1/models") {
    if (!get) return wrong_method("GET");
    return ReplyJson(*exchange, ModelListBody(options.model_name, created));
  }
  if (absl::StartsWith(path, "/v1/models/")) {
    if (!get) return wrong_method("GET");
    const std::string id = path.substr(11);
    if (id != options.model_name) {
      return Reply(*exchange,
                   MakeOpenAiError(404,
                                   absl::StrCat("the model '", id,
                                                "' does not exist"),
                                   "model", "model_not_found"));
    }
    return ReplyJson(*exchange, ModelBody(options.model_name, created));
  }
  Reply(*exchange, MakeOpenAiError(404, absl::StrCat("no such path: ", path),
                                   "", "unknown_url"));
}

void OpenAiHttpServer::Impl::Generate(
    OpenAiEndpoint endpoint, const HttpRequest& request,
    const std::shared_ptr<HttpExchange>& exchange) {
  absl::StatusOr<OpenAiRequest> parsed =
      ParseOpenAiRequest(endpoint, request.body, options.model_name);
  if (!parsed.ok()) {
    return Reply(*exchange, OpenAiErrorFromStatus(parsed.status(), nullptr));
  }
  StartOpenAiGeneration(backend, *std::move(parsed), exchange);
}

absl::StatusOr<std::unique_ptr<OpenAiHttpServer>> OpenAiHttpServer::Start(
    const OpenAiHttpOptions& options, std::shared_ptr<grpc::Channel> channel) {
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("http: port must be in [0, 65535], got ", options.port));
  }
  if (options.tls_cert_pem.empty() != options.tls_key_pem.empty()) {
    return absl::InvalidArgumentError(
        "http: TLS needs both a certificate and a private key");
  }
  auto impl = std::make_shared<Impl>(options);
  boost::system::error_code ec;
  if (!options.tls_cert_pem.empty()) {
    impl->tls = std::make_unique<net::ssl::context>(net::ssl::context::tls_server);
    impl->tls->set_options(net::ssl::context::default_workarounds |
                               net::ssl::context::no_sslv2 |
                               net::ssl::context::no_sslv3 |
                               net::ssl::context::no_tlsv1 |
                               net::ssl::context::no_tlsv1_1,
                           ec);
    if (!ec) {
      impl->tls->use_certificate_chain(net::buffer(options.tls_cert_pem), ec);
    }
    if (!ec) {
      impl->tls->use_private_key(net::buffer(options.tls_key_pem),
                                 net::ssl::context::pem, ec);
    }
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat("http: TLS identity: ", ec.message()));
    }
  }

  impl->backend = std::make_shared<OpenAiBackend>(
      v1::Inference::NewStub(std::move(channel)), options.bearer_token,
      options.model_name, options.tokenizer);

  tcp::endpoint endpoint;
  const std::string host = options.host.empty() ? "127.0.0.1" : options.host;
  const net::ip::address address = net::ip::make_address(host, ec);
  if (!ec) {
    endpoint = tcp::endpoint(address, static_cast<unsigned short>(options.port));
  } else {
    tcp::resolver resolver(impl->io);
    auto results = resolver.resolve(host, std::to_string(options.port), ec);
    if (ec || results.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("http: cannot resolve host '", host, "'"));
    }
    endpoint = results.begin()->endpoint();
  }
  tcp::acceptor& acceptor = impl->acceptor;
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat(
        "http: cannot listen on ", host, ":", options.port, ": ", ec.message()));
  }
  impl->port = acceptor.local_endpoint(ec).port();
  impl->Accept();
  for (int i = 0; i < kIoThreads; ++i) {
    impl->threads.emplace_back([io = &impl->io] { io->run(); });
  }
  return std::unique_ptr<OpenAiHttpServer>(new OpenAiHttpServer(std::move(impl)));
}

OpenAiHttpServer::OpenAiHttpServer(std::shared_ptr<Impl> impl)
    : impl_(std::move(impl)) {}

OpenAiHttpServer::~OpenAiHttpServer() { Shutdown(); }

int OpenAiHttpServer::port() const { return impl_->port; }

void OpenAiHttpServer::StartDraining() { impl_->draining = true; }

void OpenAiHttpServer::Shutdown() {
  std::list<std::weak_ptr<HttpConnection>> connections;
  {
    absl::MutexLock lock(&impl_->mu);
    if (impl_->stopped) return;
    impl_->stopped = true;
    connections.swap(impl_->connections);
  }
  net::post(impl_->acceptor.get_executor(), [impl = impl_.get()] {
    boost::system::error_code ignored;
    impl->acceptor.close(ignored);
  });
  for (const std::weak_ptr<HttpConnection>& weak : connections) {
    if (std::shared_ptr<HttpConnection> connection = weak.lock()) {
      connection->Close();
    }
  }
  // Closing a connection cancels its call; the calls post to the
  // io_context until they end, so it must outlive them.
  if (!impl_->backend->WaitForNoCalls(absl::Seconds(30))) {
    std::fprintf(stderr, "gateway: HTTP calls still running at shutdown\n");
    new std::shared_ptr<Impl>(impl_);  // leaked on purpose: they use it
  }
  impl_->io.stop();
  for (std::thread& thread : impl_->threads) thread.join();
  impl_->threads.clear();
}

}  // namespace moe
