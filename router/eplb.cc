#include "router/eplb.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace moe {

LayerPlacementPlan EvaluatePlacement(absl::Span<const double> load,
                                     const std::vector<std::vector<int>>& servers,
                                     int num_servers) {
  LayerPlacementPlan plan;
  plan.servers = servers;
  plan.replicas.resize(load.size());
  plan.server_load.assign(num_servers, 0.0);
  for (size_t e = 0; e < load.size(); ++e) {
    plan.replicas[e] = static_cast<int>(servers[e].size());
    if (servers[e].empty()) continue;
    const double share = load[e] / static_cast<double>(servers[e].size());
    for (int s : servers[e]) plan.server_load[s] += share;
  }
  double total = 0;
  for (double l : plan.server_load) {
    plan.max_load = std::max(plan.max_load, l);
    total += l;
  }
  plan.mean_load = num_servers > 0 ? total / num_servers : 0;
  return plan;
}

namespace {

// Greedy packing of `replicas[e]` replicas of each expert, heaviest share
// first, each onto the least-loaded server with a free slot that does not
// host the expert yet (ties -> lower id). Returns hosts per expert.
std::vector<std::vector<int>> Pack(absl::Span<const double> load,
                                   const std::vector<int>& replicas,
                                   int servers, int slots) {
  const int experts = static_cast<int>(load.size());
  struct Replica {
    int expert;
    double share;
  };
  std::vector<Replica> order;
  for (int e = 0; e < experts; ++e) {
    for (int r = 0; r < replicas[e]; ++r) {
      order.push_back({e, load[e] / replicas[e]});
    }
  }
  std::stable_sort(order.begin(), order.end(),
                   [](const Replica& a, const Replica& b) {
                     return a.share > b.share;
                   });
  std::vector<double> server_load(servers, 0.0);
  std::vector<int> used(servers, 0);
  std::vector<std::vector<int>> hosts(experts);
  for (const Replica& r : order) {
    int best = -1;
    for (int s = 0; s < servers; ++s) {
      if (used[s] >= slots) continue;
      const std::vector<int>& h = hosts[r.expert];
      if (std::find(h.begin(), h.end(), s) != h.end()) continue;
      if (best < 0 || server_load[s] < server_load[best]) best = s;
    }
    // Nowhere to go (every free slot is on a server hosting the expert):
    // the expert keeps its other replicas. An expert with no replica yet
    // can always go somewhere, as there are as many slots as replicas.
    if (best < 0) continue;
    hosts[r.expert].push_back(best);
    ++used[best];
    server_load[best] += r.share;
  }
  return hosts;
}

// The largest of `load` leaving out servers a and b, from the three
// largest entries (top[0] >= top[1] >= top[2], as server ids; -1 = none).
double MaxWithout(const std::vector<double>& load, const int top[3], int a,
                  int b) {
  for (int i = 0; i < 3; ++i) {
    if (top[i] >= 0 && top[i] != a && top[i] != b) return load[top[i]];
  }
  return 0;
}

// Hill climbing on a placement: while some single change off the
// most-loaded server lowers (max load, sum of squared loads), apply the
// best one. Changes: move one replica
// off the most-loaded server to a server with a free slot; swap one of its
// replicas with one of another server's; hand its slot of an expert with
// several replicas to an expert it does not host (one replica fewer there,
// one more here). Moves and swaps touch two servers' loads and are scored
// in O(1); hand-overs change shares and are scored in full. Deterministic.
void Improve(absl::Span<const double> load, int servers, int slots,
             std::vector<std::vector<int>>& hosts) {
  const int experts = static_cast<int>(load.size());
  auto hosts_on = [&](int e, int s) {
    return std::find(hosts[e].begin(), hosts[e].end(), s) != hosts[e].end();
  };
  for (int round = 0; round < 2 * experts * servers; ++round) {
    const LayerPlacementPlan now = EvaluatePlacement(load, hosts, servers);
    const std::vector<double>& sl = now.server_load;
    int top[3] = {-1, -1, -1};
    for (int s = 0; s < servers; ++s) {
      for (int i = 0; i < 3; ++i) {
        if (top[i] < 0 || sl[s] > sl[top[i]]) {
          for (int j = 2; j > i; --j) top[j] = top[j - 1];
          top[i] = s;
          break;
        }
      }
    }
    const int worst = top[0];
    std::vector<int> used(servers, 0);
    for (const std::vector<int>& h : hosts) {
      for (int s : h) ++used[s];
    }
    auto share = [&](int e) { return load[e] / hosts[e].size(); };
    double sumsq = 0;
    for (double l : sl) sumsq += l * l;
    // Changes are ranked by (max load, sum of squared loads): a lower
    // maximum first; at an equal maximum (servers tied at the top), a more
    // even spread, which lets the next round lower the maximum.
    const double eps = 1e-9 * std::max(1.0, now.max_load);
    double best_max = now.max_load, best_sq = sumsq - eps * eps;
    auto better = [&](double m, double sq) {
      if (m < best_max - eps) return true;
      return m <= best_max + eps && sq < best_sq - eps * eps;
    };
    enum class Kind {
      kNone,
      kMove,
      kSwap,
      kHandOver,
      kReplicate,
      kDrop
    } kind = Kind::kNone;
    int best_e = -1, best_f = -1, best_t = -1;
    // Scores moving `d` load from `worst` to `t`.
    auto score_shift = [&](int t, double d, double* m, double* sq) {
      const double a = sl[worst] - d, b = sl[t] + d;
      *m = std::max({MaxWithout(sl, top, worst, t), a, b});
      *sq = sumsq - sl[worst] * sl[worst] - sl[t] * sl[t] + a * a + b * b;
    };
    for (int e = 0; e < experts; ++e) {
      if (!hosts_on(e, worst)) continue;
      for (int t = 0; t < servers; ++t) {
        if (t == worst || hosts_on(e, t)) continue;
        double m, sq;
        if (used[t] < slots) {
          score_shift(t, share(e), &m, &sq);
          if (better(m, sq)) {
            best_max = m, best_sq = sq;
            kind = Kind::kMove;
            best_e = e, best_t = t;
          }
        }
        for (int f = 0; f < experts; ++f) {
          if (f == e || !hosts_on(f, t) || hosts_on(f, worst)) continue;
          score_shift(t, share(e) - share(f), &m, &sq);
          if (better(m, sq)) {
            best_max = m, best_sq = sq;
            kind = Kind::kSwap;
            best_e = e, best_f = f, best_t = t;
          }
        }
      }
      // Replicate e onto a server with a free slot, or drop its replica on
      // `worst`: both change e's share everywhere.
      auto score_full = [&](double* m, double* sq) {
        const LayerPlacementPlan p = EvaluatePlacement(load, hosts, servers);
        *m = p.max_load;
        *sq = 0;
        for (double l : p.server_load) *sq += l * l;
      };
      for (int t = 0; t < servers; ++t) {
        if (used[t] >= slots || hosts_on(e, t)) continue;
        hosts[e].push_back(t);
        double m, sq;
        score_full(&m, &sq);
        hosts[e].pop_back();
        if (better(m, sq)) {
          best_max = m, best_sq = sq;
          kind = Kind::kReplicate;
          best_e = e, best_t = t;
        }
      }
      if (hosts[e].size() > 1) {
        std::vector<int>& he = hosts[e];
        he.erase(std::find(he.begin(), he.end(), worst));
        double m, sq;
        score_full(&m, &sq);
        he.push_back(worst);
        if (better(m, sq)) {
          best_max = m, best_sq = sq;
          kind = Kind::kDrop;
          best_e = e;
        }
      }
      if (hosts[e].size() > 1) {
        for (int f = 0; f < experts; ++f) {
          if (f == e || hosts_on(f, worst)) continue;
          std::vector<int>& he = hosts[e];
          he.erase(std::find(he.begin(), he.end(), worst));
          hosts[f].push_back(worst);
          const LayerPlacementPlan p = EvaluatePlacement(load, hosts, servers);
          hosts[f].pop_back();
          he.push_back(worst);
          double sq = 0;
          for (double l : p.server_load) sq += l * l;
          if (better(p.max_load, sq)) {
            best_max = p.max_load, best_sq = sq;
            kind = Kind::kHandOver;
            best_e = e, best_f = f;
          }
        }
      }
    }
    auto replace = [&](int e, int from, int to) {
      *std::find(hosts[e].begin(), hosts[e].end(), from) = to;
    };
    switch (kind) {
      case Kind::kNone:
        return;
      case Kind::kMove:
        replace(best_e, worst, best_t);
        break;
      case Kind::kSwap:
        replace(best_e, worst, best_t);
        replace(best_f, best_t, worst);
        break;
      case Kind::kReplicate:
        hosts[best_e].push_back(best_t);
        break;
      case Kind::kDrop:
        hosts[best_e].erase(
            std::find(hosts[best_e].begin(), hosts[best_e].end(), worst));
        break;
      case Kind::kHandOver:
        hosts[best_e].erase(
            std::find(hosts[best_e].begin(), hosts[best_e].end(), worst));
        hosts[best_f].push_back(worst);
        break;
    }
  }
}

}  // namespace

