// Tests of router/eplb_hierarchical.h: groups stay on one node, and the
// plan is close to the exhaustive optimum under that constraint.
#include "router/eplb_hierarchical.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/eplb_exhaustive.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

struct Shape {
  int experts, groups, nodes, servers, slots;
};

HierarchicalEplbOptions Options(const Shape& s) {
  HierarchicalEplbOptions o;
  o.servers = {s.servers, s.slots};
  o.num_nodes = s.nodes;
  o.num_expert_groups = s.groups;
  return o;
}

// The best max server load when every group, replicas included, sits on
// one node with G / N groups per node: every balanced assignment of groups
// to nodes, each node then placed exhaustively.
double ExhaustiveHierarchicalBest(const std::vector<double>& load,
                                  const Shape& s) {
  const int group_size = s.experts / s.groups;
  const int per_node = s.groups / s.nodes;
  const int servers_per_node = s.servers / s.nodes;
  std::vector<int> node_of_group(s.groups, -1);
  std::vector<int> count(s.nodes, 0);
  double best = 1e300;
  std::function<void(int)> assign = [&](int g) {
    if (g == s.groups) {
      double worst = 0;
      for (int n = 0; n < s.nodes; ++n) {
        std::vector<double> node_load;
        for (int h = 0; h < s.groups; ++h) {
          if (node_of_group[h] != n) continue;
          for (int i = 0; i < group_size; ++i) {
            node_load.push_back(load[h * group_size + i]);
          }
        }
        worst = std::max(worst,
                         ExhaustiveBest(node_load, servers_per_node, s.slots));
      }
      best = std::min(best, worst);
      return;
    }
    for (int n = 0; n < s.nodes; ++n) {
      if (count[n] == per_node) continue;
      node_of_group[g] = n;
      ++count[n];
      assign(g + 1);
      --count[n];
    }
  };
  assign(0);
  return best;
}

// Every replica of every expert of a group sits on one node, and each node
// holds G / N groups.
void ExpectGroupsStayOnTheirNodes(const LayerPlacementPlan& plan,
                                  const Shape& s) {
  const HierarchicalEplbOptions options = Options(s);
  const int group_size = s.experts / s.groups;
  std::vector<int> groups_on_node(s.nodes, 0);
  for (int g = 0; g < s.groups; ++g) {
    std::set<int> nodes;
    for (int i = 0; i < group_size; ++i) {
      const std::vector<int>& hosts = plan.servers[g * group_size + i];
      ASSERT_FALSE(hosts.empty()) << "expert " << g * group_size + i;
      for (int server : hosts) nodes.insert(NodeOfServer(server, options));
    }
    ASSERT_EQ(nodes.size(), 1u) << "group " << g << " spans nodes";
    ++groups_on_node[*nodes.begin()];
  }
  for (int n = 0; n < s.nodes; ++n) {
    EXPECT_EQ(groups_on_node[n], s.groups / s.nodes) << "node " << n;
  }
}

TEST(EplbHierarchicalTest, GroupsStayOnOneNodeAndThePlanIsNearTheOptimum) {
  std::mt19937 rng(11);
  int optimal = 0, cases = 0;
  double worst_ratio = 1;
  for (const Shape& shape :
       {Shape{4, 2, 2, 4, 1}, Shape{4, 2, 2, 4, 2}, Shape{8, 4, 2, 4, 2},
        Shape{8, 4, 2, 4, 3}, Shape{6, 6, 3, 6, 1}, Shape{12, 6, 3, 6, 2},
        Shape{8, 2, 2, 6, 2}}) {
    for (int trial = 0; trial < 25; ++trial) {
      std::vector<double> load(shape.experts);
      std::exponential_distribution<double> exp(1.0);
      for (double& l : load) l = std::floor(100 * exp(rng) * exp(rng));
      SCOPED_TRACE(::testing::Message()
                   << shape.experts << " experts in " << shape.groups
                   << " groups, " << shape.nodes << " nodes of "
                   << shape.servers / shape.nodes << " servers x "
                   << shape.slots << " slots, trial " << trial);
      absl::StatusOr<LayerPlacementPlan> plan =
          PlanHierarchicalLayerPlacement(load, Options(shape));
      ASSERT_TRUE(plan.ok()) << plan.status();
      ExpectGroupsStayOnTheirNodes(*plan, shape);
      for (const std::vector<int>& hosts : plan->servers) {
        EXPECT_EQ(std::set<int>(hosts.begin(), hosts.end()).size(),
                  hosts.size());
      }
      const double best = ExhaustiveHierarchicalBest(load, shape);
      EXPECT_GE(plan->max_load, best - 1e-9);
      // Measured: at worst 1.12x on these cases.
      EXPECT_LE(plan->max_load, best * 1.2 + 1e-9);
      ++cases;
      if (plan->max_load <= best + 1e-9) ++optimal;
      if (best > 0) worst_ratio = std::max(worst_ratio, plan->max_load / best);
    }
  }
  RecordProperty("optimal_cases", optimal);
  RecordProperty("cases", cases);
  RecordProperty("worst_ratio", std::to_string(worst_ratio));
  // Most come out exactly optimal (measured: 156 of 175).
  EXPECT_GE(optimal * 100, cases * 80) << optimal << " of " << cases;
}

