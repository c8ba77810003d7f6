// Hook-program messages (proto/lensgrid/v1/program.proto) -> the model
// library's HookProgramSpec (worker/model/hook_program.h), which checks them.
//
//   LG_ASSIGN_OR_RETURN(std::vector<HookProgramSpec> programs,
//                       ProgramsFromProto(request.programs()));
#ifndef LENSGRID_WORKER_CORE_PROGRAM_MESSAGES_H_
#define LENSGRID_WORKER_CORE_PROGRAM_MESSAGES_H_

#include <vector>

#include "absl/status/statusor.h"
#include "lensgrid/v1/program.pb.h"
#include "worker/model/hook_program.h"

namespace lensgrid {

// INVALID_ARGUMENT naming programs[i].nodes[j] for a node with no operation,
// an unknown enum value, a bad literal tensor, or literal values that do not
// fill their shape. Shapes and ids are checked later, by ProgramPlan::Compile.
absl::StatusOr<std::vector<HookProgramSpec>> ProgramsFromProto(
    const google::protobuf::RepeatedPtrField<v1::HookProgram>& programs);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_CORE_PROGRAM_MESSAGES_H_
