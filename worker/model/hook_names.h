// TransformerLens's activation-name shorthand, and "did you mean" for typos.
// No LibTorch here.
//
//   ActName("pattern", 0)             -> "blocks.0.attn.hook_pattern"
//   ActName("resid_post", -1, 12)     -> "blocks.11.hook_resid_post"
//   ActName("k6")                     -> "blocks.6.attn.hook_k"
//   ActName("scale4ln1")              -> "blocks.4.ln1.hook_scale"
//   ActName("scale")                  -> "ln_final.hook_scale"
//   ActName("blocks.2.hook_mlp_out")  -> unchanged (already a full name)
#ifndef LENSGRID_WORKER_MODEL_HOOK_NAMES_H_
#define LENSGRID_WORKER_MODEL_HOOK_NAMES_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace lensgrid {

// As TransformerLens's utils.get_act_name. A negative layer counts from the
// end and needs n_layers (ignored otherwise).
std::string ActName(absl::string_view name, std::optional<int> layer = std::nullopt,
                    absl::string_view layer_type = "", int n_layers = 0);

// Up to `max` names from `known` closest to `unknown` (edit distance), best first.
std::vector<std::string> ClosestNames(absl::string_view unknown,
                                      const std::vector<std::string>& known, size_t max = 3);

// "unknown hook name \"x\"; did you mean \"a\", \"b\"?"
std::string UnknownHookMessage(absl::string_view unknown, const std::vector<std::string>& known);

// NOT_FOUND with UnknownHookMessage(unknown, known) + `suffix`, and the details
// a program reads (common/error_details.h): ErrorInfo UNKNOWN_HOOK with
// metadata "hook" (the name asked for) and "closest" (comma-separated, best
// first; empty when nothing is close).
absl::Status UnknownHookError(absl::string_view unknown, const std::vector<std::string>& known,
                              absl::string_view suffix = "");

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_HOOK_NAMES_H_
