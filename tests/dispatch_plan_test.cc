// Tests of router/dispatch_plan.h: capacity, overflow policies, replica
// choice and the per-server dispatch groups, against hand-worked batches and
// a plain reimplementation of the documented policy.
#include "router/dispatch_plan.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/gating.h"
#include "core/model_config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "router/placement_table.h"

namespace moe {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using Policy = CapacityOptions::OverflowPolicy;

ModelConfig Config(int experts, int k,
                   ModelFamily family = ModelFamily::kMixtral,
                   bool norm_topk_prob = false) {
  ModelConfig c;
  c.family = family;
  c.num_layers = 2;
  c.num_experts = experts;
  c.num_experts_per_tok = k;
  c.norm_topk_prob = norm_topk_prob;
  return c;
}

// replicas[x] = servers of expert x, on every layer.
PlacementTable Placement(int servers,
                         const std::vector<std::vector<int>>& replicas,
                         int layers = 2) {
  PlacementTable table(servers);
  for (int l = 0; l < layers; ++l) {
    for (size_t x = 0; x < replicas.size(); ++x) {
      for (int s : replicas[x]) EXPECT_TRUE(table.Add(l, x, s).ok());
    }
  }
  return table;
}

// Logits where token t ranks prefs[t] first, in that order, then the other
// experts tied (so by id).
std::vector<float> PreferenceLogits(const std::vector<std::vector<int>>& prefs,
                                    int experts) {
  std::vector<float> logits(prefs.size() * experts, 0.0f);
  for (size_t t = 0; t < prefs.size(); ++t) {
    for (size_t i = 0; i < prefs[t].size(); ++i) {
      logits[t * experts + prefs[t][i]] = 4.0f - 0.5f * i;
    }
  }
  return logits;
}

CapacityOptions Options(double factor, Policy policy, int server_cap = 0) {
  CapacityOptions o;
  o.capacity_factor = factor;
  o.per_server_token_cap = server_cap;
  o.policy = policy;
  return o;
}

std::vector<int32_t> SlotExperts(const DispatchPlan& plan) {
  std::vector<int32_t> v;
  for (const SlotAssignment& a : plan.slots) v.push_back(a.expert);
  return v;
}

std::vector<int32_t> SlotServers(const DispatchPlan& plan) {
  std::vector<int32_t> v;
  for (const SlotAssignment& a : plan.slots) v.push_back(a.server);
  return v;
}

// Checks the properties every plan must have, whatever the inputs.
void ExpectConsistent(const DispatchPlan& plan, const ModelConfig& config,
                      const PlacementTable& placement,
                      const CapacityOptions& options) {
  const int e = config.num_experts, k = plan.k;
  const int64_t slots = plan.tokens * k;
  ASSERT_EQ(plan.slots.size(), static_cast<size_t>(slots));
  ASSERT_EQ(plan.servers.size(), static_cast<size_t>(placement.num_servers()));
  ASSERT_EQ(plan.stats.experts.size(), static_cast<size_t>(e));
  EXPECT_EQ(plan.stats.slots, slots);

  // Every assigned slot appears in exactly one group, with its weight;
  // dropped slots in none.
  std::vector<int> seen(slots, 0);
  std::vector<int64_t> expert_tokens(e, 0);
  for (int s = 0; s < placement.num_servers(); ++s) {
    const ServerDispatch& server = plan.servers[s];
    int64_t n = 0;
    for (size_t g = 0; g < server.groups.size(); ++g) {
      const ExpertGroup& group = server.groups[g];
      if (g > 0) {
        EXPECT_LT(server.groups[g - 1].expert, group.expert);
      }
      ASSERT_FALSE(group.tokens.empty());
      ASSERT_EQ(group.tokens.size(), group.weights.size());
      auto hosts = placement.Replicas(plan.layer, group.expert);
      EXPECT_TRUE(std::count(hosts.begin(), hosts.end(), s) == 1)
          << "server " << s << " does not host expert " << group.expert;
      for (size_t i = 0; i < group.tokens.size(); ++i) {
        const int64_t t = group.tokens[i];
        if (i > 0) {
          EXPECT_LT(group.tokens[i - 1], t);
        }
        int matches = 0;
        for (int j = 0; j < k; ++j) {
          const SlotAssignment& a = plan.slots[t * k + j];
          if (a.expert != group.expert || a.server != s) continue;
          ++matches;
          ++seen[t * k + j];
          EXPECT_EQ(group.weights[i], plan.routing.weights[t * k + j]);
        }
        EXPECT_EQ(matches, 1) << "token " << t << " expert " << group.expert;
      }
      n += group.tokens.size();
      expert_tokens[group.expert] += group.tokens.size();
    }
    EXPECT_EQ(server.num_slots, n);
    if (options.per_server_token_cap > 0) {
      EXPECT_LE(server.num_slots, options.per_server_token_cap);
    }
  }
  int64_t dropped = 0;
  for (int64_t i = 0; i < slots; ++i) {
    const SlotAssignment& a = plan.slots[i];
    EXPECT_EQ(seen[i], a.dropped() ? 0 : 1) << "slot " << i;
    dropped += a.dropped();
    EXPECT_EQ(a.rerouted, !a.dropped() && a.expert != plan.routing.experts[i]);
    if (a.dropped()) {
      EXPECT_EQ(a.server, -1);
    }
  }
  EXPECT_EQ(dropped, plan.stats.dropped());

  // A token computes on distinct experts.
  for (int64_t t = 0; t < plan.tokens; ++t) {
    std::set<int32_t> experts;
    int assigned = 0;
    for (int j = 0; j < k; ++j) {
      if (plan.slots[t * k + j].dropped()) continue;
      experts.insert(plan.slots[t * k + j].expert);
      ++assigned;
    }
    EXPECT_EQ(experts.size(), static_cast<size_t>(assigned)) << "token " << t;
  }

  int64_t rerouted_in = 0, computed = 0;
  for (int x = 0; x < e; ++x) {
    const ExpertDispatchStats& st = plan.stats.experts[x];
    EXPECT_EQ(st.tokens, expert_tokens[x]) << "expert " << x;
    EXPECT_EQ(st.overflowed, st.rerouted + st.dropped) << "expert " << x;
    if (plan.capacity != kUnlimitedCapacity) {
      EXPECT_LE(st.tokens, plan.capacity) << "expert " << x;
    }
    rerouted_in += st.rerouted_in;
    computed += st.tokens;
  }
  EXPECT_EQ(computed + plan.stats.dropped(), slots);
  EXPECT_EQ(rerouted_in, plan.stats.rerouted());
  if (options.policy == Policy::kDrop) {
    EXPECT_EQ(plan.stats.rerouted(), 0);
  }
}

// The documented policy written as plainly as possible, sharing no code with
// the library: experts ranked by logit (softmax is monotone), capacity from
// the SPEC formula.
struct ReferenceResult {
  std::vector<int> experts;  // [tokens * k], -1 = dropped
  std::vector<int> servers;
  int64_t rerouted = 0;
  int64_t dropped = 0;
  std::vector<int> top_k;  // [tokens * k]
};

ReferenceResult ReferencePlan(const std::vector<float>& logits, int tokens,
                              int e, int k,
                              const std::vector<std::vector<int>>& replicas,
                              int num_servers, const CapacityOptions& options,
                              const std::vector<int64_t>& server_load) {
  std::vector<std::vector<int>> ranking(tokens);
  for (int t = 0; t < tokens; ++t) {
    for (int x = 0; x < e; ++x) ranking[t].push_back(x);
    std::stable_sort(ranking[t].begin(), ranking[t].end(), [&](int a, int b) {
      return logits[t * e + a] > logits[t * e + b];
    });
  }
  int64_t capacity = std::numeric_limits<int64_t>::max();
  if (options.capacity_factor > 0) {
    capacity = static_cast<int64_t>(
        std::ceil(options.capacity_factor * tokens * k / e));
  }
  const int cap = options.per_server_token_cap;
  std::vector<int64_t> expert_count(e, 0), server_count(num_servers, 0);
  auto replica_with_room = [&](int x) {
    if (expert_count[x] >= capacity) return -1;
    int best = -1;
    for (int s : replicas[x]) {  // ascending, so ties keep the lower id
      if (cap > 0 && server_count[s] >= cap) continue;
      if (best == -1 || server_count[s] + server_load[s] <
                            server_count[best] + server_load[best]) {
        best = s;
      }
    }
    return best;
  };

  ReferenceResult r;
  r.experts.assign(tokens * k, -1);
  r.servers.assign(tokens * k, -1);
  for (int t = 0; t < tokens; ++t) {
    for (int j = 0; j < k; ++j) r.top_k.push_back(ranking[t][j]);
  }
  for (int j = 0; j < k; ++j) {
    for (int t = 0; t < tokens; ++t) {
      int expert = ranking[t][j];
      int server = replica_with_room(expert);
      if (server < 0 && options.policy == Policy::kReroute) {
        for (int candidate : ranking[t]) {
          bool used = false;
          for (int jj = 0; jj < k; ++jj) {
            if (ranking[t][jj] == candidate ||
                r.experts[t * k + jj] == candidate) {
              used = true;
            }
          }
          if (used) continue;
          server = replica_with_room(candidate);
          if (server >= 0) {
            expert = candidate;
            ++r.rerouted;
            break;
          }
        }
      }
      if (server < 0) {
        ++r.dropped;
        continue;
      }
      r.experts[t * k + j] = expert;
      r.servers[t * k + j] = server;
      ++expert_count[expert];
      ++server_count[server];
    }
  }
  return r;
}

TEST(ExpertCapacityTest, FollowsTheSpecFormula) {
  EXPECT_EQ(ExpertCapacity(0, 100, 2, 8), kUnlimitedCapacity);
  EXPECT_EQ(ExpertCapacity(1.0, 16, 2, 8), 4);
  EXPECT_EQ(ExpertCapacity(1.25, 16, 2, 8), 5);
  EXPECT_EQ(ExpertCapacity(1.0, 10, 1, 4), 3);  // ceil(2.5)
  EXPECT_EQ(ExpertCapacity(0.25, 3, 1, 8), 1);  // ceil(0.09375)
  EXPECT_EQ(ExpertCapacity(0.1, 30, 1, 3), 1);  // not 2 from 0.1's rounding
  EXPECT_EQ(ExpertCapacity(0.5, 0, 2, 8), 0);
  EXPECT_EQ(ExpertCapacity(100.0, 10, 2, 4),
            10);  // an expert takes a token once
}

TEST(DispatchPlanTest, UnlimitedCapacityIsPlainTopK) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (int k = 1; k <= 3; ++k) {
    for (ModelFamily family : {ModelFamily::kMixtral, ModelFamily::kQwen2Moe}) {
      const ModelConfig config = Config(6, k, family);
      absl::StatusOr<PlacementTable> placement = AutoPlacement(config, 3, 2);
      ASSERT_TRUE(placement.ok());
      const int tokens = 17;
      std::vector<float> logits(tokens * 6);
      for (float& v : logits) v = normal(rng);
      const CapacityOptions options;  // defaults: unlimited
      absl::StatusOr<DispatchPlan> plan = PlanDispatch(
          config, 1, logits.data(), tokens, *placement, options, {});
      ASSERT_TRUE(plan.ok()) << plan.status();
      ExpectConsistent(*plan, config, *placement, options);

      const Routing want = RouteFromLogits(config, logits.data(), tokens);
      EXPECT_EQ(plan->routing.experts, want.experts);
      EXPECT_EQ(plan->routing.weights, want.weights);
      EXPECT_EQ(plan->capacity, kUnlimitedCapacity);
      EXPECT_EQ(plan->stats.overflowed(), 0);
      for (size_t i = 0; i < want.experts.size(); ++i) {
        EXPECT_EQ(plan->slots[i].expert, want.experts[i]);
        EXPECT_FALSE(plan->slots[i].rerouted);
      }

      // Combining per-group results gives the engine's mixture.
      auto expert_out = [](int x, int64_t t) { return std::sin(x + 0.37 * t); };
      std::vector<double> got(tokens, 0.0), direct(tokens, 0.0);
      for (const ServerDispatch& server : plan->servers) {
        for (const ExpertGroup& g : server.groups) {
          for (size_t i = 0; i < g.tokens.size(); ++i) {
            got[g.tokens[i]] +=
                g.weights[i] * expert_out(g.expert, g.tokens[i]);
          }
        }
      }
      for (int t = 0; t < tokens; ++t) {
        for (int j = 0; j < k; ++j) {
          direct[t] +=
              want.weights[t * k + j] * expert_out(want.experts[t * k + j], t);
        }
        EXPECT_NEAR(got[t], direct[t], 1e-6) << "token " << t;
      }
    }
  }
}

