#include "worker/model/analysis/ioi_templates.h"

#include "absl/strings/str_replace.h"

namespace lensgrid {

const std::vector<std::string>& IoiTemplates() {
  static const auto* t = new std::vector<std::string>{
      "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
      "Then, [B] and [A] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to [A]",
      "Then, [B] and [A] were working at the [PLACE]. [B] decided to give a [OBJECT] to [A]",
      "Then, [B] and [A] were thinking about going to the [PLACE]. [B] wanted to give a "
      "[OBJECT] to [A]",
      "Then, [B] and [A] had a long argument, and afterwards [B] said to [A]",
      "After [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to [A]",
      "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give it to [A]",
      "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give the [OBJECT] to [A]",
      "While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to [A]",
      "While [B] and [A] were commuting to the [PLACE], [B] gave a [OBJECT] to [A]",
      "After the lunch, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
      "Afterwards, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
      "Then, [B] and [A] had a long argument. Afterwards [B] said to [A]",
      "The [PLACE] [B] and [A] went to had a [OBJECT]. [B] gave it to [A]",
      "Friends [B] and [A] found a [OBJECT] at the [PLACE]. [B] gave it to [A]",
  };
  return *t;
}

const std::vector<std::string>& IoiNames() {
  static const auto* n = new std::vector<std::string>{
      " Mary",   " John",    " Tom",    " James",  " Dan",    " Sarah",  " Michael",
      " David",  " Paul",    " Mark",   " Anna",   " Kate",   " Lisa",   " Peter",
      " Jack",   " Alex",    " Ben",    " Emma",   " Laura",  " Rachel", " Steven",
      " Robert", " Richard", " Joseph", " Thomas", " Daniel", " Chris",  " Kevin",
      " Brian",  " Jane",    " Amy",    " Sam",    " Max",    " Mike",   " Eric",
      " Adam",   " Ryan",    " Matt",   " Luke",   " Simon",  " Martin", " George"};
  return *n;
}

const std::vector<std::string>& IoiPlaces() {
  static const auto* p =
      new std::vector<std::string>{" store",  " garden", " restaurant", " school", " hospital",
                                   " office", " house",  " park",       " station"};
  return *p;
}

const std::vector<std::string>& IoiObjects() {
  static const auto* o =
      new std::vector<std::string>{" ring",     " kiss",  " bone",  " basketball", " computer",
                                   " necklace", " drink", " snack", " book",       " ball"};
  return *o;
}

std::string FillIoiTemplate(std::string text, const std::string& io, const std::string& s1,
                            const std::string& s2, const std::string& place,
                            const std::string& object) {
  for (const std::string* s : {&s1, &s2}) {
    const size_t at = text.find(" [B]");
    if (at != std::string::npos) text.replace(at, 4, *s);
  }
  return absl::StrReplaceAll(text, {{" [A]", io}, {" [PLACE]", place}, {" [OBJECT]", object}});
}

}  // namespace lensgrid
