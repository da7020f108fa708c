// Tests of router/placement_table.h: replica bookkeeping, validation against
// a model config, and round-robin automatic placement.
#include "router/placement_table.h"

#include <algorithm>
#include <cstdint>
#include <set>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/model_config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

ModelConfig MoeConfig(int layers, int experts) {
  ModelConfig c;
  c.family = ModelFamily::kMixtral;
  c.num_layers = layers;
  c.num_experts = experts;
  c.num_experts_per_tok = 2;
  return c;
}

// Qwen2-MoE with every second layer sparse (layers 1, 3, ...), and layer 3
// forced dense through mlp_only_layers.
ModelConfig SparseStepConfig() {
  ModelConfig c = MoeConfig(6, 4);
  c.family = ModelFamily::kQwen2Moe;
  c.decoder_sparse_step = 2;
  c.mlp_only_layers = {3};
  return c;
}

TEST(PlacementTableTest, ReplicasAreSortedAndDistinct) {
  PlacementTable table(4);
  ASSERT_TRUE(table.Add(0, 1, 3).ok());
  ASSERT_TRUE(table.Add(0, 1, 0).ok());
  ASSERT_TRUE(table.Add(0, 1, 2).ok());
  EXPECT_THAT(table.Replicas(0, 1), ElementsAre(0, 2, 3));
  EXPECT_THAT(table.Replicas(0, 0), IsEmpty());
  EXPECT_THAT(table.Replicas(1, 1), IsEmpty());
  EXPECT_EQ(table.num_entries(), 3);

  absl::Status dup = table.Add(0, 1, 2);
  EXPECT_EQ(dup.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(dup.message(), HasSubstr("(layer 0, expert 1)"));
  EXPECT_EQ(table.num_entries(), 3);
}

TEST(PlacementTableTest, AddRejectsOutOfRangeEntries) {
  PlacementTable table(2);
  EXPECT_EQ(table.Add(0, 0, 2).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table.Add(0, 0, -1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table.Add(-1, 0, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table.Add(0, -1, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table.num_entries(), 0);
  EXPECT_EQ(PlacementTable(-3).Add(0, 0, 0).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(PlacementTableTest, ExpertsOnListsWhatAServerHosts) {
  PlacementTable table(3);
  ASSERT_TRUE(table.Add(1, 0, 2).ok());
  ASSERT_TRUE(table.Add(0, 3, 2).ok());
  ASSERT_TRUE(table.Add(0, 3, 1).ok());
  ASSERT_TRUE(table.Add(0, 1, 2).ok());
  EXPECT_THAT(
      table.ExpertsOn(2),
      ElementsAre(LayerExpert{0, 1}, LayerExpert{0, 3}, LayerExpert{1, 0}));
  EXPECT_THAT(table.ExpertsOn(1), ElementsAre(LayerExpert{0, 3}));
  EXPECT_THAT(table.ExpertsOn(0), IsEmpty());
}

TEST(PlacementTableTest, ValidateNamesTheFirstMissingExpert) {
  const ModelConfig config = MoeConfig(3, 4);
  PlacementTable table(2);
  for (int l = 0; l < 3; ++l) {
    for (int x = 0; x < 4; ++x) {
      if ((l == 1 && x == 2) || (l == 2 && x == 0)) continue;
      ASSERT_TRUE(table.Add(l, x, (l + x) % 2).ok());
    }
  }
  absl::Status s = table.Validate(config);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("(layer 1, expert 2)"));
  EXPECT_THAT(s.message(), HasSubstr("1 more"));

  ASSERT_TRUE(table.Add(1, 2, 0).ok());
  s = table.Validate(config);
  EXPECT_THAT(s.message(), HasSubstr("(layer 2, expert 0)"));
  EXPECT_THAT(s.message(), ::testing::Not(HasSubstr("more")));

  ASSERT_TRUE(table.Add(2, 0, 1).ok());
  EXPECT_TRUE(table.Validate(config).ok());
}

TEST(PlacementTableTest, ValidateNeedsNoEntriesForDenseLayers) {
  const ModelConfig config = SparseStepConfig();
  ASSERT_TRUE(config.IsMoeLayer(1));
  ASSERT_FALSE(config.IsMoeLayer(3));
  PlacementTable table(1);
  for (int l : {1, 5}) {
    for (int x = 0; x < 4; ++x) ASSERT_TRUE(table.Add(l, x, 0).ok());
  }
  EXPECT_TRUE(table.Validate(config).ok());
}

TEST(PlacementTableTest, ValidateRejectsEntriesOutsideTheModel) {
  const ModelConfig config = SparseStepConfig();
  absl::StatusOr<PlacementTable> base = AutoPlacement(config, 2, 1);
  ASSERT_TRUE(base.ok()) << base.status();
  ASSERT_TRUE(base->Validate(config).ok());

  struct Case {
    int layer, expert;
  };
  for (Case c : {Case{3, 0} /*dense*/, Case{0, 1} /*dense*/,
                 Case{6, 0} /*past num_layers*/, Case{1, 4} /*past experts*/}) {
    PlacementTable table = *base;
    ASSERT_TRUE(table.Add(c.layer, c.expert, 0).ok());
    absl::Status s = table.Validate(config);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(),
                HasSubstr(absl::StrCat("(layer ", c.layer, ", expert ",
                                       c.expert, ")")));
  }
}

TEST(AutoPlacementTest, EveryExpertOnDistinctServersAndBalanced) {
  for (int layers : {1, 3}) {
    for (int experts : {1, 4, 7, 8}) {
      for (int servers : {1, 2, 3, 5}) {
        for (int replicas = 1; replicas <= servers; ++replicas) {
          SCOPED_TRACE(absl::StrCat("layers ", layers, " experts ", experts,
                                    " servers ", servers, " replicas ",
                                    replicas));
          const ModelConfig config = MoeConfig(layers, experts);
          absl::StatusOr<PlacementTable> table =
              AutoPlacement(config, servers, replicas);
          ASSERT_TRUE(table.ok()) << table.status();
          EXPECT_EQ(table->num_servers(), servers);
          EXPECT_TRUE(table->Validate(config).ok());
          EXPECT_EQ(table->num_entries(), int64_t{layers} * experts * replicas);
          std::vector<int> per_server(servers, 0);
          for (int l = 0; l < layers; ++l) {
            std::vector<int> in_layer(servers, 0);
            for (int x = 0; x < experts; ++x) {
              auto r = table->Replicas(l, x);
              ASSERT_EQ(r.size(), static_cast<size_t>(replicas));
              EXPECT_EQ(std::set<int32_t>(r.begin(), r.end()).size(), r.size());
              for (int32_t s : r) ++in_layer[s], ++per_server[s];
            }
            auto [lo, hi] =
                std::minmax_element(in_layer.begin(), in_layer.end());
            EXPECT_LE(*hi - *lo, 1) << "layer " << l;
          }
          auto [lo, hi] =
              std::minmax_element(per_server.begin(), per_server.end());
          EXPECT_LE(*hi - *lo, 1);
        }
      }
    }
  }
}

TEST(AutoPlacementTest, SkipsDenseLayers) {
  const ModelConfig config = SparseStepConfig();
  absl::StatusOr<PlacementTable> table = AutoPlacement(config, 3, 2);
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->num_entries(), 2 * 4 * 2);  // MoE layers 1 and 5
  for (int l : {0, 2, 3, 4}) {
    for (int x = 0; x < 4; ++x) EXPECT_THAT(table->Replicas(l, x), IsEmpty());
  }
  // Replicas are dealt in one stream across layers: pair g takes servers
  // 2g and 2g+1 (mod 3); layer 5 expert 0 is pair 4.
  EXPECT_THAT(table->Replicas(1, 0), ElementsAre(0, 1));
  EXPECT_THAT(table->Replicas(1, 1), ElementsAre(0, 2));
  EXPECT_THAT(table->Replicas(1, 2), ElementsAre(1, 2));
  EXPECT_THAT(table->Replicas(5, 0), ElementsAre(0, 2));
}

TEST(AutoPlacementTest, RejectsBadCounts) {
  const ModelConfig config = MoeConfig(2, 4);
  EXPECT_EQ(AutoPlacement(config, 2, 3).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(AutoPlacement(config, 2, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(AutoPlacement(config, 0, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(AutoPlacement(MoeConfig(2, 0), 2, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(AutoPlacement(config, 2, 3).status().message(),
              HasSubstr("replicas"));
}

}  // namespace
}  // namespace moe