TEST(EplbHierarchicalTest, TheTwoHottestGroupsGoToDifferentNodes) {
  // Groups {0,1}, {2,3}, {4,5}, {6,7}; groups 0 and 1 are hot.
  const std::vector<double> load = {500, 300, 400, 400, 10, 10, 10, 10};
  const Shape shape{8, 4, 2, 4, 3};
  absl::StatusOr<LayerPlacementPlan> plan =
      PlanHierarchicalLayerPlacement(load, Options(shape));
  ASSERT_TRUE(plan.ok()) << plan.status();
  ExpectGroupsStayOnTheirNodes(*plan, shape);
  const HierarchicalEplbOptions options = Options(shape);
  EXPECT_NE(NodeOfServer(plan->servers[0][0], options),
            NodeOfServer(plan->servers[2][0], options));
  // Each node carries 820 tokens (a hot group and a light one), split
  // evenly over its two servers by replicating the hot experts.
  EXPECT_NEAR(plan->max_load, 410, 1e-9);
}

TEST(EplbHierarchicalTest, ExpertGroupsComeFromGroupLimitedGatingOnly) {
  ModelConfig config;
  config.num_experts = 64;
  config.n_group = 8;
  config.topk_method = TopkMethod::kGreedy;
  EXPECT_EQ(ExpertGroups(config), 1);
  config.topk_method = TopkMethod::kGroupLimitedGreedy;
  EXPECT_EQ(ExpertGroups(config), 8);
  config.topk_method = TopkMethod::kNoauxTc;
  EXPECT_EQ(ExpertGroups(config), 8);
}

TEST(EplbHierarchicalTest, ImpossibleLayoutsAreNamed) {
  const std::vector<double> load(8, 1.0);
  auto error = [&](const Shape& s) {
    return std::string(
        PlanHierarchicalLayerPlacement(load, Options(s)).status().message());
  };
  EXPECT_THAT(error({8, 4, 1, 4, 2}), HasSubstr("at least 2 nodes"));
  EXPECT_THAT(error({8, 4, 3, 4, 2}),
              HasSubstr("4 expert servers do not split evenly into 3 nodes"));
  EXPECT_THAT(error({8, 3, 2, 4, 2}),
              HasSubstr("8 experts do not split evenly into 3 expert groups"));
  EXPECT_THAT(error({8, 1, 2, 4, 2}),
              HasSubstr("1 expert groups (n_group) do not split evenly over 2 "
                        "nodes"));
  EXPECT_THAT(error({8, 4, 2, 4, 1}),
              HasSubstr("a node's 2 servers x 1 slots cannot hold its 4 "
                        "experts"));
  const std::vector<double> bad = {1, -1, 1, 1};
  EXPECT_THAT(std::string(PlanHierarchicalLayerPlacement(
                              bad, Options({4, 2, 2, 4, 2}))
                              .status()
                              .message()),
              HasSubstr("load of expert 1"));
}

}  // namespace
}  // namespace moe
