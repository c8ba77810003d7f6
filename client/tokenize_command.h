// `lensgrid tokenize`: GPT-2 token ids of text, or text of ids.
//
//   lensgrid tokenize (--model DIR | --tokenizer DIR) [--jsonl] [--decode]
//   [TEXT...]
//
//   TEXT...            one line of comma-separated ids per TEXT
//   ("464,3797,3332") (no TEXT)          all of stdin is one text
//   --decode           each TEXT (or stdin) holds ids separated by commas or
//   spaces; prints
//                      the decoded text, one line per TEXT
//   --jsonl            stdin has one JSON string per line; prints one JSON
//   array of ids per
//                      line (blank lines are skipped). With --decode: arrays
//                      in, strings out.
//
// --model DIR uses the model dir's vocab.json + merges.txt, else GPT-2's
// default files;
// --tokenizer DIR uses the files in DIR. Errors go to stderr with a non-zero
// return.
#ifndef LENSGRID_CLIENT_TOKENIZE_COMMAND_H_
#define LENSGRID_CLIENT_TOKENIZE_COMMAND_H_

#include <iosfwd>

namespace lensgrid {

// REQUIRES: argv[0] == "tokenize"; argv[1..] are its flags and TEXT arguments.
int RunTokenizeCommand(int argc, char** argv);

// The same, on the given streams (for tests).
int RunTokenizeCommand(int argc, char** argv, std::istream& in, std::ostream& out,
                       std::ostream& err);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_TOKENIZE_COMMAND_H_
