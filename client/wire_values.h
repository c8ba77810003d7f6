// A received wire tensor's values as doubles, without LibTorch.
//
//   LG_ASSIGN_OR_RETURN(std::vector<double> v, WireToDoubles(*job.Find("baseline")));
#ifndef LENSGRID_CLIENT_WIRE_VALUES_H_
#define LENSGRID_CLIENT_WIRE_VALUES_H_

#include <vector>

#include "absl/status/statusor.h"
#include "common/tensor_chunks.h"

namespace lensgrid {

// Row-major values of an F32, F16 or BF16 tensor. INTERNAL naming the tensor for another dtype
// or a byte count that does not match its shape.
absl::StatusOr<std::vector<double>> WireToDoubles(const WireTensor& t);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_WIRE_VALUES_H_
