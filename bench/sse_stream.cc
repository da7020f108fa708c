#include "bench/sse_stream.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace moe::bench {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
using tcp = boost::asio::ip::tcp;

struct Url {
  std::string host, port, target;
};

absl::StatusOr<Url> ParseUrl(const std::string& url) {
  constexpr absl::string_view kScheme = "http://";
  if (!absl::StartsWith(url, kScheme)) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", url, "\" is not an http:// URL"));
  }
  const std::string rest = url.substr(kScheme.size());
  const size_t slash = rest.find('/');
  const std::string authority = rest.substr(0, slash);
  const size_t colon = authority.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("\"", url, "\" has no port"));
  }
  return Url{authority.substr(0, colon), authority.substr(colon + 1),
             slash == std::string::npos ? "/" : rest.substr(slash)};
}

// Splits the body bytes received so far into events ("...\n\n") and
// records the ones with token ids.
class EventReader {
 public:
  explicit EventReader(StreamTimes& times) : times_(times) {}

  void Add(absl::string_view bytes) {
    pending_.append(bytes.data(), bytes.size());
    size_t end;
    while ((end = pending_.find("\n\n")) != std::string::npos) {
      OnEvent(pending_.substr(0, end));
      pending_.erase(0, end + 2);
    }
  }
  bool done() const { return done_; }

 private:
  void OnEvent(const std::string& event) {
    if (!absl::StartsWith(event, "data: ")) return;
    const std::string data = event.substr(6);
    if (data == "[DONE]") {
      done_ = true;
      return;
    }
    const nlohmann::json chunk = nlohmann::json::parse(data, nullptr, false);
    if (chunk.is_discarded() || !chunk.contains("choices") ||
        chunk["choices"].empty()) {
      return;
    }
    const nlohmann::json& ids = chunk["choices"][0]["token_ids"];
    if (!ids.is_array() || ids.empty()) return;
    const Clock::time_point now = Clock::now();
    if (times_.tokens == 0) times_.first = now;
    times_.last = now;
    times_.tokens += static_cast<int>(ids.size());
  }

  StreamTimes& times_;
  std::string pending_;
  bool done_ = false;
};

}  // namespace

absl::StatusOr<StreamTimes> RunSseStream(const std::string& url,
                                         const std::string& body) {
  absl::StatusOr<Url> parsed = ParseUrl(url);
  if (!parsed.ok()) return parsed.status();
  StreamTimes times;
  try {
    boost::asio::io_context io;
    tcp::resolver resolver(io);
    beast::tcp_stream stream(io);
    times.start = Clock::now();
    stream.connect(resolver.resolve(parsed->host, parsed->port));
    http::request<http::string_body> request{http::verb::post, parsed->target, 11};
    request.set(http::field::host, parsed->host);
    request.set(http::field::content_type, "application/json");
    request.body() = body;
    request.prepare_payload();
    http::write(stream, request);

    beast::flat_buffer buffer;
    http::response_parser<http::empty_body> parser;
    parser.body_limit(boost::none);
    http::read_header(stream, buffer, parser);
    if (parser.get().result() != http::status::ok) {
      return absl::UnavailableError(absl::StrCat(
          url, " answered HTTP ", parser.get().result_int()));
    }
    EventReader events(times);
    // The event stream comes as chunks; each is handed over as it arrives.
    auto on_chunk = [&events](std::uint64_t, beast::string_view data,
                              beast::error_code&) -> std::size_t {
      events.Add(absl::string_view(data.data(), data.size()));
      return data.size();
    };
    parser.on_chunk_body(on_chunk);
    while (!parser.is_done()) {
      beast::error_code error;
      http::read_some(stream, buffer, parser, error);
      if (error) {
        return absl::UnavailableError(
            absl::StrCat(url, ": reading the stream: ", error.message()));
      }
    }
    if (!events.done()) {
      return absl::DataLossError(absl::StrCat(url, ": no data: [DONE]"));
    }
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat(url, ": ", e.what()));
  }
  times.status = grpc::Status::OK;
  return times;
}

}  // namespace moe::bench