absl::StatusOr<LayerPlacementPlan> PlanLayerPlacement(
    absl::Span<const double> load, const EplbOptions& options) {
  const int experts = static_cast<int>(load.size());
  const int servers = options.num_servers;
  const int slots = options.slots_per_server;
  if (experts < 1) return absl::InvalidArgumentError("load: no experts");
  if (servers < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_servers must be >= 1, got ", servers));
  }
  if (slots < 1 || int64_t{servers} * slots < experts) {
    return absl::InvalidArgumentError(absl::StrCat(
        "slots_per_server (", slots, ") x num_servers (", servers,
        ") cannot hold one replica of each of the ", experts, " experts"));
  }
  for (int e = 0; e < experts; ++e) {
    if (!(load[e] >= 0) || !std::isfinite(load[e])) {
      return absl::InvalidArgumentError(
          absl::StrCat("load of expert ", e, " must be finite and >= 0, got ",
                       load[e]));
    }
  }

  // Replica counts grow one at a time, each time for the expert with the
  // largest share (ties -> lower id); every prefix of that sequence is
  // packed and the best packing kept (filling every slot is not always
  // best: a replica also adds to its server).
  std::vector<int> replicas(experts, 1);
  std::vector<std::vector<int>> best_hosts = Pack(load, replicas, servers, slots);
  double best_max = EvaluatePlacement(load, best_hosts, servers).max_load;
  const int64_t extra = int64_t{servers} * slots - experts;
  for (int64_t i = 0; i < extra; ++i) {
    int pick = -1;
    for (int e = 0; e < experts; ++e) {
      if (replicas[e] >= servers) continue;
      // load[e] / replicas[e] > load[pick] / replicas[pick], exactly.
      if (pick < 0 || load[e] * replicas[pick] > load[pick] * replicas[e]) {
        pick = e;
      }
    }
    if (pick < 0) break;  // every expert is on every server
    ++replicas[pick];
    std::vector<std::vector<int>> hosts = Pack(load, replicas, servers, slots);
    const double m = EvaluatePlacement(load, hosts, servers).max_load;
    if (m < best_max) {
      best_max = m;
      best_hosts = std::move(hosts);
    }
  }
  Improve(load, servers, slots, best_hosts);
  for (std::vector<int>& h : best_hosts) std::sort(h.begin(), h.end());
  return EvaluatePlacement(load, best_hosts, servers);
}

}  // namespace moe
