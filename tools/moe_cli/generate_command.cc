#include "tools/moe_cli/generate_command.h"

#include <atomic>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "core/rpc/channel_util.h"
#include "grpcpp/client_context.h"
#include "moe/v1/generate.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tools/moe_cli/cli_rpc.h"

namespace moe::cli {
namespace {

// Cancels `context` when SIGINT or SIGTERM arrives while it lives.
class CancelOnSignal {
 public:
  explicit CancelOnSignal(grpc::ClientContext& context)
      : thread_([this, &context] {
          sigset_t signals;
          sigemptyset(&signals);
          sigaddset(&signals, SIGINT);
          sigaddset(&signals, SIGTERM);
          const timespec poll = {0, 100 * 1000 * 1000};
          while (!done_.load()) {
            const int signal = sigtimedwait(&signals, nullptr, &poll);
            if (signal > 0) {
              signal_.store(signal);
              context.TryCancel();
              return;
            }
          }
        }) {}
  ~CancelOnSignal() {
    done_.store(true);
    thread_.join();
  }
  int signal() const { return signal_.load(); }

 private:
  std::atomic<bool> done_{false};
  std::atomic<int> signal_{0};
  std::thread thread_;  // last: starts once the atomics exist
};

std::string FinishReasonName(moe::v1::FinishReason reason) {
  switch (reason) {
    case moe::v1::FINISH_REASON_STOP:
      return "stop";
    case moe::v1::FINISH_REASON_LENGTH:
      return "length";
    case moe::v1::FINISH_REASON_ABORT:
      return "abort";
    default:
      return "unspecified";
  }
}

nlohmann::json UsageJson(const moe::v1::Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens()},
          {"completion_tokens", u.completion_tokens()},
          {"cached_tokens", u.cached_tokens()},
          {"queue_seconds", u.queue_seconds()},
          {"prefill_seconds", u.prefill_seconds()},
          {"transfer_seconds", u.transfer_seconds()},
          {"transfer_bytes", u.transfer_bytes()},
          {"decode_seconds", u.decode_seconds()}};
}

nlohmann::json LogprobsJson(const std::vector<moe::v1::TokenLogprobs>& all) {
  nlohmann::json out = nlohmann::json::array();
  for (const moe::v1::TokenLogprobs& t : all) {
    nlohmann::json top = nlohmann::json::array();
    for (const moe::v1::TopLogprob& p : t.top()) {
      top.push_back({{"token_id", p.token_id()}, {"logprob", p.logprob()}});
    }
    out.push_back(
        {{"token_id", t.token_id()}, {"logprob", t.logprob()}, {"top", top}});
  }
  return out;
}

std::string LogprobLine(const moe::v1::TokenLogprobs& t) {
  std::string line =
      absl::StrFormat("  token %d: logprob %.4f", t.token_id(), t.logprob());
  if (t.top_size() > 0) {
    absl::StrAppend(
        &line, " | top: ",
        absl::StrJoin(
            t.top(), ", ", [](std::string* out, const moe::v1::TopLogprob& p) {
              absl::StrAppend(
                  out, absl::StrFormat("%d %.4f", p.token_id(), p.logprob()));
            }));
  }
  return line;
}

std::string SummaryLine(const std::string& request_id,
                        moe::v1::FinishReason reason, const moe::v1::Usage& u,
                        double ttft_seconds, double e2e_seconds,
                        size_t tokens) {
  return absl::StrFormat(
      "finish: %s | request %s | tokens: prompt %d, completion %d, cached %d "
      "| server: queue %.3f s, prefill %.3f s, transfer %.3f s (%.1f KB), "
      "decode %.3f s | client: time to first token %.3f s, %.1f tokens/s",
      FinishReasonName(reason), request_id.empty() ? "-" : request_id,
      u.prompt_tokens(), u.completion_tokens(), u.cached_tokens(),
      u.queue_seconds(), u.prefill_seconds(), u.transfer_seconds(),
      u.transfer_bytes() / 1e3, u.decode_seconds(), ttft_seconds,
      e2e_seconds > 0 ? tokens / e2e_seconds : 0.0);
}

}  // namespace

