// The Worker API's version (ModelInfo.api_version), "MAJOR.MINOR". A client
// needs the same MAJOR and at least the MINOR it was written for: MINOR goes
// up when RPCs or fields are added, MAJOR when one changes meaning or goes.
//   1.0  GetModelInfo, Tokenize/Detokenize, RunWithCache, RunWithInterventions, RunShard
//   1.1  hook programs and gradients (RunWithInterventions), GetWeights, Generate
//   2.0  Tokenize prepends BOS when TokenizeRequest.prepend_bos is absent, as
//        runs do (1.x: no BOS). ModelInput.prepend_bos (absent: true) replaces
//        no_bos, still read when prepend_bos is absent. Enum zeros mean
//        unspecified: RETURN_TYPE_UNSPECIFIED (logits; RETURN_LOGITS is 4) and
//        PADDING_SIDE_UNSPECIFIED (right; PADDING_RIGHT is 2), so a 1.x
//        client's zeros keep their meaning.
//   2.1  AttachSharedMemory, and SharedMemoryTarget in RunOptions and
//        GetWeightsRequest: same-host replies written into shared memory.
//   2.2  inline_tensors in RunOptions, RunShardRequest and GetWeightsRequest,
//        and RunHeader.inline_chunks: a small reply is one message.
#ifndef LENSGRID_COMMON_WORKER_API_VERSION_H_
#define LENSGRID_COMMON_WORKER_API_VERSION_H_

namespace lensgrid {

inline constexpr char kWorkerApiVersion[] = "2.2";

}  // namespace lensgrid

#endif  // LENSGRID_COMMON_WORKER_API_VERSION_H_
