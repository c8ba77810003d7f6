// The parts of Wang et al. (2022)'s indirect-object-identification sentences,
// written once: the `ioi` search dataset (analysis/dataset.cc) uses them as
// they are, and training (training/train_data.cc) appends its own phrasings
// and words after them (so a truncated vocabulary keeps these first).
//
// A template names the indirect object [A] (the answer) and the subject [B]
// twice; "[B] and [A]" is the BABA order, swapped it is ABBA.
//
//   std::string s = FillIoiTemplate(IoiTemplates()[0], " Mary", " John", " John",
//                                   " store", " ring");
//   // "Then, John and Mary went to the store. John gave a ring to Mary"
#ifndef LENSGRID_WORKER_MODEL_ANALYSIS_IOI_TEMPLATES_H_
#define LENSGRID_WORKER_MODEL_ANALYSIS_IOI_TEMPLATES_H_

#include <string>
#include <vector>

namespace lensgrid {

const std::vector<std::string>& IoiTemplates();  // the paper's 15 (BABA)
const std::vector<std::string>& IoiNames();      // " Mary", " John", ...
const std::vector<std::string>& IoiPlaces();     // " store", ...
const std::vector<std::string>& IoiObjects();    // " ring", ...

// Replaces the first and second " [B]" with s1 and s2, every " [A]" with io,
// then " [PLACE]" and " [OBJECT]".
std::string FillIoiTemplate(std::string text, const std::string& io, const std::string& s1,
                            const std::string& s2, const std::string& place,
                            const std::string& object);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_ANALYSIS_IOI_TEMPLATES_H_
