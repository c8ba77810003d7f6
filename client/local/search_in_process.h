// `lensgrid search --in-process`: loads the model here, builds the dataset, runs the search
// (worker/model/analysis/search.h) and writes the same output as a search on workers. LibTorch.
//
//   RunSearchCommand(argc, argv, std::cout, std::cerr, SearchInProcess(&SearchInThisProcess));
#ifndef LENSGRID_CLIENT_LOCAL_SEARCH_IN_PROCESS_H_
#define LENSGRID_CLIENT_LOCAL_SEARCH_IN_PROCESS_H_

#include <iosfwd>

#include "absl/status/status.h"
#include "client/search_command.h"

namespace lensgrid {

absl::Status SearchInThisProcess(const SearchFlags& flags, std::ostream& out);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_LOCAL_SEARCH_IN_PROCESS_H_
