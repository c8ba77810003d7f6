#include "client/wire_values.h"

#include <cmath>
#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace lensgrid {
namespace {

// A value of a 16-bit float: IEEE half or bfloat16.
double HalfToDouble(uint16_t h) {
  const int exponent = (h >> 10) & 0x1f;
  const int mantissa = h & 0x3ff;
  const double sign = (h & 0x8000) != 0 ? -1.0 : 1.0;
  if (exponent == 0) return sign * std::ldexp(mantissa, -24);
  if (exponent == 31) return mantissa == 0 ? sign * HUGE_VAL : NAN;
  return sign * std::ldexp(mantissa + 1024, exponent - 25);
}

double BFloat16ToDouble(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

}  // namespace

absl::StatusOr<std::vector<double>> WireToDoubles(const WireTensor& t) {
  const int64_t n = t.NumElements();
  if (n < 0 || t.data.size() != static_cast<size_t>(n) * DTypeSize(t.dtype)) {
    return absl::InternalError(
        absl::StrCat("tensor \"", t.name, "\" has ", t.data.size(), " bytes for ", n, " values"));
  }
  std::vector<double> out(static_cast<size_t>(n));
  const char* bytes = t.data.data();
  for (int64_t i = 0; i < n; ++i) {
    switch (t.dtype) {
      case TensorDType::kF32: {
        float f;
        std::memcpy(&f, bytes + i * 4, 4);
        out[i] = f;
        break;
      }
      case TensorDType::kF16:
      case TensorDType::kBF16: {
        uint16_t h;
        std::memcpy(&h, bytes + i * 2, 2);
        out[i] = t.dtype == TensorDType::kF16 ? HalfToDouble(h) : BFloat16ToDouble(h);
        break;
      }
      default:
        return absl::InternalError(absl::StrCat("tensor \"", t.name, "\" has dtype ",
                                                DTypeName(t.dtype), ", not a float"));
    }
  }
  return out;
}

}  // namespace lensgrid
