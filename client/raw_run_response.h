// The C++ client's reader of streamed replies (RunResponse messages) as gRPC
// received them, unparsed: a header is parsed whole (its inline chunks go to
// the assembler), a chunk's data goes straight from gRPC's slices into the
// tensor it belongs to (one copy, no protobuf parse of the data).
//
//   RawReplyState state;
//   TensorAssembler assembler;
//   v1::RunHeader header;
//   for each message: LG_RETURN_IF_ERROR(ReadRawResponse(buffer, &state, &header, &assembler));
//   then assembler.Finish()
//
// Every error is INTERNAL and says what was malformed: a well-behaved worker
// never sends one (tests/fuzz/fuzz_wire_messages.cc feeds it arbitrary bytes).
#ifndef LENSGRID_CLIENT_RAW_RUN_RESPONSE_H_
#define LENSGRID_CLIENT_RAW_RUN_RESPONSE_H_

#include <grpcpp/support/byte_buffer.h>

#include "absl/status/status.h"
#include "common/tensor_chunks.h"
#include "lensgrid/v1/worker.pb.h"

namespace lensgrid {

// What the messages of one reply said so far.
struct RawReplyState {
  bool have_header = false;
  bool inline_tensors = false;  // the header carried the tensors (inline_chunks)
};

// Reads one RunResponse message of a reply into *header and *assembler.
absl::Status ReadRawResponse(const grpc::ByteBuffer& buffer, RawReplyState* state,
                             v1::RunHeader* header, TensorAssembler* assembler);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_RAW_RUN_RESPONSE_H_