TEST(DispatchPlanTest, MatchesReferenceOnRandomBatches) {
  const int e = 8, num_servers = 3;
  std::mt19937 rng(2024);
  std::normal_distribution<float> normal(0.0f, 1.5f);
  std::uniform_int_distribution<int> small_int(0, 3);
  int64_t reroutes = 0, drops_reroute = 0, drops_drop = 0, cap_hits = 0;
  int plans = 0;
  for (double factor : {0.25, 0.5, 1.0, 1.25}) {
    for (int k = 1; k <= 3; ++k) {
      for (int replica_count = 1; replica_count <= 2; ++replica_count) {
        for (Policy policy : {Policy::kReroute, Policy::kDrop}) {
          for (int batch = 0; batch < 6; ++batch) {
            SCOPED_TRACE(absl::StrCat(
                "factor ", factor, " k ", k, " replicas ", replica_count,
                " policy ", policy == Policy::kDrop ? "drop" : "reroute",
                " batch ", batch));
            const ModelConfig config = Config(e, k);
            std::vector<std::vector<int>> replicas(e);
            for (auto& r : replicas) {
              std::vector<int> all = {0, 1, 2};
              std::shuffle(all.begin(), all.end(), rng);
              r.assign(all.begin(), all.begin() + replica_count);
              std::sort(r.begin(), r.end());
            }
            const PlacementTable placement = Placement(num_servers, replicas);
            const int tokens = std::uniform_int_distribution<int>(1, 40)(rng);
            // Odd batches: small integer logits, so ties are common; all:
            // a skew towards low ids so some experts overflow.
            std::vector<float> logits(tokens * e);
            for (int i = 0; i < tokens * e; ++i) {
              const float v = batch % 2 ? small_int(rng) : normal(rng);
              logits[i] = v - (batch % 3 == 0 ? 0.5f * (i % e) : 0.0f);
            }
            const int server_cap = batch >= 3 ? std::max(1, tokens * k / 4) : 0;
            const CapacityOptions options = Options(factor, policy, server_cap);
            std::vector<int64_t> load(num_servers, 0);
            if (batch % 2 == 0) {
              for (int64_t& l : load) l = small_int(rng);
            }

            absl::StatusOr<DispatchPlan> plan = PlanDispatch(
                config, 0, logits.data(), tokens, placement, options, load);
            ASSERT_TRUE(plan.ok()) << plan.status();
            ExpectConsistent(*plan, config, placement, options);
            const ReferenceResult ref = ReferencePlan(
                logits, tokens, e, k, replicas, num_servers, options, load);
            ASSERT_EQ(plan->routing.experts,
                      std::vector<int32_t>(ref.top_k.begin(), ref.top_k.end()));
            EXPECT_THAT(
                SlotExperts(*plan),
                ElementsAreArray(ref.experts.begin(), ref.experts.end()));
            EXPECT_THAT(
                SlotServers(*plan),
                ElementsAreArray(ref.servers.begin(), ref.servers.end()));
            EXPECT_EQ(plan->stats.rerouted(), ref.rerouted);
            EXPECT_EQ(plan->stats.dropped(), ref.dropped);
            ++plans;
            reroutes += ref.rerouted;
            (policy == Policy::kDrop ? drops_drop : drops_reroute) +=
                ref.dropped;
            for (const ServerDispatch& server : plan->servers) {
              cap_hits += server_cap > 0 && server.num_slots == server_cap;
            }
          }
        }
      }
    }
  }
  // The sweep exercised every path.
  EXPECT_EQ(plans, 4 * 3 * 2 * 2 * 6);
  EXPECT_GT(reroutes, 0);
  EXPECT_GT(drops_reroute, 0);
  EXPECT_GT(drops_drop, 0);
  EXPECT_GT(cap_hits, 0);
}

