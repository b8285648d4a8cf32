// FUZZ_CHECK: a property a fuzz target asserts. A failure prints what was
// expected and aborts, which libFuzzer reports as a crash and saves the
// input that caused it.
//
//   FUZZ_CHECK(parsed.ok() == expected, "ValidateKey disagrees on " + key);
#ifndef PACKSTORE_FUZZ_FUZZ_CHECK_H_
#define PACKSTORE_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>
#include <string>

namespace packstore::fuzz {

[[noreturn]] inline void CheckFailed(const char* file, int line, const char* condition,
                                     const std::string& detail) {
  std::fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed: %s\n", file, line, condition,
               detail.c_str());
  std::abort();
}

}  // namespace packstore::fuzz

// `detail` (anything a std::string can be made from) is evaluated only on
// failure.
#define FUZZ_CHECK(condition, detail)                                               \
  do {                                                                              \
    if (!(condition)) ::packstore::fuzz::CheckFailed(__FILE__, __LINE__, #condition, \
                                                     std::string(detail));          \
  } while (0)

#endif  // PACKSTORE_FUZZ_FUZZ_CHECK_H_
