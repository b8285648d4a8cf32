// Helpers for the engine tests: temporary folders and test data.
#ifndef PACKSTORE_TESTS_STORE_TEST_UTIL_H_
#define PACKSTORE_TESTS_STORE_TEST_UTIL_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "gtest/gtest.h"
#include "server/store/container.h"

namespace packstore::testing {

// A fresh temporary folder, removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  // Under `parent` instead of the system's temporary folder.
  explicit TempDir(const std::string& parent);
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// `size` pseudo-random bytes determined by `seed`.
std::string RandomBytes(uint64_t seed, size_t size);
// `size` bytes of compressible text determined by `seed`.
std::string TextBytes(uint64_t seed, size_t size);
// The key of `data` in a sha256 store.
std::string Sha(std::string_view data);

// How to regenerate an object's content, so that only this small record
// has to travel between processes: "<t|r> <seed> <size>".
struct Spec {
  bool text = false;
  uint64_t seed = 0;
  uint64_t size = 0;
};
std::string Content(const Spec& spec);
std::string SpecText(const Spec& spec);

// Fails the test with one line per issue Validate reports.
void ExpectValid(Container& c);

// Asserts an absl::Status / StatusOr is OK, printing it otherwise.
#define PS_ASSERT_OK(expr)                                    \
  do {                                                        \
    const auto& ps_status_ = (expr);                          \
    ASSERT_TRUE(ps_status_.ok()) << ::packstore::testing::StatusText(ps_status_); \
  } while (0)
#define PS_EXPECT_OK(expr)                                    \
  do {                                                        \
    const auto& ps_status_ = (expr);                          \
    EXPECT_TRUE(ps_status_.ok()) << ::packstore::testing::StatusText(ps_status_); \
  } while (0)

template <typename T>
std::string StatusText(const T& status_or) {
  if constexpr (requires { status_or.status(); }) {
    return std::string(status_or.status().ToString());
  } else {
    return std::string(status_or.ToString());
  }
}

}  // namespace packstore::testing

#endif  // PACKSTORE_TESTS_STORE_TEST_UTIL_H_
