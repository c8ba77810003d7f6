// Hook programs written as JSON (protobuf's JSON mapping of
// proto/lensgrid/v1/program.proto's HookProgram), for `lensgrid run --program`
// and the C++ client.
//
//   LG_ASSIGN_OR_RETURN(std::vector<v1::HookProgram> programs, ReadProgramsJson("zero_head.json"));
//
// The file holds one HookProgram object, an array of them, or
// {"programs": [...]}. No LibTorch: the worker checks shapes and ids.
#ifndef LENSGRID_CLIENT_PROGRAM_JSON_H_
#define LENSGRID_CLIENT_PROGRAM_JSON_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lensgrid/v1/program.pb.h"

namespace lensgrid {

// INVALID_ARGUMENT naming the source, the program's index and what protobuf's
// JSON parser refused (an unknown field, a wrong type, a bad enum name).
absl::StatusOr<std::vector<v1::HookProgram>> ParseProgramsJson(const std::string& json,
                                                               const std::string& source);
// ParseProgramsJson of a file's contents; NOT_FOUND when it cannot be read.
absl::StatusOr<std::vector<v1::HookProgram>> ReadProgramsJson(const std::string& path);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_PROGRAM_JSON_H_
