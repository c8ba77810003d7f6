// `lensgrid tokenize` as its own binary, so its tests need not wait for the
// whole CLI.
#include "client/tokenize_command.h"

int main(int argc, char** argv) { return lensgrid::RunTokenizeCommand(argc, argv); }
