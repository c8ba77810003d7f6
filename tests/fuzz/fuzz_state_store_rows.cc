// Fuzz target: the rows of the coordinator's SQLite store as Load reads them
// back after a restart (a damaged disk or a bit flip gives any bytes). The
// first byte picks the column: a shard result (DecodeArrays), a job spec, or
// an event. Properties: no crash; DecodeArrays accepts exactly what
// EncodeArrays writes (decode then encode gives the same bytes back).
#include <cstddef>
#include <cstdint>
#include <string>

#include "google/protobuf/stubs/logging.h"
#include "lensgrid/v1/coordinator.pb.h"
#include "service/state_store.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Invalid UTF-8 in string fields is a parse failure; no need to log each.
  static const bool quiet = (google::protobuf::SetLogHandler(nullptr), true);
  (void)quiet;
  if (size == 0) return 0;
  const std::string row(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0: {
      auto arrays = lensgrid::service::DecodeArrays(row);
      if (!arrays.ok()) {
        FUZZ_CHECK(arrays.status().code() == absl::StatusCode::kDataLoss,
                   "a corrupt row is DATA_LOSS");
        return 0;
      }
      FUZZ_CHECK(lensgrid::service::EncodeArrays(*arrays) == row,
                 "decode then encode is the identity");
      break;
    }
    case 1: {
      lensgrid::v1::JobSpec spec;
      (void)spec.ParseFromString(row);
      break;
    }
    case 2: {
      lensgrid::v1::JobEvent event;
      (void)event.ParseFromString(row);
      break;
    }
  }
  return 0;
}