// Slot-major order: token 1's first choice takes the last place of expert 0
// before token 0's second choice asks for it.
TEST(DispatchPlanTest, FirstChoicesOfAllTokensComeBeforeSecondChoices) {
  const ModelConfig config = Config(4, 2);
  const PlacementTable placement = Placement(1, {{0}, {0}, {0}, {0}});
  // C = ceil(1.0 * 2 tokens * 2 / 4) = 1.
  const std::vector<float> logits = PreferenceLogits({{1, 0}, {0, 2}}, 4);
  absl::StatusOr<DispatchPlan> plan = PlanDispatch(
      config, 0, logits.data(), 2, placement, Options(1.0, Policy::kDrop), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->capacity, 1);
  // [t0 j0, t0 j1, t1 j0, t1 j1]
  EXPECT_THAT(SlotExperts(*plan), ElementsAre(1, -1, 0, 2));
  EXPECT_EQ(plan->stats.experts[0].overflowed, 1);
  EXPECT_EQ(plan->stats.experts[0].dropped, 1);
}

TEST(DispatchPlanTest, RerouteGoesToNextBestExpertAndKeepsTheWeight) {
  // No renormalisation, so the weight of a slot is its gate probability.
  const ModelConfig config = Config(4, 1, ModelFamily::kQwen2Moe, false);
  const PlacementTable placement = Placement(2, {{0}, {1}, {0}, {1}});
  const std::vector<float> logits =
      PreferenceLogits({{0}, {0, 2, 1, 3}, {0, 2, 3, 1}, {0, 1}}, 4);
  // C = ceil(1.0 * 4 * 1 / 4) = 1.
  absl::StatusOr<DispatchPlan> plan =
      PlanDispatch(config, 0, logits.data(), 4, placement,
                   Options(1.0, Policy::kReroute), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(SlotExperts(*plan), ElementsAre(0, 2, 3, 1));
  EXPECT_THAT(SlotServers(*plan), ElementsAre(0, 0, 1, 1));
  for (int t = 1; t < 4; ++t) EXPECT_TRUE(plan->slots[t].rerouted);

  const ExpertDispatchStats& e0 = plan->stats.experts[0];
  EXPECT_EQ(e0.tokens, 1);
  EXPECT_EQ(e0.overflowed, 3);
  EXPECT_EQ(e0.rerouted, 3);
  EXPECT_EQ(e0.dropped, 0);
  for (int x = 1; x < 4; ++x) {
    EXPECT_EQ(plan->stats.experts[x].rerouted_in, 1);
    EXPECT_EQ(plan->stats.experts[x].tokens, 1);
  }
  EXPECT_DOUBLE_EQ(plan->stats.Balancedness(), 1.0);

  // Token 2 computes on expert 3 with the weight it had for expert 0.
  ASSERT_EQ(plan->servers[1].groups.size(), 2u);
  const ExpertGroup& g = plan->servers[1].groups[1];
  EXPECT_EQ(g.expert, 3);
  EXPECT_THAT(g.tokens, ElementsAre(2));
  EXPECT_EQ(g.weights[0], plan->routing.weights[2]);
  EXPECT_EQ(plan->routing.experts[2], 0);
  EXPECT_LT(g.weights[0], 1.0f);
}

TEST(DispatchPlanTest, RerouteSkipsExpertsTheTokenAlreadyUses) {
  const ModelConfig config = Config(4, 2);
  const PlacementTable placement = Placement(1, {{0}, {0}, {0}, {0}});
  // C = ceil(1.0 * 3 * 2 / 4) = 2; every token ranks 0 > 1 > 2 > 3.
  const std::vector<float> logits =
      PreferenceLogits({{0, 1, 2, 3}, {0, 1, 2, 3}, {0, 1, 2, 3}}, 4);
  absl::StatusOr<DispatchPlan> plan =
      PlanDispatch(config, 0, logits.data(), 3, placement,
                   Options(1.0, Policy::kReroute), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->capacity, 2);
  // Token 2: slot 0 overflows expert 0 to expert 2; slot 1 overflows expert 1
  // and skips expert 2 (room left, but the token already uses it).
  EXPECT_THAT(SlotExperts(*plan), ElementsAre(0, 1, 0, 1, 2, 3));
}

TEST(DispatchPlanTest, RerouteDropsWhenNoExpertHasRoom) {
  const ModelConfig config = Config(2, 1);
  const PlacementTable placement = Placement(1, {{0}, {0}});
  // C = ceil(0.5 * 4 / 2) = 1.
  const std::vector<float> logits = PreferenceLogits({{0}, {0}, {0}, {0}}, 2);
  absl::StatusOr<DispatchPlan> plan =
      PlanDispatch(config, 0, logits.data(), 4, placement,
                   Options(0.5, Policy::kReroute), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(SlotExperts(*plan), ElementsAre(0, 1, -1, -1));
  const ExpertDispatchStats& e0 = plan->stats.experts[0];
  EXPECT_EQ(e0.overflowed, 3);
  EXPECT_EQ(e0.rerouted, 1);
  EXPECT_EQ(e0.dropped, 2);
  EXPECT_EQ(plan->stats.dropped(), 2);
  EXPECT_EQ(plan->servers[0].num_slots, 2);
}

TEST(DispatchPlanTest, DropPolicyDoesNotRenormaliseTheRest) {
  const ModelConfig config = Config(4, 2);  // Mixtral: top-k sums to 1
  const PlacementTable placement = Placement(1, {{0}, {0}, {0}, {0}});
  // C = ceil(1.0 * 3 * 2 / 4) = 2: token 2's first choice finds expert 0 full.
  const std::vector<float> logits =
      PreferenceLogits({{0, 1}, {0, 1}, {0, 2}}, 4);
  absl::StatusOr<DispatchPlan> plan = PlanDispatch(
      config, 0, logits.data(), 3, placement, Options(1.0, Policy::kDrop), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(SlotExperts(*plan), ElementsAre(0, 1, 0, 1, -1, 2));
  EXPECT_EQ(plan->stats.experts[0].dropped, 1);
  EXPECT_EQ(plan->stats.rerouted(), 0);

  float token2_weight = 0;
  for (const ExpertGroup& g : plan->servers[0].groups) {
    for (size_t i = 0; i < g.tokens.size(); ++i) {
      if (g.tokens[i] == 2) token2_weight += g.weights[i];
    }
  }
  EXPECT_EQ(token2_weight, plan->routing.weights[5]);
  EXPECT_LT(token2_weight, 0.5f);  // its second choice's share only
}

TEST(DispatchPlanTest, ReplicaChoiceBalancesLoad) {
  const ModelConfig config = Config(2, 1);
  const PlacementTable placement = Placement(3, {{0, 1, 2}, {0}});
  const std::vector<float> logits =
      PreferenceLogits(std::vector<std::vector<int>>(7, {0}), 2);
  absl::StatusOr<DispatchPlan> plan = PlanDispatch(
      config, 0, logits.data(), 7, placement, CapacityOptions(), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(SlotServers(*plan), ElementsAre(0, 1, 2, 0, 1, 2, 0));

  // Current load counts too: server 0 starts 2 behind.
  plan = PlanDispatch(config, 0, logits.data(), 6, placement, CapacityOptions(),
                      {2, 0, 0});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(SlotServers(*plan), ElementsAre(1, 2, 1, 2, 0, 1));
  EXPECT_EQ(plan->servers[0].num_slots, 1);
  EXPECT_EQ(plan->servers[1].num_slots, 3);
  EXPECT_EQ(plan->servers[2].num_slots, 2);
}

TEST(DispatchPlanTest, ServerCapSkipsFullReplicasThenOverflows) {
  const ModelConfig config = Config(2, 1);
  const PlacementTable placement = Placement(3, {{0, 1}, {2}});
  const std::vector<float> logits =
      PreferenceLogits(std::vector<std::vector<int>>(7, {0, 1}), 2);
  const CapacityOptions options = Options(0, Policy::kReroute, 2);
  absl::StatusOr<DispatchPlan> plan =
      PlanDispatch(config, 0, logits.data(), 7, placement, options, {0, 10, 0});
  ASSERT_TRUE(plan.ok()) << plan.status();
  ExpectConsistent(*plan, config, placement, options);
  // Server 0 is preferred until its cap, then server 1; with both at cap
  // expert 0 is full and tokens go to expert 1 until server 2's cap.
  EXPECT_THAT(SlotExperts(*plan), ElementsAre(0, 0, 0, 0, 1, 1, -1));
  EXPECT_THAT(SlotServers(*plan), ElementsAre(0, 0, 1, 1, 2, 2, -1));
  const ExpertDispatchStats& e0 = plan->stats.experts[0];
  EXPECT_EQ(e0.tokens, 4);
  EXPECT_EQ(e0.overflowed, 3);
  EXPECT_EQ(e0.rerouted, 2);
  EXPECT_EQ(e0.dropped, 1);
  EXPECT_EQ(plan->stats.experts[1].rerouted_in, 2);
}

TEST(DispatchPlanTest, TiedProbabilitiesPreferLowerIds) {
  const ModelConfig config = Config(4, 1);
  const PlacementTable placement = Placement(1, {{0}, {0}, {0}, {0}});
  const std::vector<float> logits(4 * 4, 0.5f);
  absl::StatusOr<DispatchPlan> plan =
      PlanDispatch(config, 0, logits.data(), 4, placement,
                   Options(1.0, Policy::kReroute), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(plan->routing.experts, ElementsAre(0, 0, 0, 0));
  EXPECT_THAT(SlotExperts(*plan), ElementsAre(0, 1, 2, 3));
}

TEST(DispatchPlanTest, SameInputGivesTheSamePlan) {
  const ModelConfig config = Config(8, 2);
  absl::StatusOr<PlacementTable> placement = AutoPlacement(config, 3, 2);
  ASSERT_TRUE(placement.ok());
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> logits(50 * 8);
  for (float& v : logits) v = normal(rng);
  const CapacityOptions options = Options(0.5, Policy::kReroute, 20);
  const std::vector<int64_t> load = {3, 0, 1};
  absl::StatusOr<DispatchPlan> a =
      PlanDispatch(config, 1, logits.data(), 50, *placement, options, load);
  absl::StatusOr<DispatchPlan> b =
      PlanDispatch(config, 1, logits.data(), 50, *placement, options, load);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_GT(a->stats.overflowed(), 0);
  EXPECT_EQ(SlotExperts(*a), SlotExperts(*b));
  EXPECT_EQ(SlotServers(*a), SlotServers(*b));
  ASSERT_EQ(a->servers.size(), b->servers.size());
  for (size_t s = 0; s < a->servers.size(); ++s) {
    ASSERT_EQ(a->servers[s].groups.size(), b->servers[s].groups.size());
    for (size_t g = 0; g < a->servers[s].groups.size(); ++g) {
      EXPECT_EQ(a->servers[s].groups[g].expert, b->servers[s].groups[g].expert);
      EXPECT_EQ(a->servers[s].groups[g].tokens, b->servers[s].groups[g].tokens);
      EXPECT_EQ(a->servers[s].groups[g].weights,
                b->servers[s].groups[g].weights);
    }
  }
  for (int x = 0; x < 8; ++x) {
    EXPECT_EQ(a->stats.experts[x].tokens, b->stats.experts[x].tokens);
    EXPECT_EQ(a->stats.experts[x].rerouted, b->stats.experts[x].rerouted);
    EXPECT_EQ(a->stats.experts[x].dropped, b->stats.experts[x].dropped);
  }
}

TEST(DispatchPlanTest, UsesThePlacementOfTheRequestedLayer) {
  const ModelConfig config = Config(2, 1);
  PlacementTable placement(2);
  ASSERT_TRUE(placement.Add(0, 0, 0).ok());
  ASSERT_TRUE(placement.Add(0, 1, 0).ok());
  ASSERT_TRUE(placement.Add(1, 0, 1).ok());
  const std::vector<float> logits = PreferenceLogits({{1}, {0}}, 2);
  absl::StatusOr<DispatchPlan> plan = PlanDispatch(
      config, 0, logits.data(), 2, placement, CapacityOptions(), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(SlotServers(*plan), ElementsAre(0, 0));

  plan = PlanDispatch(config, 1, logits.data(), 2, placement, CapacityOptions(),
                      {});
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(plan.status().message(), HasSubstr("(layer 1, expert 1)"));
  ASSERT_TRUE(placement.Add(1, 1, 1).ok());
  plan = PlanDispatch(config, 1, logits.data(), 2, placement, CapacityOptions(),
                      {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(SlotServers(*plan), ElementsAre(1, 1));
}

TEST(DispatchPlanTest, DownServersTakeNoSlotsAndReplicasTakeOver) {
  const ModelConfig config = Config(4, 2);
  // Experts 0 and 1 on servers 0 and 1; experts 2 and 3 on server 2 only.
  const PlacementTable placement = Placement(3, {{0, 1}, {0, 1}, {2}, {2}});
  const std::vector<float> logits =
      PreferenceLogits({{0, 1}, {1, 0}, {0, 1}}, 4);
  absl::StatusOr<DispatchPlan> plan =
      PlanDispatch(config, 0, logits.data(), 3, placement, CapacityOptions(),
                   {}, {true, false, false});
  ASSERT_TRUE(plan.ok()) << plan.status();
  for (const SlotAssignment& a : plan->slots) EXPECT_EQ(a.server, 1);
  EXPECT_TRUE(plan->failed_tokens.empty());
  EXPECT_TRUE(plan->servers[0].groups.empty());
}

TEST(DispatchPlanTest, AnExpertWithoutLiveReplicaFailsOnlyItsTokens) {
  const ModelConfig config = Config(4, 2);
  const PlacementTable placement = Placement(3, {{0, 1}, {0, 1}, {2}, {2}});
  // Token 1 needs expert 2 (server 2, down); tokens 0 and 2 do not.
  const std::vector<float> logits =
      PreferenceLogits({{0, 1}, {2, 0}, {1, 0}}, 4);
  absl::StatusOr<DispatchPlan> plan = PlanDispatch(
      config, 1, logits.data(), 3, placement,
      Options(0, Policy::kReroute), {}, {false, false, true});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(plan->failed_tokens, ElementsAre(1));
  EXPECT_THAT(plan->unavailable_experts, ElementsAre(2));
  EXPECT_TRUE(plan->slots[1 * 2 + 0].unavailable());  // token 1, choice 0
  EXPECT_FALSE(plan->slots[1 * 2 + 1].unavailable());
  EXPECT_EQ(plan->stats.rerouted(), 0);  // not silently moved elsewhere
  EXPECT_EQ(plan->stats.dropped(), 0);
  EXPECT_TRUE(plan->servers[2].groups.empty());
  EXPECT_EQ(DescribeUnavailableExperts(*plan),
            "expert 2 of layer 1 has no live replica");
}

TEST(DispatchPlanTest, OverflowNeverReroutesToAnExpertWithoutLiveReplica) {
  const ModelConfig config = Config(4, 1);
  const PlacementTable placement = Placement(2, {{0}, {0}, {1}, {0}});
  // Capacity 1 per expert: token 1 overflows expert 0; its next choice,
  // expert 2, is down, so it goes to expert 1.
  const std::vector<float> logits =
      PreferenceLogits({{0}, {0, 2, 1}}, 4);
  absl::StatusOr<DispatchPlan> plan = PlanDispatch(
      config, 0, logits.data(), 2, placement, Options(2.0, Policy::kReroute),
      {}, {false, true});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(SlotExperts(*plan), ElementsAre(0, 1));
  EXPECT_TRUE(plan->failed_tokens.empty());
}

TEST(DispatchPlanTest, ServerDownMaskOfTheWrongSizeIsRefused) {
  const ModelConfig config = Config(4, 2);
  const PlacementTable placement = Placement(2, {{0}, {0}, {1}, {1}});
  const std::vector<float> logits = PreferenceLogits({{0, 1}}, 4);
  absl::StatusOr<DispatchPlan> plan = PlanDispatch(
      config, 0, logits.data(), 1, placement, CapacityOptions(), {}, {true});
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(plan.status().message(), HasSubstr("server_down"));
}

TEST(DispatchPlanTest, EmptyBatch) {
  const ModelConfig config = Config(4, 2);
  absl::StatusOr<PlacementTable> placement = AutoPlacement(config, 2, 1);
  ASSERT_TRUE(placement.ok());
  absl::StatusOr<DispatchPlan> plan = PlanDispatch(
      config, 0, nullptr, 0, *placement, Options(1.0, Policy::kDrop), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(plan->slots.empty());
  EXPECT_EQ(plan->capacity, 0);
  ASSERT_EQ(plan->servers.size(), 2u);
  EXPECT_TRUE(plan->servers[0].groups.empty());
  EXPECT_EQ(plan->stats.Balancedness(), 1.0);
}

TEST(DispatchPlanTest, RejectsBadInputs) {
  const ModelConfig config = Config(4, 2, ModelFamily::kQwen2Moe);
  ModelConfig sparse = config;
  sparse.decoder_sparse_step = 2;  // layer 0 dense, layer 1 MoE
  absl::StatusOr<PlacementTable> placement = AutoPlacement(config, 2, 1);
  ASSERT_TRUE(placement.ok());
  std::vector<float> logits(3 * 4, 0.0f);
  const CapacityOptions ok;
  auto plan = [&](const ModelConfig& c, int layer, const CapacityOptions& o,
                  const std::vector<int64_t>& load) {
    return PlanDispatch(c, layer, logits.data(), 3, *placement, o, load)
        .status();
  };
  ASSERT_TRUE(plan(config, 0, ok, {}).ok());
  EXPECT_EQ(plan(config, 2, ok, {}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(plan(config, -1, ok, {}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(plan(sparse, 0, ok, {}).message(), HasSubstr("layer 0"));
  EXPECT_TRUE(plan(sparse, 1, ok, {}).ok());
  EXPECT_THAT(plan(config, 0, Options(-1, Policy::kDrop), {}).message(),
              HasSubstr("capacity_factor"));
  EXPECT_THAT(plan(config, 0, Options(NAN, Policy::kDrop), {}).message(),
              HasSubstr("capacity_factor"));
  EXPECT_THAT(plan(config, 0, Options(0, Policy::kDrop, -2), {}).message(),
              HasSubstr("per_server_token_cap"));
  EXPECT_THAT(plan(config, 0, ok, {1, 2, 3}).message(),
              HasSubstr("server_load"));
  EXPECT_THAT(plan(config, 0, ok, {1, -2}).message(),
              HasSubstr("server_load[1]"));
  ModelConfig wide_k = config;
  wide_k.num_experts_per_tok = 5;
  EXPECT_EQ(plan(wide_k, 0, ok, {}).code(), absl::StatusCode::kInvalidArgument);

  logits[1 * 4 + 2] = NAN;
  absl::Status s = plan(config, 0, ok, {});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("token 1, expert 2"));
  logits[1 * 4 + 2] = INFINITY;
  EXPECT_THAT(plan(config, 0, ok, {}).message(),
              HasSubstr("token 1, expert 2"));
  EXPECT_EQ(
      PlanDispatch(config, 0, nullptr, 3, *placement, ok, {}).status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST(LayerDispatchStatsTest, BalancednessIsMeanOverMax) {
  LayerDispatchStats stats;
  stats.experts.resize(4);
  EXPECT_EQ(stats.Balancedness(), 1.0);
  const int64_t tokens[] = {4, 2, 2, 0};
  for (int x = 0; x < 4; ++x) stats.experts[x].tokens = tokens[x];
  EXPECT_DOUBLE_EQ(stats.Balancedness(), 0.5);
  for (auto& e : stats.experts) e.tokens = 3;
  EXPECT_DOUBLE_EQ(stats.Balancedness(), 1.0);
  stats.experts = {{.tokens = 8}, {}, {}, {}};
  EXPECT_DOUBLE_EQ(stats.Balancedness(), 0.25);
}

// DeepSeek gating in the plan: the correction bias and the group limit
// choose the experts, and overflow reroutes by the same group-limited rank.
ModelConfig DeepseekV3Config(int k, int topk_group) {
  ModelConfig c = Config(8, k, ModelFamily::kDeepseekV3, /*norm=*/true);
  c.scoring_func = ScoringFunc::kSigmoid;
  c.topk_method = TopkMethod::kNoauxTc;
  c.n_group = 4;
  c.topk_group = topk_group;
  c.routed_scaling_factor = 2.5;
  return c;
}

TEST(DeepseekDispatchTest, PlanRoutesWithTheCorrectionBias) {
  const ModelConfig config = DeepseekV3Config(2, 2);
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0, 2);
  const int tokens = 64;
  std::vector<float> logits(tokens * 8);
  for (float& v : logits) v = normal(rng);
  std::vector<float> bias(8);
  for (float& b : bias) b = normal(rng) * 0.2f;
  const PlacementTable placement =
      Placement(2, {{0}, {0}, {1}, {1}, {0}, {1}, {0, 1}, {1}});
  absl::StatusOr<DispatchPlan> plan =
      PlanDispatch(config, 0, logits.data(), tokens, placement,
                   CapacityOptions(), {}, {}, bias);
  ASSERT_TRUE(plan.ok()) << plan.status();
  const Routing want = RouteFromLogits(config, logits.data(), tokens, bias);
  EXPECT_EQ(plan->routing.experts, want.experts);
  EXPECT_EQ(plan->routing.weights, want.weights);
  // The bias changed some choice (so it really went through the plan).
  EXPECT_NE(RouteFromLogits(config, logits.data(), tokens).experts,
            want.experts);
  // A wrong-sized bias is refused by name.
  const std::vector<float> short_bias(7, 0.0f);
  EXPECT_THAT(PlanDispatch(config, 0, logits.data(), tokens, placement,
                           CapacityOptions(), {}, {}, short_bias)
                  .status()
                  .message(),
              HasSubstr("correction_bias"));
}

TEST(DeepseekDispatchTest, OverflowReroutesWithinTheKeptGroup) {
  // Group 0 (experts 0, 1) has the best top-2 sum and is the only group
  // kept; expert 2 (group 1) scores above expert 1 but is masked out.
  const ModelConfig config = DeepseekV3Config(1, 1);
  const std::vector<float> row = {3.0f, 2.9f, 2.95f, -3.0f,
                                  -3.0f, -3.0f, -3.0f, -3.0f};
  std::vector<float> logits = row;
  logits.insert(logits.end(), row.begin(), row.end());  // two equal tokens
  const std::vector<int32_t> rank = RankExperts(config, row.data());
  ASSERT_EQ(rank[0], 0);
  ASSERT_EQ(rank[1], 1);
  CapacityOptions options;
  options.capacity_factor = 4;  // ceil(4 * 2 * 1 / 8) = 1 slot per expert
  options.policy = CapacityOptions::OverflowPolicy::kReroute;
  const PlacementTable placement =
      Placement(1, {{0}, {0}, {0}, {0}, {0}, {0}, {0}, {0}});
  absl::StatusOr<DispatchPlan> plan = PlanDispatch(
      config, 0, logits.data(), 2, placement, options, {}, {}, {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->capacity, 1);
  EXPECT_EQ(plan->slots[0].expert, 0);
  EXPECT_EQ(plan->slots[1].expert, 1);  // not 2: outside the kept group
  EXPECT_TRUE(plan->slots[1].rerouted);
}

}  // namespace
}  // namespace moe
