// The Worker API's version (ModelInfo.api_version), "MAJOR.MINOR". A client
// needs the same MAJOR and at least the MINOR it was written for: MINOR goes
// up when RPCs or fields are added, MAJOR when one changes meaning or goes.
//   1.0  GetModelInfo, Tokenize/Detokenize, RunWithCache, RunWithInterventions, RunShard
//   1.1  hook programs and gradients (RunWithInterventions), GetWeights, Generate
#ifndef LENSGRID_COMMON_WORKER_API_VERSION_H_
#define LENSGRID_COMMON_WORKER_API_VERSION_H_

namespace lensgrid {

inline constexpr char kWorkerApiVersion[] = "1.1";

}  // namespace lensgrid

#endif  // LENSGRID_COMMON_WORKER_API_VERSION_H_
