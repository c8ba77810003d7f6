// ACDC (Conmy et al., "Towards Automated Circuit Discovery") as a sequence of independent
// steps, so that each iteration's evaluations can run anywhere: in this process, or as one
// sharded `acdc-step` job on a coordinator. No LibTorch, no protobuf: the step is a callback.
//
//   AcdcDriverOptions o;
//   o.threshold = 0.05;
//   o.kl = true;                         // distance = mean KL(clean || circuit)
//   LG_ASSIGN_OR_RETURN(AcdcOutcome out, DriveAcdc(graph, o, run_step));
//   out.kept[e]                          // edge e is in the circuit
//
// An iteration is one receiving input, from the logits back (the graph's receiving inputs in
// reverse edge id order). Its candidates are its incoming edges still in the circuit. One step
// measures, on every prompt, the circuit as it is (component 0) and the circuit with each
// candidate also corrupted (component 1 + j for the j-th edge into the input); a candidate
// whose removal grows the distance by less than the threshold is removed. All of an
// iteration's candidates are judged against the same circuit, the one the iteration starts
// from, so its evaluations are independent forwards (the paper's ACDC removes them one at a
// time, each judged after the removals before it: worker/model/analysis/acdc.h is that
// sequential version, in one process). A node whose output reaches nothing any more (every
// edge out of it removed) is not evaluated: corrupting its inputs changes nothing, so they go
// (score 0) when the threshold is positive.
//
// The distance of a circuit is its mean KL divergence from the clean run (kl), or for a task
// metric |mean metric(circuit) - mean metric(clean run)|.
//
// The driver is deterministic: the same steps give the same circuit, so a client that runs the
// steps as jobs with request ids derived from the iteration number can die and run again, and
// it finds the finished iterations' jobs (their results) instead of running them again.
#ifndef LENSGRID_COMMON_ACDC_DRIVER_H_
#define LENSGRID_COMMON_ACDC_DRIVER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/circuit_graph.h"

namespace lensgrid {

// What one step measured: the mean over prompts of each acdc-step component, and the clean
// run's mean metric (for task metrics).
struct AcdcStepResult {
  std::vector<double> metric;
  double clean = 0;
};
// One iteration's step: its number, its receiving input ("L1H1.k", "logits") and the circuit
// (PackEdges of the kept edges).
using AcdcStepRunner = std::function<absl::StatusOr<AcdcStepResult>(
    int iteration, const std::string& receiver, const std::string& kept_edges)>;

struct AcdcIteration {
  int iteration = 0;   // 0-based
  int iterations = 0;  // receiving inputs in all
  std::string receiver;
  int64_t candidates = 0;   // edges judged in this iteration
  int64_t removed = 0;      // of them
  int64_t edges_left = 0;   // in the circuit after it
  int64_t evaluations = 0;  // forwards' worth of evaluations so far (one per candidate + base)
  double distance = 0;      // of the circuit the iteration started from
  bool evaluated = false;   // false: skipped (no candidates) or pruned without a run
};

struct AcdcDriverOptions {
  double threshold = 0;  // >= 0
  bool kl = true;        // the step's metric is KL (else a task metric)
  std::function<void(const AcdcIteration&)> on_iteration;
};

struct AcdcOutcome {
  std::vector<bool> kept;     // one per edge
  std::vector<double> score;  // distance increase when the edge was judged (0: pruned)
  int64_t evaluations = 0;
  int steps = 0;  // iterations that ran a step
};

// INVALID_ARGUMENT for a negative or NaN threshold, or a step result of the wrong size; a step's
// error as it is.
absl::StatusOr<AcdcOutcome> DriveAcdc(const CircuitGraph& graph, const AcdcDriverOptions& options,
                                      const AcdcStepRunner& step);

}  // namespace lensgrid

#endif  // LENSGRID_COMMON_ACDC_DRIVER_H_
