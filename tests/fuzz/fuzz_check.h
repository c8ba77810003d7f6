// FUZZ_CHECK(cond, msg): a property of the code under test that must hold for
// every input. A failure prints the message and aborts, which the driver (or
// libFuzzer) reports as a crash and saves the input.
#ifndef LENSGRID_TESTS_FUZZ_FUZZ_CHECK_H_
#define LENSGRID_TESTS_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond, msg)                                                                      \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      std::fprintf(stderr, "%s:%d: property violated: %s (%s)\n", __FILE__, __LINE__, #cond, msg); \
      std::abort();                                                                                \
    }                                                                                              \
  } while (0)

#endif  // LENSGRID_TESTS_FUZZ_FUZZ_CHECK_H_