GenerateOutcome StreamGenerate(const GenerateCommand& command) {
  auto stub = moe::v1::Inference::NewStub(MakeChannel(command.gateway));
  grpc::ClientContext context;
  ApplyTimeout(context, command.timeout_seconds);
  CancelOnSignal cancel(context);

  const absl::Time start = absl::Now();
  std::optional<absl::Time> first_token;
  std::vector<int32_t> output;
  std::vector<moe::v1::TokenLogprobs> logprobs;
  std::string request_id = command.request.request_id();
  moe::v1::FinishReason finish = moe::v1::FINISH_REASON_UNSPECIFIED;
  moe::v1::Usage usage;
  bool line_open = false;  // text mode: "output: ..." printed, no newline
  // A text prompt is answered in text; a prompt of ids in ids.
  const bool text_prompt =
      !command.request.prompt().empty() || command.request.messages_size() > 0;
  std::string text;

  std::unique_ptr<grpc::ClientReader<moe::v1::GenerateResponse>> reader =
      stub->Generate(&context, command.request);
  moe::v1::GenerateResponse response;
  while (reader->Read(&response)) {
    if (!response.request_id().empty()) request_id = response.request_id();
    if (response.token_ids_size() > 0 && !first_token.has_value()) {
      first_token = absl::Now();
    }
    text += response.text();
    if (!command.json && text_prompt) {
      std::fputs(response.text().c_str(), stdout);
      std::fflush(stdout);
      line_open = line_open || !response.text().empty();
    } else if (!command.json && response.token_ids_size() > 0) {
      std::string text = line_open ? "," : "output: ";
      absl::StrAppend(&text, absl::StrJoin(response.token_ids(), ","));
      std::fputs(text.c_str(), stdout);
      std::fflush(stdout);
      line_open = true;
    }
    output.insert(output.end(), response.token_ids().begin(),
                  response.token_ids().end());
    logprobs.insert(logprobs.end(), response.logprobs().begin(),
                    response.logprobs().end());
    if (response.finish_reason() != moe::v1::FINISH_REASON_UNSPECIFIED) {
      finish = response.finish_reason();
    }
    if (response.has_usage()) usage = response.usage();
  }
  const grpc::Status status = reader->Finish();
  const absl::Time end = absl::Now();
  if (line_open) {
    std::fputs("\n", stdout);
    std::fflush(stdout);
  }
  if (cancel.signal() != 0) {
    std::fprintf(stderr, "moe-cli: cancelled (%s)\n",
                 strsignal(cancel.signal()));
    return {128 + cancel.signal(), text};
  }
  if (!status.ok()) return {ReportRpcError(status), text};

  if (command.json) {
    nlohmann::json line;
    line["prompt_ids"] =
        std::vector<int32_t>(command.request.prompt_ids().begin(),
                             command.request.prompt_ids().end());
    line["output_ids"] = output;
    if (text_prompt || !text.empty()) line["text"] = text;
    line["finish_reason"] = FinishReasonName(finish);
    line["usage"] = UsageJson(usage);
    if (command.request.logprobs() > 0)
      line["logprobs"] = LogprobsJson(logprobs);
    std::printf("%s\n", line.dump().c_str());
    std::fflush(stdout);
    return {0, text};
  }
  if (!line_open && !text_prompt) std::printf("output: \n");
  for (const moe::v1::TokenLogprobs& t : logprobs) {
    std::printf("%s\n", LogprobLine(t).c_str());
  }
  const double ttft =
      first_token.has_value() ? absl::ToDoubleSeconds(*first_token - start) : 0;
  std::printf("%s\n",
              SummaryLine(request_id, finish, usage, ttft,
                          absl::ToDoubleSeconds(end - start), output.size())
                  .c_str());
  std::fflush(stdout);
  return {0, text};
}

int RunGenerate(const GenerateCommand& command) {
  return StreamGenerate(command).exit_code;
}

}  // namespace moe::cli
