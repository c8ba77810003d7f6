// Protocol-buffer varints appended to a string, for the code that writes or
// rereads wire framing by hand (worker/wire_buffers.cc, client/raw_run_response.cc).
//
//   std::string out;
//   AppendVarint(300, &out);  // "\xac\x02"
#ifndef LENSGRID_COMMON_VARINT_H_
#define LENSGRID_COMMON_VARINT_H_

#include <cstdint>
#include <string>

namespace lensgrid {

inline void AppendVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

}  // namespace lensgrid

#endif  // LENSGRID_COMMON_VARINT_H_
